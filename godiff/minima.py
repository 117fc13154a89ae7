"""The distinct low minima of a run, not only its best: the low-lying ensemble a catalysis user needs.

Every successful evaluation of a run is described by the acquisition's structure descriptor
(:class:`godiff.acquisition.Descriptor`: sorted distances by species pair and to the nearest
template atoms, in bond lengths, blind to translations in the plane and to permutations of like
atoms). Taken from the lowest energy up, a structure further than ``distance`` from every minimum
kept so far starts a new one, until ``limit`` minima are kept; then every evaluation joins the
nearest minimum within ``distance``, which counts it. A minimum is reported by its lowest
evaluation (the energy as evaluated, unrelaxed), the evaluation at which its group was first
evaluated and how many evaluations fell into it.

``distance`` is 0.1 bond lengths (the acquisition's uncertainty length) up to 7 mobile atoms and
shrinks above (:func:`distance_for`). Measured on a Pt7/Pt(111)
run of 400 evaluations under EMT (``godiff run pt7-pt111 --budget 200 --seed 5``, resumed to 400):
at 0.1 the heptamer's group holds 24 evaluations, the first at evaluation 259 (25.16 eV, below
every other island's relaxed energy, 25.21 eV and up) where the first within 0.05 eV is 293, and
the next minima are other islands at 25.25, 25.30 and 25.33 eV; at 0.05 the same list, the
heptamer's group 22 strong; at 0.2 the heptamer's group reaches back to evaluation 144 at
27.82 eV, a structure that is not the heptamer.

Example:
    >>> import numpy as np
    >>> d = np.array([[0.0], [0.03], [1.0], [1.05], [2.0]])      # descriptors, bond lengths
    >>> e = np.array([-1.0, -0.9, -0.5, -0.7, 0.3])
    >>> [(m.index, m.count, m.first) for m in group_minima(d, e, distance=0.1, limit=2)]
    [(0, 2, 0), (3, 2, 2)]
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DISTANCE",
    "LIMIT",
    "Minimum",
    "distance_for",
    "rms_distances",
    "group_minima",
    "distinct_minima",
    "minima_xyz",
]

DISTANCE = 0.1  # descriptor RMS distance, bond lengths, within which two evaluations are one minimum
DISTANCE_ATOMS = 7  # mobile atoms at which DISTANCE was measured (Pt7/Pt(111)); larger systems scale it
LIMIT = 20  # minima listed


def distance_for(n_mobile: int) -> float:
    """:data:`DISTANCE` for a system of ``n_mobile`` mobile atoms: as measured up to 7 atoms, and
    times ``sqrt(7 / n_mobile)`` above, since two structures that differ in a few atoms differ in
    a share of their sorted distances that falls as 1/n, and the RMS over them as its root.

    Measured on LJ26 (``benchmarks/lj26-transfer``, the 120 lowest sampled structures of seed 1,
    each relaxed with BFGS): the other relaxed minima lie 0.068 to 0.17 from the global minimum,
    so 0.1 merged them into one; unrelaxed structures lie 0.022 to 0.11 from a relaxation's end
    whichever basin they relax to, so at 0.1 nearly every compact structure was "near" an earlier
    relaxation and seed 0's stalled relaxations started from exploded ones (7, 5,866 and
    281,671 ε). At 26 atoms it is 0.052.

    >>> distance_for(7), distance_for(3), round(distance_for(28), 3)
    (0.1, 0.1, 0.05)
    """
    return DISTANCE * min(1.0, (DISTANCE_ATOMS / max(int(n_mobile), 1)) ** 0.5)


@dataclass(frozen=True)
class Minimum:
    """One distinct minimum of a list of evaluations (indices into that list).

    Attributes:
        index: its lowest evaluation.
        energy: that evaluation's energy.
        first: the earliest evaluation of its group (the lowest index).
        count: evaluations in its group.
    """

    index: int
    energy: float
    first: int
    count: int


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) RMS distances between descriptor rows."""
    diff = a[:, None, :] - b[None, :, :]
    return np.sqrt(np.mean(diff**2, axis=-1))


def group_minima(descriptors, energies, *, distance: float = DISTANCE, limit: int = LIMIT) -> list[Minimum]:
    """The distinct minima of evaluations in time order (module docstring), lowest first.

    Args:
        descriptors: (n, features) in bond lengths.
        energies: (n,) their energies.
        distance: the RMS descriptor distance within which two evaluations are one minimum.
        limit: the most minima kept.
    """
    descriptors = np.asarray(descriptors, dtype=float)
    energies = np.asarray(energies, dtype=float)
    if len(energies) == 0:
        return []
    kept: list[int] = []
    for i in np.argsort(energies, kind="stable"):
        if len(kept) == limit:
            break
        if kept and rms_distances(descriptors[i : i + 1], descriptors[kept]).min() < distance:
            continue
        kept.append(int(i))
    d = np.concatenate(
        [rms_distances(descriptors[start : start + 1024], descriptors[kept]) for start in range(0, len(energies), 1024)]
    )
    nearest = d.argmin(axis=1)
    member = d[np.arange(len(energies)), nearest] < distance
    minima = []
    for k in range(len(kept)):
        group = np.flatnonzero(member & (nearest == k))
        group = group if len(group) else np.array([kept[k]])  # a kept structure always counts itself
        lowest = int(group[np.argmin(energies[group])])
        minima.append(Minimum(index=lowest, energy=float(energies[lowest]), first=int(group.min()), count=len(group)))
    return sorted(minima, key=lambda m: (m.energy, m.first))


def distinct_minima(system, rows, *, distance: float | None = None, limit: int = LIMIT) -> list[tuple[Minimum, object]]:
    """The distinct minima of a run's database ``rows`` (in the order evaluated; failed ones are
    skipped but keep their place in the count): ``(minimum, row)`` pairs, lowest first, where
    ``minimum.first`` and ``minimum.index`` are 1-based evaluation numbers of the run. ``distance``
    defaults to the system's (:func:`distance_for`)."""
    from godiff.acquisition import Descriptor
    from godiff.rundir import succeeded

    numbered = [(n, row) for n, row in enumerate(rows, start=1) if succeeded(row)]
    if not numbered:
        return []
    n_template = len(rows[0].positions) - system.n_mobile
    describe = Descriptor.for_system(system)
    descriptors = describe(np.stack([row.positions[n_template:] for _, row in numbered]))
    energies = np.array([row.energy for _, row in numbered])
    out = []
    distance = distance_for(system.n_mobile) if distance is None else distance
    for m in group_minima(descriptors, energies, distance=distance, limit=limit):
        number, row = numbered[m.index]
        out.append((Minimum(index=number, energy=m.energy, first=numbered[m.first][0], count=m.count), row))
    return out


def minima_xyz(minima: list) -> str:
    """``minima.xyz``: one extxyz frame per minimum of :func:`distinct_minima`, lowest first, its
    energy in the frame's calculator and ``rank``, ``evaluation`` (its lowest),
    ``first_evaluation`` and ``count`` in the comment line."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for rank, (m, row) in enumerate(minima, start=1):
        atoms = row.toatoms()
        atoms.calc = SinglePointCalculator(atoms, energy=m.energy)
        atoms.info.update(rank=rank, evaluation=m.index, first_evaluation=m.first, count=m.count)
        frames.append(atoms)
    buf = io.StringIO()
    if frames:
        write(buf, frames, format="extxyz")
    return buf.getvalue()
