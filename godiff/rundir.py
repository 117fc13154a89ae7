"""Every file of a run directory, written so that a run killed at any moment loses nothing.

Layout::

    run.json               what the run is: format, godiff version, command, system, settings
    evaluations.db         ASE database, one row per evaluation, written the moment it is computed
                           (key-value pairs: iteration, sample, temperature, ok; energy and forces
                           as the row's calculator results; the error text in ``data`` if failed)
    samples/iter-NNNN.npy  the structures of iteration N, saved *before* any is evaluated, so a
                           resumed run evaluates exactly the same ones and only those not yet done
    start_model.safetensors  the pretrained weights a search started from (pretrained runs only)
    checkpoints/iter-NNNN/ after iteration N: model.safetensors, optimizer.safetensors,
                           buffer.safetensors and state.json (iteration, counters, RNG scheme)
    best.xyz               the lowest-energy structure so far (extxyz, energy in the comment line)
    log.jsonl              one JSON line of metrics per finished iteration

Files are written to a temporary name and renamed into place (directories too), so a reader
never sees half a file. No pickles: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from godiff.errors import CheckpointError, NotARunError, RunExistsError

__all__ = ["RunDir", "atomic_write_text", "atomic_write_bytes"]

FORMAT = 1
MANIFEST = "run.json"
KEEP_CHECKPOINTS = 2
START_MODEL = "start_model.safetensors"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class RunDir:
    """A run directory; create it with :meth:`create`, reopen it with :meth:`open`."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path, manifest: dict) -> "RunDir":
        """Make a new run directory; refuse one that already holds a run or other files."""
        path = Path(path)
        if (path / MANIFEST).exists() or (path / "evaluations.db").exists():
            raise RunExistsError(f"{path}: already holds a run; resume it with 'godiff resume {path}' or choose another --out")
        if path.exists() and not path.is_dir():
            raise RunExistsError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            raise RunExistsError(f"{path}: directory is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        (path / "samples").mkdir(exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        atomic_write_text(path / MANIFEST, json.dumps({"format": FORMAT, **manifest}, indent=2, sort_keys=True))
        return run

    @classmethod
    def open(cls, path) -> "RunDir":
        """Open an existing run; refuse a directory that is not one."""
        path = Path(path)
        if not path.is_dir():
            raise NotARunError(f"{path}: no such run directory")
        if not (path / MANIFEST).is_file():
            raise NotARunError(f"{path}: not a godiff run directory (no {MANIFEST})")
        run = cls(path)
        fmt = run.manifest.get("format")
        if fmt != FORMAT:
            raise CheckpointError(f"{path / MANIFEST}: run format {fmt!r} is not supported (this godiff reads {FORMAT})")
        return run

    @property
    def manifest(self) -> dict:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.path / MANIFEST}: unreadable ({exc})") from exc

    def update_manifest(self, **fields) -> None:
        """Replace top-level fields of ``run.json`` (atomically)."""
        manifest = self.manifest
        manifest.update(fields)
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    # -- evaluations --------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.path / "evaluations.db"

    def _db(self):
        import ase.db

        return ase.db.connect(str(self.db_path), type="db")

    def record(self, atoms: Atoms, evaluation, *, iteration: int, sample: int, temperature: float) -> int:
        """Store one evaluation at once (one committed SQLite transaction); returns its row id."""
        atoms = atoms.copy()
        if evaluation.ok:
            atoms.calc = SinglePointCalculator(atoms, energy=evaluation.energy, forces=evaluation.forces)
        data = {"seconds": float(evaluation.seconds)}
        if evaluation.error:
            data["error"] = str(evaluation.error)
        return self._db().write(
            atoms,
            key_value_pairs=dict(iteration=int(iteration), sample=int(sample), temperature=float(temperature), ok=bool(evaluation.ok)),
            data=data,
        )

    def rows(self, iteration: int | None = None) -> list:
        """Database rows (all, or one iteration's), in the order they were written."""
        if not self.db_path.exists():
            return []
        query = {} if iteration is None else {"iteration": int(iteration)}
        return sorted(self._db().select(**query), key=lambda r: r.id)

    def done_samples(self, iteration: int) -> set[int]:
        """Sample indices of an iteration that already have a row."""
        return {int(r.sample) for r in self.rows(iteration)}

    # -- samples ------------------------------------------------------------------------------
    def _samples_path(self, iteration: int) -> Path:
        return self.path / "samples" / f"iter-{iteration:04d}.npy"

    def save_samples(self, iteration: int, positions: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(positions, dtype=np.float64), allow_pickle=False)
        atomic_write_bytes(self._samples_path(iteration), buf.getvalue())

    def load_samples(self, iteration: int) -> np.ndarray | None:
        path = self._samples_path(iteration)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable samples ({exc})") from exc

    # -- checkpoints --------------------------------------------------------------------------
    def _ckpt_dir(self, iteration: int) -> Path:
        return self.path / "checkpoints" / f"iter-{iteration:04d}"

    def save_checkpoint(self, iteration: int, tensors: dict, state: dict) -> None:
        """Write ``{name: {key: tensor}}`` as ``name.safetensors`` plus ``state.json``, atomically."""
        from safetensors.torch import save_file

        final = self._ckpt_dir(iteration)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, group in tensors.items():
            clean = {k: v.detach().cpu().contiguous().clone() for k, v in group.items()}
            save_file(clean, str(tmp / f"{name}.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(self._ckpt_dir(old), ignore_errors=True)

    def save_start_model(self, tensors: dict) -> None:
        """Keep the pretrained weights a search started from, so a resume before the first
        checkpoint starts from them again."""
        from safetensors.torch import save

        atomic_write_bytes(self.path / START_MODEL, save(tensors))

    def load_start_model(self) -> dict:
        from safetensors.torch import load

        path = self.path / START_MODEL
        try:
            return load(path.read_bytes())
        except Exception as exc:  # OSError, or safetensors' own error types on corruption
            raise CheckpointError(f"{path}: cannot read the starting model ({type(exc).__name__}: {exc})") from exc

    def checkpoints(self) -> list[int]:
        """Iterations that have a complete checkpoint, ascending."""
        root = self.path / "checkpoints"
        if not root.is_dir():
            return []
        out = []
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith("iter-") and not d.name.endswith(".tmp") and (d / "state.json").exists():
                out.append(int(d.name[5:]))
        return sorted(out)

    def load_checkpoint(self, iteration: int) -> tuple[dict, dict]:
        """Return ``({name: {key: tensor}}, state)`` of a checkpoint."""
        from safetensors.torch import load_file

        d = self._ckpt_dir(iteration)
        try:
            state = json.loads((d / "state.json").read_text())
            tensors = {f.stem: load_file(str(f)) for f in d.glob("*.safetensors")}
        except Exception as exc:  # safetensors raises its own error types on corruption
            raise CheckpointError(f"{d}: corrupt checkpoint ({type(exc).__name__}: {exc})") from exc
        return tensors, state

    # -- best and log -------------------------------------------------------------------------
    def write_best(self, atoms: Atoms, energy: float, *, evaluation_id: int | None = None) -> None:
        import io

        from ase.io import write

        atoms = atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy))
        if evaluation_id is not None:
            atoms.info["evaluation_id"] = int(evaluation_id)
        buf = io.StringIO()
        write(buf, atoms, format="extxyz")
        atomic_write_text(self.path / "best.xyz", buf.getvalue())

    def append_log(self, record: dict) -> None:
        with open(self.path / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self) -> list[dict]:
        path = self.path / "log.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: the checkpoint, not the log, is authoritative
        return out
