"""The self-sampling loop: sample, evaluate, buffer, train at the current temperature, anneal.

Iteration k of K:

1. **Sample** ``samples`` structures. The first iteration of a search from an untrained model
   draws from the uniform prior over the box (an untrained network's samples are noise anyway,
   so we do not pay for running it); later iterations (and all iterations of a search started
   from a pretrained model) run the reverse diffusion of :mod:`godiff.sampler`. The structures are
   saved to the run directory before any is evaluated.
2. **Evaluate** each through the one :class:`godiff.energy.Evaluator`; every result is written to
   ``evaluations.db`` the moment it arrives.
3. **Buffer** the successful ones (:mod:`godiff.buffer`); keep every successful structure's forces
   for the force head.
4. **Train** ``train_steps`` steps at temperature T_k (:mod:`godiff.schedule`): the Boltzmann-weighted
   denoising loss on the buffer plus ``force_weight`` times the force loss on all evaluated data.
5. **Checkpoint** the model, optimizer and buffer, append a line to ``log.jsonl``.

Random numbers come from generators seeded by (seed, iteration, phase), so a run resumed from any
checkpoint draws exactly what the uninterrupted run would have drawn.

The loop never prints; it reports progress by calling ``progress(event: dict)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from godiff import __version__
from godiff.buffer import ForceMemory, ReplayBuffer
from godiff.errors import CheckpointError, ConfigError, EvaluationFailureError, NotARunError
from godiff.manifest import RunManifest
from godiff.rundir import RunDir, flatten_optimizer, unflatten_optimizer
from godiff.sampler import Sampler, SamplerConfig
from godiff.schedule import ExponentialSchedule
from godiff.score import ScoreConfig, ScoreModel
from godiff.train import Trainer, TrainingData

log = logging.getLogger(__name__)

__all__ = ["SearchConfig", "Search", "Result"]


SAMPLER_ALIASES = {"sampling_steps": "steps", "sampling_batch_size": "batch_size"}


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a search; round-trips through JSON (``to_dict`` / ``from_dict``).

    Attributes:
        iterations: self-sampling iterations.
        samples: structures sampled and evaluated per iteration.
        first_samples: structures of the first iteration (``None``: ``samples``); a search from
            a pretrained model needs fewer to start (see :data:`godiff.zoo.transfer.TRANSFER`).
        train_steps: optimizer steps per iteration.
        batch_size: buffer structures per denoising step.
        force_batch: evaluated structures per force-loss step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip.
        buffer_size: replay-buffer capacity.
        temperature_start: first temperature, eV.
        temperature_end: last temperature, eV.
        force_weight: weight of the force loss.
        energy_weight: weight of the energy-head loss.
        force_clip: per-atom force norm above which targets are clipped, eV/Å.
        max_failed_fraction: an iteration with more failed evaluations than this stops the run.
        seed: seeds every random stream of the run.
        workers: parallel evaluation processes.
        sampler: reverse-diffusion settings.
        score: network architecture (``None``: scaled to the system's bond length).
    """

    iterations: int = 20
    samples: int = 128
    first_samples: int | None = None
    train_steps: int = 200
    batch_size: int = 32
    force_batch: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    buffer_size: int = 64
    temperature_start: float = 5.0
    temperature_end: float = 0.02
    force_weight: float = 1.0
    energy_weight: float = 1.0
    force_clip: float = 10.0
    max_failed_fraction: float = 0.5
    seed: int = 0
    workers: int = 1
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    score: ScoreConfig | None = None

    def __post_init__(self):
        from godiff.checks import number

        for name in ("iterations", "samples", "batch_size", "force_batch", "buffer_size", "workers"):
            number(name, getattr(self, name), minimum=1, integer=True)
        if self.first_samples is not None:
            number("first_samples", self.first_samples, minimum=1, integer=True)
        number("train_steps", self.train_steps, minimum=0, integer=True)
        number("seed", self.seed, minimum=0, integer=True)
        for name in ("learning_rate", "grad_clip", "force_clip", "temperature_start", "temperature_end"):
            number(name, getattr(self, name), above=0)
        for name in ("weight_decay", "force_weight", "energy_weight"):
            number(name, getattr(self, name), minimum=0)
        number("max_failed_fraction", self.max_failed_fraction, minimum=0, maximum=1)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["sampler"] = self.sampler.to_dict()
        d["score"] = None if self.score is None else self.score.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        data = dict(data)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"search config: unknown field(s) {sorted(unknown)}")
        data["sampler"] = SamplerConfig.from_dict(data.get("sampler") or {})
        data["score"] = None if data.get("score") is None else ScoreConfig.from_dict(data["score"])
        return cls(**data)

    def with_overrides(self, **overrides) -> "SearchConfig":
        """A copy with top-level or sampler fields replaced (``None`` values are ignored).

        Sampler fields may also be named as on the command line (``sampling_steps``).
        """
        top = {f.name for f in fields(self)}
        samp = {f.name for f in fields(SamplerConfig)}
        main, sampler = {}, {}
        for key, value in overrides.items():
            if value is None:
                continue
            key = SAMPLER_ALIASES.get(key, key)
            if key in top:
                main[key] = value
            elif key in samp:
                sampler[key] = value
            else:
                raise ConfigError(f"unknown search setting '{key}'")
        new = replace(self, **main)
        if sampler:
            new = replace(new, sampler=replace(new.sampler, **sampler))
        return new


@dataclass
class Result:
    """What a search returns.

    Attributes:
        best_atoms: lowest-energy evaluated structure (template and mobile atoms), or None.
        best_energy: its energy in eV (``inf`` if nothing succeeded).
        n_evaluations: energy evaluations spent, failed ones included.
        run_dir: where everything was written.
        history: one metrics dict per finished iteration (the lines of ``log.jsonl``).
    """

    best_atoms: object
    best_energy: float
    n_evaluations: int
    run_dir: Path
    history: list


def _generator(seed: int, *parts) -> torch.Generator:
    key = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


def _default_out(system) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{system.name}-{stamp}"


class Search:
    """A GO-Diff search of one system, writing everything to a run directory.

    Args:
        system: a :class:`godiff.system.System`, a preset name, a YAML path or a dict.
        config: settings; keyword ``overrides`` replace single fields (also sampler fields).
        out: run directory (must not hold a run; created when :meth:`run` starts, so building a
            search writes nothing). Default ``runs/<system>-<time>``.
        calculator: an ASE calculator object to use instead of the system's energy spec.
        model: a pretrained :class:`ScoreModel` to start from (its architecture is kept).
        executor: a :class:`concurrent.futures.Executor` to evaluate on (e.g. a Dask cluster's,
            :func:`godiff.cluster.dask_executor`); the caller owns it. Default: ``workers``
            processes of this machine.
        device: where the network samples and trains: ``"cpu"`` (default), ``"cuda"`` or
            ``"auto"`` (:mod:`godiff.device`); a run directory does not record it.

    Example:
        >>> import godiff
        >>> result = godiff.Search("lj13", iterations=1, samples=4, train_steps=2,
        ...                        steps=5, out=tmp_path / "run").run()   # doctest: +SKIP
    """

    def __init__(self, system, *, config: SearchConfig | None = None, out=None, calculator=None, model: ScoreModel | None = None, parent: str | None = None, command: str | None = None, executor=None, device=None, _run: RunDir | None = None, **overrides):
        from godiff.device import resolve_device
        from godiff.system import load_system

        self.system = load_system(system)
        self.executor = executor
        self.device = resolve_device(device)
        self.config = (config or SearchConfig()).with_overrides(**overrides)
        self.calculator = calculator
        self.parent = parent
        self.pretrained = model is not None
        score_config = model.config if model is not None else (self.config.score or ScoreConfig.for_length_scale(self.system.bond_length()))
        self.config = replace(self.config, score=score_config)
        self.schedule = ExponentialSchedule(self.config.temperature_start, self.config.temperature_end, self.config.iterations)
        self.template = self.system.template_atoms()
        self.n_template = 0 if self.template is None else len(self.template)
        if model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                model = ScoreModel(score_config)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
        self.buffer = ReplayBuffer(self.config.buffer_size)
        self.memory = ForceMemory(self.system.n_mobile)
        self.force_scale_set = self.pretrained
        self.energy_shift_anchored = not self.pretrained
        self.best_energy = math.inf
        self.best_id = None
        self.n_evaluations = 0
        self.next_iteration = 0
        self.sampler = Sampler.for_system(self.model, self.system, self.config.sampler, device=self.device)
        self.domain, self.sde, self.graph = self.sampler.domain, self.sampler.sde, self.sampler.graph
        self.trainer = Trainer(self.model, self.optimizer, self.sampler, self.config)
        self._rebuild = False
        self._restored_from_checkpoint = False
        # the energy function is built and checked before the run directory exists, so a broken
        # one (a missing model file, an offline download) leaves nothing behind to block --out
        self._evaluator = self._open_evaluator()
        self._to_create = None  # the manifest of a new run, written when it starts
        if _run is not None:
            self.run_dir = _run
        else:
            self.run_dir = RunDir(out or _default_out(self.system))
            RunDir.check_free(self.run_dir.path)  # refused now, created (and locked) by run()
            self._to_create = self._manifest(command)

    def _create_run_dir(self) -> None:
        """Make the run directory of a new search: its files, its lock and, from a pretrained
        model, the weights it starts from."""
        self.run_dir = RunDir.create(self.run_dir.path, self._to_create)
        self._to_create = None
        if self.pretrained:
            self.run_dir.save_start_model(self.model.state_tensors())

    def _open_evaluator(self):
        from godiff.energy import Evaluator

        energy = self.calculator if self.calculator is not None else self.system.energy
        evaluator = Evaluator(energy, workers=self.config.workers, executor=self.executor)
        evaluator.check()
        return evaluator

    # -- construction helpers -----------------------------------------------------------------
    def _manifest(self, command: str | None) -> RunManifest:
        energy = self.system.energy if self.calculator is None else {"calculator": "python", "class": type(self.calculator).__name__}
        return RunManifest(
            godiff_version=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            command=command or " ".join(shlex.quote(a) for a in sys.argv),
            system=self.system.to_dict(),
            energy=energy,
            search=self.config.to_dict(),
            sde=self.sde.to_dict(),
            pretrained=self.pretrained,
            parent=self.parent,
        )

    # -- resume -------------------------------------------------------------------------------
    @classmethod
    def resume(cls, path, *, calculator=None, read_only: bool = False, from_checkpoint: int | None = None,
               rebuild_database: bool = False, executor=None, device=None, **overrides) -> "Search":
        """Reopen a run directory and restore its last checkpoint (call :meth:`run` to continue).

        ``overrides`` may change only ``workers`` and ``iterations``; a changed setting is written
        back to ``run.json``. More iterations re-spread the annealing over the new count, so the
        remaining iterations cool more slowly than the original plan. ``read_only=True`` loads the
        last checkpoint without writing anything and without taking the run's lock (to inspect or
        measure a run still in progress).

        Every check comes before any write: the run's lock (another live process refuses it,
        :class:`~godiff.errors.RunLockedError`), the checkpoint's digests and the database
        against the checkpoint's count (:class:`~godiff.errors.CheckpointError`, exit 4).
        ``from_checkpoint=N`` restores checkpoint N instead of the last one (the fall-back from
        a corrupt one; the evaluations made after it are reused, not paid again), and
        ``rebuild_database=True`` accepts a lost or short database: the saved structures of the
        finished iterations that have no row are evaluated again when the run continues.
        """
        from godiff.system import System

        run = RunDir.open(path, lock=not read_only)
        try:
            manifest = run.manifest
            allowed = {"workers", "iterations"}
            bad = {k for k, v in overrides.items() if v is not None} - allowed
            if bad:
                raise ConfigError(f"resume: cannot change {sorted(bad)} of an existing run")
            if manifest.uses_calculator_object and calculator is None:
                raise ConfigError(f"{path}: this run used a Python calculator object ({manifest.energy.get('class')}); pass it again to resume")
            if not manifest.search:
                raise NotARunError(f"{path}: not a godiff search (a {manifest.method or 'benchmark'} run); it cannot be resumed")
            system = System.from_dict(manifest.system)
            config = SearchConfig.from_dict(manifest.search)
            search = cls(system, config=config, calculator=calculator, parent=manifest.parent, executor=executor, device=device,
                         _run=run, **overrides)
            search._restore(read_only=read_only, from_checkpoint=from_checkpoint, rebuild=rebuild_database)
        except BaseException:
            run.release()
            raise
        if search.config.to_dict() != config.to_dict() and not read_only:
            run.update_manifest(search=search.config.to_dict())
        return search

    def _restore(self, *, read_only: bool = False, from_checkpoint: int | None = None, rebuild: bool = False) -> None:
        # read and check everything first ...
        last = self._checkpoint_to_restore(from_checkpoint)
        tensors, state = self._load_checkpoint(last) if last is not None else (None, None)
        rows = self._rows_to_restore(last, state, rebuild)
        if last is not None:
            try:
                self.model.load_state_dict(tensors["model"], strict=True)
                self.optimizer.load_state_dict(unflatten_optimizer(tensors["optimizer"], state["optimizer"]))
            except (KeyError, RuntimeError, ValueError) as exc:
                raise CheckpointError(f"{self.run_dir.path}: checkpoint iter-{last:04d} does not fit this run ({exc})") from exc
            self.buffer = ReplayBuffer.from_state(self.config.buffer_size, {k: v.numpy() for k, v in tensors.get("buffer", {}).items()})
            self.force_scale_set = bool(state.get("force_scale_set", True))
            self.energy_shift_anchored = bool(state.get("energy_shift_anchored", True))
            self.next_iteration = last + 1
        elif self.run_dir.manifest.pretrained:
            self.model.load_state_dict(self.run_dir.load_start_model(), strict=True)
            self.pretrained = self.force_scale_set = True
            self.energy_shift_anchored = False
        # ... then write
        if last is not None and not read_only:
            self._repair_log(last, state.get("log"))
        self._restored_from_checkpoint = last is not None
        self._absorb_history(rows, write=not read_only)
        log.info("resumed %s at iteration %d (%d evaluations on disk)", self.run_dir.path, self.next_iteration, len(rows))

    def _load_checkpoint(self, k: int) -> tuple[dict, dict]:
        """A checkpoint, digests checked; a corrupt one names the earlier one to fall back to."""
        try:
            return self.run_dir.load_checkpoint(k)
        except CheckpointError as exc:
            earlier = [j for j in self.run_dir.checkpoints() if j < k]
            if not earlier:
                raise
            fallback = earlier[-1]
            raise type(exc)(f"{exc}; fall back to checkpoint {fallback} with "
                            f"'godiff resume {shlex.quote(str(self.run_dir.path))} --from-checkpoint {fallback}'") from exc

    def _checkpoint_to_restore(self, wanted: int | None) -> int | None:
        done = self.run_dir.checkpoints()
        if wanted is None:
            return done[-1] if done else None
        if wanted not in done:
            have = ", ".join(str(k) for k in done) or "none"
            raise ConfigError(f"{self.run_dir.path}: no checkpoint {wanted} (checkpoints on disk: {have})")
        return wanted

    def _rows_to_restore(self, last: int | None, state: dict | None, rebuild: bool) -> list:
        """The database rows, checked against the checkpoint; refuse a lost or short database."""
        path = self.run_dir.db_path
        hint = "restore it from a backup, or resume with --rebuild-database to evaluate the saved samples/ of the finished iterations again"
        if not self.run_dir.has_database():
            if not rebuild:
                raise CheckpointError(f"{path}: missing; {hint}")
            self._rebuild = True
            return []
        rows = self.run_dir.rows()
        seen = Counter((int(r.iteration), int(r.sample)) for r in rows)
        twice = sorted(key for key, n in seen.items() if n > 1)
        if twice:
            raise CheckpointError(f"{path}: {len(twice)} evaluations are stored more than once (first: iteration {twice[0][0]}, sample {twice[0][1]})")
        if state is not None:
            expected = int(state.get("n_evaluations", 0))
            have = sum(1 for r in rows if int(r.iteration) <= last)
            if have > expected:
                raise CheckpointError(f"{path}: holds {have} evaluations of iterations 0..{last}, more than the {expected} of checkpoint {last}")
            if have < expected:
                if not rebuild:
                    raise CheckpointError(f"{path}: holds {have} evaluations of iterations 0..{last} where checkpoint {last} counts {expected}; {hint}")
                self._rebuild = True
        return rows

    def _absorb_history(self, rows: list, *, write: bool) -> None:
        """Counters, best and force memory from the rows of the finished iterations, in the order
        an uninterrupted run took them in (iteration, then row id)."""
        self.n_evaluations, self.best_energy, self.best_id = 0, math.inf, None
        self.memory = ForceMemory(self.system.n_mobile)
        kept = sorted((r for r in rows if int(r.iteration) < self.next_iteration), key=lambda r: (int(r.iteration), r.id))
        self._absorb(kept, into_buffer=not self._restored_from_checkpoint, write=write)

    def _rebuild_database(self, evaluator, emit) -> None:
        """Evaluate again the saved structures of finished iterations that have no row."""
        if not self.run_dir.has_database():
            self.run_dir.create_database()
        todo = []
        for k in range(self.next_iteration):
            samples = self.run_dir.load_samples(k)
            if samples is None:
                raise CheckpointError(f"{self.run_dir.path}: cannot rebuild the database: samples of iteration {k} are missing")
            todo.append((k, samples, len(samples) - len(self.run_dir.done_samples(k))))
        log.warning("rebuilding %s: evaluating %d saved structures of iterations 0..%d again",
                    self.run_dir.db_path, sum(n for _, _, n in todo), self.next_iteration - 1)
        for k, samples, _ in todo:
            self._evaluate(k, samples, self.schedule.temperature(k), evaluator, emit)
        self._absorb_history(self.run_dir.rows(), write=True)
        self._rebuild = False

    def _repair_log(self, last: int, record: dict | None) -> None:
        lines = [r for r in self.run_dir.read_log() if r.get("iteration", -1) <= last]
        if record is not None and not any(r.get("iteration") == last for r in lines):
            lines.append(record)
        self.run_dir.rewrite_log(lines)

    # -- data from rows -----------------------------------------------------------------------
    def _absorb(self, rows: list, *, into_buffer: bool, write: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Take finished evaluations into the counters, best, force memory (and buffer)."""
        self.n_evaluations += len(rows)
        ok = [r for r in rows if r.ok and r.get("energy") is not None]
        if not ok:
            return np.zeros(0), np.zeros(0)
        pos = np.stack([r.positions[self.n_template:] for r in ok])
        energies = np.array([r.energy for r in ok])
        forces = np.stack([r.forces[self.n_template:] for r in ok])
        ids = np.array([r.id for r in ok])
        self.memory.add(pos, forces, energies)
        if into_buffer:
            self.buffer.add(pos, energies, ids)
        i = int(np.argmin(energies))
        if energies[i] < self.best_energy:
            self.best_energy = float(energies[i])
            self.best_id = int(ids[i])
            if write:
                self.run_dir.write_best(ok[i].toatoms(), self.best_energy, evaluation_id=self.best_id)
        return energies, ids

    # -- the loop -----------------------------------------------------------------------------
    def run(self, *, progress=None, stop=None) -> Result:
        """Run the remaining iterations; returns the :class:`Result`.

        ``stop(search) -> bool``, if given, is asked after each finished iteration (checkpoint
        written); True ends the run there, e.g. once a benchmark has seen its success
        (:class:`godiff.bench.success.SuccessWatch`). A stopped run resumes like any other.
        """
        emit = progress or (lambda event: None)
        evaluator, self._evaluator = self._evaluator or self._open_evaluator(), None
        if self._to_create is not None:
            self._create_run_dir()
        evaluator.scratch = self.run_dir.path / "scratch"  # a file-writing calculator's directories
        self.run_dir.lock()
        try:
            with evaluator:
                if self._rebuild:
                    self._rebuild_database(evaluator, emit)
                for k in range(self.next_iteration, self.config.iterations):
                    self._iteration(k, evaluator, emit)
                    if stop is not None and stop(self):
                        break
            return self.result()
        finally:
            self.run_dir.release()

    def result(self) -> Result:
        best_atoms = None
        if self.best_id is not None:
            best_atoms = self.run_dir.get_row(self.best_id).toatoms()
        return Result(best_atoms, self.best_energy, self.n_evaluations, self.run_dir.path, self.run_dir.read_log())

    def _iteration(self, k: int, evaluator, emit) -> None:
        temperature = self.schedule.temperature(k)
        times = {}
        emit({"event": "phase", "iteration": k, "phase": "sampling", "temperature": temperature})
        t0 = time.perf_counter()
        samples = self.run_dir.load_samples(k)
        if samples is None:
            samples = self._sample(k)
            self.run_dir.save_samples(k, samples)
        times["sampling"] = time.perf_counter() - t0

        emit({"event": "phase", "iteration": k, "phase": "evaluating", "temperature": temperature})
        t0 = time.perf_counter()
        self._evaluate(k, samples, temperature, evaluator, emit)
        rows = self.run_dir.rows(k)
        n_failed = sum(1 for r in rows if not r.ok)
        if n_failed > self.config.max_failed_fraction * len(rows):
            first = next((r.data.get("error") for r in rows if not r.ok), "?")
            raise EvaluationFailureError(
                f"{n_failed} of {len(rows)} evaluations failed in iteration {k}; first error: {first}"
            )
        energies, _ = self._absorb(rows, into_buffer=True)
        times["evaluation"] = time.perf_counter() - t0

        emit({"event": "phase", "iteration": k, "phase": "training", "temperature": temperature})
        t0 = time.perf_counter()
        losses = self._train(k, temperature)
        times["training"] = time.perf_counter() - t0

        record = {
            "iteration": k,
            "temperature": temperature,
            "n_evaluations": self.n_evaluations,
            "n_failed": n_failed,
            "best_energy": self.best_energy,
            "iteration_min": float(energies.min()) if len(energies) else None,
            "iteration_median": float(np.median(energies)) if len(energies) else None,
            "buffer_max": float(self.buffer.energies.max()) if len(self.buffer) else None,
            "seconds": times,
            **losses,
        }
        self._checkpoint(k, record)
        self.run_dir.append_log(record)
        emit({"event": "iteration", **record})

    def _sample(self, k: int) -> np.ndarray:
        gen = _generator(self.config.seed, k, "sample")
        n = self.config.first_samples if k == 0 and self.config.first_samples else self.config.samples
        if k == 0 and not self.pretrained:
            x = self.domain.sample_uniform((n, self.system.n_mobile), gen)
            x = self.sampler.finish(x)
        else:
            x = self.sampler.sample(n, generator=gen)
        return x.double().numpy()

    def _evaluate(self, k, samples, temperature, evaluator, emit) -> None:
        done = self.run_dir.done_samples(k)
        todo = [i for i in range(len(samples)) if i not in done]
        if not todo:
            return
        structures = [self.system.atoms(samples[i]) for i in todo]
        count = [self.n_evaluations + len(done)]

        def on_result(j, atoms, evaluation):
            self.run_dir.record(atoms, evaluation, iteration=k, sample=todo[j], temperature=temperature)
            count[0] += 1
            emit({"event": "evaluated", "iteration": k, "n_evaluations": count[0],
                  "energy": evaluation.energy if evaluation.ok else None})

        evaluator.evaluate(structures, on_result=on_result)

    def _set_force_scale(self) -> None:
        """Output scales of the force and energy heads, set once from the first data.

        Forces: RMS of the (clipped) force components. Energies: shift at the median, scale the
        standard deviation of energies capped at that median (the low end that ranking needs).
        Fixed afterwards, so that the meaning of the network's outputs never changes mid-run.
        """
        f = torch.as_tensor(self.memory.forces, dtype=torch.float32)
        norm = f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        f = f * torch.clamp(self.config.force_clip / norm, max=1.0)
        self.model.force_scale.fill_(float(f.pow(2).mean().sqrt().clamp_min(1e-2)))
        e = np.asarray(self.memory.energies, dtype=float)
        median = float(np.median(e))
        self.model.energy_shift.fill_(median)
        self.model.energy_scale.fill_(float(max(np.minimum(e, median).std(), 1e-2)))
        self.force_scale_set = True

    def _anchor_energy_shift(self) -> None:
        """Move a pretrained model's energy shift onto this search's energies, once, from its first data.

        The shift is an additive reference that belongs to the energy function (and the atom
        count) the model was trained on: a Pt island model trained under EMT predicts about
        +46 eV where CHGNet gives -446 eV, and an energy loss of that size (1,000 in units of
        the scale, against 0.01 from scratch) overwrote what the model knew in its first
        training steps. Adding the median residual on the first evaluated structures removes
        the offset and keeps every relative prediction, so the ranking is unchanged.
        """
        with torch.no_grad():
            positions = torch.as_tensor(self.memory.positions, dtype=torch.float32)
            predicted = self.sampler.predicted_energy(positions).double().numpy()
        residual = float(np.median(np.asarray(self.memory.energies, dtype=float) - predicted))
        self.model.energy_shift += residual
        self.energy_shift_anchored = True
        log.info("energy shift of the pretrained model moved by %+.4f eV onto this energy function", residual)

    def _train(self, k: int, temperature: float) -> dict:
        cfg = self.config
        if len(self.buffer) == 0 or cfg.train_steps == 0:
            return {"loss_dsm": None, "loss_force": None, "loss_energy": None}
        if not self.force_scale_set and len(self.memory):
            self._set_force_scale()
        if not self.energy_shift_anchored and len(self.memory):
            self._anchor_energy_shift()
        data = TrainingData.at_temperature(self.buffer, self.memory, temperature)
        return self.trainer.train(data, cfg.train_steps, _generator(cfg.seed, k, "train")).as_log()

    def _checkpoint(self, k: int, record: dict) -> None:
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        buffer = {key: torch.as_tensor(v) for key, v in self.buffer.state().items()}
        state = {
            "iteration": k,
            "n_evaluations": self.n_evaluations,
            "best_energy": self.best_energy,
            "force_scale_set": self.force_scale_set,
            "energy_shift_anchored": self.energy_shift_anchored,
            "optimizer": opt_meta,
            "rng": {"scheme": "sha256(seed, iteration, phase) -> torch.Generator", "seed": self.config.seed},
            "log": record,
        }
        self.run_dir.save_checkpoint(k, {"model": self.model.state_dict(), "optimizer": opt_tensors, "buffer": buffer}, state)
