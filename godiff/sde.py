"""The variance-exploding SDE inside the confinement box: noise schedule, noising and its exact target.

**Schedule.** sigma(t) = sigma_min (sigma_max / sigma_min)^t for t in [0, 1], the geometric VE
schedule of Song et al. (2021). Its steps are spaced evenly in log sigma, which puts as many
steps at the atomic scale (0.01-1 Å, where bonds form) as at the box scale.

**Reaching the prior.** The reverse process starts from the uniform distribution over the box,
so the forward process must end there. A Gaussian of width sigma wrapped on a period P differs
from uniform by a relative amplitude exp(-2 pi^2 sigma^2 / P^2); at sigma = 0.6 P that is 8e-4.
``VESDE.for_box`` therefore sets sigma_max = 0.6 x the longest period of the box (the largest
cell height in-plane, twice the z-range for a reflecting interval). On Pt7/Pt(111) that is 8.6 Å,
where the authors' code stops at 1 Å and so starts its reverse process from a distribution the
model was never trained near.

**Periodicity and walls, the same in noising and target.** In-plane (slab), a coordinate lives on
the periodic cell: noising adds Gaussian noise and wraps, so the transition density is the
Gaussian summed over lattice images, and the target score is that sum's exact gradient
(a softmax over images of -(displacement)/sigma^2). Along z, and along every axis of a cuboid,
the walls reflect: noising adds Gaussian noise and folds it back into [lo, hi] by reflection,
so the transition density is the method-of-images sum over x0 + 2kW and 2 lo - x0 + 2kW, and the
target is again that sum's exact gradient. At large sigma both targets vanish, as the score of a
uniform prior must. The reverse sampler folds with the same maps after every step, so every
sample ends inside the box. A sphere has no closed-form image sum: there the radius is folded
by reflection and the target is the free-space Gaussian score (an approximation near the wall,
documented; use a cuboid where exactness matters). The box (:mod:`godiff.box`) owns these maps and targets; the SDE asks
it for them.

The network predicts epsilon; the target is ``eps = -sigma * score`` and the score of the model is
``-eps_hat / sigma``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from godiff.box import Box

__all__ = ["VESDE"]

PRIOR_FACTOR = 0.6


@dataclass(frozen=True)
class VESDE:
    """Variance-exploding SDE with a geometric schedule; holds no weights, saves as JSON.

    Example:
        >>> sde = VESDE(sigma_min=0.01, sigma_max=10.0)
        >>> round(float(sde.sigma(torch.tensor(0.5))), 4)
        0.3162
    """

    sigma_min: float = 0.01
    sigma_max: float = 10.0

    @classmethod
    def for_box(cls, box: Box, *, sigma_min: float = 0.01) -> "VESDE":
        """sigma_max = 0.6 x the box's longest period: the forward process reaches the uniform prior."""
        return cls(sigma_min=sigma_min, sigma_max=round(float(PRIOR_FACTOR * max(box.periods())), 4))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VESDE":
        return cls(**data)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level (Å) at time t in [0, 1]."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def perturb(
        self, x0: torch.Tensor, t: torch.Tensor, box: Box, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noise clean positions inside the box.

        Args:
            x0: (n_samples, n_atoms, 3) clean positions in Å.
            t: (n_samples,) times in [0, 1].

        Returns:
            (x_t, sigma, eps_target): noised positions, (n_samples,) sigmas, and the epsilon target
            ``-sigma * grad log p(x_t | x_0)`` of the folded kernel.
        """
        sigma = self.sigma(t)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        xt = box.fold(x0 + sigma[:, None, None] * noise)
        target = -sigma[:, None, None] * box.kernel_score(xt, x0, sigma, self.sigma_max)
        return xt, sigma, target
