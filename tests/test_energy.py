"""Tests of godiff.energy: calculators from specs and the counting Evaluator."""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from godiff.energy import (
    KNOWN_CALCULATORS,
    Evaluation,
    Evaluator,
    check_iteration,
    make_calculator,
    normalize_spec,
)
from godiff.errors import ConfigError, EnergyFunctionError, EvaluationFailureError

LJ13_MINIMUM = -44.326801  # eV (epsilon = sigma = 1), Cambridge Cluster Database


def pt_slab_with_adatom(x: float, y: float, *, seed: int = 0) -> Atoms:
    """fcc111 Pt (3, 3, 2) slab, bottom layer fixed, one adatom at (x, y) in Å, rattled."""
    slab = fcc111("Pt", (3, 3, 2), vacuum=8.0)
    add_adsorbate(slab, "Pt", 2.2, position=(x, y))
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 2))
    slab.rattle(0.05, seed=seed)
    return slab


def pt_structures(n: int) -> list[Atoms]:
    rng = np.random.default_rng(1)
    return [pt_slab_with_adatom(*rng.uniform(0.0, 5.0, 2), seed=i) for i in range(n)]


def direct_emt(atoms: Atoms) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False)


class FlakyCalculator(Calculator):
    """Test fixture: a harmonic well that raises for 3 atoms, NaN energy for 4, NaN forces for 5."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        positions = self.atoms.positions
        if len(self.atoms) == 3:
            raise RuntimeError("SCF did not converge\nafter 100 steps")
        forces = -2.0 * positions
        energy = float((positions**2).sum())
        if len(self.atoms) == 4:
            energy = math.nan
        if len(self.atoms) == 5:
            forces[0, 0] = math.inf
        self.results = {"energy": energy, "forces": forces}


def test_emt_matches_direct_ase_call_per_structure():
    structures = pt_structures(4)
    positions_before = [a.positions.copy() for a in structures]
    seen = []
    with Evaluator({"calculator": "emt"}) as evaluator:
        evaluations = evaluator.evaluate(structures, on_result=lambda i, a, e: seen.append(i))
        assert evaluator.n_calls == 4 and evaluator.n_failed == 0
        # The same structure again recomputes and counts (nothing cached across calls).
        again = evaluator.single_point(structures[0])
        assert evaluator.n_calls == 5
    assert seen == [0, 1, 2, 3]
    assert again.energy == pytest.approx(evaluations[0].energy, abs=1e-12)
    for atoms, evaluation, before in zip(structures, evaluations, positions_before):
        energy, forces = direct_emt(atoms)
        assert evaluation.ok and evaluation.error is None and evaluation.seconds >= 0.0
        assert evaluation.energy == pytest.approx(energy, abs=1e-10)
        assert evaluation.forces.shape == (len(atoms), 3)
        # Raw forces: the FixAtoms constraint of the input is not applied.
        np.testing.assert_allclose(evaluation.forces, forces, atol=1e-10)
        np.testing.assert_array_equal(atoms.positions, before)
        assert atoms.calc is None
    assert len({round(e.energy, 8) for e in evaluations}) == 4


def lj13_icosahedron(radius: float = 1.1) -> Atoms:
    phi = (1.0 + 5.0**0.5) / 2.0
    vertices = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            vertices += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    vertices = np.array(vertices)
    vertices *= radius / np.linalg.norm(vertices[0])
    return Atoms("Ar13", positions=np.vstack([np.zeros(3), vertices]))


def test_lj_spec_relaxes_lj13_to_the_cambridge_minimum_and_counts_force_calls():
    atoms = lj13_icosahedron()
    # The force calls the optimizer made at new positions (asking again at the same positions
    # is answered by ASE's cache and costs no calculation).
    force_positions: list[np.ndarray] = []
    get_forces = atoms.get_forces

    def counting_get_forces(*args, **kwargs):
        if not force_positions or not np.array_equal(force_positions[-1], atoms.positions):
            force_positions.append(atoms.positions.copy())
        return get_forces(*args, **kwargs)

    atoms.get_forces = counting_get_forces
    with Evaluator({"calculator": "lj", "epsilon": 1.0, "sigma": 1.0}) as evaluator:
        atoms.calc = evaluator.as_calculator()
        optimizer = BFGS(atoms, logfile=None)
        assert optimizer.run(fmax=1e-5, steps=200)
        energy = atoms.get_potential_energy()
        assert energy == pytest.approx(LJ13_MINIMUM, abs=1e-4)
        assert evaluator.n_calls == len(force_positions) == optimizer.nsteps + 1
        assert evaluator.n_failed == 0


def test_the_calculator_adapter_stops_at_its_budget_and_reports_each_evaluation():
    """The one adapter (classical methods and AGOX use it): a relaxation longer than the budget
    stops with BudgetExhausted before evaluation budget + 1 is paid, and each paid one reached
    on_result the moment it was made."""
    from godiff.energy import BudgetExhausted

    atoms = lj13_icosahedron()
    atoms.positions *= 1.05  # stretched: BFGS needs many steps
    seen = []
    with Evaluator({"calculator": "lj"}) as evaluator:
        atoms.calc = evaluator.as_calculator(budget=5, on_result=lambda a, e: seen.append(e.energy))
        with pytest.raises(BudgetExhausted):
            BFGS(atoms, logfile=None).run(fmax=1e-5, steps=200)
        assert evaluator.n_calls == atoms.calc.spent == len(seen) == 5
        assert seen[-1] < seen[0]  # it was relaxing


def test_failures_are_recorded_counted_and_never_raised(caplog):
    sizes = [2, 3, 4, 5, 6, 3]
    structures = [Atoms(f"H{n}", positions=np.arange(3 * n).reshape(n, 3) * 0.1) for n in sizes]
    with Evaluator(FlakyCalculator()) as evaluator:
        with caplog.at_level("WARNING", logger="godiff.energy"):
            evaluations = evaluator.evaluate(structures)
        warned = sum("failed" in r.getMessage() for r in caplog.records)
        assert evaluator.n_calls == 6 and evaluator.n_failed == 4
        calc = evaluator.as_calculator()
        with pytest.raises(EvaluationFailureError, match="SCF did not converge"):
            calc.get_potential_energy(structures[1])
        assert evaluator.n_calls == 7 and evaluator.n_failed == 5
    ok = [e.ok for e in evaluations]
    assert ok == [True, False, False, False, True, False]
    assert evaluations[1].error == "RuntimeError: SCF did not converge after 100 steps"
    assert evaluations[2].error == "non-finite energy"
    assert evaluations[3].error == "non-finite forces"
    for evaluation in evaluations:
        if not evaluation.ok:
            assert evaluation.energy is None and evaluation.forces is None
            assert "\n" not in evaluation.error
    assert evaluations[4].energy == pytest.approx((structures[4].positions ** 2).sum())
    assert warned == 4


def test_two_workers_give_the_same_energies_and_report_each_result_once():
    structures = pt_structures(8)
    with Evaluator({"calculator": "emt"}) as serial:
        reference = serial.evaluate(structures)
    arrived = []
    with Evaluator({"calculator": "emt"}, workers=2) as parallel:
        evaluations = parallel.evaluate(structures, on_result=lambda i, atoms, e: arrived.append((i, atoms, e)))
        assert parallel.n_calls == 8 and parallel.n_failed == 0
    assert sorted(i for i, _, _ in arrived) == list(range(8))
    for index, atoms, evaluation in arrived:
        assert atoms is structures[index] and evaluation is evaluations[index]
    for a, b in zip(reference, evaluations):
        assert a.ok and b.ok
        assert b.energy == pytest.approx(a.energy, abs=1e-10)
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-10)


def test_a_given_executor_is_used_and_failures_survive_it():
    from concurrent.futures import ThreadPoolExecutor

    structures = [Atoms(f"H{n}", positions=np.ones((n, 3)) * 0.1) for n in (2, 3, 6)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        with Evaluator(FlakyCalculator(), executor=pool) as evaluator:
            evaluations = evaluator.evaluate(structures)
            assert evaluator.n_calls == 3 and evaluator.n_failed == 1
    assert [e.ok for e in evaluations] == [True, False, True]


class CrashingCalculator(Calculator):
    """Test fixture: kills its worker process for 3 atoms; zero energy and forces otherwise."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) == 3:
            os._exit(1)
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


def test_a_crashed_worker_is_a_recorded_failure_and_the_pool_recovers():
    structures = [Atoms(f"H{n}", positions=np.ones((n, 3))) for n in (2, 2, 3, 2)]
    with Evaluator(CrashingCalculator(), workers=2) as evaluator:
        evaluations = evaluator.evaluate(structures)
        assert len(evaluations) == 4 and not evaluations[2].ok
        assert "BrokenProcessPool" in evaluations[2].error
        assert evaluator.n_calls == 4
        assert evaluator.n_failed == sum(not e.ok for e in evaluations)
        again = evaluator.evaluate(structures[:2])
        assert all(e.ok for e in again) and evaluator.n_calls == 6


def _refuse_to_load():
    raise RuntimeError("this calculator cannot be loaded here")


class UnloadableCalculator(FlakyCalculator):
    """Test fixture: pickles fine, but cannot be unpickled (built) in a worker."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def test_a_worker_that_cannot_build_its_calculator_raises_and_counts_nothing():
    structures = [Atoms("H2", positions=np.ones((2, 3)))] * 3
    with Evaluator(UnloadableCalculator(), workers=2) as evaluator:
        with pytest.raises(EnergyFunctionError, match="cannot be loaded here"):
            evaluator.evaluate(structures)
        assert evaluator.n_calls == 0 and evaluator.n_failed == 0


def test_unpicklable_calculator_with_workers_is_refused():
    calc = FlakyCalculator()
    calc.hook = lambda: None
    with pytest.raises(EnergyFunctionError, match="cannot be pickled"):
        Evaluator(calc, workers=2)


def test_check_iteration_threshold():
    good = Evaluation(energy=-1.0, forces=np.zeros((1, 3)), ok=True, error=None, seconds=0.1)
    bad = Evaluation(energy=None, forces=None, ok=False, error="ValueError: boom", seconds=0.1)
    check_iteration([good, good, bad, bad])  # exactly half: tolerated
    check_iteration([])
    with pytest.raises(EvaluationFailureError, match="3 of 4 evaluations failed.*ValueError: boom"):
        check_iteration([good, bad, bad, bad])
    with pytest.raises(EvaluationFailureError):
        check_iteration([good, bad], max_failed_fraction=0.25)
    with pytest.raises(ConfigError):
        check_iteration([good], max_failed_fraction=1.5)


def test_unknown_calculator_and_options_are_refused():
    with pytest.raises(EnergyFunctionError) as info:
        make_calculator({"calculator": "vasp"})
    for name in KNOWN_CALCULATORS:
        assert name in str(info.value)
    with pytest.raises(EnergyFunctionError, match="sigam"):
        make_calculator({"calculator": "lj", "sigam": 1.0})
    with pytest.raises(EnergyFunctionError, match="positive"):
        Evaluator({"calculator": "lj", "cutoff": -1.0})
    with pytest.raises(ConfigError):
        Evaluator({"calculator": "emt"}, workers=0)
    assert normalize_spec({"calculator": "lj"})["cutoff"] == 1000.0


def test_missing_mace_model_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.model"
    with pytest.raises(EnergyFunctionError, match=str(missing)):
        make_calculator({"calculator": "mace", "model": str(missing)})


def test_mace_mp_0_without_weights_fails_fast(tmp_path, monkeypatch):
    # An empty mace cache and no network (this also keeps an online machine from downloading).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.perf_counter()
    with pytest.raises(EnergyFunctionError) as info:
        make_calculator({"calculator": "mace-mp-0", "model": "medium"})
    assert time.perf_counter() - start < 10.0
    message = str(info.value)
    assert "\n" not in message
    assert "MACE-MP-0 weights" in message and "could not be obtained" in message
    assert "calculator: mace, model: PATH" in message
    with pytest.raises(EnergyFunctionError, match="unknown MACE-MP-0 model"):
        make_calculator({"calculator": "mace-mp-0", "model": "huge"})


@pytest.mark.skipif(importlib.util.find_spec("chgnet") is not None, reason="chgnet installed")
def test_chgnet_missing_says_how_to_install():
    with pytest.raises(EnergyFunctionError, match=r"pip install godiff\[chgnet\]"):
        make_calculator({"calculator": "chgnet"})


def test_chgnet_runs_when_installed():
    pytest.importorskip("chgnet")
    atoms = fcc111("Pt", (2, 2, 2), vacuum=6.0)
    with Evaluator({"calculator": "chgnet", "device": "cpu"}) as evaluator:
        evaluation = evaluator.single_point(atoms)
    assert evaluation.ok and np.isfinite(evaluation.forces).all()


def small_pt_slab() -> Atoms:
    atoms = fcc111("Pt", (2, 2, 2), vacuum=5.0)
    atoms.rattle(0.1, seed=3)
    return atoms


def test_mace_model_file_forces_match_finite_differences(tiny_mace_model):
    spec = {"calculator": "mace", "model": str(tiny_mace_model), "device": "cpu"}
    atoms = small_pt_slab()
    h = 1e-4
    with Evaluator(spec, trust_energy=True) as evaluator:  # a model file is a pickle: trusted explicitly
        center = evaluator.single_point(atoms)
        assert center.ok and np.isfinite(center.forces).all()
        assert np.abs(center.forces).max() > 1e-3  # a non-trivial model
        for index, axis in [(0, 0), (3, 2), (5, 1), (7, 0)]:
            energies = []
            for sign in (1.0, -1.0):
                displaced = atoms.copy()
                displaced.positions[index, axis] += sign * h
                energies.append(evaluator.single_point(displaced).energy)
            numeric = -(energies[0] - energies[1]) / (2 * h)
            assert center.forces[index, axis] == pytest.approx(numeric, abs=1e-3)
        assert evaluator.n_calls == 9 and evaluator.n_failed == 0


def test_mace_mp_0_uses_a_given_file_or_maces_cache(tiny_mace_model, tmp_path, monkeypatch):
    from godiff.energy.calculators import _mace_cache_file
    from godiff.energy.specs import _MACE_MP_0_URLS

    atoms = small_pt_slab()
    direct = make_calculator({"calculator": "mace-mp-0", "model": str(tiny_mace_model)}, trust_energy=True)
    atoms.calc = direct
    expected = atoms.get_potential_energy()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = _mace_cache_file(_MACE_MP_0_URLS["small"])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_mace_model.read_bytes())
    with Evaluator({"calculator": "mace-mp-0", "model": "small", "device": "cpu"}) as evaluator:
        evaluation = evaluator.single_point(atoms)
    assert evaluation.ok and evaluation.energy == pytest.approx(expected, abs=1e-10)


# -- any ASE calculator, and the quantum-chemistry one that runs here ------------------------------
def test_an_ase_spec_builds_its_class_with_its_options():
    from godiff.energy import normalize_spec

    spec = {"calculator": "ase", "class": "ase.calculators.lj.LennardJones", "options": {"epsilon": 2.0, "rc": 1000.0}}
    atoms = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 1.5]])
    with Evaluator(spec) as doubled, Evaluator({"calculator": "lj"}) as plain:
        assert doubled.single_point(atoms).energy == pytest.approx(2 * plain.single_point(atoms).energy, rel=1e-12)
    assert normalize_spec(spec)["options"] == {"epsilon": 2.0, "rc": 1000.0}


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "subprocess.Popen",
        "ase.calculators.calculator.os.system",
        "ase.calculators.emt.np",
        "ase.atoms.Atoms",
        "godiff.testing.SlowEMT",
    ],
)
def test_an_ase_spec_naming_anything_but_a_calculator_class_is_refused(name):
    with pytest.raises(EnergyFunctionError) as info:
        make_calculator({"calculator": "ase", "class": name})
    assert name in str(info.value) and "\n" not in str(info.value)


def test_a_system_file_naming_a_non_calculator_is_refused_in_one_line_with_exit_2(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "evil.yaml"
    path.write_text(
        "name: evil\nmobile: Pt\ntemplate: null\nbox: {kind: cuboid, lengths: [8, 8, 8]}\n"
        "energy: {calculator: ase, class: os.system, options: {command: 'touch pwned'}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "godiff.cli.main", "run", str(path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        len(proc.stderr.strip().splitlines()) == 1
        and "os.system" in proc.stderr
        and "not an allowed calculator" in proc.stderr
    )
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "r").exists()


def test_a_file_writing_calculator_works_in_its_own_scratch_directory_kept_when_it_fails(tmp_path):
    # ASE's DFTB+ interface, a FileIOCalculator: it writes dftb_in.hsd, then needs parameter files
    # that are not here, so the evaluation fails and its directory is kept with what it wrote
    spec = {"calculator": "ase", "class": "ase.calculators.dftb.Dftb", "options": {"command": "false"}}
    with Evaluator(spec, scratch=tmp_path / "scratch", trust_energy=True) as evaluator:  # a command: trusted
        failed = evaluator.single_point(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]))
    assert not failed.ok and "its files are kept in" in failed.error
    (kept,) = (tmp_path / "scratch").iterdir()
    assert (kept / "dftb_in.hsd").is_file() and str(kept) in failed.error

    with Evaluator(_ExternalLJ(), scratch=tmp_path / "ok") as evaluator:  # a program run in its own folder
        evaluations = evaluator.evaluate([Atoms("Ar2", positions=[[0, 0, 0], [0, 0, d]]) for d in (1.1, 1.3)])
    assert all(e.ok for e in evaluations) and evaluations[0].energy != evaluations[1].energy
    assert list((tmp_path / "ok").iterdir()) == []  # removed after each success


class _ExternalLJ:
    """Built lazily: a FileIOCalculator running a real external program (python, ASE's LJ)."""

    def __new__(cls):
        import sys

        from ase.calculators.calculator import FileIOCalculator

        class ExternalLJ(FileIOCalculator):
            implemented_properties = ["energy", "forces"]
            program = (
                f'{sys.executable} -c "import ase.io, json; from ase.calculators.lj import LennardJones; '
                "a = ase.io.read('in.xyz'); a.calc = LennardJones(rc=1000.0); "
                "json.dump({'e': a.get_potential_energy(), 'f': a.get_forces().tolist()}, open('out.json', 'w'))\""
            )

            def write_input(self, atoms, properties=None, system_changes=None):
                import ase.io

                super().write_input(atoms, properties, system_changes)
                ase.io.write(f"{self.directory}/in.xyz", atoms)

            def read_results(self):
                import json

                data = json.load(open(f"{self.directory}/out.json"))
                self.results = {"energy": data["e"], "forces": np.array(data["f"])}

        return ExternalLJ(command=ExternalLJ.program)


def test_gfn2_xtb_single_point_of_a_pt4_tetrahedron():
    pytest.importorskip("tblite")
    a = 2.6  # Å, a regular tetrahedron
    atoms = Atoms(
        "Pt4", positions=[[0, 0, 0], [a, 0, 0], [a / 2, a * 3**0.5 / 2, 0], [a / 2, a * 3**0.5 / 6, a * (2 / 3) ** 0.5]]
    )
    with Evaluator({"calculator": "xtb"}) as evaluator:
        evaluation = evaluator.single_point(atoms)
    # computed once with tblite 0.8.0 (GFN2-xTB, accuracy 1, 300 K; ase 3.29.0) on this machine
    assert evaluation.ok and evaluation.energy == pytest.approx(-494.3168956897721, abs=1e-6)
    assert np.abs(evaluation.forces.sum(axis=0)).max() < 1e-6  # no net force on an isolated cluster
    with pytest.raises(EnergyFunctionError, match="GFN2-xTB, GFN1-xTB"):
        make_calculator({"calculator": "xtb", "method": "GFN3"})


def test_gpaw_lcao_single_point_of_h2_where_gpaw_is_built():
    pytest.importorskip("gpaw")  # built from source here (README, "GPAW"); absent from a plain install
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    atoms.center(vacuum=3.0)
    with Evaluator({"calculator": "gpaw", "mode": "lcao", "h": 0.25}) as evaluator:
        evaluation = evaluator.single_point(atoms)
    # computed once with GPAW 26.7.0 (LCAO dzp, PBE, h 0.25 Å; gpaw-data 1.2.1 setups) on this machine
    assert evaluation.ok and evaluation.energy == pytest.approx(-6.322380614797348, abs=1e-5)
    with pytest.raises(EnergyFunctionError, match="lcao, fd, pw"):
        make_calculator({"calculator": "gpaw", "mode": "planewave"})


def test_a_generic_file_io_calculator_runs_each_evaluation_in_its_own_directory(tmp_path):
    """ASE's GenericFileIOCalculator (Espresso, ORCA ...) keeps its directory as a Path and calls
    ``directory.mkdir``: the evaluator points it at each evaluation's directory in that type."""
    import json

    import ase.io
    from ase.calculators.genericfileio import CalculatorTemplate, GenericFileIOCalculator
    from ase.calculators.lj import LennardJones

    class Template(CalculatorTemplate):  # the "program" is ASE's LJ, run through files in the directory
        def __init__(self):
            super().__init__("fakelj", ["energy", "forces"])

        def write_input(self, profile, directory, atoms, parameters, properties):
            ase.io.write(directory / "in.xyz", atoms)

        def execute(self, directory, profile):
            atoms = ase.io.read(directory / "in.xyz")
            atoms.calc = LennardJones(rc=1000.0)
            out = {"e": atoms.get_potential_energy(), "f": atoms.get_forces().tolist(), "where": str(directory)}
            (directory / "out.json").write_text(json.dumps(out))

        def read_results(self, directory):
            data = json.loads((directory / "out.json").read_text())
            return {"energy": data["e"], "forces": np.array(data["f"])}

        def load_profile(self, cfg, **kwargs):
            return None

    calc = GenericFileIOCalculator(template=Template(), profile=object(), directory=tmp_path / "own", parameters={})
    pair = [Atoms("Ar2", positions=[[0, 0, 0], [0, 0, d]]) for d in (1.1, 1.3)]
    with Evaluator(calc, scratch=tmp_path / "scratch") as evaluator:
        evaluations = evaluator.evaluate(pair)
    assert all(e.ok for e in evaluations), [e.error for e in evaluations]
    with Evaluator({"calculator": "lj"}) as plain:
        assert [e.energy for e in evaluations] == pytest.approx([e.energy for e in plain.evaluate(pair)], rel=1e-12)
    assert list((tmp_path / "scratch").iterdir()) == [] and not (tmp_path / "own").exists()
