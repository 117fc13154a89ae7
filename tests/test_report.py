"""godiff.report on hand-made run directories (no search, no training: fast)."""

from __future__ import annotations

import numpy as np
import pytest

from godiff.energy import Evaluation
from godiff.errors import NotARunError
from godiff.report import FIGURES, energy_window, load_run, plot, summarize
from godiff.rundir import RunDir
from godiff.system import load_system

PNG = b"\x89PNG\r\n\x1a\n"
REF = -44.326801


def _make_run(path, energies_per_iteration, *, logged: int, samples: int = 4):
    """A run of lj13 whose iterations have the given energies (None: failed evaluation).

    The first ``logged`` iterations are finished (a log line); the rest are in progress.
    """
    system = load_system("lj13")
    manifest = {
        "godiff_version": "0.1.0",
        "created": "2025-01-01T00:00:00+0000",
        "command": "godiff run lj13",
        "system": system.to_dict(),
        "energy": system.energy,
        "search": {
            "iterations": 5,
            "samples": samples,
            "train_steps": 2,
            "batch_size": 32,
            "buffer_size": 64,
            "temperature_start": 5.0,
            "temperature_end": 0.02,
            "seed": 0,
            "workers": 1,
            "sampler": {"steps": 3, "corrector_steps": 0, "guidance": 0.0, "relax_steps": 0},
        },
        "pretrained": False,
    }
    run = RunDir.create(path, manifest)
    rng = np.random.default_rng(0)
    best = np.inf
    for k, energies in enumerate(energies_per_iteration):
        for i, e in enumerate(energies):
            atoms = system.atoms(rng.uniform(-1.5, 1.5, (13, 3)))
            ev = (
                Evaluation(e, np.zeros((13, 3)), True, None, 0.01)
                if e is not None
                else Evaluation(None, None, False, "RuntimeError: boom", 0.01)
            )
            run.record(atoms, ev, iteration=k, sample=i, temperature=1.0)
            if e is not None:
                best = min(best, e)
        if k < logged:
            run.append_log(
                {
                    "iteration": k,
                    "best_energy": best,
                    "n_failed": sum(e is None for e in energies),
                    "seconds": {"sampling": 1.0 + k, "evaluation": 2.0, "training": 10.0 * (k + 1)},
                }
            )
    return path


@pytest.fixture
def partial_run(tmp_path):
    energies = [
        [300.0, 1e6, -20.0, None],  # iteration 1: a clash, a failure
        [-30.0, -44.3268, 50.0, -10.0],  # iteration 2: reaches the reference
        [-44.3268, -40.0],  # iteration 3: in progress
    ]
    return _make_run(tmp_path / "run", energies, logged=2)


def test_load_run_reads_rows_in_order(partial_run):
    data = load_run(partial_run)
    assert data.n_evaluations == 10
    assert data.ok.sum() == 9
    assert list(data.iteration) == [0] * 4 + [1] * 4 + [2] * 2
    assert data.best() == (pytest.approx(-44.3268), 6)
    assert data.first_within(REF, 0.001) == 6
    assert list(data.best_so_far()[:3]) == [300.0, 300.0, -20.0]


def test_summary_of_a_running_run(partial_run):
    text = summarize(partial_run)
    assert "lj13: 13 mobile atoms (Ar13)" in text
    assert "iterations     2 of 5; iteration 3 in progress (2 of 4 evaluated)" in text
    assert "evaluations    10 (9 ok, 1 failed)" in text
    assert "best energy    -44.326800 ε, first reached at evaluation 6 of 10" in text
    assert "reference      -44.326801 ε, gap +0.000001 ε; within 0.001 ε at evaluation 6" in text
    # medians over the two finished iterations
    assert "sampling 1.50 s, evaluation 2.00 s, training 15.00 s" in text
    assert "train steps 2" in text and "steps 3" in text


def test_plots_of_a_running_run(partial_run, tmp_path):
    paths = plot(partial_run, tmp_path / "figs")
    assert [p.name for p in paths] == list(FIGURES)
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_empty_run(tmp_path):
    run = _make_run(tmp_path / "run", [], logged=0)
    text = summarize(run)
    assert "evaluations    0 (0 ok, 0 failed)" in text
    assert "no successful evaluation yet" in text
    assert "no finished iteration yet" in text
    for p in plot(run, tmp_path / "figs"):
        assert p.read_bytes().startswith(PNG)


def test_all_failed_iteration(tmp_path):
    run = _make_run(tmp_path / "run", [[None, None], [5.0, 7.0]], logged=2)
    text = summarize(run)
    assert "evaluations    4 (2 ok, 2 failed)" in text
    assert "first reached at evaluation 3 of 4" in text
    assert "not within 0.001 ε yet" in text
    assert all(p.read_bytes().startswith(PNG) for p in plot(run, tmp_path / "figs"))


def test_not_a_run(tmp_path):
    with pytest.raises(NotARunError):
        summarize(tmp_path)
    with pytest.raises(NotARunError):
        plot(tmp_path / "missing", tmp_path / "figs")
    assert not (tmp_path / "figs").exists()


def test_energy_window_clips_outliers():
    energies = np.array([-44.0, -40.0, -30.0, -20.0, 1e6])
    lo, hi = energy_window(energies, -44.0)
    assert lo < -44.0 < hi < 1e6
    assert hi == pytest.approx(-44.0 + (np.percentile(energies, 75) + 44.0))
    lo, hi = energy_window(np.array([-44.0, -44.0]), -44.0)  # converged: still a visible window
    assert hi - (-44.0) == pytest.approx(0.44)
