"""The confinement box in absolute Cartesian numbers: one class per kind behind one protocol.

:meth:`godiff.system.System.geometry` resolves a system's box setting (``box:`` in its file,
relative to the template) into one of :class:`SlabGeometry`, :class:`CuboidGeometry` or
:class:`SphereGeometry`. Everything that needs the box asks it, through the same methods, so a
new kind of box is one new class and nothing else switches on the kind:

* ``contains`` and ``sample_uniform`` for NumPy (placement, validation) and torch (the sampler);
* ``fold`` (wrap periodic axes, reflect at walls), ``displacement`` (minimum image),
  ``periods`` (the longest wavelength of each direction, which sets the SDE's sigma_max) and
  ``kernel_score`` (the exact score of the folded Gaussian, the denoising target) for the SDE;
* ``volume``.

Arrays are read-only float64. The module imports torch only when a torch method runs, so
:mod:`godiff.system` stays free of it. The sphere has no closed-form image sum for its kernel: its
radius is folded by reflection and its target is the free-space Gaussian score (see
:mod:`godiff.sde`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


class _LazyTorch:
    """torch, imported when a torch method first runs: godiff.system uses this module, and a
    system file is read (and a bad one refused) before torch is loaded."""

    def __getattr__(self, name):
        import torch as module

        return getattr(module, name)


torch = _LazyTorch()


def _wrap(x, cell, periodic):
    from godiff.geometry import wrap

    return wrap(x, cell, periodic)


def _minimum_image(d, cell, periodic):
    from godiff.geometry import minimum_image

    return minimum_image(d, cell, periodic)


__all__ = ["Box", "SlabGeometry", "CuboidGeometry", "SphereGeometry", "SLAB_PERIODIC"]

SLAB_PERIODIC = (True, True, False)  # a and b in the xy plane, c along z (checked by godiff.system)
NUMPY_TOL, TORCH_TOL = 1e-6, 1e-5  # slack of contains(), Å (float32 positions need more)


def _readonly(array) -> np.ndarray:
    out = np.array(array, dtype=float)
    out.flags.writeable = False
    return out


def _fold(u, lo, hi):
    """Reflect u into [lo, hi] (period 2 W mirror folding)."""
    w = hi - lo
    y = torch.remainder(u - lo, 2 * w)
    return lo + torch.where(y > w, 2 * w - y, y)


def _image_score(diff, sigma):
    """Score of a Gaussian mixture with equal-width components.

    Args:
        diff: (..., n_images, d) x_t minus each image centre.
        sigma: broadcastable to diff[..., 0, 0].

    Returns:
        (..., d) gradient of log sum_k N(x_t; c_k, sigma^2).
    """
    s2 = (sigma**2).unsqueeze(-1)
    logw = -(diff**2).sum(-1) / (2 * s2)
    w = torch.softmax(logw, dim=-1).unsqueeze(-1)
    return -(w * diff).sum(-2) / s2


def _reflect_score(xt, x0, lo, hi, sigma, sigma_max):
    """The score of a Gaussian reflected into [lo, hi] (method of images), per coordinate."""
    w = hi - lo
    k = int(math.ceil(5 * sigma_max / (2 * w))) + 1
    ks = torch.arange(-k, k + 1, dtype=xt.dtype, device=xt.device) * 2 * w
    centres = torch.cat([x0.unsqueeze(-1) + ks, (2 * lo - x0).unsqueeze(-1) + ks], dim=-1)
    diff = (xt.unsqueeze(-1) - centres).unsqueeze(-1)  # (..., n_img, 1)
    return _image_score(diff, sigma)[..., 0]


@dataclass(frozen=True, eq=False)
class Box:
    """The protocol of every box kind (see the module docstring).

    Attributes:
        cell: (3, 3) in Å. Slab: the template cell. Clusters: a non-periodic cubic cell of
            side (largest box extent + 10 Å) that contains the box, centred on its centre.
        periodic: slab ``(True, True, False)``; clusters all ``False``.
        lower: (3,) in Å. Slab ``(nan, nan, z_lo)``; cuboid ``center - lengths/2``;
            sphere ``center - radius``.
        upper: (3,) in Å. Slab ``(nan, nan, z_hi)``; cuboid ``center + lengths/2``;
            sphere ``center + radius``.
        center: (3,) in Å. Slab: the middle of the cell in-plane and of the z range.
        radius: sphere radius in Å; ``None`` for the other kinds.
        origin: (3,) in Å, the corner of ``cell`` (the cell spans ``origin + [0, 1)^3 @ cell``):
            zero for slabs, ``center - side/2`` for clusters.
    """

    kind: ClassVar[str] = ""
    cell: np.ndarray
    periodic: tuple[bool, bool, bool]
    lower: np.ndarray
    upper: np.ndarray
    center: np.ndarray
    radius: float | None = None
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        for name in ("cell", "lower", "upper", "center", "origin"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        object.__setattr__(self, "periodic", tuple(bool(p) for p in self.periodic))
        # writable, nan-free copies for the torch side, made once (torch warns on read-only arrays)
        object.__setattr__(
            self, "_torch_arrays", {n: np.nan_to_num(getattr(self, n)) for n in ("cell", "lower", "upper", "center")}
        )
        if self.radius is not None:
            object.__setattr__(self, "radius", float(self.radius))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Box):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.periodic == other.periodic
            and self.radius == other.radius
            and all(
                np.array_equal(getattr(self, n), getattr(other, n), equal_nan=True)
                for n in ("cell", "lower", "upper", "center", "origin")
            )
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    # -- the protocol ---------------------------------------------------------------------
    def contains(self, positions, *, tol: float | None = None):
        """Which positions lie inside the box: (n, 3) NumPy (or one (3,) position) -> (n,) bool,
        or a torch (..., 3) tensor -> (...,) bool. ``tol`` is the slack in Å on every side
        (default 1e-6 for NumPy, 1e-5 for torch's float32). A slab checks only z."""
        if hasattr(positions, "detach"):  # a torch tensor
            return self._contains_torch(positions, TORCH_TOL if tol is None else tol)
        pos = np.atleast_2d(np.asarray(positions, dtype=float))
        if pos.shape[-1] != 3:
            raise ValueError(f"positions must have shape (n, 3), got {np.shape(positions)}")
        return self._contains_numpy(pos, NUMPY_TOL if tol is None else tol)

    def sample_uniform(self, shape, generator=None, dtype=None):
        """Uniform positions in the box. With a NumPy ``Generator``: ``shape`` is a count n and
        the result (n, 3) float64; otherwise torch: ``shape + (3,)`` from a ``torch.Generator``."""
        if isinstance(generator, np.random.Generator):
            return self._sample_numpy(int(shape), generator)
        return self._sample_torch(tuple(shape), generator, torch.float32 if dtype is None else dtype)

    def volume(self) -> float:
        """The box volume in Å^3."""
        raise NotImplementedError

    def periods(self) -> list[float]:
        """The longest wavelength of each independent direction of the box, in Å."""
        raise NotImplementedError

    def fold(self, x):
        """Map positions (..., 3) into the box: wrap periodic axes, reflect at walls."""
        raise NotImplementedError

    def displacement(self, x, y):
        """x - y, the minimum image along periodic axes; NumPy arrays or torch tensors."""
        return x - y

    def kernel_score(self, xt, x0, sigma, sigma_max: float):
        """Exact gradient of log p(x_t | x_0) for the folded Gaussian of width sigma.

        Args:
            xt, x0: (n_samples, n_atoms, 3) in Å.
            sigma: (n_samples,) in Å.
            sigma_max: the schedule's largest sigma (sets how many images are summed).

        Returns:
            (n_samples, n_atoms, 3) in 1/Å.
        """
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------
    def _t(self, name: str, like, part=slice(None)):
        """The array ``name`` (``cell``, ``lower``, ``upper``, ``center``), ``[part]``, as a tensor like ``like``."""
        return torch.as_tensor(self._torch_arrays[name][part], dtype=like.dtype, device=like.device)


@dataclass(frozen=True, eq=False)
class SlabGeometry(Box):
    """Periodic in-plane over the template cell, walls at ``lower[2]`` and ``upper[2]`` in z."""

    kind: ClassVar[str] = "slab"

    def _inplane(self) -> np.ndarray:
        return self.cell[:2, :2]

    def _contains_numpy(self, pos, tol):
        z = pos[:, 2]
        return (z >= self.lower[2] - tol) & (z <= self.upper[2] + tol)

    def _contains_torch(self, x, tol):
        z = x[..., 2]
        return (z >= self.lower[2] - tol) & (z <= self.upper[2] + tol)

    def _sample_numpy(self, n, rng):
        frac = rng.random((n, 2))
        out = np.empty((n, 3))
        out[:, :2] = frac @ self.cell[:2, :2]
        out[:, 2] = rng.uniform(self.lower[2], self.upper[2], size=n)
        return out

    def _sample_torch(self, shape, generator, dtype):
        u = torch.rand(*shape, 3, generator=generator, dtype=dtype)
        xy = u[..., :2] @ self._t("cell", u, np.s_[:2, :2])
        lo, hi = self.lower[2], self.upper[2]
        return torch.cat([xy, lo + (hi - lo) * u[..., 2:]], dim=-1)

    def volume(self) -> float:
        area = abs(float(np.linalg.det(self.cell[:2, :2])))
        return area * float(self.upper[2] - self.lower[2])

    def periods(self) -> list[float]:
        a = self._inplane()
        area = abs(np.linalg.det(a))
        heights = [area / np.linalg.norm(a[1]), area / np.linalg.norm(a[0])]
        return heights + [2 * (self.upper[2] - self.lower[2])]

    def fold(self, x):
        xy = _wrap(x, self._t("cell", x), SLAB_PERIODIC)[..., :2]
        z = _fold(x[..., 2:], self._t("lower", x, np.s_[2:]), self._t("upper", x, np.s_[2:]))
        return torch.cat([xy, z], dim=-1)

    def displacement(self, x, y):
        d = x - y
        if isinstance(d, np.ndarray):
            frac = d @ np.linalg.inv(self.cell)
            frac[..., :2] -= np.round(frac[..., :2])
            return frac @ self.cell
        return _minimum_image(d, self._t("cell", d), SLAB_PERIODIC)

    def kernel_score(self, xt, x0, sigma, sigma_max):
        a = self._t("cell", xt, np.s_[:2, :2])
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
        score_z = _reflect_score(
            xt[..., 2], x0[..., 2], float(self.lower[2]), float(self.upper[2]), sigma[:, None], sigma_max
        )
        return torch.cat([score_xy, score_z.unsqueeze(-1)], dim=-1)


@dataclass(frozen=True, eq=False)
class CuboidGeometry(Box):
    """Walls at ``lower`` and ``upper`` along every axis."""

    kind: ClassVar[str] = "cuboid"

    def _contains_numpy(self, pos, tol):
        return np.all((pos >= self.lower - tol) & (pos <= self.upper + tol), axis=1)

    def _contains_torch(self, x, tol):
        lo, hi = self._t("lower", x), self._t("upper", x)
        return ((x >= lo - tol) & (x <= hi + tol)).all(-1)

    def _sample_numpy(self, n, rng):
        return rng.uniform(self.lower, self.upper, size=(n, 3))

    def _sample_torch(self, shape, generator, dtype):
        u = torch.rand(*shape, 3, generator=generator, dtype=dtype)
        lo, hi = self._t("lower", u), self._t("upper", u)
        return lo + (hi - lo) * u

    def volume(self) -> float:
        return float(np.prod(self.upper - self.lower))

    def periods(self) -> list[float]:
        return list(2 * (self.upper - self.lower))

    def fold(self, x):
        return _fold(x, self._t("lower", x), self._t("upper", x))

    def kernel_score(self, xt, x0, sigma, sigma_max):
        out = [
            _reflect_score(
                xt[..., i], x0[..., i], float(self.lower[i]), float(self.upper[i]), sigma[:, None], sigma_max
            )
            for i in range(3)
        ]
        return torch.stack(out, dim=-1)


@dataclass(frozen=True, eq=False)
class SphereGeometry(Box):
    """A ball of ``radius`` around ``center``; the radius reflects at the wall."""

    kind: ClassVar[str] = "sphere"

    def _contains_numpy(self, pos, tol):
        return np.linalg.norm(pos - self.center, axis=1) <= self.radius + tol

    def _contains_torch(self, x, tol):
        return (x - self._t("center", x)).norm(dim=-1) <= self.radius + tol

    def _sample_numpy(self, n, rng):
        direction = rng.standard_normal((n, 3))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-300)
        r = self.radius * rng.random(n) ** (1.0 / 3.0)
        return self.center + direction * r[:, None]

    def _sample_torch(self, shape, generator, dtype):
        u = torch.rand(*shape, 3, generator=generator, dtype=dtype)
        g = torch.randn(*shape, 3, generator=generator, dtype=dtype)
        g = g / g.norm(dim=-1, keepdim=True)
        r = self.radius * u[..., :1] ** (1.0 / 3.0)
        return self._t("center", u) + g * r

    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius**3

    def periods(self) -> list[float]:
        return [4 * self.radius]

    def fold(self, x):
        c = self._t("center", x)
        d = x - c
        r = d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        r_new = _fold(r, torch.zeros_like(r), torch.full_like(r, self.radius))
        return c + d / r * r_new

    def kernel_score(self, xt, x0, sigma, sigma_max):
        s = sigma[:, None, None]
        return -(xt - x0) / s**2
