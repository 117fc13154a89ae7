"""godiff.minima: the distinct low minima of a run, in the run directory and in the report."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from godiff.energy import Evaluation
from godiff.minima import distinct_minima, group_minima
from godiff.report import summarize
from godiff.rundir import RunDir
from godiff.search import Search
from godiff.system import load_system


def test_each_evaluation_joins_the_nearest_lower_minimum_within_the_distance():
    descriptors = np.array([[0.0], [0.05], [0.5], [0.52], [3.0], [0.08]])
    energies = np.array([-1.0, -0.2, -0.8, -0.9, -0.1, -0.3])
    minima = group_minima(descriptors, energies, distance=0.1, limit=5)
    # the lowest of each group, then its first evaluation and size; the highest (index 4) is alone
    assert [(m.index, m.first, m.count) for m in minima] == [(0, 0, 3), (3, 2, 2), (4, 4, 1)]
    assert [m.energy for m in minima] == [-1.0, -0.9, -0.1]
    assert [m.index for m in group_minima(descriptors, energies, distance=0.1, limit=2)] == [0, 3]
    assert group_minima(np.zeros((0, 1)), np.zeros(0)) == []


def _record(run, system, positions, energy, sample):
    if energy is None:
        ev = Evaluation(None, None, False, "RuntimeError: boom", 0.01)
    else:
        ev = Evaluation(energy, np.zeros((13, 3)), True, None, 0.01)
    run.record(system.atoms(positions), ev, iteration=0, sample=sample, temperature=1.0)


def test_a_permuted_and_shifted_copy_is_the_same_minimum_and_a_failure_keeps_its_place(tmp_path):
    system = load_system("lj13")
    run = RunDir.create(
        tmp_path / "run",
        {"godiff_version": "0.2.0", "command": "test", "system": system.to_dict(), "search": {}},
    )
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-2.0, 2.0, (13, 3)), rng.uniform(-2.0, 2.0, (13, 3))
    _record(run, system, a, -30.0, 0)  # evaluation 1
    _record(run, system, a, None, 1)  # 2: failed
    _record(run, system, b, -20.0, 2)  # 3
    _record(run, system, a[rng.permutation(13)] + 0.3, -29.0, 3)  # 4: a, permuted and shifted
    minima = distinct_minima(system, run.rows())
    assert [(m.energy, m.index, m.first, m.count) for m, _ in minima] == [(-30.0, 1, 1, 2), (-20.0, 3, 3, 1)]
    assert minima[0][1].energy == -30.0  # the row of its lowest evaluation


@pytest.fixture(scope="module")
def lj13_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("minima") / "run"
    result = Search(
        "lj13", out=out, iterations=2, samples=8, train_steps=4, steps=3, relax_steps=2, oversample=2, seed=1
    ).run()
    return out, result


def test_a_stopped_run_writes_its_distinct_minima_lowest_first(lj13_run):
    out, result = lj13_run
    frames = ase.io.read(out / "minima.xyz", ":")
    energies = [f.get_potential_energy() for f in frames]
    assert energies == sorted(energies) and energies[0] == pytest.approx(result.best_energy)
    assert [f.info["rank"] for f in frames] == list(range(1, len(frames) + 1))
    assert all(1 <= f.info["first_evaluation"] <= f.info["evaluation"] <= 16 for f in frames)
    assert sum(f.info["count"] for f in frames) <= 16 and len(frames) >= 2
    assert len(frames[0]) == 13  # the whole structure, as evaluated


def test_the_report_lists_the_lowest_distinct_minima(lj13_run):
    out, result = lj13_run
    text = summarize(out)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("distinct minima"))
    assert lines[start + 1].split()[:2] == ["1", f"{result.best_energy:.6f}"]
    assert "first at evaluation" in lines[start + 1]
