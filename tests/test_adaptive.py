"""Tests of the adaptive search's controllers, each against a hand computation: the ESS and where
a batch stops, the temperature update, the acquisition's ranking with a known uncertainty, the
duplicate filter, and the training stop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from godiff.acquisition import Acquisition, Descriptor, calibration, nearest_distances, select, uncertainty
from godiff.polish import Polish
from godiff.schedule import AdaptiveSchedule, BatchSize, effective_sample_size, energy_spread, heat_capacity
from godiff.system import load_system
from godiff.train import AgreementStop


def test_effective_sample_size_is_the_square_of_the_weight_sum_over_the_sum_of_squares():
    energies, temperature = [1.0, 1.1, 1.3], 0.1
    w = [1.0, math.exp(-1.0), math.exp(-3.0)]  # exp(-(E - E_min) / T)
    expected = sum(w) ** 2 / sum(x * x for x in w)
    assert effective_sample_size(energies, temperature) == pytest.approx(expected, rel=1e-12)
    assert effective_sample_size([5.0] * 7, 0.01) == pytest.approx(7.0)


def test_an_adaptive_batch_adds_rounds_until_its_ess_reaches_the_target():
    batch = BatchSize(minimum=4, maximum=12, target_ess=3.0)
    # four structures, one far below the rest at T = 0.1: ESS about 1, another round
    first = [0.0, 1.0, 1.0, 1.0]
    assert effective_sample_size(first, 0.1) < 3.0 and not batch.enough(first, temperature=0.1)
    assert batch.next_round(have=4) == 4
    # the second round brings two more within T of the lowest: weights about 1, 1, e^-0.5 -> ESS 2.87
    second = first + [0.0, 0.05, 2.0, 2.0]
    w = np.exp(-np.array(second) / 0.1)
    assert effective_sample_size(second, 0.1) == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-12)
    assert not batch.enough(second, temperature=0.1)
    third = second + [0.0, 3.0, 3.0, 3.0]  # a third equal lowest: ESS 3.9
    assert batch.enough(third, temperature=0.1)
    assert batch.next_round(have=12) == 0  # and it is full anyway
    assert batch.next_round(have=8, budget_left=3) == 3  # the budget cuts the round
    assert batch.enough([0.0], temperature=None)  # the first batch: one round


def test_the_first_temperature_is_the_spread_of_the_low_half_and_the_heat_capacity_sets_the_cooling():
    energies = [1.0, 2.0, 3.0, 50.0, 900.0]  # median 3: capped to 1, 2, 3, 3, 3
    capped = np.array([1.0, 2.0, 3.0, 3.0, 3.0])
    assert energy_spread(energies) == pytest.approx(capped.std())
    schedule = AdaptiveSchedule(end=0.02, factor=2.0, fast=0.5, slow=0.9)
    assert schedule.first(energies) == pytest.approx(2.0 * capped.std())
    assert AdaptiveSchedule(start=3.0).first(energies) == 3.0

    # C = Var_T(E) / T^2 by hand: two levels 0 and 1 with weights 1 and 40 e^-1 at T = 1
    levels = [0.0] + [1.0] * 40
    w = np.array([1.0, 40 * math.exp(-1.0)])
    w /= w.sum()
    mean = w[1]
    var = w[0] * mean**2 + w[1] * (1 - mean) ** 2
    assert heat_capacity(levels, 1.0) == pytest.approx(var, rel=1e-9)
    assert var < 1.0 and schedule.next(1.0, levels) == pytest.approx(0.5)  # C < 1: fast
    wide = [0.0] + [3.0] * 40  # C = 2.0 > 1: slow
    assert heat_capacity(wide, 1.0) > 1.0 and schedule.next(1.0, wide) == pytest.approx(0.9)
    assert schedule.next(0.03, levels) == 0.02  # never below the end


def test_the_acquisition_ranks_by_the_lower_confidence_bound_of_a_known_uncertainty():
    # one-dimensional descriptors; the evaluated structure sits at 0
    descriptors = np.array([[0.05], [0.5], [0.2], [3.0]])
    predicted = np.array([0.0, 0.4, 0.1, 1.0])
    evaluated = np.array([[0.0]])
    settings = Acquisition(kappa=2.0, length=0.1, duplicate=0.01)
    d = np.abs(descriptors[:, 0])
    sigma = 0.5 * np.sqrt(1 - np.exp(-0.5 * (d / 0.1) ** 2))
    bound = predicted - 2.0 * sigma  # by hand: [-0.235, -0.6, -0.765, 0.0]
    assert nearest_distances(descriptors, evaluated) == pytest.approx(d)
    assert uncertainty(d, spread=0.5, length=0.1) == pytest.approx(sigma)
    picked = select(descriptors, predicted, evaluated, 3, spread=0.5, settings=settings)
    assert picked.tolist() == list(np.argsort(bound)[:3]) == [2, 1, 0]
    # kappa 0: the lowest predicted energies, as the plain ranking
    plain = select(descriptors, predicted, evaluated, 3, spread=0.5, settings=Acquisition(0.0, 0.1, 0.01))
    assert plain.tolist() == [0, 2, 1]


def test_the_duplicate_filter_keeps_one_of_two_copies_of_a_structure():
    system = load_system("pt7-pt111")
    descriptors = Descriptor.for_system(system)
    domain = system.geometry()
    x = domain.sample_uniform((2, system.n_mobile), torch.Generator().manual_seed(3)).double()
    shift = torch.as_tensor((domain.cell[0] * 2 + domain.cell[1]) / 6)  # by surface lattice vectors of the 6x6 slab
    copy = domain.fold(x[0].flip(0) + shift)  # the first structure, atoms permuted and moved
    candidates = descriptors(torch.stack([x[0], copy, x[1]]))
    assert nearest_distances(candidates[1:2], candidates[0:1])[0] < 1e-9
    picked = select(candidates, np.array([0.0, 0.0, 1.0]), np.zeros((0, candidates.shape[1])), 3, spread=1.0)
    assert picked.tolist() == [0, 2]  # one of the two copies, and the other structure
    evaluated = candidates[0:1]  # the structure was evaluated before: neither copy is paid again
    assert select(candidates, np.array([0.0, 0.0, 1.0]), evaluated, 3, spread=1.0).tolist() == [2]


def test_calibration_is_the_fraction_of_errors_within_the_uncertainty():
    assert calibration([0.1, -0.5, 0.2, 2.0], [0.2, 0.4, 0.2, 1.0]) == 0.5
    assert calibration([], []) is None


def test_training_stops_when_the_gradient_agreement_stays_below_its_peak():
    stop = AgreementStop(min_steps=3, patience=2, fraction=0.9)
    cosines = [0.2, 0.8, 0.85, 0.7, 0.75, 0.9]  # peak 0.85 at step 3; below 0.765 at steps 4 and 5
    said = [stop.update(c) for c in cosines]
    assert said == [False, False, False, False, True, False][: len(said)]
    assert said.index(True) == 4


def test_the_polish_moves_the_atom_with_the_largest_force_by_each_multiple_of_the_step():
    polish = Polish(points=3)
    x = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    f = np.array([[0.0, 0.0, -2.0], [1.0, 0.0, 0.0]])  # the first atom feels the largest force, 2
    moved = polish.candidates(x, f, step=0.1)
    assert moved.shape == (3, 2, 3)
    for m, multiple in zip(moved, [0.5, 1.0, 2.0]):
        assert np.allclose(m[0], [0.0, 0.0, -0.1 * multiple])  # along its force, by step x multiple
        assert np.allclose(m[1], [1.0 + 0.05 * multiple, 1.0, 1.0])  # half as far: half the force
    assert Polish(points=0).candidates(x, f, 0.1).shape == (0, 2, 3)
    assert polish.candidates(x, np.zeros_like(f), 0.1).shape == (0, 2, 3)  # at a stationary point: nothing


def test_the_polish_trust_step_grows_when_the_longest_step_wins_and_shrinks_when_nothing_improves():
    polish = Polish(points=3)  # steps 0.05, 0.1, 0.2 for step = 0.1
    assert polish.next_step(0.1, best=0.0, energies=[-0.1, -0.2, -0.3]) == pytest.approx(0.2)
    assert polish.next_step(0.1, best=0.0, energies=[-0.3, -0.2, -0.1]) == pytest.approx(0.05)
    assert polish.next_step(0.1, best=0.0, energies=[-0.1, -0.3, -0.2]) == pytest.approx(0.1)
    assert polish.next_step(0.1, best=0.0, energies=[0.1, None, 0.2]) == pytest.approx(0.025)
    assert polish.next_step(0.1, best=0.0, energies=[None, -0.1, None]) == pytest.approx(0.1)  # a failure ranks last
    assert polish.next_step(2e-3, best=0.0, energies=[1.0, 1.0, 1.0]) == pytest.approx(1e-3)  # never below smallest
