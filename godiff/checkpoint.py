"""Checkpoints of a search: the state written after each iteration, and the resume from one.

:class:`Checkpointing` is the part of :class:`godiff.search.Search` that reads and writes a run
directory's checkpoints: every check before any write (the run's lock, the checkpoint's digests, the
database against the checkpoint's count), a corrupt checkpoint's fall-back, a lost database's
rebuild from the saved structures, and the typed :class:`godiff.manifest.CheckpointState` beside the
weights, optimizer moments and buffer (safetensors). A resumed run is the uninterrupted one: every
random stream is derived from the seed, the iteration and the phase (:func:`godiff.candidates.random_stream`).
"""

from __future__ import annotations

import logging
import math
import shlex
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch

from godiff.buffer import ForceMemory, ReplayBuffer
from godiff.config import SearchConfig
from godiff.cost import CostMeter
from godiff.errors import CheckpointError, ConfigError, NotARunError
from godiff.manifest import CheckpointState
from godiff.rundir import RunDir, flatten_optimizer, unflatten_optimizer

if TYPE_CHECKING:
    from godiff.search import Search

log = logging.getLogger(__name__)

__all__ = ["Checkpointing"]


class Checkpointing:
    """Resume and checkpoints, for :class:`godiff.search.Search` (which holds the state it reads)."""

    @classmethod
    def resume(
        cls,
        path,
        *,
        calculator=None,
        read_only: bool = False,
        from_checkpoint: int | None = None,
        rebuild_database: bool = False,
        executor=None,
        device=None,
        trust_energy: bool = False,
        **overrides,
    ) -> "Search":
        """Reopen a run directory and restore its last checkpoint (call :meth:`run` to continue).

        ``overrides`` may change only ``workers``, ``iterations``, ``budget`` and ``patience``; a
        changed setting is written back to ``run.json``. Under the exponential schedule more
        iterations re-spread the annealing over the new count, so the remaining iterations cool
        more slowly than the original plan. A run that stopped at its budget or patience goes on
        when resumed with a larger one. ``read_only=True`` loads the
        last checkpoint without writing anything and without taking the run's lock (to inspect or
        measure a run still in progress).

        Every check comes before any write: the run's lock (another live process refuses it,
        :class:`~godiff.errors.RunLockedError`), the checkpoint's digests and the database
        against the checkpoint's count (:class:`~godiff.errors.CheckpointError`, exit 4).
        ``from_checkpoint=N`` restores checkpoint N instead of the last one (the fall-back from
        a corrupt one; the evaluations made after it are reused, not paid again), and
        ``rebuild_database=True`` accepts a lost or short database: the saved structures of the
        finished iterations that have no row are evaluated again when the run continues.

        ``run.json`` is a file like any other: its energy spec gets the trust check of a system
        file (:mod:`godiff.trust`), and ``trust_energy`` is asked for again, never read from it.
        """
        from godiff.system import System

        run = RunDir.open(path, lock=not read_only)
        try:
            manifest = run.manifest
            allowed = {"workers", "iterations", "budget", "patience"}
            bad = {k for k, v in overrides.items() if v is not None} - allowed
            if bad:
                raise ConfigError(f"resume: cannot change {sorted(bad)} of an existing run")
            if manifest.uses_calculator_object and calculator is None:
                raise ConfigError(
                    f"{path}: this run used a Python calculator object ({manifest.energy.get('class')}); pass it again to resume"
                )
            if not manifest.search:
                raise NotARunError(
                    f"{path}: not a godiff search (a {manifest.method or 'benchmark'} run); it cannot be resumed"
                )
            system = System.from_dict(manifest.system)
            config = SearchConfig.from_dict(manifest.search)
            search = cls(
                system,
                config=config,
                calculator=calculator,
                parent=manifest.parent,
                executor=executor,
                device=device,
                trust_energy=trust_energy,
                _run=run,
                **overrides,
            )
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
        state = None if state is None else CheckpointState.from_dict(state, where=f"checkpoint iter-{last:04d}")
        rows = self._rows_to_restore(last, state, rebuild)
        if last is not None:
            try:
                self.model.load_state_dict(tensors["model"], strict=True)
                self.optimizer.load_state_dict(unflatten_optimizer(tensors["optimizer"], state.optimizer))
            except (KeyError, RuntimeError, ValueError) as exc:
                raise CheckpointError(
                    f"{self.run_dir.path}: checkpoint iter-{last:04d} does not fit this run ({exc})"
                ) from exc
            self.buffer = ReplayBuffer.from_state(
                self.config.buffer_size, {k: v.numpy() for k, v in tensors.get("buffer", {}).items()}
            )
            self.force_scale_set, self.energy_shift_anchored = state.force_scale_set, state.energy_shift_anchored
            self.temperature, self.head_rms = state.temperature, state.head_rms
            self.polish_step = state.polish_step if state.polish_step is not None else self.polish_step
            self.polished_id, self.polish_failures = state.polished_id, state.polish_failures
            self.relaxed_at = state.relaxed_at
            self.empty_iterations = int((state.log or {}).get("samples") == 0)  # at most one: two stop the run
            self.cost = CostMeter.from_dict(state.cost)
            self.next_iteration = last + 1
        elif self.run_dir.manifest.pretrained:
            self.model.load_state_dict(self.run_dir.load_start_model(), strict=True)
            self.pretrained = self.force_scale_set = True
            self.energy_shift_anchored = False
        # ... then write
        if last is not None and not read_only:
            self._repair_log(last, state.log or None)
        self._restored_from_checkpoint = last is not None
        self._absorb_history(rows, write=not read_only)
        log.info(
            "resumed %s at iteration %d (%d evaluations on disk)", self.run_dir.path, self.next_iteration, len(rows)
        )

    def _load_checkpoint(self, k: int) -> tuple[dict, dict]:
        """A checkpoint, digests checked; a corrupt one names the earlier one to fall back to."""
        try:
            return self.run_dir.load_checkpoint(k)
        except CheckpointError as exc:
            earlier = [j for j in self.run_dir.checkpoints() if j < k]
            if not earlier:
                raise
            fallback = earlier[-1]
            raise type(exc)(
                f"{exc}; fall back to checkpoint {fallback} with "
                f"'godiff resume {shlex.quote(str(self.run_dir.path))} --from-checkpoint {fallback}'"
            ) from exc

    def _checkpoint_to_restore(self, wanted: int | None) -> int | None:
        done = self.run_dir.checkpoints()
        if wanted is None:
            return done[-1] if done else None
        if wanted not in done:
            have = ", ".join(str(k) for k in done) or "none"
            raise ConfigError(f"{self.run_dir.path}: no checkpoint {wanted} (checkpoints on disk: {have})")
        return wanted

    def _rows_to_restore(self, last: int | None, state: CheckpointState | None, rebuild: bool) -> list:
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
            raise CheckpointError(
                f"{path}: {len(twice)} evaluations are stored more than once (first: iteration {twice[0][0]}, sample {twice[0][1]})"
            )
        if state is not None:
            expected = int(state.n_evaluations)
            have = sum(1 for r in rows if int(r.iteration) <= last)
            if have > expected:
                raise CheckpointError(
                    f"{path}: holds {have} evaluations of iterations 0..{last}, more than the {expected} of checkpoint {last}"
                )
            if have < expected:
                if not rebuild:
                    raise CheckpointError(
                        f"{path}: holds {have} evaluations of iterations 0..{last} where checkpoint {last} counts {expected}; {hint}"
                    )
                self._rebuild = True
        return rows

    def _absorb_history(self, rows: list, *, write: bool) -> None:
        """Counters, best and force memory from the rows of the finished iterations, in the order
        an uninterrupted run took them in (iteration, then row id)."""
        self.n_evaluations, self.best_energy, self.best_id, self.best_at = 0, math.inf, None, 0
        self.improved_at, self.improved_energy = 0, math.inf
        self.memory = ForceMemory(self.system.n_mobile)
        self.seen = np.zeros((0, 0))
        kept = sorted(
            (r for r in rows if int(r.iteration) < self.next_iteration), key=lambda r: (int(r.iteration), r.id)
        )
        self._absorb(kept, into_buffer=not self._restored_from_checkpoint, write=write)

    def _rebuild_database(self, evaluator, emit) -> None:
        """Evaluate again the saved structures of finished iterations that have no row."""
        if not self.run_dir.has_database():
            self.run_dir.create_database()
        todo = []
        for k in range(self.next_iteration):
            samples = self.run_dir.load_samples(k)
            if samples is None:
                raise CheckpointError(
                    f"{self.run_dir.path}: cannot rebuild the database: samples of iteration {k} are missing"
                )
            todo.append((k, samples, len(samples) - len(self.run_dir.done_samples(k))))
        log.warning(
            "rebuilding %s: evaluating %d saved structures of iterations 0..%d again",
            self.run_dir.db_path,
            sum(n for _, _, n in todo),
            self.next_iteration - 1,
        )
        temperatures = {
            r["iteration"]: r.get("temperature_sampled", r.get("temperature")) for r in self.run_dir.read_log()
        }
        for k, samples, _ in todo:
            self._evaluate(k, samples, self._row_temperature(k, temperatures.get(k - 1)), evaluator, emit)
        self._absorb_history(self.run_dir.rows(), write=True)
        self._rebuild = False

    def _repair_log(self, last: int, record: dict | None) -> None:
        lines = [r for r in self.run_dir.read_log() if r.get("iteration", -1) <= last]
        if record is not None and not any(r.get("iteration") == last for r in lines):
            lines.append(record)
        self.run_dir.rewrite_log(lines)

    def _checkpoint(self, k: int, record: dict) -> None:
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        buffer = {key: torch.as_tensor(v) for key, v in self.buffer.state().items()}
        state = CheckpointState(
            iteration=k,
            n_evaluations=self.n_evaluations,
            best_energy=self.best_energy,
            force_scale_set=self.force_scale_set,
            energy_shift_anchored=self.energy_shift_anchored,
            temperature=self.temperature,
            head_rms=self.head_rms,
            polish_step=self.polish_step,
            polished_id=self.polished_id,
            polish_failures=self.polish_failures,
            relaxed_at=self.relaxed_at,
            optimizer=opt_meta,
            rng={"scheme": "sha256(seed, iteration, phase) -> torch.Generator", "seed": self.config.seed},
            cost=self.cost.to_dict(),
            log=record,
        ).to_dict()
        self.run_dir.save_checkpoint(
            k, {"model": self.model.state_dict(), "optimizer": opt_tensors, "buffer": buffer}, state
        )
