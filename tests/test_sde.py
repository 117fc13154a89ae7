"""Tests of godiff.sde: the folded transition kernel, its exact score, the prior and the schedule.

The slow obvious reference for ``Box.kernel_score`` is the explicit method-of-images density
written out below in float64 with many images, differentiated by autograd.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import cuboid_system, slab_system

from godiff.sde import VESDE


@pytest.fixture(scope="module")
def slab():
    return slab_system(vacuum=10.0).geometry()


@pytest.fixture(scope="module")
def cuboid():
    return cuboid_system().geometry()


# ------------------------------------------------------------------ explicit image-sum densities


def _log_reflected(x, x0, lo, hi, sigma, n_images):
    """log sum_k N(x; x0 + 2kW) + N(x; 2 lo - x0 + 2kW) (unnormalised), elementwise."""
    w = hi - lo
    k = torch.arange(-n_images, n_images + 1, dtype=torch.float64) * 2 * w
    centres = torch.cat([x0[..., None] + k, 2 * lo - x0[..., None] + k], dim=-1)
    return torch.logsumexp(-((x[..., None] - centres) ** 2) / (2 * sigma**2), dim=-1)


def log_density_slab(xt, x0, sigma, domain, n_images=12):
    """log p(x_t | x_0) up to a constant: 2D lattice sum in-plane times the reflected z sum."""
    a = torch.as_tensor(np.array(domain.cell[:2, :2]), dtype=torch.float64)
    r = torch.arange(-n_images, n_images + 1, dtype=torch.float64)
    shifts = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2) @ a
    d = xt[..., None, :2] - (x0[..., None, :2] + shifts)
    log_xy = torch.logsumexp(-(d**2).sum(-1) / (2 * sigma**2), dim=-1)
    log_z = _log_reflected(xt[..., 2], x0[..., 2], float(domain.lower[2]), float(domain.upper[2]), sigma, n_images)
    return log_xy + log_z


def log_density_cuboid(xt, x0, sigma, domain, n_images=12):
    return sum(
        _log_reflected(xt[..., i], x0[..., i], float(domain.lower[i]), float(domain.upper[i]), sigma, n_images)
        for i in range(3)
    )


@pytest.mark.parametrize("kind", ["slab", "cuboid"])
@pytest.mark.parametrize("sigma", [0.05, 1.0, 5.0])
def test_kernel_score_is_gradient_of_image_sum_density(kind, sigma, slab, cuboid):
    domain = {"slab": slab, "cuboid": cuboid}[kind]
    log_density = {"slab": log_density_slab, "cuboid": log_density_cuboid}[kind]
    g = torch.Generator().manual_seed(int(sigma * 100))
    x0 = domain.sample_uniform((4, 5), g, dtype=torch.float64)
    # x_t both near x0 and anywhere in the box (walls included)
    near = domain.fold(x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64))
    anywhere = domain.sample_uniform((4, 5), g, dtype=torch.float64)
    xt = torch.cat([near, anywhere]).requires_grad_(True)
    x0 = torch.cat([x0, x0])
    (expected,) = torch.autograd.grad(log_density(xt, x0, sigma, domain).sum(), xt)
    got = domain.kernel_score(xt.detach(), x0, torch.full((8,), sigma, dtype=torch.float64), sigma_max=max(sigma, 1.0))
    assert got.shape == xt.shape
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9 * max(scale, 1.0))


@pytest.mark.parametrize("kind", ["slab", "cuboid"])
def test_small_sigma_target_is_the_raw_noise_away_from_walls(kind, slab, cuboid):
    domain = {"slab": slab, "cuboid": cuboid}[kind]
    sde = VESDE.for_box(domain)
    n = 64
    # clean positions in the middle of the box (at least 0.5 Å from every wall)
    if kind == "slab":
        centre = torch.tensor([4.0, 3.0, 0.5 * float(domain.lower[2] + domain.upper[2])])
    else:
        centre = torch.as_tensor(0.5 * (domain.lower + domain.upper), dtype=torch.float32)
    u = torch.rand(n, 2, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    x0 = centre + u  # within 0.5 Å of the centre
    t = torch.full((n,), 0.05)
    sigma = float(sde.sigma(t[0]))
    assert sigma < 0.02
    xt, sig, target = sde.perturb(x0, t, domain, torch.Generator().manual_seed(9))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))  # what perturb drew
    assert torch.allclose(sig, torch.full((n,), sigma))
    torch.testing.assert_close(xt, x0 + sigma * noise, rtol=0, atol=1e-5)
    torch.testing.assert_close(target, noise, rtol=0, atol=2e-3)


@pytest.mark.parametrize("kind", ["slab", "cuboid"])
def test_at_sigma_max_target_vanishes_and_samples_are_uniform(kind, slab, cuboid):
    domain = {"slab": slab, "cuboid": cuboid}[kind]
    sde = VESDE.for_box(domain)
    n = 4000
    # worst case: every clean structure at the same point, next to a wall
    x0 = torch.as_tensor(np.nan_to_num(domain.lower) + 0.1, dtype=torch.float32).expand(n, 5, 3).clone()
    xt, sigma, target = sde.perturb(x0, torch.ones(n), domain, torch.Generator().manual_seed(1))
    assert torch.allclose(sigma, torch.full((n,), sde.sigma_max))
    assert float(target.abs().max()) < 0.02  # typical noise is O(1): the prior is reached
    assert bool(domain.contains(xt).all())

    def ks_uniform(u):  # Kolmogorov-Smirnov distance of samples in [0, 1] from U(0, 1)
        u = torch.sort(u.flatten().double()).values
        m = u.numel()
        cdf = torch.arange(1, m + 1, dtype=torch.float64) / m
        return float(torch.maximum(cdf - u, u - (cdf - 1.0 / m)).max())

    if kind == "slab":
        frac = xt[..., :2] @ torch.linalg.inv(torch.as_tensor(np.array(domain.cell[:2, :2]), dtype=torch.float32))
        coords = [frac[..., 0], frac[..., 1]]
        lo, hi = float(domain.lower[2]), float(domain.upper[2])
        coords.append((xt[..., 2] - lo) / (hi - lo))
    else:
        lo = torch.as_tensor(domain.lower, dtype=torch.float32)
        hi = torch.as_tensor(domain.upper, dtype=torch.float32)
        u = (xt - lo) / (hi - lo)
        coords = [u[..., i] for i in range(3)]
    # 20,000 draws: KS noise ~0.006 (0.014 at p = 0.001); sigma_max = 1 Å would give ~0.3
    for c in coords:
        assert ks_uniform(c) < 0.02


@pytest.mark.parametrize("kind", ["slab", "cuboid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_keeps_huge_displacements_in_the_box(kind, dtype, slab, cuboid):
    domain = {"slab": slab, "cuboid": cuboid}[kind]
    g = torch.Generator().manual_seed(2)
    for scale in (10.0, 1e3, 1e6):
        x = scale * (torch.rand(5000, 3, generator=g, dtype=dtype) - 0.5)
        y = domain.fold(x)
        assert bool(torch.isfinite(y).all())
        assert bool(domain.contains(y, tol=0.0).all())
        if kind == "slab":
            frac = y[:, :2] @ torch.linalg.inv(torch.as_tensor(domain.cell[:2, :2], dtype=dtype))
            assert float(frac.min()) >= -1e-6 and float(frac.max()) <= 1 + 1e-6
            # bounds in the dtype of the positions (a float64 bound may round up in float32)
            lo, hi = (torch.as_tensor(b[2], dtype=dtype) for b in (domain.lower, domain.upper))
            assert bool((y[:, 2] >= lo).all()) and bool((y[:, 2] <= hi).all())
        else:
            assert bool((y >= torch.as_tensor(domain.lower, dtype=dtype)).all())
            assert bool((y <= torch.as_tensor(domain.upper, dtype=dtype)).all())


def test_fold_is_identity_inside_and_reflects_at_walls(cuboid):
    inside = torch.tensor([[0.0, -1.0, 1.0], [2.4, -3.9, -1.9]], dtype=torch.float64)
    torch.testing.assert_close(cuboid.fold(inside), inside)
    # 0.3 Å past the upper x wall (2.5) comes back 0.3 Å inside it
    out = cuboid.fold(torch.tensor([[2.8, -1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[2.2, -1.0, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("z_min, z_max", [(1.5, 4.5), (1.0, 7.0)])
def test_for_box_sigma_max_is_0_6_longest_period_slab(z_min, z_max):
    system = slab_system(z_min, z_max, vacuum=10.0)
    domain = system.geometry()
    a = system.template_atoms().cell[:2, :2]
    area = abs(np.linalg.det(a))
    heights = [area / np.linalg.norm(a[1]), area / np.linalg.norm(a[0])]  # in-plane wavelengths
    longest = max(*heights, 2 * (z_max - z_min))  # reflecting z: period twice the range
    assert VESDE.for_box(domain).sigma_max == pytest.approx(0.6 * longest, abs=1e-4)


def test_for_box_sigma_max_is_0_6_longest_period_cuboid(cuboid):
    assert VESDE.for_box(cuboid).sigma_max == pytest.approx(0.6 * 2 * 5.0, abs=1e-4)


def test_schedule_and_json_round_trip():
    sde = VESDE(sigma_min=0.01, sigma_max=8.6)
    t = torch.linspace(0, 1, 11)
    s = sde.sigma(t)
    assert float(s[0]) == pytest.approx(0.01) and float(s[-1]) == pytest.approx(8.6, rel=1e-6)
    assert bool((s[1:] > s[:-1]).all())
    # geometric: log sigma is linear in t
    torch.testing.assert_close(torch.log(s), math.log(0.01) + t * math.log(860.0), rtol=0, atol=1e-5)
    assert VESDE.from_dict(sde.to_dict()) == sde


def test_the_box_is_immutable_and_its_torch_methods_do_not_warn(slab, cuboid):
    """One box for the system and the SDE: its arrays are read-only (a System never changes),
    and the torch side converts them itself, so no non-writable-array warning reaches a run."""
    import warnings

    for box in (slab, cuboid):
        for name in ("cell", "lower", "upper", "center"):
            assert not getattr(box, name).flags.writeable, name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = box.sample_uniform((2, 3), torch.Generator().manual_seed(0))
            box.fold(x + 50.0)
            box.kernel_score(x, box.fold(x + 0.1), torch.tensor([0.5, 1.0]), 5.0)
            assert bool(box.contains(box.fold(x + 50.0)).all())
