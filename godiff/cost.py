"""Candidates sized to the calculator: how much network time an evaluation may cost.

A search times every calculator call and every phase of the network, so it knows what an
evaluation costs the user and what a candidate costs the network. With ``network_share`` set, each
iteration draws as many candidates per evaluation as keep the network's seconds per evaluation
(the training's share plus the candidates' sampling) within ``network_share`` times the
calculator's own seconds per evaluation, between ``min_oversample`` and ``oversample``:

    oversample = clamp((network_share * calculator - training) / sampling_per_candidate,
                       min_oversample, oversample)

A DFT code at minutes per evaluation keeps the ceiling (today's 32); EMT or Lennard-Jones, whose
calls cost milliseconds, get the floor. The measurements are the run's own, summed over its
finished iterations (:class:`CostMeter`, kept in every checkpoint), and the count is decided once
at the start of each iteration, so a resumed iteration draws what the interrupted one drew. Two
runs of the same settings may differ where their timings put a decision on either side of a
boundary; ``network_share: null`` keeps the fixed ``oversample`` and runs that repeat bit for bit.
The default, 1, was chosen by wall time to the minimum under EMT (``SearchConfig.network_share``):
on Pt7/Pt(111) the floor of 8 candidates cost 50 % more evaluations and 9 % less waiting at the
median, 56 % less at the worst seed.

Example:
    >>> meter = CostMeter(calculator_seconds=16.0, evaluations=16, sampling_seconds=5.12,
    ...                   candidates=512, training_seconds=3.2)
    >>> round(meter.sampling_per_candidate(), 4), meter.training_per_evaluation()
    (0.01, 0.2)
    >>> CandidateCount(share=1.0, floor=8, ceiling=32).oversample(meter)   # (1.0 - 0.2) / 0.01 = 80
    32.0
    >>> CandidateCount(share=0.5, floor=8, ceiling=32).oversample(meter)   # (0.5 - 0.2) / 0.01 = 30
    30.0
    >>> CandidateCount(share=0.1, floor=8, ceiling=32).oversample(meter)   # less than the training alone
    8.0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["CostMeter", "CandidateCount", "network_seconds"]

#: The phases of an iteration's ``seconds`` (``log.jsonl``) that are the network's.
NETWORK_PHASES = ("sampling", "training")


def network_seconds(phases: dict) -> float:
    """The network's seconds of one iteration, from its ``log.jsonl`` ``seconds`` (a phase missing
    or None counts 0); the rest (``evaluation``) is the calculator's and the bookkeeping's.

    Example:
        >>> network_seconds({"sampling": 2.0, "evaluation": 5.0, "training": 1.5})
        3.5
    """
    return sum(float(phases.get(name) or 0.0) for name in NETWORK_PHASES)


@dataclass
class CostMeter:
    """A run's measured costs, summed over its finished iterations.

    Attributes:
        calculator_seconds: the calculator's timed calls (each evaluation's ``seconds``).
        evaluations: the evaluations those calls made.
        sampling_seconds: the network's sampling of the iterations that drew candidates.
        candidates: the candidates those iterations drew.
        training_seconds: the network's training.
    """

    calculator_seconds: float = 0.0
    evaluations: int = 0
    sampling_seconds: float = 0.0
    candidates: int = 0
    training_seconds: float = 0.0

    def add_iteration(self, *, calculator: float, evaluations: int, sampling: float, candidates: int, training: float):
        """Add one finished iteration; sampling counts only where it drew candidates (the first
        iteration of a search from scratch places structures from the prior, which costs nothing)."""
        self.calculator_seconds += float(calculator)
        self.evaluations += int(evaluations)
        if candidates:
            self.sampling_seconds += float(sampling)
            self.candidates += int(candidates)
        self.training_seconds += float(training)

    def calculator_per_evaluation(self) -> float | None:
        return self.calculator_seconds / self.evaluations if self.evaluations else None

    def sampling_per_candidate(self) -> float | None:
        return self.sampling_seconds / self.candidates if self.candidates else None

    def training_per_evaluation(self) -> float | None:
        return self.training_seconds / self.evaluations if self.evaluations else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None, *, where: str = "state.json") -> "CostMeter":
        """Read :meth:`to_dict`'s form (empty or None: nothing measured yet); a key it does not
        know or a value that is not a finite number >= 0 is refused (a checkpoint is data)."""
        from godiff.errors import CheckpointError

        data = data or {}
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: cost is {type(data).__name__}, not an object")
        fields = {f: type(getattr(cls(), f)) for f in cls().to_dict()}
        for key, value in data.items():
            kind = fields.get(key)
            ok = kind is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0 or (kind is int and value != int(value)):
                raise CheckpointError(f"{where}: cost.{key} = {value!r} is not a measured cost")
        return cls(**{k: fields[k](v) for k, v in data.items()})


@dataclass(frozen=True)
class CandidateCount:
    """The rule of the module docstring: ``share`` (None: always ``ceiling``), ``floor`` and
    ``ceiling`` candidates per evaluation."""

    share: float | None
    floor: float
    ceiling: float

    def oversample(self, meter: CostMeter) -> float:
        """Candidates per evaluation for the next iteration, from ``meter``; the ceiling until the
        run has timed a draw of candidates and an evaluation."""
        per_candidate = meter.sampling_per_candidate()
        calculator = meter.calculator_per_evaluation()
        if self.share is None or per_candidate is None or calculator is None or per_candidate <= 0:
            return float(self.ceiling)
        room = self.share * calculator - (meter.training_per_evaluation() or 0.0)
        fits = math.floor(room / per_candidate + 1e-9) if room > 0 else 0  # 14.999999... is 15
        return float(min(self.ceiling, max(self.floor, fits)))
