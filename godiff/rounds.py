"""One iteration's batch, in rounds: what :class:`godiff.search.Search` samples and evaluates.

A fixed batch is one round of ``samples``. The adaptive batch adds rounds of ``min_samples`` until
the ESS of its energies at the sampling temperature reaches the target or it is full
(:class:`godiff.schedule.BatchSize`); after each round the polish may add one (:mod:`godiff.polish`);
every batch stops at the budget. Each round's structures are saved before any is evaluated, and
each evaluation is written to ``evaluations.db`` the moment it arrives, so a resumed iteration
evaluates exactly the structures the uninterrupted one would have, none twice.

:class:`Rounds` is the part of the search that runs them; which structures a round holds is
:class:`godiff.candidates.Candidates`'s.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from godiff.rundir import succeeded
from godiff.schedule import ExponentialSchedule

if TYPE_CHECKING:
    from godiff.search import Iteration

__all__ = ["Rounds"]


class Rounds:
    """Sampling and evaluating an iteration's batch in rounds, for :class:`godiff.search.Search`
    (which holds the state they read)."""

    def _batch(self, it: Iteration) -> int:
        """Sample and evaluate iteration ``k``'s structures in rounds; returns how many.

        A fixed batch is one round of ``samples``. The adaptive batch adds rounds of
        ``min_samples`` until its ESS at ``sampled_at`` reaches the target or it is full
        (:class:`godiff.schedule.BatchSize`); every batch stops at the budget. Each round's
        structures are saved before any is evaluated and drawn from its own generator, so a
        resumed iteration draws and evaluates exactly what the uninterrupted one would have.
        """
        k, have, r = it.k, 0, 0
        for _ in range(self._max_rounds(k)):
            n = self._round_size(k, r, have, it.sampled_at)
            if n == 0:
                break
            it.phase("sampling")
            t0 = time.perf_counter()
            samples = self.run_dir.load_samples(k, r)
            if samples is None:
                samples = self.draw(k, r, n)
                self.run_dir.save_samples(k, samples, r)
            it.times["sampling"] += time.perf_counter() - t0
            self._evaluate_round(it, samples, offset=have)
            have, r = have + len(samples), r + 1
            if len(samples) == 0:  # the model drew nothing new: relax instead, where relax_stalled allows
                have += self._relax_stalled_round(it, have)
                break
            m = self._polish_round(it, r, have)
            have, r = have + m, r + (m > 0)
        return have

    def _evaluate_round(
        self, it: Iteration, samples, *, offset: int, polish: bool = False, relaxation: int | None = None
    ) -> None:
        """Evaluate ``samples`` as iteration ``it``'s structures ``offset`` on; ``polish``: moved
        by the polish, ``relaxation``: steps of a relaxation from that evaluation id
        (:meth:`godiff.rundir.RunDir.record`)."""
        it.phase("polishing" if polish else "evaluating")
        t0 = time.perf_counter()
        temperature = self._row_temperature(it.k, it.sampled_at)
        self._evaluate(
            it.k, samples, temperature, it.evaluator, it.emit, offset=offset, polish=polish, relaxation=relaxation
        )
        it.times["evaluation"] += time.perf_counter() - t0

    def _max_rounds(self, k: int) -> int:
        if not self.config.adaptive_batch or k == 0:
            return 1
        return 2 * math.ceil(self.config.max_samples / self.config.min_samples)

    def _round_size(self, k: int, r: int, have: int, sampled_at) -> int:
        """Structures of round ``r`` of iteration ``k`` when the batch holds ``have``: 0 to stop.
        The ESS is of the sampled structures (not the polished ones)."""
        cfg = self.config
        left = None if cfg.budget is None else cfg.budget - self.n_evaluations - have
        if k == 0 or not cfg.adaptive_batch:
            n = cfg.first_batch() if k == 0 else cfg.samples
            return n if left is None else max(0, min(n, left))
        sampled = have
        if r > 0:
            rows = [row for row in self.run_dir.rows(k) if int(row.sample) < have and not row.get("polish")]
            if self.batch.enough([row.energy for row in rows if succeeded(row)], temperature=sampled_at):
                return 0
            sampled = len(rows)
        return self.batch.next_round(have=sampled, budget_left=left)

    def _row_temperature(self, k: int, sampled_at) -> float:
        """The temperature stored with iteration ``k``'s evaluations: its training temperature
        under the exponential schedule, the sampling model's under the adaptive one (0: the prior)."""
        if isinstance(self.schedule, ExponentialSchedule):
            return self.schedule.temperature(k)
        return float(sampled_at or 0.0)

    def _evaluate(
        self,
        k,
        samples,
        temperature,
        evaluator,
        emit,
        *,
        offset: int = 0,
        polish: bool = False,
        relaxation: int | None = None,
    ) -> None:
        done = self.run_dir.done_samples(k)
        todo = [offset + i for i in range(len(samples)) if offset + i not in done]
        if not todo:
            return
        structures = [self.system.atoms(samples[i - offset]) for i in todo]
        count = [self.n_evaluations + len(done)]

        def on_result(j, atoms, evaluation):
            self.run_dir.record(
                atoms,
                evaluation,
                iteration=k,
                sample=todo[j],
                temperature=temperature,
                polish=polish,
                relaxation=relaxation,
            )
            count[0] += 1
            emit(
                {
                    "event": "evaluated",
                    "iteration": k,
                    "n_evaluations": count[0],
                    "energy": evaluation.energy if evaluation.ok else None,
                }
            )

        evaluator.evaluate(structures, on_result=on_result)
