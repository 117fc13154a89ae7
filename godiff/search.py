"""The self-sampling loop: sample, evaluate, buffer, train at the current temperature, anneal.

Iteration k:

1. **Sample** structures. The first iteration of a search from an untrained model draws from the
   uniform prior over the box (an untrained network's samples are noise anyway, so we do not pay
   for running it); later iterations (and all iterations of a search started from a pretrained
   model) run the reverse diffusion of :mod:`godiff.sampler`, draw ``oversample`` candidates per
   structure and pick the ones to evaluate (:mod:`godiff.acquisition`: a lower confidence bound,
   duplicates of evaluated structures skipped; ``acquisition: energy`` ranks by predicted energy
   alone). The structures are saved to the run directory before any is evaluated.
2. **Evaluate** each through the one :class:`godiff.energy.Evaluator`; every result is written to
   ``evaluations.db`` the moment it arrives. A fixed batch (``samples``) is one round; the
   adaptive batch repeats 1-2 in rounds of ``min_samples`` until the ESS of its Boltzmann weights
   at the sampling temperature reaches ``target_ess`` or it holds ``max_samples``
   (:class:`godiff.schedule.BatchSize`); after each round, ``polish`` structures move the best
   structure so far along its real forces (:mod:`godiff.polish`). The budget cuts the last round.
3. **Buffer** the successful ones (:mod:`godiff.buffer`); keep every successful structure's forces
   for the force head.
4. **Train** at temperature T_k (:mod:`godiff.schedule`: the adaptive schedule sets it from the
   batch's energies, the exponential one from k): the Boltzmann-weighted denoising loss on the
   buffer plus ``force_weight`` times the force loss on all evaluated data, for ``train_steps``
   steps or until the gradients stop agreeing (:class:`godiff.train.AgreementStop`).
5. **Checkpoint** the model, optimizer and buffer, append a line to ``log.jsonl``.

The run stops at its ``budget`` of evaluations, its ``patience`` (evaluations without a new best lower
by more than ``improvement``: :meth:`Search.stalled`, which also sets off the ``reheat``),
its ``iterations``, or when the model proposes nothing that was not evaluated already; why is
written to ``stopped.json``. Random numbers come from generators seeded by (seed, iteration,
phase, round), so a run resumed from any checkpoint or mid-round draws exactly what the
uninterrupted run would have drawn.

What was measured for the defaults is in the docstrings of :mod:`godiff.schedule`,
:mod:`godiff.acquisition` and :mod:`godiff.train`, and in docs/benchmarks/index.md.

The loop never prints; it reports progress by calling ``progress(event: dict)``.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from godiff import __version__
from godiff.acquisition import Acquisition, Descriptor, calibration, nearest_distances, uncertainty
from godiff.buffer import ForceMemory, ReplayBuffer
from godiff.candidates import Candidates, random_stream
from godiff.checkpoint import Checkpointing
from godiff.config import (  # noqa: F401  (re-exported: godiff.search.SearchConfig is the public name)
    ACQUISITIONS,
    LEGACY,
    PRESETS,
    RETIRED,
    SAMPLER_ALIASES,
    SCHEDULES,
    TRAIN_STOPS,
    SearchConfig,
)
from godiff.cost import CandidateCount, CostMeter, network_seconds
from godiff.errors import ConfigError, EvaluationFailureError
from godiff.manifest import RunManifest
from godiff.minima import distinct_minima, minima_xyz
from godiff.polish import Polish
from godiff.rounds import Rounds
from godiff.rundir import RunDir, succeeded
from godiff.sampler import Sampler
from godiff.schedule import AdaptiveSchedule, BatchSize, ExponentialSchedule, effective_sample_size, heat_capacity
from godiff.score import ScoreConfig, ScoreModel
from godiff.stopping import RunStop
from godiff.train import AgreementStop, Trainer, TrainingData, anchor_energy_shift, set_output_scales

log = logging.getLogger(__name__)

__all__ = ["SearchConfig", "Search", "Result", "PRESETS"]


@dataclass
class Result:
    """What a search returns.

    Attributes:
        best_atoms: lowest-energy evaluated structure (template and mobile atoms), or None.
        best_energy: its energy in eV (``inf`` if nothing succeeded).
        n_evaluations: energy evaluations spent, failed ones included.
        run_dir: where everything was written.
        history: one metrics dict per finished iteration (the lines of ``log.jsonl``).
        stop_reason: why the run stopped (``budget``, ``patience``, ``iterations``,
            ``converged``, ``stopped by the caller``; also in the run's ``stopped.json``).
    """

    best_atoms: object
    best_energy: float
    n_evaluations: int
    run_dir: Path
    history: list
    stop_reason: str | None = None


@dataclass
class Iteration:
    """What the steps of one iteration share: its index ``k``, the temperature its samples are
    drawn at (the one the model last trained at; ``None`` before any training), the evaluator, where
    progress events go, and its seconds per phase (``log.jsonl``'s ``seconds``)."""

    k: int
    sampled_at: float | None
    evaluator: object
    emit: Callable[[dict], None]
    times: dict = field(default_factory=lambda: {"sampling": 0.0, "evaluation": 0.0})

    def phase(self, name: str) -> None:
        """Report that the iteration enters phase ``name`` (sampling, evaluating, polishing)."""
        self.emit({"event": "phase", "iteration": self.k, "phase": name, "temperature": self.sampled_at})


def _cost_per_evaluation(times: dict, calculator: float, evaluations: int) -> dict:
    """An iteration's seconds per evaluation: the network's (sampling and training) and the
    calculator's (``calculator``, its timed calls, over the ``evaluations``)."""
    if not evaluations:
        return {"network_per_evaluation": None, "calculator_per_evaluation": None}
    return {
        "network_per_evaluation": network_seconds(times) / evaluations,
        "calculator_per_evaluation": calculator / evaluations,
    }


def _default_out(system) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{system.name}-{stamp}"


class Search(Rounds, Checkpointing, Candidates):
    """A GO-Diff search of one system, writing everything to a run directory.

    Args:
        system: a :class:`godiff.system.System`, a shipped system's name, a YAML path or a dict.
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
        trust_energy: let the system's energy spec load a pickled model or name a program, a
            path or a directory (:mod:`godiff.trust`, the command line's ``--trust-energy``);
            ``run.json`` records it, and a resume must be given it again.

    Example:
        >>> import godiff
        >>> result = godiff.Search("lj13", iterations=1, samples=4, train_steps=2,
        ...                        steps=5, out=tmp_path / "run").run()   # doctest: +SKIP
    """

    def __init__(
        self,
        system,
        *,
        config: SearchConfig | None = None,
        out=None,
        calculator=None,
        model: ScoreModel | None = None,
        parent: str | None = None,
        command: str | None = None,
        executor=None,
        device=None,
        trust_energy: bool = False,
        _run: RunDir | None = None,
        **overrides,
    ):
        from godiff.device import resolve_device
        from godiff.system import load_system

        self.system = load_system(system)
        self.executor = executor
        self.device = resolve_device(device)
        self.config = (config or SearchConfig()).with_overrides(**overrides)
        self.calculator = calculator
        self.trust_energy = bool(trust_energy)
        self.parent = parent
        self.pretrained = model is not None
        score_config = self._score_config(model)
        self.config = replace(self.config, score=score_config)
        self._set_controllers()
        self.template = self.system.template_atoms()
        self.n_template = 0 if self.template is None else len(self.template)
        if model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                model = ScoreModel(score_config)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        self.buffer = ReplayBuffer(self.config.buffer_size)
        self.memory = ForceMemory(self.system.n_mobile)
        self.force_scale_set = self.pretrained
        self.energy_shift_anchored = not self.pretrained
        self.best_energy = math.inf
        self.best_id = None
        self.best_at = 0  # evaluations spent when the best was found
        self.improved_at, self.improved_energy = (
            0,
            math.inf,
        )  # ... when it last improved by more than T_end, and to what
        self.n_evaluations = 0
        self.next_iteration = 0
        self.temperature: float | None = None  # of the last trained iteration
        self.head_rms: float | None = None  # the energy head's error on the last batch, before training on it
        self.polish_step = self.config.polish_step or 0.1 * self.system.bond_length()  # the polish's trust step, Å
        self.stop_reason: str | None = None
        self.cost = CostMeter()  # what the calculator and the network have cost so far (godiff.cost)
        self.oversample = self.config.sampler.oversample  # candidates per evaluation, this iteration
        self.drawn = 0  # candidates drawn this iteration
        self.polished_id: int | None = None  # the evaluation the polish moved last
        self.polish_failures = 0  # polishes of it in a row that found nothing lower
        self.relaxed_at: int | None = None  # evaluations made when relax_stalled last relaxed
        self.empty_iterations = 0  # the last finished iterations in a row that evaluated nothing
        self.descriptors = Descriptor.for_system(self.system)
        self.seen = np.zeros((0, 0))  # descriptors of every evaluated structure
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

    def _score_config(self, model) -> ScoreConfig:
        """The network's architecture: a zoo model's own, else the configured one (or the system's
        defaults, :meth:`ScoreConfig.for_length_scale`) with ``score_settings`` over it."""
        settings = self.config.score_settings
        if model is not None:
            if settings:
                raise ConfigError(
                    f"score.{next(iter(settings))}: a search from a zoo model keeps the model's architecture"
                )
            return model.config
        if self.config.score is not None:
            return replace(self.config.score, **settings)
        return ScoreConfig.for_length_scale(self.system.bond_length(), self.system.n_mobile, **settings)

    def _set_controllers(self) -> None:
        """The schedule, batch size and training stop of the settings (again after a resume's changes)."""
        cfg = self.config
        if cfg.schedule == "exponential":
            self.schedule = ExponentialSchedule(cfg.temperature_start or 5.0, cfg.temperature_end, cfg.iterations)
        else:
            self.schedule = AdaptiveSchedule(
                cfg.temperature_end,
                cfg.temperature_factor,
                cfg.cooling_fast,
                cfg.cooling_slow,
                cfg.temperature_start,
                cfg.reheat,
            )
        self.batch = BatchSize(cfg.min_samples, cfg.max_samples, cfg.target_ess)
        self.acquisition = Acquisition(cfg.kappa, cfg.uncertainty_length, cfg.duplicate_distance)
        self.polish = Polish(points=cfg.polish)
        self.run_stop = RunStop(cfg.iterations, cfg.budget, cfg.patience, cfg.improvement_threshold())
        self.candidate_count = CandidateCount(cfg.network_share, cfg.min_oversample, cfg.sampler.oversample)

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
        evaluator = Evaluator(
            energy, workers=self.config.workers, executor=self.executor, trust_energy=self.trust_energy
        )
        evaluator.check()
        return evaluator

    # -- construction helpers -----------------------------------------------------------------
    def _manifest(self, command: str | None) -> RunManifest:
        energy = (
            self.system.energy
            if self.calculator is None
            else {"calculator": "python", "class": type(self.calculator).__name__}
        )
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
            trust_energy=self.trust_energy,
        )

    # -- data from rows -----------------------------------------------------------------------
    def _absorb(self, rows: list, *, into_buffer: bool, write: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Take finished evaluations into the counters, best, force memory (and buffer)."""
        before = self.n_evaluations
        self.n_evaluations += len(rows)
        if self.config.acquisition == "lcb" and rows:
            self.seen = self._with_seen(self.seen, np.stack([r.positions[self.n_template :] for r in rows]))
        ok = [r for r in rows if succeeded(r)]
        if not ok:
            return np.zeros(0), np.zeros(0)
        pos = np.stack([r.positions[self.n_template :] for r in ok])
        energies = np.array([r.energy for r in ok])
        forces = np.stack([r.forces[self.n_template :] for r in ok])
        ids = np.array([r.id for r in ok])
        self.memory.add(pos, forces, energies)
        if into_buffer:
            self.buffer.add(pos, energies, ids)
        i = int(np.argmin(energies))
        if energies[i] < self.best_energy:
            self.best_energy = float(energies[i])
            self.best_id = int(ids[i])
            self.best_at = before + 1 + next(j for j, r in enumerate(rows) if r.id == self.best_id)
            self._note_improvements(rows, before)
            if write:
                self.run_dir.write_best(ok[i].toatoms(), self.best_energy, evaluation_id=self.best_id)
        return energies, ids

    def _note_improvements(self, rows: list, before: int) -> None:
        """Move :attr:`improved_at` to each of ``rows`` (evaluations ``before + 1`` on) that lies
        more than :meth:`SearchConfig.improvement_threshold` below the last improvement."""
        for j, row in enumerate(rows):
            if succeeded(row) and row.energy < self.improved_energy - self.config.improvement_threshold():
                self.improved_at, self.improved_energy = before + 1 + j, float(row.energy)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, *, progress=None, stop=None) -> Result:
        """Run until the budget, the patience or the iterations are spent; returns the :class:`Result`.

        ``stop(search) -> bool``, if given, is asked after each finished iteration (checkpoint
        written); True ends the run there, e.g. once a benchmark has seen its success
        (:class:`godiff.bench.success.SuccessWatch`). Why the run stopped is written to the run
        directory (``stopped.json``) and kept in :attr:`stop_reason`. A stopped run resumes like
        any other (with a larger ``budget`` or ``patience``, or more ``iterations``).
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
                self.stop_reason = self.spent()
                k = self.next_iteration
                while self.stop_reason is None:
                    self._iteration(k, evaluator, emit)
                    k += 1
                    self.stop_reason = self.spent() or self._converged()
                    if self.stop_reason is None and stop is not None and stop(self):
                        self.stop_reason = "stopped by the caller"
                self.run_dir.write_minima(minima_xyz(distinct_minima(self.system, self.run_dir.rows())))
                self.run_dir.write_stop(self._stop_record())
            return self.result()
        finally:
            self.run_dir.release()

    def spent(self) -> str | None:
        """Why the run must stop now (``None``: it goes on; :class:`godiff.stopping.RunStop`)."""
        return self.run_stop.reason(
            evaluations=self.n_evaluations, stalled=self.stalled(), next_iteration=self.next_iteration
        )

    def _converged(self) -> str | None:
        """``converged`` once the model has proposed nothing new for as long as the schedule
        allows: one iteration, or two where it can heat (the first empty one reheats)."""
        allowed = 2 if self._reheats_when_empty() else 1
        return "converged" if self.empty_iterations >= allowed else None

    def _reheats_when_empty(self) -> bool:
        return isinstance(self.schedule, AdaptiveSchedule) and self.schedule.reheat > 0

    def stalled(self) -> int:
        """Evaluations since the best energy last improved (:meth:`SearchConfig.improvement_threshold`)."""
        return self.n_evaluations - self.improved_at

    def stop_message(self, reason: str | None = None) -> str:
        """``reason`` (default: :attr:`stop_reason`) in words."""
        return self.run_stop.message(reason or self.stop_reason)

    def _stop_record(self) -> dict:
        return {
            "reason": self.stop_reason,
            "message": self.stop_message(),
            "iterations": self.next_iteration,
            "n_evaluations": self.n_evaluations,
            "best_energy": self.best_energy,
            "best_at": self.best_at,
            "improved_at": self.improved_at,
        }

    def result(self) -> Result:
        best_atoms = None
        if self.best_id is not None:
            best_atoms = self.run_dir.get_row(self.best_id).toatoms()
        return Result(
            best_atoms,
            self.best_energy,
            self.n_evaluations,
            self.run_dir.path,
            self.run_dir.read_log(),
            self.stop_reason,
        )

    def _iteration(self, k: int, evaluator, emit) -> int:
        """One iteration; returns how many structures it evaluated."""
        it = Iteration(k, self.temperature, evaluator, emit)  # sampled at the model's training temperature
        sampled_at, times = it.sampled_at, it.times
        self.oversample, self.drawn = self.candidate_count.oversample(self.cost), 0
        self._batch(it)
        t0 = time.perf_counter()
        rows = self.run_dir.rows(k)
        n_failed = sum(1 for r in rows if not r.ok)
        if n_failed > self.config.max_failed_fraction * len(rows):
            first = next((r.data.get("error") for r in rows if not r.ok), "?")
            raise EvaluationFailureError(
                f"{n_failed} of {len(rows)} evaluations failed in iteration {k}; first error: {first}"
            )
        sampled = [row for row in rows if not row.get("polish")]
        head = self._calibrate(k, sampled)
        self._absorb(rows, into_buffer=True)
        energies = np.array([row.energy for row in sampled if succeeded(row)])
        times["evaluation"] += time.perf_counter() - t0
        temperature = self._next_temperature(k, energies, sampled_at, empty=not rows)

        emit({"event": "phase", "iteration": k, "phase": "training", "temperature": temperature})
        t0 = time.perf_counter()
        losses = self._train(k, temperature)
        times["training"] = time.perf_counter() - t0
        self.temperature, self.next_iteration = temperature, k + 1
        self.empty_iterations = 0 if rows else self.empty_iterations + 1
        calculator = sum(float((r.data or {}).get("seconds", 0.0)) for r in rows)  # its timed calls
        self.cost.add_iteration(
            calculator=calculator,
            evaluations=len(rows),
            sampling=times["sampling"],
            candidates=self.drawn,
            training=times["training"],
        )

        record = {
            "iteration": k,
            "temperature": temperature,
            "temperature_sampled": sampled_at,
            "samples": len(rows),
            "polished": len(rows) - len(sampled),
            "polish_step": self.polish_step,
            "oversample": self.oversample,
            "ess": effective_sample_size(energies, sampled_at) if sampled_at and len(energies) else None,
            "heat_capacity": heat_capacity(energies, sampled_at) if sampled_at and len(energies) else None,
            "n_evaluations": self.n_evaluations,
            "n_failed": n_failed,
            "best_energy": self.best_energy,
            "stalled": self.stalled(),
            "iteration_min": float(energies.min()) if len(energies) else None,
            "iteration_median": float(np.median(energies)) if len(energies) else None,
            "buffer_max": float(self.buffer.energies.max()) if len(self.buffer) else None,
            "seconds": times,
            **_cost_per_evaluation(times, calculator, len(rows)),
            **head,
            **losses,
        }
        self._checkpoint(k, record)
        self.run_dir.append_log(record)
        emit({"event": "iteration", **record})
        return len(rows)

    def _calibrate(self, k: int, rows) -> dict:
        """The energy head's error on this batch before training on it, and the fraction of
        structures within the acquisition's uncertainty (:func:`godiff.acquisition.calibration`)."""
        ok = [r for r in rows if succeeded(r)]
        if self.config.acquisition != "lcb" or not ok or (k == 0 and not self.pretrained):
            return {}
        positions = np.stack([r.positions[self.n_template :] for r in ok])
        with torch.no_grad():
            predicted = self.sampler.predicted_energy(torch.as_tensor(positions, dtype=torch.float32)).double().numpy()
        errors = np.array([r.energy for r in ok]) - predicted
        sigma = uncertainty(
            nearest_distances(self.descriptors(positions), self.seen),
            spread=self._spread(),
            length=self.acquisition.length,
        )
        self.head_rms = float(np.sqrt(np.mean(errors**2)))
        return {"energy_head_rms": self.head_rms, "uncertainty_coverage": calibration(errors, sigma)}

    def _next_temperature(self, k: int, energies: np.ndarray, sampled_at, *, empty: bool = False) -> float:
        """The temperature iteration ``k`` trains at. An iteration that evaluated nothing (every
        candidate duplicated an evaluated structure: the model has collapsed onto what it has
        seen) heats the adaptive schedule at once, as a long stall does, from the spread of the
        latest batches (:meth:`_recent_energies`)."""
        if isinstance(self.schedule, ExponentialSchedule):
            return self.schedule.temperature(k)
        if sampled_at is None:
            return self.schedule.first(energies)
        if empty and self._reheats_when_empty():
            return self.schedule.reheated(self._recent_energies(k))
        return self.schedule.next(sampled_at, energies, stalled=self.stalled())

    def _recent_energies(self, k: int) -> list[float]:
        """The sampled (not polished) energies of the iterations before ``k``, latest first, until
        they number ``min_samples``: the last batch, or the last few where they were small."""
        out: list[float] = []
        for j in range(k - 1, -1, -1):
            out += [row.energy for row in self.run_dir.rows(j) if succeeded(row) and not row.get("polish")]
            if len(out) >= self.config.min_samples:
                break
        return out

    def _train(self, k: int, temperature: float) -> dict:
        cfg = self.config
        if len(self.buffer) == 0 or cfg.train_steps == 0:
            return {"loss_dsm": None, "loss_force": None, "loss_energy": None}
        if not self.force_scale_set and len(self.memory):
            set_output_scales(self.model, self.memory, force_clip=cfg.force_clip)
            self.force_scale_set = True
        if not self.energy_shift_anchored and len(self.memory):
            anchor_energy_shift(self.model, self.sampler, self.memory)
            self.energy_shift_anchored = True
        data = TrainingData.at_temperature(self.buffer, self.memory, temperature)
        stop = (
            AgreementStop(min_steps=cfg.train_min_steps, patience=cfg.train_patience)
            if cfg.train_stop == "agreement"
            else None
        )
        return self.trainer.train(data, cfg.train_steps, random_stream(cfg.seed, k, "train"), stop).as_log()
