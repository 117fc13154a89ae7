"""Candidates of a search: which structures an iteration evaluates.

:class:`Candidates` is the part of :class:`godiff.search.Search` that draws a round: uniform
placements first, then candidates sampled from the model (some varied from the lowest structures
found, ``refine``), relaxed in the learned field and chosen by the lower confidence bound of
:mod:`godiff.acquisition` against every structure already evaluated; and the polish round, the best
structure moved along its real forces (:mod:`godiff.polish`). The rules live in those modules; this
is where the search applies them to its buffer, its database and its random streams.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from godiff.acquisition import Acquisition, select
from godiff.rundir import succeeded

if TYPE_CHECKING:
    from godiff.search import Iteration

log = logging.getLogger(__name__)

__all__ = ["Candidates", "random_stream"]


def random_stream(seed: int, *parts) -> torch.Generator:
    """The random stream of one phase of a run: a generator seeded from ``(seed, *parts)`` by SHA-256,
    so each iteration, round and phase draws the same numbers however the run was interrupted."""
    key = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


class Candidates:
    """Drawing and polishing rounds, for :class:`godiff.search.Search` (which holds the state they read)."""

    def _polish_round(self, it: Iteration, r: int, have: int) -> int:
        """Round ``r`` of iteration ``k``, after its first ``have`` structures: the best structure
        evaluated so far moved along its forces (:mod:`godiff.polish`), unless that structure was
        polished twice without a gain; the trust step follows the result. Returns how many it evaluated."""
        k = it.k
        if k == 0 and self.config.relax_first > 0:
            return self._relax_round(it, have, calls=self.config.relax_first)
        if self._relaxation_due(k):
            return self._relax_stalled_round(it, have)
        left = self.polish.points if self.config.budget is None else self.config.budget - self.n_evaluations - have
        if not self.config.adaptive_batch or self.polish.points == 0 or (k == 0 and not self.pretrained) or left <= 0:
            return 0
        best = self._best_row(k, have)
        failures = self.polish_failures if best is not None and best.id == self.polished_id else 0
        if best is None or failures >= 2 or self.polish.settled(best.forces[self.n_template :]):
            return 0
        samples = self.run_dir.load_samples(k, r)
        if samples is None:
            samples = self.polish.candidates(
                best.positions[self.n_template :], best.forces[self.n_template :], self.polish_step
            )
            if len(samples) == 0:
                return 0  # an empty round saved here would end the batch when the next round loads it
            samples = self.domain.fold(torch.as_tensor(samples[:left], dtype=torch.float64)).numpy()
            self.run_dir.save_samples(k, samples, r)
        if len(samples) == 0:
            return 0
        self._evaluate_round(it, samples, offset=have, polish=True)
        rows = {int(row.sample): row for row in self.run_dir.rows(k)}
        energies = [
            row.energy if row is not None and succeeded(row) else None
            for row in (rows.get(have + i) for i in range(len(samples)))
        ]
        gained = self.polish.gained(best=best.energy, energies=energies)
        self.polish_step = self.polish.next_step(self.polish_step, best=best.energy, energies=energies)
        self.polished_id, self.polish_failures = best.id, 0 if gained else failures + 1
        return len(samples)

    def _relaxation_due(self, k: int) -> bool:
        """Whether ``relax_stalled`` relaxes now: neither a relaxation nor a new best from a drawn
        structure or a relaxation (:meth:`_found_at`) has come for ``relax_after`` evaluations.
        Read from the iterations before ``k``, so a resumed iteration decides as the
        uninterrupted one did."""
        cfg = self.config
        if cfg.relax_stalled <= 0 or k == 0:
            return False
        since = max(self._found_at(k), self.relaxed_at if self.relaxed_at is not None else 0)
        return self.n_evaluations - since >= cfg.relax_after

    def _found_at(self, k: int) -> int:
        """Evaluations made (before iteration ``k``) when a drawn structure or a relaxation step
        last came more than the improvement threshold below the best so far. The polish's steps
        lower the best too but do not count: they creep down one known structure, and as
        improvements they held a stalled relaxation off for good (LJ26 from ``lj19-lj``, seed 1 of
        ``benchmarks/lj26-transfer``: the polish lowered the best by 0.02 ε every 50 to 75
        evaluations, against ``relax_after`` 64, and no stall ever came in 1,280)."""
        best, found, threshold = math.inf, 0, self.config.improvement_threshold()
        rows = sorted(
            (row for row in self.run_dir.rows() if row.iteration < k), key=lambda row: (row.iteration, row.id)
        )
        for n, row in enumerate(rows, start=1):
            if not succeeded(row):
                continue
            if row.energy < best - threshold and (row.get("relaxation") or not row.get("polish")):
                found = n
            best = min(best, row.energy)
        return found

    def _relax_stalled_round(self, it: Iteration, have: int) -> int:
        """``relax_stalled``'s relaxation: the lowest structure not yet relaxed
        (:meth:`_unrelaxed_lowest`), so that each stall finishes a relaxation cut short by its
        calls or relaxes another of the low distinct structures the model found, as random-structure
        search relaxes random ones; also when an iteration draws nothing new
        (:meth:`godiff.rounds.Rounds._batch`)."""
        if self.config.relax_stalled <= 0:
            return 0
        self.relaxed_at = self.n_evaluations
        start = self._unrelaxed_lowest(it.k, have)
        if start is None:
            return 0
        return self._relax_round(it, have, calls=self.config.relax_stalled, start=start)

    def _unrelaxed_lowest(self, k: int, have: int):
        """Where the next relaxation starts (``None``: nowhere, and no relaxation is made): the
        lowest successful evaluation so far (of the finished iterations and of iteration ``k``'s
        first ``have``) that no relaxation with the real calculator started from (its rows'
        ``relaxed_from``) and that is not near a minimum, where a finished relaxation ended (its
        last step within ``RELAX_FMAX``) or an evaluation that is one already (within the
        system's distinct-minima distance, :func:`godiff.minima.distance_for`).

        A relaxation that ran out of its calls is no minimum: its lowest point, and the polish's
        steps from there, stay candidates, so the next stall carries it on. (LJ26 from
        ``lj19-lj``, seed 1 of ``benchmarks/lj26-transfer``: the first batch's best, relaxed for
        60 calls, ended at -105.25 ε in the global minimum's basin, 3 ε above it; the polish
        then crept down 0.02 ε every 50 calls to -106.11 at 1,280, where BFGS from there needs
        about 40.) A start blocks only itself: on a cluster every compact structure lies within
        the distinct-minima distance of every other (0.022 to 0.11 on LJ26, whichever basin it
        relaxes to), so a start's neighbourhood blocked the relaxation's own end and the next
        stall went to a structure 40 ε up. Not a relaxation's path: a structure the path passed
        near on the way to another basin is not relaxed."""
        from godiff.minima import distance_for, rms_distances

        every = [
            row for row in self.run_dir.rows() if row.iteration < k or (row.iteration == k and int(row.sample) < have)
        ]
        # a start whose first step failed is started all the same: its failed row names it
        started = {int(row.relaxed_from) for row in every if row.get("relaxed_from") is not None}
        rows = [row for row in every if succeeded(row)]
        runs = _relaxations([row for row in rows if row.get("relaxation")])
        ends = [self._end(run) for run in runs]
        fresh = [row for row in rows if not row.get("relaxation")]
        minima = [row for row in ends + fresh if self._relaxed(row)]
        fresh = sorted(fresh + [end for end in ends if not self._relaxed(end)], key=lambda row: row.energy)
        if not fresh:
            return None
        near = np.array([row.id in started for row in fresh])
        # a relaxation written before relaxed_from names no start: near its first step stands in, as then
        places = minima + [run[0] for run in runs if run[0].get("relaxed_from") is None]
        if places:
            distances = rms_distances(self._describe(fresh), self._describe(places)).min(axis=1)
            near |= distances < distance_for(self.system.n_mobile)
        return next((row for row, n in zip(fresh, near) if not n), None)

    def _describe(self, rows: list) -> np.ndarray:
        return self.descriptors(np.stack([row.positions[self.n_template :] for row in rows]))

    def _end(self, run: list):
        """Where relaxation ``run`` ended: its last step within ``RELAX_FMAX`` (BFGS has no line
        search, so that need not be its lowest), else its lowest point."""
        return next((row for row in reversed(run) if self._relaxed(row)), None) or min(run, key=lambda row: row.energy)

    def _relaxed(self, row) -> bool:
        """Whether ``row``'s mobile atoms feel no force above ``RELAX_FMAX`` (a relaxation's end)."""
        forces = np.asarray(row.forces)[self.n_template :]
        return bool(np.linalg.norm(forces, axis=1).max(initial=0.0) <= RELAX_FMAX)

    def _relax_round(self, it: Iteration, have: int, *, calls: int, start=None) -> int:
        """``start`` (default: the best structure so far) relaxed with the real calculator (ASE
        BFGS on the mobile atoms to ``RELAX_FMAX``, steps of at most ``RELAX_MAXSTEP`` times the
        system's length scale), each call an evaluation recorded as it arrives (``polish=True``),
        at most ``calls`` of them and never past the budget: the first round's best
        (``relax_first``) and a stalled search's lowest unrelaxed structure (``relax_stalled``).
        Returns how many it evaluated.

        A resumed run replays the relaxation: a call whose evaluation is already in the database
        is answered from it, so BFGS retraces the same steps and evaluates only the missing ones.
        """
        from ase.constraints import FixAtoms
        from ase.optimize import BFGS

        k, cfg = it.k, self.config
        left = calls if cfg.budget is None else min(calls, cfg.budget - self.n_evaluations - have)
        best = self._best_row(k, have) if start is None else start
        if best is None or left <= 0:
            return 0
        atoms = self.system.atoms(best.positions[self.n_template :])
        atoms.set_constraint(FixAtoms(indices=list(range(self.n_template))))  # the search moves mobile atoms only
        atoms.calc = calc = _relaxation_calculator(self, it, first=have, calls=left, start=best)
        try:
            BFGS(atoms, logfile=None, maxstep=RELAX_MAXSTEP * self.system.length_scale()).run(
                fmax=RELAX_FMAX, steps=left
            )
        except _RelaxationEnded:
            pass
        return calc.made

    def _best_row(self, k: int, have: int):
        """The lowest-energy evaluation so far: of the finished iterations and of iteration ``k``'s
        first ``have`` structures (None if none succeeded)."""
        rows = [row for row in self.run_dir.rows(k) if int(row.sample) < have and succeeded(row)]
        if self.best_id is not None:
            rows.append(self.run_dir.get_row(self.best_id))
        return min(rows, key=lambda row: row.energy, default=None)

    def draw(self, k: int, r: int, n: int) -> np.ndarray:
        """Round ``r`` of iteration ``k``: ``n`` structures (fewer where candidates duplicate),
        (n, n_mobile, 3) in Å, as the run draws them (``godiff bench-speed`` times this call)."""
        gen = (
            random_stream(self.config.seed, k, "sample") if r == 0 else random_stream(self.config.seed, k, "sample", r)
        )
        if k == 0 and not self.pretrained:
            x = self.domain.sample_uniform((n, self.system.n_mobile), gen)
            return self.sampler.finish(x).double().numpy()
        if self.config.acquisition == "energy":
            return self.sampler.sample(n, generator=gen).double().numpy()
        total = self.config.sampler.candidate_count(n, self.oversample)
        self.drawn += total
        relaxed = self.config.sampler.relaxed_count(n, total)
        x, predicted = self.sampler.candidates(
            total, generator=gen, relaxed=relaxed, **self._refine_starts(total, k, r)
        )
        x = x.double().numpy()
        before = self._with_seen(self.seen, self._saved_before(k, r))
        picked = select(
            self.descriptors(x),
            predicted.double().numpy(),
            before,
            n,
            spread=self._spread(),
            settings=self.acquisition,
        )
        return x[picked]

    def _refine_starts(self, total: int, k: int, r: int) -> dict:
        """The starts of a draw's variations (``refine``): the lowest ``refine_from`` evaluated
        structures, in turn, lowest first."""
        n = int(round(self.config.refine * total))
        if n == 0 or len(self.buffer) == 0:
            return {}
        lowest = self.buffer.positions[self._lowest(self.config.refine_from)]
        starts = torch.as_tensor(lowest[np.arange(n) % len(lowest)], dtype=torch.float32)
        return {"starts": starts, "start_sigma": self.config.refine_noise * self.system.bond_length()}

    def _lowest(self, n: int) -> np.ndarray:
        """Indices of the ``n`` lowest buffer structures (the acquisition's rule, ranked by energy alone)."""
        buffer = self.buffer
        return select(
            self.descriptors(buffer.positions),
            buffer.energies,
            np.zeros((0, 1)),
            n,
            spread=0.0,
            settings=Acquisition(duplicate=0.0),
        )

    def _saved_before(self, k: int, r: int) -> np.ndarray:
        """The structures of iteration ``k``'s rounds before ``r``, (m, n_mobile, 3)."""
        rounds = [self.run_dir.load_samples(k, j) for j in range(r)]
        rounds = [x for x in rounds if x is not None and len(x)]
        return np.concatenate(rounds) if rounds else np.zeros((0, self.system.n_mobile, 3))

    def _with_seen(self, seen: np.ndarray, positions: np.ndarray) -> np.ndarray:
        if len(positions) == 0:
            return seen
        new = self.descriptors(positions)
        return new if seen.size == 0 else np.concatenate([seen, new])

    def _spread(self) -> float:
        """``s`` of the uncertainty: the energy head's last measured error, else its energy scale."""
        return float(self.head_rms) if self.head_rms else float(self.model.energy_scale)


def _relaxations(steps: list) -> list[list]:
    """Relaxation rows (in the order evaluated) split into relaxations: one relaxation is a run of
    consecutive samples of one iteration from one start (``relaxed_from``)."""
    runs: list[list] = []
    for row in steps:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.iteration == row.iteration
            and int(row.sample) == int(last.sample) + 1
            and last.get("relaxed_from") == row.get("relaxed_from")
        ):
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


#: The relaxation of :meth:`Candidates._relax_round` stops when no mobile atom feels more than
#: this force (the system's energy unit per Å or σ): past any energy tolerance a user would set.
RELAX_FMAX = 0.01


#: The relaxation's largest step of an atom, Å for Pt's bond (ASE's BFGS default) and scaled to
#: the system's bond (:meth:`godiff.system.System.length_scale`): 0.074 σ under Lennard-Jones,
#: 0.18 Å on Ni, 0.21 Å on Ag (Pt and Au: 0.2 Å, as before).
#: Unscaled, 0.2 σ stepped into the r^-12 wall (first steps 40 to 160 ε up on LJ26): of the 30
#: lowest sampled structures of LJ26 seed 1 (``benchmarks/lj26-transfer``), BFGS converged within
#: 60 calls from 7 at 0.2 σ and from all 30 at 0.1 σ or less (median 43 calls at 0.08 σ; mean
#: energy reached -106.89 ε against -103.39).
RELAX_MAXSTEP = 0.2


class _RelaxationEnded(Exception):
    """The relaxation ran out of calls or met a failed evaluation."""


def _relaxation_calculator(search, it, *, first: int, calls: int, start):
    """The ASE calculator of :meth:`Candidates._relax_round`: BFGS's first call, at the structure
    it starts from, is answered from that structure's row ``start`` (it was evaluated already);
    every other call ``i`` is evaluation ``first + i`` of the iteration, through the search's own
    evaluation path (which skips one already in the database), and answered from the database row."""
    from ase.calculators.calculator import Calculator

    class Relaxation(Calculator):
        implemented_properties = ["energy", "forces"]

        def __init__(self):
            super().__init__()
            self.made = 0

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            super().calculate(atoms, properties, system_changes)
            mobile = self.atoms.positions[search.n_template :]
            if np.array_equal(mobile, np.asarray(start.positions)[search.n_template :]):
                self.results = _row_results(start)
                return
            if self.made >= calls:
                raise _RelaxationEnded()
            index = first + self.made
            search._evaluate_round(
                it, self.atoms.positions[None, search.n_template :], offset=index, polish=True, relaxation=int(start.id)
            )
            row = next((r for r in search.run_dir.rows(it.k) if int(r.sample) == index), None)
            self.made += 1
            if row is None or not succeeded(row):
                raise _RelaxationEnded()
            self.results = _row_results(row)

    return Relaxation()


def _row_results(row) -> dict:
    """An ASE calculator's results from an evaluation's database row."""
    return {"energy": float(row.energy), "forces": np.asarray(row.forces, dtype=float)}
