"""When a run stops: its budget of evaluations, its patience, or its iterations.

:class:`RunStop` is the run's stop rule, a small object built from the settings (as the temperature
schedule and the batch size are in :mod:`godiff.schedule`); :class:`godiff.search.Search` asks it
after every iteration and writes its answer, in words, to ``stopped.json``. A stopped run resumes
like any other with a larger budget or patience, or more iterations.

Example:
    >>> rule = RunStop(iterations=100, budget=500, patience=200, improvement=0.02)
    >>> rule.reason(evaluations=320, stalled=120, next_iteration=9) is None
    True
    >>> rule.reason(evaluations=500, stalled=0, next_iteration=12)
    'budget'
    >>> rule.message("patience")
    'the best energy has not improved by more than 0.02 for 200 evaluations'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunStop"]


@dataclass(frozen=True)
class RunStop:
    """The stop rule of a run.

    Attributes:
        iterations: the most iterations.
        budget: the most evaluations in all (``None``: no budget).
        patience: stop once the best has not improved for this many evaluations (``None``: never).
        improvement: the fall of the best energy that counts as an improvement for ``patience``.
    """

    iterations: int
    budget: int | None = None
    patience: int | None = None
    improvement: float = 0.0

    def reason(self, *, evaluations: int, stalled: int, next_iteration: int) -> str | None:
        """Why the run must stop now (``None``: it goes on), after ``evaluations`` in all, ``stalled``
        of them since the best last improved, with iteration ``next_iteration`` next."""
        if self.budget is not None and evaluations >= self.budget:
            return "budget"
        if self.patience is not None and evaluations > 0 and stalled >= self.patience:
            return "patience"
        if next_iteration >= self.iterations:
            return "iterations"
        return None

    def message(self, reason: str | None) -> str:
        """``reason`` in words (a caller's own reason as it is)."""
        messages = {
            "budget": f"the budget of {self.budget} evaluations is spent",
            "patience": f"the best energy has not improved by more than {self.improvement:g} "
            f"for {self.patience} evaluations",
            "iterations": f"all {self.iterations} iterations are done",
            "converged": "the model proposed nothing that was not evaluated already",
            "stopped by the caller": "the caller's stop condition was met",
        }
        return messages.get(reason, str(reason))
