"""Every file of a run directory, written so that a run killed at any moment loses nothing.

Layout::

    run.json               what the run is: format, godiff version, command, system, settings
    evaluations.db         ASE database, one row per evaluation, written the moment it is computed
                           (key-value pairs: iteration, sample, temperature, ok; energy and forces
                           as the row's calculator results; the error text in ``data`` if failed)
    samples/iter-NNNN.npy  the structures of iteration N, saved *before* any is evaluated, so a
                           resumed run evaluates exactly the same ones and only those not yet done;
                           an adaptive batch's later rounds R in iter-NNNN-rRR.npy
    start_model.safetensors  the pretrained weights a search started from (pretrained runs only)
    checkpoints/iter-NNNN/ after iteration N: model.safetensors, optimizer.safetensors,
                           buffer.safetensors, state.json (iteration, counters, RNG scheme) and
                           digests.json (the SHA-256 of each of them, checked before any is used)
    best.xyz               the lowest-energy structure so far (extxyz, energy in the comment line)
    minima.xyz             the distinct low minima when the run last stopped, lowest first, one
                           extxyz frame each (:mod:`godiff.minima`: energy, rank, evaluation,
                           first_evaluation, count)
    log.jsonl              one JSON line of metrics per finished iteration
    stopped.json           why the run last stopped (budget, patience, iterations, ...)
    run.lock               held (an OS file lock) by the one process running the search; it
                           names that process. The kernel releases it when the process dies,
                           even by kill -9, so a stale lock never blocks a resume.

Files are written to a temporary name and renamed into place (directories too), so a reader
never sees half a file. No pickles: tensors go to safetensors, everything else to JSON.
Reading is kept apart from writing: every check of a reopened run (its lock, its checkpoint's
digests, its database against the checkpoint's count) raises before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from godiff.digests import confined, read_json, sha256_file
from godiff.errors import (
    CheckpointError,
    ConfigError,
    DigestMismatchError,
    GodiffError,
    NotARunError,
    RunExistsError,
    RunLockedError,
)
from godiff.manifest import RUN_FORMAT, RunManifest

__all__ = [
    "RunDir",
    "succeeded",
    "RunLock",
    "atomic_write_text",
    "atomic_write_bytes",
    "flatten_optimizer",
    "unflatten_optimizer",
]

MANIFEST = "run.json"
DATABASE = "evaluations.db"
LOCK = "run.lock"
DIGESTS = "digests.json"
KEEP_CHECKPOINTS = 2
START_MODEL = "start_model.safetensors"


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a new temporary file beside it (created exclusively, so a
    name planted there, a link included, is never written through), fsync and rename."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would have made it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def refuse_links(path: Path) -> None:
    """Refuse a run directory that holds a symbolic link anywhere inside it (:class:`CheckpointError`,
    exit 4): godiff never makes one, and a run directory is a file people share, whose links
    (``run.lock``, ``samples/``, ``report/``, ``scratch/`` ...) would send godiff's writes
    anywhere. The directory itself may be reached through a link."""
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            entry = Path(root) / name
            if entry.is_symlink():
                raise CheckpointError(
                    f"{entry}: a symbolic link inside a run directory (to {os.readlink(entry)}); godiff "
                    "writes only inside its run directory and never through a link there"
                )


def _holds_no_rows(database: Path) -> bool:
    """True for an ASE database with no rows (its tables made, nothing recorded); False for one
    with rows or one that cannot be read as a database."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as con:
            return con.execute("select count(*) from systems").fetchone()[0] == 0
    except sqlite3.Error:
        return False


class RunLock:
    """An exclusive, advisory OS lock on ``run.lock`` (``flock``), held by one process at a time.

    The holder writes its process id and host into the file, so a refused caller can say who
    holds it. The kernel drops the lock when the holder's file is closed or the process ends in
    any way, so there is never a stale lock to remove by hand.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming the process that holds it."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never through a link
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot open the run's lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent}: in use by {holder}; a run directory is used by one process at a time "
                "(wait for it to end or stop it; 'godiff report' may read it meanwhile)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file drops the flock

    def __del__(self):
        self.release()


class RunDir:
    """A run directory; create it with :meth:`create`, reopen it with :meth:`open`.

    Both take the directory's :class:`RunLock` unless told not to (``open(lock=False)``, for
    readers such as ``godiff report``); :meth:`release` gives it back.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = RunLock(self.path / LOCK)

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path, manifest: RunManifest | dict) -> "RunDir":
        """Make a new run directory and lock it; refuse one that already holds a run or other files.

        ``manifest`` is a :class:`~godiff.manifest.RunManifest` or its fields as a dict."""
        path = Path(path)
        if not isinstance(manifest, RunManifest):
            manifest = RunManifest.from_dict({"format": RUN_FORMAT, **manifest})
        cls.check_free(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            run = cls(path)
            run.lock()
            cls.check_free(path, ignore=(LOCK,))  # a second 'run --out' that raced past the first check
            (path / "samples").mkdir(exist_ok=True)
            (path / "checkpoints").mkdir(exist_ok=True)
            run.create_database()
            run._write_manifest(manifest)
        except GodiffError:
            raise
        except OSError as exc:  # a directory that cannot be written, a path through a file
            raise ConfigError(f"{path}: cannot create the run directory here ({exc.strerror or exc})") from None
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot create the run's database ({exc})") from None
        return run

    @staticmethod
    def check_free(path: Path, ignore: tuple[str, ...] = ()) -> None:
        """Refuse a path that holds a run, is a file, or is a directory with files in it."""
        if (path / MANIFEST).exists() or (path / DATABASE).exists():
            raise RunExistsError(
                f"{path}: already holds a run; resume it with 'godiff resume {path}' or choose another --out"
            )
        if path.exists() and not path.is_dir():
            raise RunExistsError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(p.name not in ignore for p in path.iterdir()):
            raise RunExistsError(f"{path}: directory is not empty; choose another --out")
        ancestor = next((a for a in [path, *path.absolute().parents] if a.exists()), None)
        if ancestor is not None and (not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK)):
            why = "not a directory" if not ancestor.is_dir() else "not writable"
            raise ConfigError(f"{path}: cannot create the run directory here ({ancestor} is {why})")

    @classmethod
    def discard_unstarted(cls, path) -> bool:
        """Remove what a :meth:`create` killed before it wrote ``run.json`` left, if nothing was
        evaluated in it; returns whether it removed a directory.

        Only the lock, empty ``samples/`` and ``checkpoints/``, a database without rows and a
        ``run.json`` half written (its temporary file: a worker the pool terminated while it wrote
        it) count as such leftovers; a directory holding anything else, or a link, is left as it is (and
        :meth:`check_free` refuses it); one whose lock another process holds raises
        :class:`RunLockedError` and is not touched. ``godiff bench`` calls this so that the same
        command resumes a benchmark killed while a run was being created.
        """
        path = Path(path)
        if path.is_symlink() or not path.is_dir() or (path / MANIFEST).exists():
            return False
        leftovers = {LOCK, "samples", "checkpoints", DATABASE, DATABASE + ".tmp"}
        for entry in path.iterdir():
            manifest_tmp = entry.name.startswith(f".{MANIFEST}.") and entry.name.endswith(".tmp")  # killed mid-write
            if (entry.name not in leftovers and not manifest_tmp) or entry.is_symlink():
                return False
            if entry.is_dir() and any(entry.iterdir()):
                return False
        if (path / DATABASE).exists() and not _holds_no_rows(path / DATABASE):
            return False
        lock = RunLock(path / LOCK)
        lock.acquire()  # a creation still going on in another process is refused here, not removed
        try:
            shutil.rmtree(path)
        finally:
            lock.release()
        return True

    @classmethod
    def open(cls, path, *, lock: bool = True) -> "RunDir":
        """Open an existing run (locked unless ``lock=False``); refuse a directory that is not one."""
        path = Path(path)
        if not path.is_dir():
            raise NotARunError(f"{path}: no such run directory")
        if not (path / MANIFEST).is_file():
            raise NotARunError(f"{path}: not a godiff run directory (no {MANIFEST})")
        refuse_links(path)
        run = cls(path)
        run.manifest  # noqa: B018 (read and checked: an unreadable or newer run.json is refused here)
        if lock:
            run.lock()
        return run

    def lock(self) -> None:
        """Take the run's lock (a no-op when this object holds it already)."""
        self._lock.acquire()

    def release(self) -> None:
        """Give the run's lock back (a no-op when it is not held)."""
        self._lock.release()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    @property
    def manifest(self) -> RunManifest:
        """``run.json``, typed (:class:`godiff.manifest.RunManifest`)."""
        data = read_json(self.path / MANIFEST)
        return RunManifest.from_dict(data, where=str(self.path / MANIFEST))

    def update_manifest(self, **fields) -> None:
        """Replace fields of ``run.json`` (atomically)."""
        self._write_manifest(dataclasses.replace(self.manifest, **fields))

    def _write_manifest(self, manifest: RunManifest) -> None:
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest.to_dict(), indent=2, sort_keys=True))

    # -- evaluations --------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.path / DATABASE

    def _connect(self):
        """The database, without ASE's lock file: the run's flock already admits one writer, and
        the lock file (made and removed around each write) outlives a writer killed mid-write, after
        which every later write would wait for it forever. SQLite's journal keeps a killed write
        atomic."""
        import ase.db

        return ase.db.connect(str(self.db_path), type="db", use_lock_file=False)

    def _db(self):
        """The database of an existing run; a lost one is never silently made anew."""
        if not self.db_path.is_file():
            raise CheckpointError(f"{self.db_path}: missing; every evaluation of the run was in it")
        return self._connect()

    def get_row(self, row_id: int):
        """One database row by id."""
        try:
            return self._db().get(id=int(row_id))
        except (sqlite3.DatabaseError, KeyError) as exc:
            raise CheckpointError(f"{self.db_path}: cannot read row {row_id} ({type(exc).__name__}: {exc})") from exc

    def record(
        self,
        atoms: Atoms,
        evaluation,
        *,
        iteration: int,
        sample: int,
        temperature: float,
        polish: bool = False,
        relaxation: int | None = None,
    ) -> int:
        """Store one evaluation at once (one committed SQLite transaction); returns its row id.
        A structure the polish moved (:mod:`godiff.polish`) carries ``polish=True``; a step of a
        relaxation with the real calculator (``relax_first``, ``relax_stalled``) also
        ``relaxation=True`` and ``relaxed_from``, the id of the evaluation it started from
        (``relaxation``)."""
        if isinstance(relaxation, bool):
            raise TypeError("record: relaxation is the id of the evaluation the relaxation started from, not a flag")
        atoms = atoms.copy()
        if evaluation.ok:
            atoms.calc = SinglePointCalculator(atoms, energy=evaluation.energy, forces=evaluation.forces)
        data = {"seconds": float(evaluation.seconds)}
        if evaluation.error:
            data["error"] = str(evaluation.error)
        # _connect, not _db: an evaluation in hand is written even if the file vanished meanwhile
        # (a resume then finds fewer rows than the checkpoint says and refuses)
        keys = dict(
            iteration=int(iteration), sample=int(sample), temperature=float(temperature), ok=bool(evaluation.ok)
        )
        if polish or relaxation is not None:
            keys["polish"] = True
        if relaxation is not None:
            keys["relaxation"] = True
            keys["relaxed_from"] = int(relaxation)
        return self._connect().write(atoms, key_value_pairs=keys, data=data)

    def has_database(self) -> bool:
        return self.db_path.is_file()

    def create_database(self) -> None:
        """Make the empty database (a new run, or a rebuild): from then on a missing one was lost.

        Its tables are made under a temporary name and renamed into place, so a reader (``godiff
        report`` beside a starting run) never opens a half-initialised file."""
        import ase.db

        tmp = self.db_path.with_name(self.db_path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        ase.db.connect(str(tmp), type="db", use_lock_file=False).count()
        os.replace(tmp, self.db_path)

    def rows(self, iteration: int | None = None) -> list:
        """Database rows (all, or one iteration's), in the order they were written.

        Raises :class:`CheckpointError` (exit 4) for a missing, truncated or corrupt database.
        """
        query = {} if iteration is None else {"iteration": int(iteration)}
        try:
            return sorted(self._db().select(**query), key=lambda r: r.id)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"{self.db_path}: unreadable database ({exc}); restore it from a backup") from exc

    def done_samples(self, iteration: int) -> set[int]:
        """Sample indices of an iteration that already have a row."""
        return {int(r.sample) for r in self.rows(iteration)}

    # -- samples ------------------------------------------------------------------------------
    def _samples_path(self, iteration: int, round: int = 0) -> Path:
        suffix = f"-r{round:02d}" if round else ""
        return self.path / "samples" / f"iter-{iteration:04d}{suffix}.npy"

    def save_samples(self, iteration: int, positions: np.ndarray, round: int = 0) -> None:
        """Save round ``round`` of an iteration's structures (before any is evaluated)."""
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(positions, dtype=np.float64), allow_pickle=False)
        atomic_write_bytes(self._samples_path(iteration, round), buf.getvalue())

    def load_samples(self, iteration: int, round: int | None = None) -> np.ndarray | None:
        """Round ``round`` of an iteration's saved structures, or (``None``) every saved round in
        order, their rows' ``sample`` indices; None if nothing is saved."""
        if round is None:
            rounds = []
            while (x := self.load_samples(iteration, len(rounds))) is not None:
                rounds.append(x)
            return np.concatenate(rounds) if rounds else None
        path = self._samples_path(iteration, round)
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
        digests = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        (tmp / DIGESTS).write_text(json.dumps(digests, indent=1, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(self._ckpt_dir(old), ignore_errors=True)

    def save_start_model(self, tensors: dict) -> None:
        """Keep the pretrained weights a search started from, so a resume before the first
        checkpoint starts from them again; their digest goes into ``run.json``."""
        from safetensors.torch import save

        atomic_write_bytes(self.path / START_MODEL, save(tensors))
        self.update_manifest(start_model_sha256=sha256_file(self.path / START_MODEL))

    def load_start_model(self) -> dict:
        from safetensors.torch import load

        path = self.path / START_MODEL
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read the starting model ({exc})") from exc
        expected = self.manifest.start_model_sha256
        if expected is not None:
            import hashlib

            if hashlib.sha256(data).hexdigest() != expected:
                raise DigestMismatchError(
                    f"{path}: SHA-256 differs from the one in {MANIFEST}; the starting model is corrupt"
                )
        try:
            return load(data)
        except Exception as exc:  # safetensors' own error types on corruption
            raise CheckpointError(f"{path}: cannot read the starting model ({type(exc).__name__}: {exc})") from exc

    def checkpoints(self) -> list[int]:
        """Iterations that have a complete checkpoint, ascending."""
        root = self.path / "checkpoints"
        if not root.is_dir():
            return []
        out = []
        for d in root.iterdir():
            if (
                d.is_dir()
                and d.name.startswith("iter-")
                and not d.name.endswith(".tmp")
                and (d / "state.json").exists()
            ):
                out.append(int(d.name[5:]))
        return sorted(out)

    def verify_checkpoint(self, iteration: int) -> bool:
        """Check a checkpoint's files against its ``digests.json``.

        Returns False for a checkpoint written before digests were kept (nothing to check);
        raises :class:`DigestMismatchError` naming the first file whose bytes changed and
        :class:`CheckpointError` for a missing file or an unreadable table.
        """
        d = self._ckpt_dir(iteration)
        if not (d / DIGESTS).exists():
            return False
        table = read_json(d / DIGESTS)
        if not isinstance(table, dict) or "state.json" not in table or "model.safetensors" not in table:
            raise CheckpointError(f"{d / DIGESTS}: does not list the checkpoint's files")
        for name, digest in sorted(table.items()):
            path = confined(d, name, what=DIGESTS)
            if not path.is_file():
                raise CheckpointError(f"{path}: listed in {DIGESTS} but missing")
            if sha256_file(path) != digest:
                raise DigestMismatchError(
                    f"{path}: SHA-256 differs from the one in {DIGESTS}; the checkpoint is corrupt"
                )
        return True

    def load_checkpoint(self, iteration: int) -> tuple[dict, dict]:
        """Return ``({name: {key: tensor}}, state)`` of a checkpoint, after checking its digests."""
        from safetensors.torch import load_file

        d = self._ckpt_dir(iteration)
        self.verify_checkpoint(iteration)
        try:
            state = read_json(d / "state.json")
            tensors = {f.stem: load_file(str(f)) for f in d.glob("*.safetensors")}
        except Exception as exc:  # safetensors raises its own error types on corruption
            raise CheckpointError(f"{d}: corrupt checkpoint ({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{d / 'state.json'}: expected a JSON object")
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

    def write_minima(self, text: str) -> None:
        """``minima.xyz``: :func:`godiff.minima.minima_xyz` of the run's distinct minima."""
        atomic_write_text(self.path / "minima.xyz", text)

    def write_stop(self, record: dict) -> None:
        """``stopped.json``: why the run last stopped."""
        atomic_write_text(self.path / "stopped.json", json.dumps(record, indent=1, sort_keys=True) + "\n")

    def read_stop(self) -> dict | None:
        path = self.path / "stopped.json"
        return json.loads(path.read_text()) if path.exists() else None

    def rewrite_log(self, records: list[dict]) -> None:
        """Replace ``log.jsonl`` with ``records`` (atomically)."""
        atomic_write_text(self.path / "log.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

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


def succeeded(row) -> bool:
    """Whether a database row is a successful evaluation with its energy."""
    return bool(row.ok) and row.get("energy") is not None


def flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON metadata."""
    tensors, meta = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for pid, pstate in state_dict["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
                meta["state"][str(pid)][key] = "tensor"
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    """The optimizer state dict back from :func:`flatten_optimizer`'s two halves."""
    state = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"{pid}.{k}"] if v == "tensor" else v) for k, v in entries.items()}
    return {"state": state, "param_groups": meta["param_groups"]}
