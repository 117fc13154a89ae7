"""Polish: a steepest-descent line search of the best evaluated structure along its real forces.

The diffusion model samples structures relaxed in its *learned* field, whose minimum lies near,
not at, the real one: on Pt7/Pt(111) under EMT the adaptive search put a structure into the
heptamer's basin after a median of 172 evaluations (relaxation counted), yet no seed of four
evaluated an energy within 0.05 eV of the minimum in 640. Every evaluation already returns the
real forces, so after each sampled round the search also evaluates ``points`` copies of the best
structure so far moved along its forces by ``step/2``, ``step`` and ``2 step`` (the largest
atomic displacement, Å): a line search whose points are evaluated in parallel, like any other
round. The trust ``step`` then follows the result (:meth:`Polish.next_step`): doubled when the
longest step was best, halved when the shortest was, quartered when none improved on the best;
a structure polished twice without a gain is left alone until the search finds a lower one. The
polished structures are ordinary evaluations (``polish=True`` in ``evaluations.db``): counted,
trained on (so the model also learns the bottom of the basin it found), but kept out of the
batch's ESS and the temperature, which read the model's samples.

Measured on Pt7/Pt(111), EMT, seeds 0..3, budget 640 (``godiff bench pt7-pt111 --methods
godiff-ffg --seeds 4 --budget 640 --stop-at-success --jobs 2 --threads 1``): evaluations to the
minimum with the relaxation counted / to the first energy within 0.05 eV as evaluated, per seed:

==========================================  ============================  ======================
variant                                     relaxation counted            as evaluated
==========================================  ============================  ======================
no polish                                   122, 172, 360, -              -, -, -, -
3 points once per iteration                 131, 525, 328, -              409, 549, -, -
**3 points after each round** (the default) 207, 181, 284, 503            207, 224, 432, -
==========================================  ============================  ======================

The polish spent 15 % of the evaluations (33 to 96 of 225 to 640). Chaining line searches while
they gain and leaving a structure below 0.05 eV/Å alone were measured later on seeds 0..7 at budget
1,280 and did not lower the median (median 224 counted against 204; the settings ``polish_chain`` and
``polish_fmax``, removed in 0.2.0, with their figures in ``SearchConfig`` at commit ea5481f); the first energy within 0.05 eV trails the first structure in the
heptamer's basin mostly because the lowest evaluated structure is then often in another basin,
which the polish, taking the lowest, works on instead.

The rule is stateless apart from the step and the last polished structure, which a run keeps
in its checkpoint; the points are computed from the database and saved as a round before any is
evaluated, so a run killed in a polish round evaluates the same points when resumed.

Example:
    >>> import numpy as np
    >>> polish = Polish(points=3)
    >>> x = np.zeros((2, 3)); f = np.array([[1.0, 0, 0], [0, 0.5, 0]])
    >>> polish.candidates(x, f, step=0.2)[:, 0, 0].round(3).tolist()
    [0.1, 0.2, 0.4]
    >>> polish.next_step(0.2, best=-1.0, energies=[-1.1, -1.2, -1.3])
    0.4
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Polish"]


@dataclass(frozen=True)
class Polish:
    """The line search of the best structure.

    Attributes:
        points: evaluations per iteration along the forces (0: no polish); the multiples of
            ``step`` are powers of two centred on 1 (3 points: 1/2, 1, 2).
        grow: factor on ``step`` when the longest step was best (and its inverse when the
            shortest was).
        shrink: factor on ``step`` when no point improved on the best energy.
        smallest: ``step`` never falls below this (Å), so a converged polish still moves.
    """

    points: int = 3
    grow: float = 2.0
    shrink: float = 0.25
    smallest: float = 1e-3

    def settled(self, forces: np.ndarray) -> bool:
        """Whether a structure feeling ``forces`` (n, 3) feels no force at all: there is nothing to polish."""
        return _largest(forces) == 0.0

    def multiples(self) -> np.ndarray:
        """The line search's step multiples, shortest first."""
        exponents = np.arange(self.points) - (self.points - 1) // 2
        return 2.0 ** exponents.astype(float)

    def candidates(self, positions: np.ndarray, forces: np.ndarray, step: float) -> np.ndarray:
        """``positions`` (n, 3) moved along ``forces`` (n, 3) so that the atom with the largest
        force moves ``step`` times each multiple: (points, n, 3); nothing where no atom feels a force."""
        largest = _largest(forces)
        if self.points == 0 or largest == 0.0:
            return np.zeros((0,) + positions.shape)
        direction = forces / largest
        return positions[None] + (step * self.multiples())[:, None, None] * direction[None]

    @staticmethod
    def gained(*, best: float, energies) -> bool:
        """Whether a line search found anything below ``best`` (``None``: a failed evaluation)."""
        return any(e is not None and e < best for e in energies)

    def next_step(self, step: float, *, best: float, energies) -> float:
        """The trust step after a line search whose points had ``energies`` (shortest step first;
        ``None`` for a failed evaluation), from a structure of energy ``best``."""
        e = np.array([np.inf if v is None else v for v in energies], dtype=float)
        if len(e) == 0:
            return step
        if not self.gained(best=best, energies=energies):
            new = step * self.shrink
        elif e.argmin() == len(e) - 1:
            new = step * self.grow
        elif e.argmin() == 0 and len(e) > 1:
            new = step / self.grow
        else:
            new = step
        return float(max(new, self.smallest))


def _largest(forces: np.ndarray) -> float:
    """The largest atomic force norm of (n, 3) ``forces`` (0 for no atoms)."""
    forces = np.asarray(forces)
    return float(np.linalg.norm(forces, axis=-1).max()) if len(forces) else 0.0
