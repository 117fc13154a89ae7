"""The benchmark harness: one run per (method, seed), judged alike, resumable, tabulated and plotted."""

import importlib.metadata
import json
import shutil
import statistics
import time

import numpy as np
import pytest
from ase.calculators.lj import LennardJones

import godiff
from godiff.bench import harness
from godiff.bench.success import criterion, first_success, first_within, is_connected
from godiff.errors import ConfigError
from godiff.rundir import RunDir
from godiff.search import SearchConfig
from godiff.system import System, load_system


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench")
    system = load_system("lj13")
    calls = []
    records = harness.run_benchmark(
        system,
        methods=["godiff"],
        seeds=2,
        budget=8,
        out=out,
        jobs=1,
        threads=1,
        progress=calls.append,
        overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
    )
    return out, records, calls


def test_every_seed_runs_once_with_its_budget_and_is_recorded(tiny_bench):
    out, records, calls = tiny_bench
    assert sorted((r["method"], r["seed"]) for r in records) == [("godiff", 0), ("godiff", 1)]
    assert len(calls) == 2
    for r in records:
        assert r["evaluations"] == 8
        rows = RunDir.open(r["run_dir"]).rows()
        assert len(rows) == 8
        assert r["versions"]["godiff"] and r["machine"]["cpu_count"] >= 1
        assert r["versions"]["mace-torch"] == importlib.metadata.version("mace-torch")  # a dependency
        assert r["threads"] == 1  # the worker ran on the threads it was given, not on one per core
        # what reproduces it: the version, the commit and every setting the run used (not only the overrides)
        assert r["versions"]["godiff"] == godiff.__version__ and r["commit"] == harness.source_commit()
        assert r["config"]["samples"] == 4 and r["config"]["sampler"]["steps"] == 3 and r["config"]["seed"] == r["seed"]
        assert set(r["config"]) == set(SearchConfig().to_dict())
        assert r["best_energy"] == min(row.energy for row in rows if row.ok)
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["records"]) == 2 and saved["budget"] == 8


def test_table_and_plot_are_written(tiny_bench):
    out, _, _ = tiny_bench
    table = (out / "table.md").read_text()
    assert "| godiff | " in table and "/2 |" in table
    png = (out / "success_vs_evaluations.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_the_plot_steps_at_each_seeds_counted_figure_and_beside_it_at_its_relaxed_check(tiny_bench):
    out, records, _ = tiny_bench
    counted, relaxed = harness.success_curves(records, budget=8)
    assert counted["counted"] and not relaxed["counted"]
    paid = sorted(
        r["evaluations_counted"]
        for r in records
        if r["evaluations_counted"] is not None and r["evaluations_counted"] <= r["budget"]
    )
    assert counted["xs"] == [0, *paid, 8] and counted["ys"][-1] == len(paid) / 2
    hits = sorted(r["evaluations_to_success"] for r in records if r["evaluations_to_success"] is not None)
    assert relaxed["xs"] == [0, *hits, 8] and relaxed["label"] == f"godiff, relaxed check ({len(hits)}/2)"
    old = [{k: v for k, v in r.items() if k != "evaluations_counted"} for r in records]  # judged before the figure
    assert [c["counted"] for c in harness.success_curves(old, budget=8)] == [False]


def test_rerun_skips_finished_pairs(tiny_bench):
    out, _, _ = tiny_bench
    before = (out / "results.json").read_text()
    again = harness.run_benchmark(
        load_system("lj13"),
        methods=["godiff"],
        seeds=2,
        budget=8,
        out=out,
        overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
    )
    assert len(again) == 2
    assert json.loads((out / "results.json").read_text())["records"] == json.loads(before)["records"]


def test_naming_the_next_minimum_adds_the_basin_figure_to_old_records_without_a_rerun(tiny_bench, tmp_path):

    out, _, _ = tiny_bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    data = json.loads((copy / "results.json").read_text())
    for r in data["records"]:  # records judged before the figure existed, their runs kept
        r.pop("evaluations_to_basin", None)
        r["run_dir"] = str(copy / "runs" / r["method"] / f"seed-{r['seed']}")
    (copy / "results.json").write_text(json.dumps(data))
    rows = {r["seed"]: RunDir.open(r["run_dir"]).rows() for r in data["records"]}
    threshold = sorted(row.energy for row in rows[0])[3] + 0.01  # a "next minimum" four of seed 0's rows lie under
    spec = load_system("lj13").to_dict()
    spec["reference"]["next_energy"] = threshold
    again = harness.run_benchmark(
        System.from_dict(spec),
        methods=["godiff"],
        seeds=2,
        budget=8,
        out=copy,
        overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
    )
    for r in again:
        energies = [row.energy for row in rows[r["seed"]]]
        expected = next((i + 1 for i, e in enumerate(energies) if e <= threshold - 1e-3), None)  # LJ tolerance
        assert r["evaluations_to_basin"] == expected and r["evaluations"] == len(energies) == 8
    assert next(r for r in again if r["seed"] == 0)["evaluations_to_basin"] is not None
    assert "below the next minimum, median" in (copy / "table.md").read_text()


def test_another_budget_in_the_same_directory_is_refused_and_nothing_is_lost(tiny_bench):
    out, _, _ = tiny_bench
    before = (out / "results.json").read_text()
    with pytest.raises(ConfigError, match="budget 8, not 12; give another --out"):
        harness.run_benchmark(
            load_system("lj13"),
            methods=["godiff"],
            seeds=2,
            budget=12,
            out=out,
            overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
        )
    assert (out / "results.json").read_text() == before


def test_other_settings_in_the_same_directory_are_refused_and_nothing_is_lost(tiny_bench):
    out, records, _ = tiny_bench
    assert all(r["settings"] == {"samples": 4, "train_steps": 2, "sampling_steps": 3} for r in records)
    before = (out / "results.json").read_text()
    with pytest.raises(
        ConfigError,
        match=r"settings --set samples=4 --set sampling_steps=3 --set train_steps=2, "
        r"not --set samples=4; give another --out",
    ):
        harness.run_benchmark(
            load_system("lj13"), methods=["godiff"], seeds=2, budget=8, out=out, overrides={"samples": 4}
        )
    assert (out / "results.json").read_text() == before


def test_records_judged_under_another_criterion_are_judged_again_without_a_rerun(tiny_bench):
    out, first, _ = tiny_bench
    saved = json.loads((out / "results.json").read_text())
    for r in saved["records"]:
        r["judge"], r["evaluations_to_success"] = {"version": 1, "screen": 1.0}, 1
    (out / "results.json").write_text(json.dumps(saved))
    again = harness.run_benchmark(
        load_system("lj13"),
        methods=["godiff"],
        seeds=2,
        budget=8,
        out=out,
        overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
    )
    current = criterion(load_system("lj13"))
    by_seed = {r["seed"]: r for r in saved["records"]}
    judged = {r["seed"]: r for r in first}  # judged under the current criterion when they ran
    figures = ("evaluations_to_success", "success_relax_calls", "evaluations_counted", "evaluations_to_energy")
    for r in again:
        assert r["judge"] == current
        assert [r[k] for k in figures] == [judged[r["seed"]][k] for k in figures]  # not the stale 1
        assert r["wall_seconds"] == by_seed[r["seed"]]["wall_seconds"]  # judged again, not run again
    assert any(r["evaluations_to_success"] != 1 for r in again)


def test_the_unrelaxed_figure_is_the_first_evaluated_energy_within_tolerance(tiny_bench, monkeypatch):
    out, _, _ = tiny_bench
    saved = json.loads((out / "results.json").read_text())
    rows = RunDir.open(saved["records"][0]["run_dir"]).rows()
    energies = [r.energy for r in rows]
    threshold = sorted(energies)[2]  # a made-up reference that three of the eight evaluations reach
    assert first_within(rows, threshold) == 1 + next(i for i, e in enumerate(energies) if e <= threshold)
    assert first_within(rows, min(energies) - 1) is None
    for r in saved["records"]:
        del r["evaluations_to_energy"]  # a record judged before the figure existed
    (out / "results.json").write_text(json.dumps(saved))
    again = harness.run_benchmark(
        load_system("lj13"),
        methods=["godiff"],
        seeds=2,
        budget=8,
        out=out,
        overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
    )
    assert all("evaluations_to_energy" in r for r in again)  # filled in from the run directories, not re-run
    assert [r["wall_seconds"] for r in again] == [r["wall_seconds"] for r in saved["records"]]


def test_first_success_finds_the_lj13_minimum_by_relaxation(tmp_path):
    # An evaluated structure counts as a success if it *relaxes* to the reference: a slightly
    # distorted icosahedron is one, a far-off random structure (evaluated first) is not.
    from ase.cluster import Icosahedron

    from godiff.energy import Evaluator

    system = load_system("lj13")
    ico = Icosahedron("Ar", noshells=2, latticeconstant=1.5496)  # nn distance ~1.1
    rng = np.random.default_rng(0)
    good = ico.positions - ico.positions.mean(0) + rng.normal(0, 0.03, (13, 3))
    bad = rng.uniform(-2, 2, (13, 3)) * np.array([1, 1, 0.05])  # a flat, scattered layer
    run = RunDir.create(tmp_path / "r", {"system": system.to_dict()})
    with Evaluator(system.energy) as ev:
        for i, pos in enumerate([bad, good]):
            atoms = system.atoms(pos)
            run.record(atoms, ev.single_point(atoms), iteration=0, sample=i, temperature=1.0)
    hit = first_success(run.rows(), system, reference=-44.326801, tolerance=1e-3)
    assert hit is not None and hit.evaluations == 2
    assert abs(hit.relaxed_energy + 44.326801) < 1e-3


def test_trajectories_are_judged_by_their_endpoints_then_scanned_from_their_start(tmp_path):
    # Segment 0 wanders among flat layers (its endpoint fails); segment 1 starts far off and
    # ends at a distorted icosahedron: its first row that relaxes into the minimum is the success.
    from ase.cluster import Icosahedron

    from godiff.energy import Evaluator

    system = load_system("lj13")
    ico = Icosahedron("Ar", noshells=2, latticeconstant=1.5496)
    rng = np.random.default_rng(1)
    flat = [rng.uniform(-2, 2, (13, 3)) * np.array([1, 1, 0.05]) for _ in range(3)]
    centre = ico.positions - ico.positions.mean(0)
    path = [centre * 1.6 + rng.normal(0, 0.02, (13, 3)), centre + rng.normal(0, 0.08, (13, 3)), centre]
    run = RunDir.create(tmp_path / "r", {"system": system.to_dict()})
    with Evaluator(system.energy) as ev:
        for k, segment in enumerate([flat, path]):
            for i, pos in enumerate(segment):
                atoms = system.atoms(pos)
                run.record(atoms, ev.single_point(atoms), iteration=k, sample=i, temperature=0.0)
    rows = run.rows()
    every = first_success(rows, system, reference=-44.326801, tolerance=1e-3)
    by_path = first_success(rows, system, reference=-44.326801, tolerance=1e-3, trajectories=True)
    assert every is not None and by_path is not None
    assert by_path.evaluations == every.evaluations and by_path.evaluations in (4, 5)
    assert first_success(rows[:3], system, reference=-44.326801, tolerance=1e-3, trajectories=True) is None


def test_connectivity_prefilter_uses_minimum_image():
    system = load_system("pt7-pt111")
    cell = system.geometry().cell
    z = system.geometry().lower[2] + 1.0
    # seven atoms in a row along a, 2.77 Å apart, wrapping across the cell edge: connected
    a = np.asarray(cell[0]) / np.linalg.norm(cell[0])
    pos = np.array([a * (2.77 * i - 5.0) + [0, 0, z] for i in range(7)])
    pos[:, :2] %= [cell[0][0], 100]  # wrap x into the cell
    assert is_connected(system, pos)
    pos[3:] += [0, 6.0, 0]  # split into two groups 6 Å apart
    assert not is_connected(system, pos)


@pytest.mark.parametrize("method", ["random", "rss", "rss-cluster", "basin-hopping"])
def test_classical_methods_spend_exactly_their_budget_through_the_evaluator(method, tmp_path):
    from godiff.bench.methods import get_method

    system = load_system("lj13")
    get_method(method).run(system, seed=0, budget=60, out=tmp_path / method)
    rows = RunDir.open(tmp_path / method).rows()
    assert len(rows) == 60  # every single point, each relaxation step included, is one row
    assert all(r.ok for r in rows)
    if method == "random":
        assert len({r.iteration for r in rows}) == 60  # one evaluation per placement
    else:
        assert min(r.energy for r in rows) < rows[0].energy  # relaxations went downhill


def test_godiff_transfer_starts_from_the_given_zoo_model(tmp_path):
    from godiff.search import Search
    from godiff.zoo.registry import Registry
    from godiff.zoo.transfer import TRANSFER

    run = tmp_path / "parent"
    Search(
        "lj13",
        out=run,
        iterations=1,
        samples=4,
        train_steps=2,
        steps=3,
        relax_steps=1,
        oversample=1,
        batch_size=4,
        force_batch=4,
    ).run()
    entry = Registry(local=tmp_path / "zoo", shipped=tmp_path / "none").add_run(
        run, name="lj13-parent", version="1.0.0"
    )
    records = harness.run_benchmark(
        load_system("lj13"),
        methods=["godiff-transfer"],
        seeds=1,
        budget=10,
        out=tmp_path / "b",
        start=str(entry.path),
        overrides={"min_samples": 2, "max_samples": 4, "train_steps": 1, "sampling_steps": 3, "relax_steps": 1},
    )
    assert records[0]["evaluations"] == 10  # held to the budget, as a scratch search is
    manifest = json.loads((tmp_path / "b" / "runs" / "godiff-transfer" / "seed-0" / "run.json").read_text())
    assert manifest["parent"] == records[0]["start_model"] == "lj13-parent@1.0.0"  # the record names its model
    assert manifest["search"]["first_samples"] == TRANSFER["first_samples"] and manifest["search"]["budget"] == 10


def test_bench_speed_prints_each_cost_including_one_energy_evaluation():
    from click.testing import CliRunner

    from godiff.cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "bench-speed",
            "lj13",
            "--samples",
            "4",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--sampling-steps",
            "3",
            "--evaluations",
            "3",
        ],
    )
    assert result.exit_code == 0, (result.output, result.stderr)
    for phrase in (
        "forward pass, 4 samples",
        "sampling 4 structures (3 steps",
        "training:",
        "energy evaluation (lj):",
        "(median of 3, the first call excluded)",
    ):
        assert phrase in result.output, result.output
    # another architecture is timed on the system's untrained network built with it
    command = ["bench-speed", "lj13", "--samples", "2", "--repeats", "1", "--threads", "1", "--evaluations", "0"]
    result = CliRunner().invoke(cli, command + ["--sampling-steps", "2", "--set", "score.layers=1"])
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "layers=1" in result.output.splitlines()[0]


def test_bench_speed_on_a_run_prices_an_evaluation_by_that_runs_own_draws_and_training_steps(tmp_path):
    # Two fixed iterations of 4: the first placed from the prior, the second drawn by the
    # network (4 draws over 8 evaluations); 2 training steps after each (4 over 8).
    from click.testing import CliRunner

    from godiff.bench.speed import draw_quality, spent_per_evaluation
    from godiff.cli.main import cli
    from godiff.energy import make_calculator
    from godiff.search import Search

    run = tmp_path / "run"
    Search(
        "lj13",
        out=run,
        iterations=2,
        samples=4,
        train_steps=2,
        train_stop="fixed",
        steps=3,
        relax_steps=1,
        oversample=1,
        batch_size=4,
        force_batch=4,
        polish=0,
    ).run()
    done = RunDir.open(run, lock=False)
    drawn = [r for r in done.rows() if r.iteration > 0]
    spent = spent_per_evaluation(done.read_log())
    assert spent == {"draws": len(drawn) / 8, "candidates": None, "train_steps": 4 / 8, "evaluations": 8}
    assert len(drawn) == 4
    cost = Search.resume(run, read_only=True).cost  # one candidate per draw: 4 over 8 evaluations
    assert spent_per_evaluation(done.read_log(), cost=cost)["candidates"] == 4 / 8
    command = ["bench-speed", str(run), "--samples", "4", "--repeats", "1", "--threads", "1", "--evaluations", "0"]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, (result.output, result.stderr)
    line = next(l for l in result.output.splitlines() if l.startswith("network per evaluation of this run:"))
    assert "its 0.5 candidates per evaluation" in line and "its 0.50 steps per evaluation" in line
    assert "over 8 evaluations" in line
    # the same run's counts timed under other settings
    result = CliRunner().invoke(cli, command + ["--set", "sampling_steps=2", "--set", "oversample=2"])
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "sampling 4 structures (2 steps, 1 relaxation steps, 2x oversampled)" in result.output
    refused = CliRunner().invoke(cli, command + ["--set", "score.layers=1"])
    assert refused.exit_code == 2 and "a run's network is its own" in refused.output + refused.stderr
    # what draws under those settings hand the calculator: the run's own draw, evaluated
    result = CliRunner().invoke(cli, command + ["--set", "oversample=2", "--draws", "1"])
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "1 draws of 16 at 2 candidates each" in result.output and "(16 evaluated)" in result.output
    search = Search.resume(run, read_only=True)
    quality = draw_quality(search, 1)
    lj = make_calculator(search.system.energy)
    energies = []
    for r in range(1):
        for positions in search.draw(1_000_000 + r, 0, 16):
            atoms = search.system.atoms(positions)
            atoms.calc = lj
            energies.append(atoms.get_potential_energy())
    assert quality["n"] == 16 and quality["median_energy"] == pytest.approx(statistics.median(energies), abs=1e-9)
    assert quality["lowest_energy"] == pytest.approx(min(energies), abs=1e-9)


def _stopped_pt1_run(tmp_path, reference: float, tolerance: float):

    data = {**load_system("pt1-step").to_dict(), "reference": {"energy": reference, "tolerance": tolerance}}
    system = System.from_dict(data)
    record = harness.run_benchmark(
        system,
        methods=["godiff-ffg"],
        seeds=1,
        budget=40,
        out=tmp_path / "b",
        stop_at_success=True,
        overrides={
            "samples": 8,
            "train_steps": 2,
            "sampling_steps": 3,
            "relax_steps": 1,
            "oversample": 1,
            "acquisition": "energy",
        },
    )[0]
    return system, record, RunDir.open(record["run_dir"]).rows()


def test_stop_at_success_ends_a_run_once_both_figures_are_in(tmp_path):
    # A reference every placement of the adatom reaches, relaxed or not: both figures come in
    # the first iteration, and the run ends there.
    _, record, rows = _stopped_pt1_run(tmp_path, reference=10.0, tolerance=5.0)
    assert record["stopped_at_success"]
    assert record["evaluations_to_success"] == record["evaluations_to_energy"] == 1
    assert record["evaluations_counted"] == 1  # evaluated within tolerance: its relaxation costs nothing more
    assert record["evaluations"] == len(rows) == 8


def test_a_run_that_never_sees_both_figures_is_not_marked_stopped(tmp_path):
    # No structure reaches a reference far below the adatom's minimum: the watch never stops
    # the run, which spends its whole budget, and the record must not claim it was stopped.
    _, record, rows = _stopped_pt1_run(tmp_path, reference=-100.0, tolerance=0.05)
    assert not record["stopped_at_success"]
    assert record["evaluations_to_success"] is None and record["evaluations_to_energy"] is None
    assert record["evaluations"] == len(rows) == 40


def test_stop_at_success_gives_the_figures_of_the_post_hoc_judge(tmp_path):
    from godiff.bench.success import evaluations_counted, first_success

    system, record, rows = _stopped_pt1_run(tmp_path, reference=5.5058, tolerance=0.05)
    fresh = first_success(rows, system, reference=5.5058, tolerance=0.05)
    assert record["evaluations_to_success"] == (fresh and fresh.evaluations)
    assert record["evaluations_to_energy"] == first_within(rows, 5.5558)
    assert record["evaluations_counted"] == evaluations_counted(fresh, first_within(rows, 5.5558))
    assert record["success_relax_calls"] == (fresh and fresh.relax_calls)
    figures = [record["evaluations_to_success"], record["evaluations_to_energy"]]
    expected = 40 if None in figures else 8 * -(-max(figures) // 8)  # ran on until both were in, no further
    assert record["evaluations"] == len(rows) == expected


def test_every_committed_benchmark_table_regenerates_from_its_records():
    from pathlib import Path

    results = sorted((Path(__file__).parents[1] / "benchmarks").glob("*/results.json"))
    assert results, "the repository keeps its benchmark records in benchmarks/*/results.json"
    for path in results:
        assert harness.table_of_results(path) == (path.parent / "table.md").read_text(), f"{path.parent.name}/table.md"


def test_a_relaxation_that_fails_in_the_judge_is_no_success_not_a_crash(tmp_path, monkeypatch):
    """A quantum-chemistry calculator can fail on the way down (tblite: SCF not converged); the
    judge records that structure as no success and goes on (it crashed a GFN2-xTB benchmark)."""
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from godiff.system import System, load_system

    spec = load_system("lj13").to_dict()
    spec.update(
        mobile="Cu2",
        energy={"calculator": "ase", "class": "ase.calculators.dftb.Dftb", "options": {"command": "false"}},
    )  # fails at every call: no parameter files
    system = System.from_dict(spec)
    db = ase.db.connect(str(tmp_path / "rows.db"))
    for d in (2.3, 2.5):
        atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, d]])
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
        db.write(atoms, ok=True, iteration=0, sample=0)
    rows = list(db.select())
    monkeypatch.chdir(tmp_path)
    assert first_success(rows, system, reference=-1.0, tolerance=0.1, trust_energy=True) is None  # a command: trusted
    assert not (tmp_path / "dftb_in.hsd").exists()  # its files went to a directory of its own


LJ13_MINIMUM = -44.326801


class _CountingLJ(LennardJones):
    """ASE's LennardJones as the lj13 preset builds it, counting its own ``calculate`` calls: the
    test's count of what a BFGS relaxation computes, apart from the judge's."""

    def __init__(self):
        super().__init__(epsilon=1.0, sigma=1.0, rc=1000.0, smooth=False)
        self.calls = 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        super().calculate(*args, **kwargs)


def _bfgs_calls(system, positions) -> int:
    """Calls a BFGS relaxation (fmax 0.05, as the judge's) of ``positions`` makes, counted by the calculator."""
    from ase.optimize import BFGS

    atoms = system.atoms(positions)
    atoms.calc = _CountingLJ()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=500)
    return atoms.calc.calls


def _lj13_structures():
    """A flat scattered layer (no success), a distorted icosahedron (relaxes into the minimum,
    evaluated above it) and the minimum itself, relaxed tight (evaluated within 1e-3)."""
    from ase.cluster import Icosahedron
    from ase.optimize import BFGS

    system = load_system("lj13")
    ico = Icosahedron("Ar", noshells=2, latticeconstant=1.5496)
    rng = np.random.default_rng(0)
    centre = ico.positions - ico.positions.mean(0)
    bad = rng.uniform(-2, 2, (13, 3)) * np.array([1, 1, 0.05])
    good = centre + rng.normal(0, 0.03, (13, 3))
    atoms = system.atoms(centre)
    atoms.calc = _CountingLJ()
    BFGS(atoms, logfile=None).run(fmax=1e-5, steps=500)
    return system, centre, bad, good, atoms.positions.copy()


def _lj13_run(tmp_path, system, segments):
    """A run directory of real LJ evaluations, one ``iteration`` per segment of positions."""
    from godiff.energy import Evaluator

    run = RunDir.create(tmp_path / "r", {"system": system.to_dict()})
    with Evaluator(system.energy) as ev:
        for k, segment in enumerate(segments):
            for i, pos in enumerate(segment):
                atoms = system.atoms(pos)
                run.record(atoms, ev.single_point(atoms), iteration=k, sample=i, temperature=0.0)
    return tmp_path / "r", run.rows()


def test_the_counted_figure_of_single_points_adds_the_calls_of_the_successful_relaxation(tmp_path):
    system, _, bad, good, _ = _lj13_structures()
    run_dir, rows = _lj13_run(tmp_path, system, [[bad], [good]])
    calls = _bfgs_calls(system, good)
    assert calls > 2  # a relaxation of several steps, each one call
    hit = first_success(rows, system, reference=LJ13_MINIMUM, tolerance=1e-3)
    assert hit.evaluations == 2 and hit.relax_calls == calls and hit.counted(None) == 2 + calls
    record = harness.judge(system, "random", run_dir, budget=2)
    assert record["evaluations_to_success"] == 2 and record["evaluations_to_energy"] is None
    assert record["success_relax_calls"] == calls and record["evaluations_counted"] == 2 + calls


def test_an_evaluation_at_the_minimum_before_index_plus_calls_is_the_counted_figure(tmp_path):
    system, _, _, good, minimum = _lj13_structures()
    run_dir, _ = _lj13_run(tmp_path, system, [[good], [minimum]])
    record = harness.judge(system, "random", run_dir, budget=2)
    assert record["evaluations_to_success"] == 1 and record["evaluations_to_energy"] == 2
    assert record["success_relax_calls"] == _bfgs_calls(system, good) > 1  # 1 + calls comes after the hit at 2
    assert record["evaluations_counted"] == 2  # the minimum was in hand as evaluated


def test_a_trajectory_methods_counted_figure_is_its_own_count_to_the_minimum(tmp_path):
    # Segment 0: flat layers (no success); segment 1: a descent from a swollen icosahedron to the
    # minimum. The relaxed check succeeds early in segment 1; the minimum is in hand at its end.
    system, centre, _, _, minimum = _lj13_structures()
    rng = np.random.default_rng(1)
    flat = [rng.uniform(-2, 2, (13, 3)) * np.array([1, 1, 0.05]) for _ in range(3)]
    path = [centre * 1.6 + rng.normal(0, 0.02, (13, 3)), centre + rng.normal(0, 0.08, (13, 3)), centre, minimum]
    run_dir, rows = _lj13_run(tmp_path, system, [flat, path])
    energies = [row.energy for row in rows]
    by_hand = 1 + next(i for i, e in enumerate(energies) if e <= LJ13_MINIMUM + 1e-3)
    record = harness.judge(system, "rss", run_dir, budget=7)
    assert by_hand == 7 and record["evaluations_counted"] == record["evaluations_to_energy"] == by_hand
    assert record["evaluations_to_success"] < by_hand and record["success_relax_calls"] is None


def test_an_old_record_without_the_counted_figure_prints_dashes_beside_new_ones():
    from pathlib import Path

    old = json.loads((Path(__file__).parents[1] / "benchmarks" / "lj13" / "results.json").read_text())["records"]
    assert not any("evaluations_counted" in r for r in old)  # judged before the figure existed, runs not kept
    new = [
        {
            "method": "random",
            "seed": s,
            "budget": 2560,
            "evaluations_counted": counted,
            "evaluations_to_success": hit,
            "evaluations_to_energy": within,
            "evaluations_to_basin": within,
            "best_energy": -44.3,
            "wall_seconds": 1.0,
        }
        for s, counted, hit, within in [(0, 40, 12, 40), (1, 3001, 6, None)]
    ]  # seed 1: relaxation ends past the budget
    table = harness.table_markdown(
        harness.summarize(old + new, ["godiff-ffg", "basin-hopping", "random"]), system=load_system("lj13"), budget=2560
    )
    assert table.splitlines()[2].startswith(
        "| method | as evaluated | median | worst | seconds to it, median | network share | relaxation counted "
        "| median | worst | relaxed check (uncounted) | median |"
    )
    # single points judged before the counted figure: never within tolerance as evaluated, counted not known
    assert "| godiff-ffg | 0/8 | - | - | - | - | - | - | - | 8/8 | 20 | 769 | -43.949 | 677 |" in table
    # relaxation steps: the old record's first evaluation within tolerance is the counted figure
    assert "| basin-hopping | 7/8 | 854 | 2490 | - | - | 7/8 | 765 | 2490 | 7/8 | 706 | 820 | -44.327 | 30 |" in table
    # seed 1 never within tolerance as evaluated: the median over both seeds is infinite, so '-'
    assert "| random | 1/2 | - | 40 | - | - | 1/2 | 40 | 40 | 2/2 | 9 | - | -44.300 | 1 |" in table


def test_beside_shows_another_directorys_methods_at_their_own_budget_and_refuses_another_system(tiny_bench, tmp_path):
    out, _, _ = tiny_bench
    short = tmp_path / "short"
    harness.run_benchmark(load_system("lj13"), methods=["random"], seeds=2, budget=5, out=short, threads=1)
    both = tmp_path / "both"
    shutil.copytree(out, both)
    before = json.loads((both / "results.json").read_text())["records"]
    harness.run_benchmark(
        load_system("lj13"),
        methods=["godiff"],
        seeds=2,
        budget=8,
        out=both,
        beside=[short],
        overrides={"samples": 4, "train_steps": 2, "sampling_steps": 3},
    )
    saved = json.loads((both / "results.json").read_text())
    assert saved["records"] == before and saved["beside"] == ["../short"]  # shown, never merged into the records
    rows = [line for line in (both / "table.md").read_text().splitlines() if line.startswith("| ")][
        1:
    ]  # under the header
    assert [row.split(" | ")[0] for row in rows] == ["| godiff", "| random (budget 5)"]
    assert harness.table_of_results(both / "results.json") == (both / "table.md").read_text()
    with pytest.raises(ConfigError, match="a benchmark of lj13, not lj19"):
        harness.run_benchmark(
            load_system("lj19"), methods=["random"], seeds=1, budget=5, out=tmp_path / "x", beside=[short]
        )
    assert not (tmp_path / "x").exists()


def test_a_killed_benchmark_process_is_a_one_line_error_that_keeps_the_runs_and_resumes(tmp_path):
    """kill -9 of a worker of `godiff bench` mid-run: a one-line error saying the same command
    resumes (not an internal error); the same command then finishes every seed, the killed one
    resumed from its run directory."""
    import signal
    import subprocess
    import time

    import psutil
    from conftest import console_script

    out = tmp_path / "b"
    command = [
        console_script("godiff"),
        "bench",
        "lj13",
        "--methods",
        "godiff",
        "--seeds",
        "2",
        "--budget",
        "24",
        "--jobs",
        "2",
        "--threads",
        "1",
        "--set",
        "samples=4",
        "--set",
        "train_steps=2",
        "--set",
        "sampling_steps=3",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/godiff/seed-*/evaluations.db")) and time.monotonic() < deadline:
        time.sleep(0.2)
    server = [p for p in psutil.Process(proc.pid).children() if "forkserver" in " ".join(p.cmdline())]
    workers = [w for s in server for w in s.children()]
    assert workers and proc.poll() is None, "no benchmark worker was running to kill"
    workers[0].send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("godiff:")]
    assert len(lines) == 1 and lines[0].startswith("godiff: error: a benchmark process ended abruptly"), stderr
    assert "the same command resumes the others" in lines[0] and "internal error" not in stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    records = json.loads((out / "results.json").read_text())["records"]
    assert sorted(r["seed"] for r in records) == [0, 1] and all(r["evaluations"] == 24 for r in records)
    assert any(r["resumed"] for r in records)  # the killed seed went on from its run directory


def test_a_run_directory_left_by_a_killed_creation_is_started_afresh_only_when_nothing_was_evaluated(tmp_path):
    """A worker killed between making its run directory and writing run.json left a directory
    that blocked the same command ("directory is not empty", or "already holds a run" when the
    kill came while run.json was written): now the harness removes such leftovers, and only
    those: a directory with an evaluated row is never removed."""
    from godiff.errors import RunExistsError
    from godiff.rundir import LOCK

    system = load_system("lj13")
    seed_dir = tmp_path / "b" / "runs" / "godiff" / "seed-0"
    for name in ("samples", "checkpoints"):
        (seed_dir / name).mkdir(parents=True)
    (seed_dir / LOCK).write_text("")
    RunDir(seed_dir).create_database()  # what a kill just before run.json leaves
    (seed_dir / ".run.json.k2j4x_.tmp").write_text('{"format"')  # ... or while it was written
    bad = _lj13_structures()[2]
    kept, _ = _lj13_run(tmp_path, system, [[bad]])  # one evaluated row
    (kept / "run.json").unlink()

    assert RunDir.discard_unstarted(kept) is False and len(RunDir(kept).rows()) == 1  # evaluated: kept
    with pytest.raises(RunExistsError):
        RunDir.check_free(kept)
    records = harness.run_benchmark(
        system,
        methods=["godiff"],
        seeds=1,
        budget=4,
        out=tmp_path / "b",
        jobs=1,
        threads=1,
        overrides={"samples": 4, "train_steps": 1, "sampling_steps": 3},
    )
    assert records[0]["evaluations"] == 4 and not records[0]["resumed"]


def test_the_seconds_to_the_first_hit_and_the_networks_share_of_them(tmp_path):
    system, _, bad, good, minimum = _lj13_structures()
    from godiff.energy import Evaluator

    run = RunDir.create(tmp_path / "r", {"system": system.to_dict()})
    with Evaluator(system.energy) as ev:
        first = ev.single_point(system.atoms(good))
        run.record(system.atoms(good), first, iteration=0, sample=0, temperature=0.0)
        time.sleep(0.5)  # the network's turn, as a run's sampling and training take it
        run.record(system.atoms(bad), ev.single_point(system.atoms(bad)), iteration=1, sample=0, temperature=0.0)
        run.record(
            system.atoms(minimum), ev.single_point(system.atoms(minimum)), iteration=1, sample=1, temperature=0.0
        )
    seconds = [
        {"sampling": 1.0, "evaluation": 0.5, "training": 2.5},
        {"sampling": 3.0, "evaluation": 1.0, "training": 0.0},
    ]
    seconds.append({"sampling": 100.0, "evaluation": 0.0, "training": 100.0})  # after the hit: not counted
    for k, s in enumerate(seconds):
        run.append_log({"iteration": k, "seconds": s})
    record = harness.judge(system, "random", tmp_path / "r", budget=3)
    assert record["evaluations_to_energy"] == 3
    rows = run.rows()
    by_hand = (rows[2].ctime - rows[0].ctime) * 365.25 * 86400 + first.seconds
    assert record["seconds_to_energy"] == pytest.approx(by_hand, rel=1e-6) and record["seconds_to_energy"] > 0.5
    assert record["network_share"] == pytest.approx((1.0 + 2.5 + 3.0) / (1.0 + 0.5 + 2.5 + 3.0 + 1.0))
    never = harness.judge(system, "random", tmp_path / "r", budget=2)
    assert never["seconds_to_energy"] is None and never["network_share"] is None


def test_the_seconds_to_the_first_hit_leave_out_the_benchmarks_own_judging(tmp_path):
    """The watch judges inside the run (between iterations); its relaxations are not the user's wait."""
    from types import SimpleNamespace

    from godiff.bench.success import SuccessWatch
    from godiff.energy import Evaluator

    system, _, bad, good, minimum = _lj13_structures()
    run = RunDir.create(tmp_path / "r", {"system": system.to_dict()})
    reference, tolerance = harness._reference(system)
    watch = SuccessWatch(system, reference=reference, tolerance=tolerance)
    with Evaluator(system.energy) as ev:
        for atoms_of in (good, bad):
            run.record(
                system.atoms(atoms_of), ev.single_point(system.atoms(atoms_of)), iteration=0, sample=0, temperature=0.0
            )
        watch(SimpleNamespace(run_dir=run))  # relaxes both rows, between the iterations
        run.record(
            system.atoms(minimum), ev.single_point(system.atoms(minimum)), iteration=1, sample=0, temperature=0.0
        )
        watch(SimpleNamespace(run_dir=run))  # after the hit: not subtracted
    (before, spent), (after, _) = watch.judged
    assert (before, after) == (2, 3) and spent > 0 and watch.seconds_before(3) == spent
    plain = harness.judge(system, "random", tmp_path / "r", budget=3)
    watched = harness.judge(system, "random", tmp_path / "r", budget=3, watch=watch)
    assert watched["evaluations_to_energy"] == plain["evaluations_to_energy"] == 3
    assert watched["seconds_to_energy"] == pytest.approx(plain["seconds_to_energy"] - spent, rel=1e-9)


def test_each_iteration_logs_the_networks_and_the_calculators_seconds_per_evaluation(tiny_bench):
    out, records, _ = tiny_bench
    run = RunDir(records[0]["run_dir"])
    for line in run.read_log():
        rows = run.rows(line["iteration"])
        s = line["seconds"]
        assert line["network_per_evaluation"] == pytest.approx((s["sampling"] + s["training"]) / len(rows))
        calls = [r.data["seconds"] for r in rows]
        assert line["calculator_per_evaluation"] == pytest.approx(sum(calls) / len(calls)) and 0 < min(calls)
