"""Which sampled candidates are worth an evaluation: a lower confidence bound, duplicates skipped.

The sampler draws ``oversample`` times more candidates than an iteration evaluates, each relaxed
in the learned force field (:mod:`godiff.sampler`). This module picks the ones to pay for:

* **Descriptor.** A structure is described by its sorted interatomic distances, grouped by
  species pair (minimum image in a slab's plane), and on a template also by the sorted
  distances from each species' atoms to their ``SITE`` (4) nearest template atoms, which tell a
  top site from a bridge and an fcc hollow from an hcp one (only the hcp hollow has an atom of
  the second layer below it); all lengths in units of the system's bond length. The descriptor is
  invariant to translations in the plane, to permutations of like atoms and (for clusters) to
  rotations; two structures are compared by the root mean square of their difference.
* **Uncertainty.** The energy head has no error bar of its own, so the uncertainty is a
  distance-based one, as a Gaussian process's posterior is: sigma(x) = s sqrt(1 - exp(-d^2 /
  2 l^2)), with d the descriptor distance from x to the nearest evaluated structure, l the
  ``length`` (0.1 bond lengths) and s the root mean square error of the energy head on the
  previous iteration's batch, measured before that batch was trained on (the model's own
  out-of-sample error). Its calibration is measured every iteration and logged as
  ``uncertainty_coverage`` (the fraction of evaluated structures whose error is within sigma;
  a calibrated Gaussian gives 0.68) beside ``energy_head_rms``.
* **Acquisition.** Candidates are ranked by the lower confidence bound E_pred - kappa sigma
  (GOFEE's, kappa = 2): a structure far from everything evaluated is worth trying even when
  its prediction is not the lowest.
* **Duplicates.** A candidate within ``duplicate`` (0.02 bond lengths) of an evaluated
  structure, or of a candidate already picked, is skipped: the same minimum is never paid for
  twice. When too few distinct candidates remain, the iteration evaluates fewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Descriptor", "nearest_distances", "uncertainty", "select", "calibration"]

SITE = 4  # template neighbours per mobile atom in the descriptor


class Descriptor:
    """The structure descriptor of one system (see the module docstring): positions to features.

    Args:
        numbers: (n_mobile,) atomic numbers (or any species labels) of the mobile atoms.
        domain: the system's :class:`godiff.box.Box` (its minimum image and, for a slab, the
            height origin).
        bond_length: the length unit, Å.

    Example:
        >>> from godiff.system import load_system
        >>> system = load_system("lj13")
        >>> describe = Descriptor.for_system(system)
        >>> x = system.geometry().sample_uniform((2, 13), torch.Generator().manual_seed(0))
        >>> describe(x).shape                         # 78 pair distances
        (2, 78)
        >>> bool(np.allclose(describe(x.flip(1)), describe(x)))   # atoms permuted: the same structure
        True
    """

    def __init__(self, numbers, domain, bond_length: float, template=None):
        self.numbers = np.asarray(numbers)
        self.domain = domain
        self.scale = float(bond_length)
        self.template = None if template is None else torch.as_tensor(np.asarray(template, dtype=float))
        i, j = np.triu_indices(len(self.numbers), k=1)
        first = self.numbers[i] <= self.numbers[j]  # labels may be numbers or symbols
        low = np.where(first, self.numbers[i], self.numbers[j])
        high = np.where(first, self.numbers[j], self.numbers[i])
        species = np.unique(self.numbers)
        kinds = ((low == a) & (high == b) for a in species for b in species if a <= b)  # sorted pairs
        self._pairs = [(i[m], j[m]) for m in kinds if m.any()]
        self._species = [np.flatnonzero(self.numbers == z) for z in sorted(set(self.numbers.tolist()))]

    @classmethod
    def for_system(cls, system) -> "Descriptor":
        """The descriptors of ``system``'s mobile atoms in its own box and bond length."""
        template = system.template_atoms()
        return cls(
            system.mobile_numbers,
            system.geometry(),
            system.bond_length(),
            None if template is None else template.positions,
        )

    def __call__(self, positions) -> np.ndarray:
        """(n, n_mobile, 3) positions, Å -> (n, features) descriptors."""
        x = torch.as_tensor(positions).double()
        parts = []
        for i, j in self._pairs:
            d = self.domain.displacement(x[:, i], x[:, j]).norm(dim=-1)
            parts.append(torch.sort(d, dim=-1).values)
        if self.template is not None and len(self.template):
            k = min(SITE, len(self.template))
            d = self.domain.displacement(x[:, :, None, :], self.template[None, None]).norm(dim=-1)
            site = torch.topk(d, k, dim=-1, largest=False).values  # (n, n_mobile, k), nearest first
            parts.extend(torch.sort(site[:, idx].flatten(1), dim=-1).values for idx in self._species)
        return (torch.cat(parts, dim=-1) / self.scale).numpy()


def nearest_distances(candidates: np.ndarray, evaluated: np.ndarray) -> np.ndarray:
    """(n,) RMS descriptor distance from each candidate to its nearest evaluated structure
    (``inf`` when nothing is evaluated yet)."""
    candidates = np.asarray(candidates, dtype=float)
    if len(evaluated) == 0:
        return np.full(len(candidates), np.inf)
    d = torch.cdist(torch.as_tensor(candidates), torch.as_tensor(np.asarray(evaluated, dtype=float)))
    return (d.min(dim=1).values / np.sqrt(candidates.shape[1])).numpy()


def uncertainty(distance, *, spread: float, length: float) -> np.ndarray:
    """sigma = spread sqrt(1 - exp(-d^2 / 2 length^2)): 0 on an evaluated structure, ``spread`` far away.

    Example:
        >>> [round(float(v), 3) for v in uncertainty([0.0, 0.1, np.inf], spread=1.0, length=0.1)]
        [0.0, 0.627, 1.0]
    """
    d = np.asarray(distance, dtype=float)
    return float(spread) * np.sqrt(1.0 - np.exp(-0.5 * (d / float(length)) ** 2))


@dataclass(frozen=True)
class Acquisition:
    """The settings of :func:`select`."""

    kappa: float = 2.0
    length: float = 0.1
    duplicate: float = 0.02


def select(
    descriptors: np.ndarray,
    predicted: np.ndarray,
    evaluated: np.ndarray,
    n: int,
    *,
    spread: float,
    settings: Acquisition = Acquisition(),
) -> np.ndarray:
    """Indices of at most ``n`` candidates, lowest lower confidence bound first, no duplicates.

    Args:
        descriptors: (m, features) of the candidates.
        predicted: (m,) their energies predicted by the energy head.
        evaluated: (k, features) of the structures already evaluated.
        n: how many to pick.
        spread: ``s`` of :func:`uncertainty` (the energy head's recent error).

    Example:
        >>> fp = np.array([[0.0], [0.0], [1.0], [5.0]])
        >>> select(fp, np.array([0.0, 0.0, 0.5, 3.0]), np.array([[5.0]]), 3, spread=1.0).tolist()
        [0, 2]
    """
    distance = nearest_distances(descriptors, evaluated)
    sigma = uncertainty(distance, spread=spread, length=settings.length)
    bound = np.asarray(predicted, dtype=float) - settings.kappa * sigma
    order = np.argsort(bound, kind="stable")
    picked: list[int] = []
    for i in order:
        if len(picked) == n:
            break
        if distance[i] < settings.duplicate:
            continue
        if picked and nearest_distances(descriptors[i : i + 1], descriptors[picked])[0] < settings.duplicate:
            continue
        picked.append(int(i))
    return np.array(picked, dtype=int)


def calibration(errors, sigma) -> float | None:
    """Fraction of ``|errors|`` within ``sigma`` (0.68 for a calibrated Gaussian); None if empty."""
    errors, sigma = np.abs(np.asarray(errors, dtype=float)), np.asarray(sigma, dtype=float)
    return None if errors.size == 0 else float(np.mean(errors <= sigma))
