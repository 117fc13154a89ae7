"""Temperature annealing and batch sizing: what each iteration trains at and how much it evaluates.

Temperatures are in the system's energy unit (eV; ε for Lennard-Jones), as k_B T.

Two schedules:

* :class:`ExponentialSchedule` (``schedule: exponential``, the paper's): iteration k of K trains at
  T_k = T_start (T_end / T_start)^(k / (K - 1)), from 5 eV to 0.02 eV whatever the system.
* :class:`AdaptiveSchedule` (``schedule: adaptive``, the default; the rule of the authors' current
  code): the first temperature is ``factor`` times the spread of the first batch's energies, so it
  is set in the system's own unit and scale; each later iteration multiplies T by ``slow`` when the
  batch's dimensionless heat capacity C = Var_T(E) / T^2 exceeds 1 and by ``fast`` otherwise,
  never below T_end. Var_T is the variance of the batch energies under their Boltzmann weights
  at T: when many new structures lie within a few T of each other (C > 1, a rough landscape the
  model is still resolving) cooling slows; when one or two dominate (C < 1) there is nothing left
  to resolve at this temperature and it halves. With ``reheat`` set, a search that sits at T_end
  while its best has not improved (by more than T_end) for ``reheat`` evaluations is heated
  again to ``factor`` times the spread of its last batch, the rule of the first temperature, and
  cools from there: at T_end the training weights put all mass on the best structure found, and
  the variations start from copies of it, so a search that reached T_end in a higher minimum
  stays there. A model so concentrated that an iteration draws nothing it has not evaluated
  already is heated the same way at once (:meth:`godiff.search.Search._iteration`).

The spread is the standard deviation of the energies capped at their median: the low half that
ranking needs, not the clashes of a random placement (which put the plain standard deviation of a
Pt7 batch at hundreds of eV).

:class:`BatchSize` sizes an iteration by the effective sample size (ESS) of its batch's Boltzmann
weights, ESS = (sum w)^2 / sum w^2, at the temperature the model was trained at: structures are
sampled and evaluated in rounds of ``minimum`` until the ESS reaches ``target_ess`` or the batch
holds ``maximum``. A batch the model already concentrates (ESS at target after one round) costs
``minimum`` evaluations; one whose low structures are rare buys more of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ExponentialSchedule",
    "AdaptiveSchedule",
    "BatchSize",
    "effective_sample_size",
    "heat_capacity",
    "energy_spread",
]


def _weights(energies, temperature: float) -> np.ndarray:
    e = np.asarray(energies, dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return e
    w = np.exp(-(e - e.min()) / float(temperature))
    return w / w.sum()


def effective_sample_size(energies, temperature: float) -> float:
    """ESS of the Boltzmann weights of ``energies`` at ``temperature``: between 1 and len.

    Example:
        >>> round(effective_sample_size([0.0, 0.0, 10.0], 0.1), 3)
        2.0
    """
    w = _weights(energies, temperature)
    return 0.0 if w.size == 0 else float(1.0 / np.sum(w**2))


def heat_capacity(energies, temperature: float) -> float:
    """Var_T(E) / T^2 with Var_T the variance under the Boltzmann weights at ``temperature``.

    Example:
        >>> round(heat_capacity([0.0] + [3.0] * 40, 1.0), 2)   # many just above the lowest: C > 1
        2.0
        >>> round(heat_capacity([0.0, 5.0, 9.0], 1.0), 2)      # one dominates
        0.18
    """
    w = _weights(energies, temperature)
    if w.size == 0:
        return 0.0
    e = np.asarray(energies, dtype=float)
    e = e[np.isfinite(e)]
    mean = float(np.sum(w * e))
    return float(np.sum(w * (e - mean) ** 2)) / float(temperature) ** 2


def energy_spread(energies) -> float:
    """Standard deviation of the energies capped at their median (0 for fewer than two).

    Example:
        >>> round(energy_spread([0.0, 2.0, 1000.0]), 3)   # the clash at 1000 counts as 2
        0.943
    """
    e = np.asarray(energies, dtype=float)
    e = e[np.isfinite(e)]
    if e.size < 2:
        return 0.0
    return float(np.minimum(e, np.median(e)).std())


@dataclass(frozen=True)
class ExponentialSchedule:
    """Exponential annealing; holds no state beyond its three numbers.

    Example:
        >>> s = ExponentialSchedule(start=5.0, end=0.02, iterations=3)
        >>> [round(s.temperature(k), 4) for k in range(3)]
        [5.0, 0.3162, 0.02]
    """

    start: float = 5.0
    end: float = 0.02
    iterations: int = 20

    def __post_init__(self):
        if not (self.start > 0 and self.end > 0):
            raise ValueError("temperatures must be positive")
        if self.iterations < 1:
            raise ValueError("iterations must be at least 1")

    def temperature(self, iteration: int) -> float:
        if self.iterations == 1:
            return self.end
        frac = min(max(iteration / (self.iterations - 1), 0.0), 1.0)
        return self.start * (self.end / self.start) ** frac

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExponentialSchedule":
        return cls(**data)


@dataclass(frozen=True)
class AdaptiveSchedule:
    """The temperature from the energies: the first from their spread, each next by the heat capacity.

    Stateless: the temperature of an iteration is a function of the previous one and its batch,
    so a resumed run recomputes it from the log and the database.

    Example:
        >>> s = AdaptiveSchedule(end=0.02, factor=1.0, fast=0.5, slow=0.9)
        >>> round(s.first([0.0, 2.0, 1000.0]), 3)
        0.943
        >>> s.next(1.0, [0.0, 5.0, 9.0])       # one structure dominates: C < 1, fast
        0.5
        >>> s.next(1.0, [0.0] + [3.0] * 40)   # many just above the lowest: C > 1, slow
        0.9
        >>> s.next(0.03, [0.0, 1.0])           # never below the end
        0.02
        >>> r = AdaptiveSchedule(end=0.02, reheat=100)
        >>> r.next(0.02, [0.0, 2.0, 1000.0], stalled=99)   # not stalled long enough
        0.02
        >>> round(r.next(0.02, [0.0, 2.0, 1000.0], stalled=100), 3)   # heated to the spread
        0.943
        >>> r.next(0.5, [0.0, 5.0, 9.0], stalled=500)     # above the end: cools as ever
        0.25
    """

    end: float = 0.02
    factor: float = 1.0
    fast: float = 0.5
    slow: float = 0.9
    start: float | None = None
    reheat: int = 0

    def first(self, energies) -> float:
        """T of the first iteration: ``start`` if given, else ``factor`` x :func:`energy_spread`."""
        if self.start is not None:
            return float(self.start)
        return max(self.end, self.factor * energy_spread(energies))

    def reheated(self, energies) -> float:
        """T a reheat heats to: ``factor`` x :func:`energy_spread` of ``energies``, never below the end
        (the rule of the first temperature, ``start`` aside)."""
        return max(self.end, self.factor * energy_spread(energies))

    def next(self, temperature: float, energies, *, stalled: int = 0) -> float:
        """T after an iteration that trained at ``temperature`` and evaluated ``energies``, the
        best having not improved for ``stalled`` evaluations."""
        if self.reheat and temperature <= self.end and stalled >= self.reheat:
            return self.reheated(energies)
        rate = self.slow if heat_capacity(energies, temperature) > 1.0 else self.fast
        return max(self.end, float(temperature) * rate)


@dataclass(frozen=True)
class BatchSize:
    """How many structures an iteration evaluates: rounds of ``minimum`` up to ``maximum`` until
    the batch's ESS at the sampling temperature reaches ``target_ess``.

    Example:
        >>> b = BatchSize(minimum=2, maximum=6, target_ess=2.0)
        >>> b.enough([0.0, 3.0], temperature=0.1)          # ESS 1: another round
        False
        >>> b.enough([0.0, 3.0, 0.0, 3.0], temperature=0.1)  # ESS 2
        True
        >>> b.next_round(have=6, budget_left=100)           # full
        0
        >>> b.next_round(have=2, budget_left=1)             # what the budget leaves
        1
    """

    minimum: int = 16
    maximum: int = 64
    target_ess: float = 8.0

    def enough(self, energies, *, temperature: float | None) -> bool:
        """Whether a batch with these energies needs no further round (no temperature: one round)."""
        if temperature is None or len(energies) >= self.maximum:
            return True
        return effective_sample_size(energies, temperature) >= self.target_ess

    def next_round(self, *, have: int, budget_left: int | None = None) -> int:
        """Size of the next round of a batch that holds ``have``: 0 when it is full."""
        n = max(0, min(self.minimum, self.maximum - have))
        return n if budget_left is None else max(0, min(n, budget_left))
