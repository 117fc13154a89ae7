"""Classical global-optimisation baselines, spending their evaluations through the same evaluator.

Every energy or force call of every method (each step of each local relaxation included) goes
through :class:`RecordingCalculator`: one call of the shared :class:`godiff.energy.Evaluator`,
one row of the run's ``evaluations.db`` (``iteration`` = the restart or hop, ``sample`` = the call
within it), so the harness judges these methods exactly as it judges godiff. When the budget is
spent the calculator raises :class:`BudgetExhausted` and the method stops.

Methods:

* ``random``: uniform placement in the box (the same minimum-distance de-clash as godiff's
  samples), one single-point evaluation each. The floor.
* ``rss``: uniform placement, then a local relaxation (BFGS to 0.05 eV/Å, at most 200 steps),
  repeated.
* ``rss-cluster``: like ``rss`` but the mobile atoms are grown as one cluster (each new atom at a
  bond length from a random placed one), AGOX's default and much stronger on islands.
* ``basin-hopping``: from a relaxed contiguous start, perturb only the mobile atoms of the current
  minimum (each by a random vector of length up to ``dr`` Å), relax (capped), accept by Metropolis
  on *relaxed* energies at temperature ``T``. ASE's ``BasinHopping`` moves frozen atoms and
  accepts unrelaxed coordinates, which cripples it on slabs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from godiff.energy import BudgetExhausted, EvaluatorCalculator

log = logging.getLogger(__name__)

__all__ = ["BudgetExhausted", "RecordingCalculator", "run_random", "run_rss", "run_basin_hopping"]

FMAX = 0.05
RELAX_STEPS = 200


class RecordingCalculator(EvaluatorCalculator):
    """The evaluator's calculator (:meth:`godiff.energy.Evaluator.as_calculator`: counted, with
    the budget) that also writes each evaluation to the method's run directory, with the
    iteration (one local relaxation or one hop), sample and temperature it belongs to.

    Args:
        evaluator: the shared :class:`godiff.energy.Evaluator`.
        run_dir: the method's :class:`godiff.rundir.RunDir`; rows already in it (a restarted
            method) count towards the budget.
        budget: evaluations allowed in all; the next call raises :class:`BudgetExhausted`.
    """

    def __init__(self, evaluator, run_dir, budget: int):
        rows = run_dir.rows()
        super().__init__(evaluator, budget=max(0, budget - len(rows)), on_result=self._record)
        self.run_dir = run_dir
        self.before = len(rows)
        self.iteration = 1 + max((int(r.iteration) for r in rows), default=-1)
        self.sample = 0
        self.temperature = 0.0

    @property
    def count(self) -> int:
        """Evaluations in the run directory: those before this calculator and its own."""
        return self.before + self.spent

    def next_iteration(self) -> None:
        self.iteration += 1
        self.sample = 0

    def _record(self, atoms, evaluation) -> None:
        self.run_dir.record(
            atoms, evaluation, iteration=self.iteration, sample=self.sample, temperature=self.temperature
        )
        self.sample += 1


def _setup(system, seed: int, budget: int, out: Path, method: str, executor=None, trust_energy: bool = False):
    from godiff.energy import Evaluator
    from godiff.manifest import RunManifest
    from godiff.rundir import RunDir

    out = Path(out)
    if (out / "run.json").exists():
        run = RunDir.open(out)  # stateless methods restart; earlier rows still count
    else:
        run = RunDir.create(out, RunManifest(system=system.to_dict(), method=method, seed=seed, budget=budget))
    evaluator = Evaluator(system.energy, executor=executor, scratch=out / "scratch", trust_energy=trust_energy)
    return run, evaluator, RecordingCalculator(evaluator, run, budget), np.random.default_rng(seed)


def _constrained(system, mobile_positions):
    atoms = system.atoms(mobile_positions)
    if system.n_template:
        atoms.set_constraint(FixAtoms(mask=np.r_[system.frozen_mask(), np.zeros(system.n_mobile, bool)]))
    return atoms


def _declash(system, positions, rng):
    import torch

    from godiff.sampler import declash
    from godiff.score import SystemGraph

    graph = SystemGraph.from_system(system, cutoff=4.0)
    sym = system.mobile_symbols
    dmin = torch.tensor([[system.pair_min_distance(a, b) for b in sym] for a in sym], dtype=torch.float32)
    tmin = None
    if system.n_template:
        tsym = sorted(set(system.template_atoms().get_chemical_symbols()))
        tmin = torch.tensor([min(system.pair_min_distance(m, t) for t in tsym) for m in sym], dtype=torch.float32)
    x = torch.as_tensor(positions, dtype=torch.float32)[None]
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = declash(x, graph, dmin, system.geometry(), template_min_distance=tmin, generator=gen)
    return x[0].double().numpy()


def uniform_placement(system, rng) -> np.ndarray:
    """Mobile positions uniform in the box, de-clashed."""
    return _declash(system, system.geometry().sample_uniform(system.n_mobile, rng), rng)


def cluster_placement(system, rng, *, tries: int = 200) -> np.ndarray:
    """Grow the mobile atoms as one cluster inside the box: each new atom at 1.0-1.2 bond lengths
    from a random already placed atom, in a random direction, keeping the minimum distances."""
    geometry = system.geometry()
    sym = system.mobile_symbols
    placed = [geometry.sample_uniform(1, rng)[0]]
    for i in range(1, len(sym)):
        for _ in range(tries):
            anchor = placed[rng.integers(len(placed))]
            v = rng.normal(size=3)
            bond = system.pair_min_distance(sym[i], sym[i]) / 0.7
            candidate = anchor + v / np.linalg.norm(v) * bond * rng.uniform(1.0, 1.2)
            if not geometry.contains(candidate[None])[0]:
                continue
            if all(
                np.linalg.norm(candidate - p) >= system.pair_min_distance(sym[i], sym[j]) for j, p in enumerate(placed)
            ):
                placed.append(candidate)
                break
        else:
            placed.append(geometry.sample_uniform(1, rng)[0])
    return _declash(system, np.array(placed), rng)


def _relax(atoms, calc):
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=FMAX, steps=RELAX_STEPS)
    return atoms, float(atoms.get_potential_energy())


def run_random(system, *, seed: int, budget: int, out: Path, executor=None, trust_energy: bool = False) -> None:
    """Random placement, one single point each, until the budget is spent."""
    run, evaluator, calc, rng = _setup(system, seed, budget, out, "random", executor, trust_energy)
    with run, evaluator:  # the run's lock is given back when the method ends
        try:
            while True:
                calc.evaluate(_constrained(system, uniform_placement(system, rng)))
                calc.next_iteration()
        except BudgetExhausted:
            pass


def run_rss(
    system, *, seed: int, budget: int, out: Path, cluster: bool = False, executor=None, trust_energy: bool = False
) -> None:
    """Random structure search: placement then BFGS relaxation, repeated until the budget is spent."""
    run, evaluator, calc, rng = _setup(
        system, seed, budget, out, "rss-cluster" if cluster else "rss", executor, trust_energy
    )
    place = cluster_placement if cluster else uniform_placement
    with run, evaluator:  # the run's lock is given back when the method ends
        try:
            while True:
                try:
                    _relax(_constrained(system, place(system, rng)), calc)
                except BudgetExhausted:
                    raise
                except Exception as exc:  # a failed relaxation is one lost restart, not the end
                    log.warning("relaxation failed: %s", exc)
                calc.next_iteration()
        except BudgetExhausted:
            pass


def basin_hopping_settings(system) -> dict:
    """The Metropolis temperature and largest hop of basin hopping on ``system``.

    Metals (set on Pt7/Pt(111)): T 0.2 eV, hops of up to 1 Å. The hop scales with the system's
    bond length (from its minimum distance), so a Lennard-Jones cluster hops up to 0.37 sigma;
    a Lennard-Jones calculator gets T = 0.8 epsilon, the classic setting for LJ clusters (Wales &
    Doye 1997), rather than a temperature in eV that means nothing in reduced units.

    Example:
        >>> from godiff.system import load_system
        >>> basin_hopping_settings(load_system("pt7-pt111")), basin_hopping_settings(load_system("lj13"))
        ({'temperature': 0.2, 'dr': 1.0}, {'temperature': 0.8, 'dr': 0.368})
    """
    dr = round(system.length_scale(), 3)
    energy = system.energy or {}
    if energy.get("calculator") == "lj":
        return {"temperature": 0.8 * float(energy.get("epsilon", 1.0)), "dr": dr}
    return {"temperature": 0.2, "dr": dr}


def run_basin_hopping(
    system,
    *,
    seed: int,
    budget: int,
    out: Path,
    temperature: float | None = None,
    dr: float | None = None,
    executor=None,
    trust_energy: bool = False,
) -> None:
    """Basin hopping on the mobile atoms, Metropolis on relaxed energies (defaults:
    :func:`basin_hopping_settings`)."""
    defaults = basin_hopping_settings(system)
    temperature = defaults["temperature"] if temperature is None else temperature
    dr = defaults["dr"] if dr is None else dr
    run, evaluator, calc, rng = _setup(system, seed, budget, out, "basin-hopping", executor, trust_energy)
    n_template = system.n_template
    with run, evaluator:  # the run's lock is given back when the method ends
        try:
            atoms, energy = _relax(_constrained(system, cluster_placement(system, rng)), calc)
            current = atoms.positions[n_template:].copy()
            calc.temperature = temperature
            while True:
                calc.next_iteration()
                step = rng.normal(size=current.shape)
                step *= (dr * rng.uniform(0, 1, (len(current), 1)) ** (1 / 3)) / np.linalg.norm(
                    step, axis=1, keepdims=True
                )
                trial = _declash(system, current + step, rng)
                import torch

                trial = system.geometry().fold(torch.as_tensor(trial)).numpy()
                try:
                    atoms, trial_energy = _relax(_constrained(system, trial), calc)
                except BudgetExhausted:
                    raise
                except Exception as exc:
                    log.warning("relaxation failed: %s", exc)
                    continue
                if trial_energy < energy or rng.uniform() < math.exp(-(trial_energy - energy) / temperature):
                    current, energy = atoms.positions[n_template:].copy(), trial_energy
        except BudgetExhausted:
            pass
