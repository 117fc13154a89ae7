"""Temperature annealing: exponential from a start to an end temperature over the iterations.

Temperatures are in eV (k_B T). Iteration k of K trains at
T_k = T_start (T_end / T_start)^(k / (K - 1)), so the first iteration explores at T_start and the
last concentrates at T_end (0.02 eV, the paper's final temperature).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ExponentialSchedule"]


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
