"""The variance-exploding SDE inside the confinement box: noise schedule, noising and its exact target.

**Schedule.** sigma(t) = sigma_min (sigma_max / sigma_min)^t for t in [0, 1], the geometric VE
schedule of Song et al. (2021). Its steps are spaced evenly in log sigma, which puts as many
steps at the atomic scale (0.01-1 Å, where bonds form) as at the box scale.

**Reaching the prior.** The reverse process starts from the uniform distribution over the box,
so the forward process must end there. A Gaussian of width sigma wrapped on a period P differs
from uniform by a relative amplitude exp(-2 pi^2 sigma^2 / P^2); at sigma = 0.6 P that is 8e-4.
``VESDE.for_domain`` therefore sets sigma_max = 0.6 x the longest period of the box (the largest
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
documented; use a cuboid where exactness matters).

The network predicts epsilon; the target is ``eps = -sigma * score`` and the score of the model is
``-eps_hat / sigma``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from godiff.geometry import minimum_image, wrap

__all__ = ["Domain", "VESDE"]

PRIOR_FACTOR = 0.6
SLAB_PERIODIC = (True, True, False)  # a and b in the xy plane, c along z (checked by godiff.system)


def _fold(u: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Reflect u into [lo, hi] (period 2 W mirror folding)."""
    w = hi - lo
    y = torch.remainder(u - lo, 2 * w)
    return lo + torch.where(y > w, 2 * w - y, y)


def _image_score(diff: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score of a Gaussian mixture with equal-width components.

    Args:
        diff: (..., n_images, d) x_t minus each image centre.
        sigma: broadcastable to ``diff.shape[:-2]``.

    Returns:
        (..., d) gradient of log sum_k N(x_t; c_k, sigma^2).
    """
    s2 = (sigma**2).unsqueeze(-1)
    logw = -(diff**2).sum(-1) / (2 * s2)
    w = torch.softmax(logw, dim=-1).unsqueeze(-1)
    return -(w * diff).sum(-2) / s2


@dataclass(frozen=True)
class Domain:
    """The box as the SDE sees it (absolute Cartesian numbers, no weights).

    Attributes:
        kind: "slab", "cuboid" or "sphere".
        cell: (3, 3) cell in Å (slab: the template cell, a and b in the xy plane).
        lower: (3,) lower bounds of the reflecting axes (slab: only z is used).
        upper: (3,) upper bounds.
        center: (3,) centre (sphere).
        radius: sphere radius in Å, else 0.
    """

    kind: str
    cell: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    center: np.ndarray
    radius: float = 0.0

    @classmethod
    def from_geometry(cls, geometry) -> "Domain":
        """From a :class:`godiff.system.BoxGeometry`."""
        return cls(
            kind=geometry.kind,
            cell=np.array(geometry.cell, dtype=float),
            lower=np.nan_to_num(np.array(geometry.lower, dtype=float)),
            upper=np.nan_to_num(np.array(geometry.upper, dtype=float)),
            center=np.array(geometry.center, dtype=float),
            radius=float(geometry.radius or 0.0),
        )

    # -- helpers -------------------------------------------------------------------------------
    def _t(self, array, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(array, dtype=like.dtype, device=like.device)

    def _inplane(self):
        return self.cell[:2, :2]

    def periods(self) -> list[float]:
        """The longest wavelength of each independent direction of the box, in Å."""
        if self.kind == "slab":
            a = self._inplane()
            area = abs(np.linalg.det(a))
            heights = [area / np.linalg.norm(a[1]), area / np.linalg.norm(a[0])]
            return heights + [2 * (self.upper[2] - self.lower[2])]
        if self.kind == "cuboid":
            return list(2 * (self.upper - self.lower))
        return [4 * self.radius]

    # -- maps ---------------------------------------------------------------------------------
    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """Map positions (..., 3) into the box: wrap periodic axes, reflect at walls."""
        if self.kind == "slab":
            xy = wrap(x, self._t(self.cell, x), SLAB_PERIODIC)[..., :2]
            z = _fold(x[..., 2:], self._t(self.lower[2:], x), self._t(self.upper[2:], x))
            return torch.cat([xy, z], dim=-1)
        if self.kind == "cuboid":
            return _fold(x, self._t(self.lower, x), self._t(self.upper, x))
        c = self._t(self.center, x)
        d = x - c
        r = d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        r_new = _fold(r, torch.zeros_like(r), torch.full_like(r, self.radius))
        return c + d / r * r_new

    def sample_uniform(self, shape: tuple, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Uniform positions in the box, shape ``shape + (3,)``."""
        u = torch.rand(*shape, 3, generator=generator, dtype=dtype)
        like = u
        if self.kind == "slab":
            xy = u[..., :2] @ self._t(self._inplane(), like)
            lo, hi = self.lower[2], self.upper[2]
            return torch.cat([xy, lo + (hi - lo) * u[..., 2:]], dim=-1)
        if self.kind == "cuboid":
            lo, hi = self._t(self.lower, like), self._t(self.upper, like)
            return lo + (hi - lo) * u
        g = torch.randn(*shape, 3, generator=generator, dtype=dtype)
        g = g / g.norm(dim=-1, keepdim=True)
        r = self.radius * u[..., :1] ** (1.0 / 3.0)
        return self._t(self.center, like) + g * r

    def contains(self, x: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Boolean (...,) whether each position lies in the box."""
        if self.kind == "slab":
            z = x[..., 2]
            return (z >= self.lower[2] - tol) & (z <= self.upper[2] + tol)
        if self.kind == "cuboid":
            lo, hi = self._t(self.lower, x), self._t(self.upper, x)
            return ((x >= lo - tol) & (x <= hi + tol)).all(-1)
        return (x - self._t(self.center, x)).norm(dim=-1) <= self.radius + tol

    def displacement(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x - y, minimum image in-plane for a slab."""
        d = x - y
        if self.kind != "slab":
            return d
        return minimum_image(d, self._t(self.cell, d), SLAB_PERIODIC)

    # -- transition kernel --------------------------------------------------------------------
    def _reflect_score(self, xt, x0, lo, hi, sigma, sigma_max):
        w = hi - lo
        k = int(math.ceil(5 * sigma_max / (2 * w))) + 1
        ks = torch.arange(-k, k + 1, dtype=xt.dtype, device=xt.device) * 2 * w
        centres = torch.cat([x0.unsqueeze(-1) + ks, (2 * lo - x0).unsqueeze(-1) + ks], dim=-1)
        diff = (xt.unsqueeze(-1) - centres).unsqueeze(-1)  # (..., n_img, 1)
        return _image_score(diff, sigma)[..., 0]

    def kernel_score(self, xt: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_max: float) -> torch.Tensor:
        """Exact gradient of log p(x_t | x_0) for the folded Gaussian of width sigma.

        Args:
            xt, x0: (n_samples, n_atoms, 3) in Å.
            sigma: (n_samples,) in Å.
            sigma_max: the schedule's largest sigma (sets how many images are summed).

        Returns:
            (n_samples, n_atoms, 3) in 1/Å.
        """
        s = sigma[:, None, None]
        if self.kind == "slab":
            a = self._t(self._inplane(), xt)
            frac = (xt[..., :2] - x0[..., :2]) @ torch.linalg.inv(a)
            frac = frac - torch.round(frac)
            heights = [p for p in self.periods()[:2]]
            k = [int(math.ceil(5 * sigma_max / h)) + 1 for h in heights]
            grid = torch.stack(
                torch.meshgrid(
                    torch.arange(-k[0], k[0] + 1, dtype=xt.dtype, device=xt.device),
                    torch.arange(-k[1], k[1] + 1, dtype=xt.dtype, device=xt.device),
                    indexing="ij",
                ),
                dim=-1,
            ).reshape(-1, 2)
            diff = (frac.unsqueeze(-2) + grid) @ a  # (b, n, n_img, 2)
            score_xy = _image_score(diff, sigma[:, None])
            score_z = self._reflect_score(
                xt[..., 2], x0[..., 2], float(self.lower[2]), float(self.upper[2]), sigma[:, None], sigma_max
            )
            return torch.cat([score_xy, score_z.unsqueeze(-1)], dim=-1)
        if self.kind == "cuboid":
            out = [
                self._reflect_score(xt[..., i], x0[..., i], float(self.lower[i]), float(self.upper[i]), sigma[:, None], sigma_max)
                for i in range(3)
            ]
            return torch.stack(out, dim=-1)
        return -(xt - x0) / s**2


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
    def for_domain(cls, domain: Domain, *, sigma_min: float = 0.01) -> "VESDE":
        """sigma_max = 0.6 x the box's longest period: the forward process reaches the uniform prior."""
        return cls(sigma_min=sigma_min, sigma_max=round(float(PRIOR_FACTOR * max(domain.periods())), 4))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VESDE":
        return cls(**data)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level (Å) at time t in [0, 1]."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def perturb(
        self, x0: torch.Tensor, t: torch.Tensor, domain: Domain, generator: torch.Generator | None = None
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
        xt = domain.fold(x0 + sigma[:, None, None] * noise)
        target = -sigma[:, None, None] * domain.kernel_score(xt, x0, sigma, self.sigma_max)
        return xt, sigma, target
