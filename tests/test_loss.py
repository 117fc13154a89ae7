"""Tests of godiff.loss, godiff.buffer and godiff.schedule (the weighting and bookkeeping of training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from godiff.buffer import ReplayBuffer
from godiff.loss import boltzmann_weights, draw_weighted, dsm_loss, force_loss
from godiff.schedule import ExponentialSchedule

# ------------------------------------------------------------------ Boltzmann weights


def test_boltzmann_weights_match_a_hand_computation():
    energies = [0.0, 0.1, 0.3]
    t = 0.1
    factors = [math.exp(-e / t) for e in energies]
    expected = [f / sum(factors) for f in factors]  # 0.6652, 0.2447, 0.0331
    w = boltzmann_weights(torch.tensor(energies, dtype=torch.float64), t)
    assert w.dtype == torch.float64
    assert w.tolist() == pytest.approx(expected, rel=1e-12)
    w32 = boltzmann_weights(torch.tensor(energies), t)
    assert w32.dtype == torch.float32
    assert w32.tolist() == pytest.approx(expected, rel=1e-6)


def test_boltzmann_weights_shift_invariant_and_stable_for_huge_energies_and_tiny_t():
    base = torch.tensor([0.0, 0.002, 0.001, 0.5], dtype=torch.float64)
    for offset in (1e4, -1e4):
        w = boltzmann_weights(base + offset, 1e-3)
        assert bool(torch.isfinite(w).all())
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
        # exp(0) : exp(-2) : exp(-1) : exp(-500)
        ref = np.exp(-np.array([0.0, 2.0, 1.0, 500.0]))
        assert w.tolist() == pytest.approx((ref / ref.sum()).tolist(), rel=1e-8, abs=1e-300)
    w32 = boltzmann_weights(torch.tensor([1.0e4, 1.0e4 + 5.0, 2.0e4]), 1e-3)
    assert bool(torch.isfinite(w32).all()) and float(w32.sum()) == pytest.approx(1.0, abs=1e-6)
    assert w32.tolist() == [1.0, 0.0, 0.0]


def test_boltzmann_weights_reject_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        boltzmann_weights(torch.zeros(3), 0.0)


def test_draw_weighted_frequencies_follow_the_weights():
    weights = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    k = 20000
    idx = draw_weighted(weights, k, torch.Generator().manual_seed(0))
    assert idx.shape == (k,) and idx.dtype == torch.int64
    counts = torch.bincount(idx, minlength=5).double()
    assert counts[4] == 0  # zero weight: never drawn
    expected = weights[:4].double() * k
    chi2 = float(((counts[:4] - expected) ** 2 / expected).sum())
    assert chi2 < 20.0  # 3 degrees of freedom: p(chi2 > 20) ~ 2e-4
    # the generator makes it reproducible
    again = draw_weighted(weights, k, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


# ------------------------------------------------------------------ losses


def test_dsm_loss_is_mean_squared_norm_per_atom():
    eps_hat = torch.zeros(2, 3, 3)
    eps = torch.zeros(2, 3, 3)
    eps[0, 0] = torch.tensor([1.0, 2.0, 2.0])  # squared norm 9, one atom of six
    assert float(dsm_loss(eps_hat, eps)) == pytest.approx(9.0 / 6.0)


def test_force_loss_clips_target_forces():
    target = torch.tensor([[[30.0, 40.0, 0.0], [0.3, 0.4, 0.0]]])  # norms 50 and 0.5 eV/Å
    clipped = torch.tensor([[[6.0, 8.0, 0.0], [0.3, 0.4, 0.0]]])  # clip = 10
    assert float(force_loss(clipped, target, scale=1.0, clip=10.0)) == pytest.approx(0.0, abs=1e-12)
    # predicting the raw 50 eV/Å costs (50 - 10)^2 on one atom of two, in units of scale = 2
    loss = force_loss(target, target, scale=2.0, clip=10.0)
    assert float(loss) == pytest.approx((40.0 / 2.0) ** 2 / 2)
    # below the clip nothing changes: plain mean squared error over atoms
    small = force_loss(torch.zeros_like(target), target, scale=1.0, clip=1e3)
    assert float(small) == pytest.approx((50.0**2 + 0.5**2) / 2)


# ------------------------------------------------------------------ replay buffer


def _structures(energies, n_mobile=2):
    """Positions that carry their own energy, so that the pairing can be checked."""
    e = np.asarray(energies, dtype=float)
    return np.broadcast_to(e[:, None, None], (len(e), n_mobile, 3)).copy()


def test_buffer_keeps_the_lowest_capacity_sorted():
    buf = ReplayBuffer(capacity=3)
    assert len(buf) == 0
    buf.add(_structures([5.0, 1.0, 4.0]), np.array([5.0, 1.0, 4.0]), np.array([1, 2, 3]))
    buf.add(_structures([3.0, 6.0, 0.5]), np.array([3.0, 6.0, 0.5]), np.array([4, 5, 6]))
    assert buf.energies.tolist() == [0.5, 1.0, 3.0]
    assert buf.ids.tolist() == [6, 2, 4]
    assert np.array_equal(buf.positions[:, 0, 0], buf.energies)  # positions stay with their energy
    # an equal energy: the earlier evaluation (lower id) wins
    buf.add(_structures([3.0]), np.array([3.0]), np.array([7]))
    assert buf.ids.tolist() == [6, 2, 4]


def test_buffer_ignores_non_finite_energies():
    buf = ReplayBuffer(capacity=5)
    buf.add(_structures([1.0, 2.0, 3.0, 4.0]), np.array([np.nan, 2.0, np.inf, -np.inf]), np.array([1, 2, 3, 4]))
    assert buf.energies.tolist() == [2.0] and buf.ids.tolist() == [2]
    buf.add(_structures([1.0]), np.array([np.nan]), np.array([9]))  # nothing finite: no change
    assert len(buf) == 1


def test_buffer_state_round_trip_also_through_safetensors(tmp_path):
    buf = ReplayBuffer(capacity=4)
    rng = np.random.default_rng(0)
    buf.add(rng.normal(size=(6, 3, 3)), rng.normal(size=6), np.arange(6))
    again = ReplayBuffer.from_state(4, buf.state())
    for key in ("positions", "energies", "ids"):
        assert np.array_equal(getattr(again, key), getattr(buf, key))
    # as the search checkpoints it
    save_file({k: torch.as_tensor(v) for k, v in buf.state().items()}, str(tmp_path / "buffer.safetensors"))
    loaded = ReplayBuffer.from_state(
        4, {k: v.numpy() for k, v in load_file(str(tmp_path / "buffer.safetensors")).items()}
    )
    for key in ("positions", "energies", "ids"):
        assert np.array_equal(getattr(loaded, key), getattr(buf, key))
    assert loaded.ids.dtype == np.int64
    # the empty buffer too
    empty = ReplayBuffer.from_state(4, ReplayBuffer(4).state())
    assert len(empty) == 0
    empty.add(_structures([1.0]), np.array([1.0]), np.array([0]))
    assert len(empty) == 1


def test_buffer_rejects_zero_capacity():
    with pytest.raises(ValueError):
        ReplayBuffer(capacity=0)


# ------------------------------------------------------------------ temperature schedule


def test_exponential_schedule_endpoints_and_monotonicity():
    s = ExponentialSchedule(start=5.0, end=0.02, iterations=20)
    temps = [s.temperature(k) for k in range(20)]
    assert temps[0] == pytest.approx(5.0) and temps[-1] == pytest.approx(0.02)
    assert all(a > b for a, b in zip(temps, temps[1:]))
    ratios = [b / a for a, b in zip(temps, temps[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))  # geometric
    assert s.temperature(25) == pytest.approx(0.02)  # clamped past the end
    assert ExponentialSchedule(start=5.0, end=0.02, iterations=1).temperature(0) == 0.02
    assert ExponentialSchedule.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        ExponentialSchedule(start=0.0, end=0.02, iterations=3)
