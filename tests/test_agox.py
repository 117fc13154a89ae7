"""AGOX's searches (godiff.bench.agox) spend exactly their budget through godiff's counting evaluator.

AGOX imports only beside ase < 3.27 (README, "AGOX (GOFEE, its random search and basin hopping)
beside godiff"), so this file is skipped where it is missing; run it in the AGOX environment:
``agox-env/bin/python -m pytest -q tests/test_agox.py``.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("agox")

from conftest import slab_system  # noqa: E402

from godiff.bench import agox as bench_agox  # noqa: E402
from godiff.errors import ConfigError  # noqa: E402
from godiff.rundir import RunDir  # noqa: E402
from godiff.system import load_system  # noqa: E402

RUNS = {
    "agox-random": bench_agox.run_agox_random,
    "agox-basin-hopping": bench_agox.run_agox_basin_hopping,
    "agox-gofee": bench_agox.run_agox_gofee,
}


def check_rows(system, out, budget):
    """Exactly ``budget`` rows, finite energies and forces, godiff's atom order, the frozen
    template where the system put it, the mobile atoms in the slab's z range, iterations that
    only go up; returns the rows."""
    rows = RunDir(out).rows()
    assert len(rows) == budget
    n_template = system.n_template
    template = system.template_atoms()
    frozen = system.frozen_mask()
    for row in rows:
        assert row.ok and np.isfinite(row.energy)
        assert np.isfinite(row.forces).all()
        atoms = row.toatoms()
        assert list(atoms.numbers[n_template:]) == list(system.mobile_numbers)
        if n_template:
            assert np.allclose(atoms.positions[:n_template][frozen], template.positions[frozen], atol=1e-8)
            z = atoms.positions[n_template:, 2]
            geometry = system.geometry()
            assert (z >= geometry.lower[2] - 1e-6).all() and (z <= geometry.upper[2] + 1e-6).all()
    iterations = [int(r.iteration) for r in rows]
    assert iterations == sorted(iterations)
    return rows


@pytest.mark.parametrize("method, budget", [("agox-random", 20), ("agox-basin-hopping", 40)])
def test_random_search_and_basin_hopping_spend_exactly_the_budget_on_lj13(tmp_path, method, budget):
    system = load_system("lj13")
    RUNS[method](system, seed=0, budget=budget, out=tmp_path / "run")
    check_rows(system, tmp_path / "run", budget)
    assert RunDir.open(tmp_path / "run", lock=False).manifest.method == method
    assert (tmp_path / "run" / "agox" / "agox.log").stat().st_size > 0  # AGOX's printing kept out of the way


def test_basin_hopping_on_a_slab_starts_one_iteration_per_relaxation(tmp_path):
    system = slab_system()
    # the first relaxation takes AGOX's 100 steps (101 evaluations) here
    bench_agox.run_agox_basin_hopping(system, seed=1, budget=140, out=tmp_path / "run")
    rows = check_rows(system, tmp_path / "run", 140)
    assert len({int(r.iteration) for r in rows}) >= 2  # the start and a hop, each its own iteration
    assert {float(r.temperature) for r in rows} == {0.25}  # AGOX's Metropolis temperature


def test_a_restarted_run_keeps_its_rows_and_spends_only_the_rest(tmp_path):
    system = load_system("lj13")
    out = tmp_path / "run"
    bench_agox.run_agox_random(system, seed=0, budget=10, out=out)
    first = [r.energy for r in RunDir(out).rows()]
    bench_agox.run_agox_random(system, seed=0, budget=10, out=out)  # spent: nothing more
    assert [r.energy for r in RunDir(out).rows()] == first
    bench_agox.run_agox_random(system, seed=0, budget=15, out=out)
    rows = check_rows(system, out, 15)
    assert [r.energy for r in rows[:10]] == first
    assert int(rows[10].iteration) > int(rows[9].iteration)


def test_gofee_on_a_slab_spends_exactly_the_budget_two_evaluations_per_iteration(tmp_path):
    system = slab_system()
    bench_agox.run_agox_gofee(system, seed=0, budget=8, out=tmp_path / "run")
    rows = check_rows(system, tmp_path / "run", 8)
    iterations = [int(r.iteration) for r in rows]
    assert all(iterations.count(i) <= 2 for i in set(iterations))  # the candidate and its one BFGS step
    assert len(set(iterations)) >= 4


def test_the_calculator_records_in_godiffs_atom_order_and_answers_in_agoxs(tmp_path):
    from ase.calculators.emt import EMT

    from godiff.bench.classical import _setup

    system = slab_system(mobile="Pt2Au")
    n = system.n_template
    _, evaluator, recorder, _ = _setup(system, 0, 1, tmp_path / "run", "test")
    ordered = system.atoms(system.geometry().center + np.array([[0, 0, 0], [2.8, 0, 0], [1.4, 2.4, 0]]))
    shuffled = ordered[list(range(n)) + [n + 2, n, n + 1]]  # AGOX's RandomGenerator shuffles the species
    assert list(shuffled.numbers[n:]) != list(system.mobile_numbers)
    reference = shuffled.copy()
    reference.set_constraint()
    reference.calc = EMT()
    with evaluator:
        shuffled.calc = bench_agox._CountingCalculator(recorder, system)
        assert np.allclose(shuffled.get_forces(apply_constraint=False), reference.get_forces())
        assert shuffled.get_potential_energy() == pytest.approx(reference.get_potential_energy())
        shuffled.positions[-1, 2] += 0.1
        with pytest.raises(bench_agox._BudgetSpent):  # not an Exception: AGOX's evaluator cannot swallow it
            shuffled.get_potential_energy()
    (row,) = RunDir(tmp_path / "run").rows()
    assert list(row.numbers[n:]) == list(system.mobile_numbers)
    assert np.allclose(row.positions, ordered.positions)


def test_without_agox_a_method_says_where_to_look(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "agox", None)  # makes 'import agox' fail
    with pytest.raises(ConfigError) as err:
        bench_agox.run_agox_gofee(load_system("lj13"), seed=0, budget=4, out=tmp_path / "run")
    message = str(err.value)
    assert message.startswith("method agox-gofee: the agox package is not importable here (")
    assert f"see docs/benchmarks/index.md, section '{bench_agox.README_SECTION}'" in message
    assert not (tmp_path / "run").exists()
    page = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "index.md").read_text()
    assert f"## {bench_agox.README_SECTION}" in page


def test_importing_the_module_does_not_import_agox():
    code = "import sys, godiff.bench.agox; assert 'agox' not in sys.modules, 'agox imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
