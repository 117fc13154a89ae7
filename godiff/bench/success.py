"""Did a search find the global minimum, and after how many evaluations?

Success (the criterion of the benchmarks): an evaluated structure that, relaxed afterwards with
BFGS to ``fmax`` = 0.05 eV/Å under the system's own energy function (template frozen as in the
search; these relaxations are *not* counted as evaluations), lands within ``tolerance`` of the
reference global-minimum energy.

Relaxing every evaluated structure would cost far more than the search itself, so structures
are checked in evaluation order and the scan stops at the first success, and two screens skip
structures that cannot succeed (both off for gas-phase clusters, whose relaxations are cheap):

* connectivity: a structure whose mobile atoms do not form one connected group (bond graph with
  edges up to 1.5 x the bond length, minimum image in-plane) is skipped: its fragments sit
  beyond the range where a local relaxation could join them;
* energy: a structure evaluated more than ``screen`` eV above the reference is skipped. The
  default, 1 eV on slabs, was checked by relaxing every connected structure between 1 and 3 eV
  above the reference in a full Pt7/Pt(111) run (see the README's benchmark section): none
  reached the reference basin, while every success sat within 0.4 eV of it.

``prefilter=False`` and ``screen=None`` relax everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from ase.optimize import BFGS

from godiff.energy import make_calculator

log = logging.getLogger(__name__)

__all__ = ["Success", "relaxed_energy", "is_connected", "first_success"]


@dataclass(frozen=True)
class Success:
    """Where a run first succeeded.

    Attributes:
        evaluations: evaluations spent up to and including the successful one (1-based).
        row_id: the database row of that evaluation.
        energy: its energy as evaluated, eV.
        relaxed_energy: after the (uncounted) relaxation, eV.
    """

    evaluations: int
    row_id: int
    energy: float
    relaxed_energy: float


def relaxed_energy(atoms, calculator, *, fmax: float = 0.05, steps: int = 500) -> float:
    """Relax a copy of ``atoms`` (constraints kept) with BFGS and return its energy in eV."""
    work = atoms.copy()
    work.calc = calculator
    opt = BFGS(work, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return float(work.get_potential_energy())


def is_connected(system, mobile_positions: np.ndarray, *, factor: float = 1.5) -> bool:
    """Whether the mobile atoms form one group, bonds up to ``factor`` x the bond length."""
    n = len(mobile_positions)
    if n < 2:
        return True
    geometry = system.geometry()
    d = mobile_positions[:, None, :] - mobile_positions[None, :, :]
    periodic = np.asarray(geometry.periodic, dtype=bool)
    if periodic.any():
        cell = np.asarray(geometry.cell)
        frac = d @ np.linalg.inv(cell)
        frac[..., periodic] -= np.round(frac[..., periodic])
        d = frac @ cell
    dist = np.linalg.norm(d, axis=-1)
    sym = system.mobile_symbols
    limit = np.array([[factor * system.pair_min_distance(a, b) / 0.7 for b in sym] for a in sym])
    adj = dist < limit
    seen, stack = {0}, [0]
    while stack:
        i = stack.pop()
        for j in np.nonzero(adj[i])[0]:
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    return len(seen) == n


SLAB_SCREEN = 1.0


def first_success(rows, system, *, reference: float, tolerance: float, fmax: float = 0.05,
                  prefilter: bool | None = None, screen: float | None | str = "default") -> Success | None:
    """Scan evaluated rows in evaluation order; return the first success, or None.

    Args:
        rows: ASE database rows in evaluation order (e.g. ``RunDir.rows()``).
        system: the :class:`godiff.system.System` (its energy spec relaxes the structures).
        reference: global-minimum energy, eV.
        tolerance: eV.
        fmax: relaxation threshold, eV/Å.
        prefilter: skip disconnected structures; default on for slabs, off for clusters.
        screen: skip structures evaluated more than this many eV above the reference;
            default 1 eV on slabs, none for clusters; ``None`` for none.
    """
    slab = system.template_atoms() is not None
    if prefilter is None:
        prefilter = slab
    if screen == "default":
        screen = SLAB_SCREEN if slab else None
    calculator = make_calculator(system.energy)
    n_template = system.n_template
    for count, row in enumerate(rows, start=1):
        if not row.get("ok", True) or row.get("energy") is None:
            continue
        if screen is not None and row.energy > reference + screen:
            continue
        atoms = row.toatoms()
        if prefilter and not is_connected(system, atoms.positions[n_template:]):
            continue
        atoms.set_constraint()
        if n_template:
            from ase.constraints import FixAtoms

            atoms.set_constraint(FixAtoms(mask=np.r_[system.frozen_mask(), np.zeros(system.n_mobile, bool)]))
        e = relaxed_energy(atoms, calculator, fmax=fmax)
        if e <= reference + tolerance:
            return Success(count, int(row.id), float(row.energy), e)
    return None
