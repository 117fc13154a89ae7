"""Candidates sized to the calculator (godiff.cost): the rule by hand, a real search that follows
it from its own timings, and a resume that keeps its measurements bit for bit."""

from __future__ import annotations

import math

import pytest

from godiff.config import SearchConfig
from godiff.cost import CandidateCount, CostMeter
from godiff.rundir import RunDir
from godiff.score import ScoreConfig
from godiff.search import Search

TINY = ScoreConfig(
    scalars=8, vectors=4, lmax=1, layers=2, cutoff=2.5, mobile_cutoff=3.5, radial_hidden=8, head_hidden=16
)


def _config(**overrides) -> SearchConfig:
    base = SearchConfig(
        score=TINY, batch_size=8, force_batch=4, samples=6, train_steps=3, seed=7, schedule="exponential"
    )
    return base.with_overrides(steps=4, oversample=8, **overrides)


@pytest.mark.parametrize(
    "share, expected",
    [
        (None, 32.0),  # no share: always the ceiling
        (100.0, 32.0),  # room for 9,980 candidates: the ceiling
        (1.0, 30.0),  # (1.0 s - 0.4 s of training) / 0.02 s per candidate
        (0.7, 15.0),  # (0.7 - 0.4) / 0.02
        (0.5, 8.0),  # (0.5 - 0.4) / 0.02 = 5, below the floor
        (0.1, 8.0),  # less than the training alone: the floor
    ],
)
def test_the_count_is_the_share_of_the_calculator_left_after_training_over_a_candidates_cost(share, expected):
    # 10 evaluations at 1 s each, 4 s of training, 200 candidates drawn in 4 s
    meter = CostMeter(
        calculator_seconds=10.0, evaluations=10, sampling_seconds=4.0, candidates=200, training_seconds=4.0
    )
    assert CandidateCount(share=share, floor=8, ceiling=32).oversample(meter) == expected


def test_before_a_draw_of_candidates_was_timed_the_count_is_the_ceiling():
    meter = CostMeter()
    meter.add_iteration(
        calculator=0.5, evaluations=6, sampling=0.01, candidates=0, training=1.0
    )  # the prior's placements
    assert meter.sampling_per_candidate() is None and meter.sampling_seconds == 0.0
    assert CandidateCount(share=0.01, floor=2, ceiling=16).oversample(meter) == 16.0


def test_a_search_draws_the_floor_when_the_network_outweighs_a_cheap_calculator(tmp_path):
    out = tmp_path / "r"
    Search("lj13", config=_config(iterations=4, network_share=0.01, min_oversample=2), out=out).run()
    run = RunDir(out)
    log = run.read_log()
    # iteration 0 places from the prior and iteration 1 draws the first candidates: nothing timed yet
    assert [line["oversample"] for line in log] == [8.0, 8.0, 2.0, 2.0]
    meter = CostMeter()
    for line in log:
        rows = run.rows(line["iteration"])
        drawn = 0 if line["iteration"] == 0 else math.ceil(6 * line["oversample"])  # 6 asked for, every round
        s = line["seconds"]
        meter.add_iteration(
            calculator=sum(r.data["seconds"] for r in rows),
            evaluations=len(rows),
            sampling=s["sampling"],
            candidates=drawn,
            training=s["training"],
        )
    _, state = run.load_checkpoint(run.checkpoints()[-1])
    assert CostMeter.from_dict(state["cost"]) == meter  # the checkpoint holds exactly the run's own sums
    # why the floor: 1 % of LJ's calls leaves less than the training, let alone 2 candidates
    assert (
        0.01 * meter.calculator_per_evaluation() < meter.training_per_evaluation() + 2 * meter.sampling_per_candidate()
    )


def test_without_a_share_every_iteration_draws_the_samplers_oversample(tmp_path):
    out = tmp_path / "r"
    Search("lj13", config=_config(iterations=3, network_share=None), out=out).run()
    assert [line["oversample"] for line in RunDir(out).read_log()] == [8.0, 8.0, 8.0]


def test_a_resume_continues_from_the_checkpointed_measurements_bit_for_bit(tmp_path):
    out = tmp_path / "r"
    Search("lj13", config=_config(iterations=3, network_share=0.01, min_oversample=2), out=out).run()
    run = RunDir(out)
    _, state = run.load_checkpoint(run.checkpoints()[-1])
    resumed = Search.resume(out, iterations=4)
    assert resumed.cost == CostMeter.from_dict(state["cost"])
    assert resumed.config.network_share == 0.01 and resumed.config.min_oversample == 2  # kept from run.json
    resumed.run()
    checkpointed = CostMeter.from_dict(state["cost"])
    assert RunDir(out).read_log()[-1]["oversample"] == CandidateCount(0.01, 2, 8).oversample(checkpointed)


@pytest.mark.parametrize(
    "cost", [{"foo": 1}, {"evaluations": -1}, {"evaluations": 1.5}, {"sampling_seconds": "1"}, [1]]
)
def test_a_checkpoints_cost_that_is_not_a_measured_cost_is_refused(cost):
    from godiff.errors import CheckpointError

    with pytest.raises(CheckpointError, match="state.json: cost"):
        CostMeter.from_dict(cost)


def test_a_new_search_sizes_its_candidates_and_an_old_or_fixed_schedule_one_does_not():
    from godiff.config import PRESETS
    from godiff.zoo.transfer import TRANSFER

    assert SearchConfig().network_share == 1.0
    old = SearchConfig().to_dict()
    del old["network_share"]  # a run.json written before the setting existed
    assert SearchConfig.from_dict(old).network_share is None
    assert SearchConfig().with_settings(PRESETS["paper"]).network_share is None
    assert SearchConfig().with_settings(TRANSFER).network_share == 1.0  # a fine-tune runs the same search


def test_a_floor_at_the_ceiling_fixes_the_count_whatever_the_timings():
    """``--set min_oversample=32``: the command line's way to the fixed count (and bit-for-bit runs)."""
    cheap = CostMeter(calculator_seconds=0.01, evaluations=1, sampling_seconds=10.0, candidates=10, training_seconds=1)
    dear = CostMeter(calculator_seconds=1e4, evaluations=1, sampling_seconds=0.01, candidates=10)
    assert {CandidateCount(1.0, floor=32, ceiling=32).oversample(m) for m in (cheap, dear, CostMeter())} == {32.0}
