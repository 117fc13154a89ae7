"""The counting :class:`Evaluator`: every calculation counted, failures recorded, parallel dispatch
through any executor, scratch directories (see :mod:`godiff.energy`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase
import numpy as np
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes

from godiff.energy.calculators import _build, _inside, _mace_mp_0_file, _set_directory, runs_a_program
from godiff.energy.specs import _MAX_ERROR_CHARS, normalize_spec
from godiff.errors import ConfigError, EnergyFunctionError, EvaluationFailureError, one_line, shown
from godiff.trust import check_trusted

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one energy calculation.

    Attributes:
        energy: Potential energy in eV; ``None`` if the calculation failed.
        forces: (n_atoms, 3) float64 forces in eV/Å on every atom, constraints not applied;
            ``None`` if the calculation failed.
        ok: Whether the calculation succeeded with finite energy and forces.
        error: One line: the exception type and message, or ``"non-finite energy"`` /
            ``"non-finite forces"``; ``None`` if ``ok``.
        seconds: Wall time of this calculation in s (not counting building the calculator or
            moving the structure to a worker).
    """

    energy: float | None
    forces: np.ndarray | None
    ok: bool
    error: str | None
    seconds: float


def _one_line(exc: BaseException) -> str:
    """A failed evaluation's error as the database keeps it: the exception's type and message."""
    return one_line(f"{type(exc).__name__}: {exc}", _MAX_ERROR_CHARS)


def _failure(error: str, seconds: float = 0.0) -> Evaluation:
    return Evaluation(energy=None, forces=None, ok=False, error=error, seconds=seconds)


def _bare(atoms: ase.Atoms) -> ase.Atoms:
    """A copy of ``atoms`` without calculator and constraints (what is sent to a worker)."""
    if not isinstance(atoms, ase.Atoms):
        raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
    copy = atoms.copy()
    copy.set_constraint()
    return copy


def writes_files(calc: Calculator) -> bool:
    """Whether ``calc`` works through files in its ``directory`` (ASE's file-IO calculators)."""
    from ase.calculators.calculator import FileIOCalculator
    from ase.calculators.genericfileio import GenericFileIOCalculator

    return isinstance(calc, (FileIOCalculator, GenericFileIOCalculator))


def _compute(calc: Calculator, atoms: ase.Atoms, scratch: str | None = None, isolate: bool = False) -> Evaluation:
    """Energy and forces of a constraint-free ``atoms`` (modified: its calc is set) with ``calc``.

    A calculator that writes files works in its own new directory under ``scratch``, removed
    after a success and kept (named in the error) after a failure; one that runs a program
    (``isolate``, :func:`runs_a_program`) also has that directory as its working directory while
    it calculates. Never raises for a failing calculation.
    """
    directory = None
    if scratch is not None and (isolate or writes_files(calc)):
        directory = Path(scratch).absolute() / f"eval-{uuid.uuid4().hex[:12]}"
        directory.mkdir(parents=True)
        # inside its working directory a calculator is pointed at "." (ASE's LAMMPS builds file
        # names from its directory, which must not hold a path); elsewhere at the directory itself
        _set_directory(calc, "." if isolate else directory)
    with _inside(directory if isolate else None):
        evaluation = _calculate(calc, atoms)
    if directory is not None:
        if evaluation.ok:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            evaluation = _failure(f"{evaluation.error} (its files are kept in {directory})", evaluation.seconds)
    return evaluation


def _calculate(calc: Calculator, atoms: ase.Atoms) -> Evaluation:
    start = time.perf_counter()
    try:
        reset = getattr(calc, "reset", None)  # GPAW's new calculator has none (and checks positions itself)
        if reset is not None:
            reset()  # a new structure always recomputes, whatever the calculator caches
        atoms.calc = calc
        # forces first: a calculator asked for the energy alone may run its program once for it and
        # again for the forces (ASE's Dftb does); asked for forces it keeps the energy of that run
        forces = np.array(atoms.get_forces(), dtype=np.float64, copy=True)
        energy = float(atoms.get_potential_energy())
    except Exception as exc:
        return _failure(_one_line(exc), time.perf_counter() - start)
    finally:
        atoms.calc = None
    seconds = time.perf_counter() - start
    if not math.isfinite(energy):
        return _failure("non-finite energy", seconds)
    if forces.shape != (len(atoms), 3):
        return _failure(f"forces of shape {forces.shape}, expected ({len(atoms)}, 3)", seconds)
    if not np.isfinite(forces).all():
        return _failure("non-finite forces", seconds)
    return Evaluation(energy=energy, forces=forces, ok=True, error=None, seconds=seconds)


# Worker side: calculators built once per (evaluator, thread) and kept.
_WORKER_LOCAL = threading.local()
_WORKER_SOURCES: dict[str, dict[str, Any] | bytes] = {}
_WORKER_CACHE_SIZE = 4


def _worker_register(key: str, source: dict[str, Any] | bytes) -> None:
    """Pool initializer: remember how to build this evaluator's calculator (builds nothing).

    Workers ignore SIGINT: Ctrl-C is the parent's to handle (it cancels queued work), and a
    worker that died of it would only print a second traceback.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_SOURCES[key] = source


def _worker_calculator(
    key: str, source: dict[str, Any] | bytes | None, threads: int | None, scratch: str | None = None
) -> Calculator:
    cache = getattr(_WORKER_LOCAL, "calculators", None)
    if cache is None:
        cache = _WORKER_LOCAL.calculators = collections.OrderedDict()
    if key in cache:
        return cache[key]
    source = source if source is not None else _WORKER_SOURCES[key]
    if isinstance(source, bytes):  # a calculator object the user gave in Python, never one from a file
        try:
            calc = pickle.loads(source)
        except Exception as exc:
            raise EnergyFunctionError(f"the calculator could not be unpickled in a worker: {_one_line(exc)}") from None
    else:
        calc = _build(source, scratch)  # the spec was checked, trust included, by the Evaluator
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    cache[key] = calc
    while len(cache) > _WORKER_CACHE_SIZE:
        cache.popitem(last=False)
    return calc


def _worker_evaluate(
    key: str,
    source: dict[str, Any] | bytes | None,
    atoms: ase.Atoms,
    threads: int | None,
    scratch: str | None = None,
) -> Evaluation:
    """The task run by an executor: one calculation with this worker's calculator."""
    known = source if source is not None else _WORKER_SOURCES[key]
    isolate = isinstance(known, dict) and runs_a_program(known)
    return _compute(_worker_calculator(key, source, threads, scratch), atoms, scratch, isolate)


def worker_context() -> multiprocessing.context.BaseContext:
    """The one safe way godiff starts worker processes: ``forkserver`` (``spawn`` where it is
    missing), never ``fork`` once torch has started threads (see the module docstring). Used by
    the evaluator's pool and the benchmark harness's."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class BudgetExhausted(Exception):
    """An :class:`EvaluatorCalculator`'s budget of evaluations is spent (control flow, not an error)."""


class EvaluatorCalculator(Calculator):
    """An ASE calculator whose every calculation is one counted call of an :class:`Evaluator`.

    The one adapter from godiff's evaluator to ASE (BFGS, basin hopping, AGOX): the evaluator
    counts every call, ``budget`` (evaluations through this calculator) raises
    :class:`BudgetExhausted` before one more is spent, and ``on_result(atoms, evaluation)``
    sees each evaluation the moment it is made (e.g. to write it to a run directory). A failed
    calculation raises :class:`~godiff.errors.EvaluationFailureError`.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, evaluator: Evaluator, *, budget: int | None = None, on_result=None):
        super().__init__()
        self.evaluator = evaluator
        self.budget = budget
        self.on_result = on_result
        self.spent = 0

    def evaluate(self, atoms: ase.Atoms) -> Evaluation:
        """One counted single point of ``atoms`` (failures returned, not raised)."""
        if self.budget is not None and self.spent >= self.budget:
            raise BudgetExhausted()
        evaluation = self.evaluator.single_point(atoms)
        self.spent += 1
        if self.on_result is not None:
            self.on_result(atoms, evaluation)
        return evaluation

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        evaluation = self.evaluate(self.atoms)
        if not evaluation.ok:
            raise EvaluationFailureError(f"energy evaluation failed: {evaluation.error}")
        self.results = {
            "energy": evaluation.energy,
            "free_energy": evaluation.energy,
            "forces": evaluation.forces.copy(),
        }


class Evaluator:
    """The one place where energy is computed: every call counted, failures survived, parallel
    dispatch pluggable.

    Args:
        energy: An energy spec dict (see :func:`normalize_spec`) or an ASE calculator.
        workers: Number of worker processes; ``1`` computes in this process with one calculator
            built once and reused. Ignored when ``executor`` is given.
        executor: Any :class:`concurrent.futures.Executor` (or an object with the same
            ``submit``/``result`` semantics, e.g. a cluster executor) to dispatch calculations
            to; the caller owns it and must keep it open while this evaluator is used.
        scratch: The folder under which a file-writing calculator gets one new directory per
            evaluation (see the module docstring); ``None``: its own ``directory`` as given.
            Workers of another machine need it on a shared file system. A calculator that
            runs a program (:func:`runs_a_program`) is built at its first evaluation, inside it.
        trust_energy: Allow a spec what a shared file may not do (:mod:`godiff.trust`); without
            it such a spec is refused here, before anything is built.

    Attributes:
        spec: The normalized energy spec (see :func:`normalize_spec`), or ``None`` when a
            calculator object was given; record it to rebuild the energy function.
        workers: The number of worker processes asked for.

    Raises:
        EnergyFunctionError: The spec is invalid, the calculator cannot be built (in-process),
            or a calculator object cannot be pickled for the workers.
        ConfigError: ``workers`` is not a positive integer.

    Example:
        >>> from ase.build import fcc111
        >>> with Evaluator({"calculator": "emt"}) as evaluator:
        ...     evaluation = evaluator.single_point(fcc111("Pt", (2, 2, 2), vacuum=6.0))
        >>> evaluation.ok, evaluator.n_calls
        (True, 1)
    """

    def __init__(
        self,
        energy: Mapping[str, Any] | Calculator,
        *,
        workers: int = 1,
        executor: concurrent.futures.Executor | None = None,
        scratch: str | os.PathLike | None = None,
        trust_energy: bool = False,
    ):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, not {shown(workers)}")
        self.workers = workers
        self.scratch = scratch
        self._lock = threading.Lock()
        self._n_calls = 0
        self._n_failed = 0
        self._closed = False
        self._key = uuid.uuid4().hex
        self._calc: Calculator | None = None
        self._source: dict[str, Any] | bytes | None = None
        self._external = executor
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pool_broken = False
        parallel = executor is not None or workers > 1
        self._in_process = not parallel
        self._isolate = False  # whether the calculator runs a program (built and run in scratch)

        if isinstance(energy, BaseCalculator):  # GenericFileIOCalculator (Espresso, ORCA) is no Calculator
            self.spec: dict[str, Any] | None = None
            if parallel:
                try:
                    self._source = pickle.dumps(energy)
                except Exception as exc:
                    raise EnergyFunctionError(
                        f"the calculator {type(energy).__name__} cannot be pickled to send it "
                        f"to workers ({_one_line(exc)}); pass an energy spec dict or use "
                        "workers=1"
                    ) from exc
            else:
                self._calc = energy
        else:
            self.spec = normalize_spec(energy)
            check_trusted(self.spec, trust_energy=trust_energy)
            self._isolate = runs_a_program(self.spec)
            if not parallel:
                if not self._isolate:  # one that runs a program waits for its first evaluation, in scratch
                    self._calc = _build(self.spec)
            else:
                source = dict(self.spec)
                if source["calculator"] == "mace-mp-0":
                    # Fetch once here, so that workers never race on one download.
                    source["model"] = _mace_mp_0_file(source["model"])
                self._source = source

    def __repr__(self) -> str:
        what = self.spec["calculator"] if self.spec else "calculator object"
        where = "executor" if self._external is not None else f"workers={self.workers}"
        return f"Evaluator({what}, {where}, n_calls={self._n_calls}, n_failed={self._n_failed})"

    @property
    def n_calls(self) -> int:
        """Every calculation ever dispatched, failed ones included."""
        return self._n_calls

    @property
    def n_failed(self) -> int:
        """The calculations that failed (an exception, or non-finite energy or forces)."""
        return self._n_failed

    def evaluate(
        self,
        structures: Sequence[ase.Atoms],
        *,
        on_result: Callable[[int, ase.Atoms, Evaluation], None] | None = None,
    ) -> list[Evaluation]:
        """Energy and forces of a batch of structures; a failing calculation is recorded.

        Args:
            structures: The structures; they are not modified (each is evaluated as a copy
                without constraints).
            on_result: Called in this process as ``on_result(index, structure, evaluation)``
                as soon as each result arrives (in completion order when parallel), so a caller
                can persist it before the batch ends. An exception it raises propagates, after
                queued calculations are cancelled (and uncounted).

        Returns:
            One :class:`Evaluation` per structure, in input order.

        Raises:
            EnergyFunctionError: A worker could not build the calculator.
            TypeError: A structure is not an :class:`ase.Atoms`.
        """
        if self._closed:
            raise RuntimeError("this Evaluator is closed")
        structures = list(structures)
        payloads = [_bare(atoms) for atoms in structures]
        if self._in_process:
            if self._calc is None:
                self._calc = _build(self.spec, self._scratch())
            results = []
            for index, (atoms, payload) in enumerate(zip(structures, payloads)):
                with self._lock:
                    self._n_calls += 1
                evaluation = _compute(self._calc, payload, self._scratch(), self._isolate)
                self._record(index, len(structures), evaluation)
                results.append(evaluation)
                if on_result is not None:
                    on_result(index, atoms, evaluation)
            return results
        return self._evaluate_parallel(structures, payloads, on_result)

    def _evaluate_parallel(self, structures, payloads, on_result) -> list[Evaluation]:
        executor, source, threads = self._executor()
        n = len(structures)
        results: list[Evaluation | None] = [None] * n
        futures: dict[concurrent.futures.Future, int] = {}

        def deliver(index: int, evaluation: Evaluation) -> None:
            results[index] = evaluation
            self._record(index, n, evaluation)
            if on_result is not None:
                on_result(index, structures[index], evaluation)

        def outcome(future: concurrent.futures.Future) -> Evaluation:
            try:
                return future.result()
            except EnergyFunctionError:
                with self._lock:
                    self._n_calls -= 1  # no calculation happened: the calculator was not built
                raise
            except Exception as exc:  # infrastructure: a crashed worker, a lost task
                self._pool_broken |= isinstance(exc, BrokenProcessPool)
                return _failure(_one_line(exc))

        try:
            early: list[tuple[int, Evaluation]] = []
            for index, payload in enumerate(payloads):
                with self._lock:
                    self._n_calls += 1
                try:
                    future = executor.submit(_worker_evaluate, self._key, source, payload, threads, self._scratch())
                except Exception as exc:  # a broken or shut-down executor
                    self._pool_broken |= isinstance(exc, BrokenProcessPool)
                    early.append((index, _failure(_one_line(exc))))
                else:
                    futures[future] = index
            for index, evaluation in early:
                deliver(index, evaluation)
            for future in concurrent.futures.as_completed(list(futures)):
                index = futures.pop(future)
                try:
                    evaluation = outcome(future)
                except EnergyFunctionError:
                    # Cancel what is queued, but keep what other workers computed meanwhile.
                    self._cancel(futures)
                    for other in concurrent.futures.as_completed(list(futures)):
                        with contextlib.suppress(EnergyFunctionError):
                            deliver(futures.pop(other), outcome(other))
                    raise
                deliver(index, evaluation)
        finally:
            self._cancel(futures)
        return results  # type: ignore[return-value]

    def _scratch(self) -> str | None:
        return None if self.scratch is None else str(Path(self.scratch).absolute())

    def _cancel(self, futures: dict[concurrent.futures.Future, int]) -> None:
        """Cancel the queued futures (uncounted); the running ones are left in ``futures``."""
        for future in list(futures):
            if future.cancel():
                del futures[future]
                with self._lock:
                    self._n_calls -= 1

    def _record(self, index: int, n: int, evaluation: Evaluation) -> None:
        if not evaluation.ok:
            with self._lock:
                self._n_failed += 1
            logger.warning("evaluation %d of %d failed: %s", index, n, evaluation.error)

    def _executor(self) -> tuple[Any, dict[str, Any] | bytes | None, int | None]:
        """The executor, what a task must carry to build the calculator, and torch threads."""
        if self._external is not None:
            return self._external, self._source, None
        if self._pool is not None and self._pool_broken:
            logger.warning("the worker pool broke; starting a new one")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._pool is None:
            self._pool_broken = False
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=worker_context(),
                initializer=_worker_register,
                initargs=(self._key, self._source),
            )
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return self._pool, None, threads

    def single_point(self, atoms: ase.Atoms) -> Evaluation:
        """One counted calculation of ``atoms`` (energy in eV, forces in eV/Å)."""
        return self.evaluate([atoms])[0]

    def check(self) -> None:
        """Build the energy function once in this process, so that a broken one (a missing
        package or model file, an unreachable download) fails here, before anything is
        written; an in-process evaluator has built it already, and a calculator object is
        taken as it is. The check's calculator is dropped (workers build their own). A
        calculator that runs a program is not built here: it could start that program and
        write files before the run directory exists (:func:`runs_a_program`)."""
        if self._calc is None and self.spec is not None and not self._isolate:
            _build(self._source if isinstance(self._source, dict) else self.spec)

    def as_calculator(self, *, budget: int | None = None, on_result=None) -> EvaluatorCalculator:
        """An ASE calculator backed by this evaluator, for classical methods (BFGS, ...).

        Every energy/forces calculation it does is one counted :meth:`single_point`; ASE's own
        caching means asking for the energy after the forces of the same positions costs
        nothing. A failed calculation raises :class:`~godiff.errors.EvaluationFailureError`.
        Constraints of the atoms it is attached to are applied by ASE, as usual. ``budget`` and
        ``on_result``: see :class:`EvaluatorCalculator`.
        """
        return EvaluatorCalculator(self, budget=budget, on_result=on_result)

    def close(self) -> None:
        """Shut down the owned worker pool (a given executor is left to its owner)."""
        self._closed = True
        self._calc = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_iteration(evaluations: Sequence[Evaluation], *, max_failed_fraction: float = 0.5) -> None:
    """Raise when too many evaluations of one iteration failed.

    Args:
        evaluations: The evaluations of one iteration.
        max_failed_fraction: The largest tolerated fraction of failed evaluations, in [0, 1].

    Raises:
        EvaluationFailureError: More than ``max_failed_fraction`` of them failed.
        ConfigError: ``max_failed_fraction`` is outside [0, 1].
    """
    if not 0.0 <= max_failed_fraction <= 1.0:
        raise ConfigError(f"max_failed_fraction must be in [0, 1], not {shown(max_failed_fraction)}")
    failed = [e for e in evaluations if not e.ok]
    total = len(evaluations)
    if total and len(failed) / total > max_failed_fraction:
        raise EvaluationFailureError(
            f"{len(failed)} of {total} evaluations failed in this iteration; first error: {failed[0].error}"
        )
