"""Tests of godiff.system and the shipped systems."""

from __future__ import annotations

import copy
import sys

import ase.io
import numpy as np
import pytest
from ase.build import fcc111, surface
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.constraints import FixAtoms
from ase.optimize import BFGS
from conftest import SHIPPED

from godiff.errors import SystemFileError, SystemNotFoundError
from godiff.system import (
    CuboidBox,
    SlabBox,
    SphereBox,
    System,
    load_system,
    parse_formula,
)
from godiff.system.shipped import list_systems, system_description, system_path
from godiff.zoo.similarity import fingerprint


def lj_calculator(system: System) -> LennardJones:
    spec = system.energy
    assert spec["calculator"] == "lj"
    return LennardJones(epsilon=spec["epsilon"], sigma=spec["sigma"], rc=spec["cutoff"])


def slab_dict(**changes) -> dict:
    d = {
        "name": "test-slab",
        "mobile": "Pt2",
        "template": {"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2], "vacuum": 8.0},
        "box": {"kind": "slab", "z_min": 1.0, "z_max": 4.0},
        "energy": {"calculator": "emt"},
    }
    d.update(changes)
    return d


def cluster_dict(**changes) -> dict:
    d = {
        "name": "test-cluster",
        "mobile": "Ar5",
        "box": {"kind": "cuboid", "lengths": 3.0},
        "energy": {"calculator": "lj", "epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0},
        "min_distance": 0.7,
    }
    d.update(changes)
    return d


# ------------------------------------------------------------------ shipped systems


def test_shipped_system_list_and_descriptions():
    assert list_systems() == SHIPPED
    for name in SHIPPED:
        assert system_path(name).name == f"{name}.yaml"
        text = system_description(name)
        assert text and "\n" not in text


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_system_round_trip(name, tmp_path):
    s = load_system(name)
    assert s.name == name
    assert s.reference is not None and "source" in s.reference
    d = s.to_dict()
    assert System.from_dict(copy.deepcopy(d)) == s
    assert System.from_dict(d).digest() == s.digest()
    path = s.to_yaml(tmp_path / f"{name}.yaml")
    back = System.from_yaml(path)
    assert back == s and back.digest() == s.digest() and hash(back) == hash(s)
    assert load_system(str(path)) == s and load_system(path) == s
    assert load_system(s) is s and load_system(d) == s


def test_pt7_geometry_and_atoms():
    s = load_system("pt7-pt111")
    template = s.template_atoms()
    assert len(template) == 72 and s.n_template == 72
    assert s.frozen_mask().all() and s.frozen_mask().shape == (72,)
    g = s.geometry()
    top = template.positions[:, 2].max()
    assert g.kind == "slab" and g.periodic == (True, True, False)
    assert g.lower[2] == pytest.approx(top + 1.0) and g.upper[2] == pytest.approx(top + 6.0)
    assert np.isnan(g.lower[:2]).all() and g.radius is None
    np.testing.assert_allclose(g.cell, template.cell[:])
    area = abs(np.linalg.det(template.cell[:2, :2]))
    assert g.volume() == pytest.approx(area * 5.0)

    pos = g.sample_uniform(7, np.random.default_rng(0))
    atoms = s.atoms(pos)
    assert len(atoms) == 79
    assert atoms.get_chemical_symbols()[-7:] == ["Pt"] * 7
    np.testing.assert_allclose(atoms.positions[72:], pos)
    assert list(atoms.pbc) == [True, True, False]
    (fix,) = atoms.constraints
    assert isinstance(fix, FixAtoms) and sorted(fix.index.tolist()) == list(range(72))
    assert atoms.info["godiff_system"] == "pt7-pt111"

    # the cache cannot be mutated through a returned copy
    template.positions += 1.0
    assert s.template_atoms().positions[:, 2].max() == pytest.approx(top)
    fp = fingerprint(s)
    assert fp["template_kind"] == "fcc111" and fp["facet"] == [1, 1, 1]
    assert fp["lattice_constant"] == pytest.approx(3.92) and fp["template_species"] == ["Pt"]
    assert fp["n_mobile"] == 7 and fp["energy_calculator"] == "emt"


@pytest.mark.parametrize("name", ["pt7-pt111", "pt1-step", "lj13"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sample_uniform_inside(name, seed):
    g = load_system(name).geometry()
    rng = np.random.default_rng(seed)
    pts = g.sample_uniform(500, rng)
    assert pts.shape == (500, 3) and g.contains(pts).all()
    outside = pts.copy()
    if g.kind == "slab":
        outside[:, 2] = g.upper[2] + 0.1
    else:
        outside[:, 0] = g.upper[0] + 0.1
    assert not g.contains(outside).any()
    if g.kind == "slab":  # in-plane is periodic: any x, y is inside
        shifted = pts + np.array([100.0, -50.0, 0.0])
        assert g.contains(shifted).all()


def test_sphere_and_cluster_geometry():
    s = System.from_dict(cluster_dict(box={"kind": "sphere", "radius": 2.5, "center": [1, 2, 3]}))
    g = s.geometry()
    assert g.kind == "sphere" and g.radius == 2.5 and g.periodic == (False,) * 3
    np.testing.assert_allclose(g.lower, [-1.5, -0.5, 0.5])
    np.testing.assert_allclose(g.cell, np.eye(3) * 15.0)
    np.testing.assert_allclose(g.origin + np.diag(g.cell) / 2, [1, 2, 3])
    assert g.volume() == pytest.approx(4 / 3 * np.pi * 2.5**3)
    pts = g.sample_uniform(1000, np.random.default_rng(3))
    assert g.contains(pts).all()
    assert np.linalg.norm(pts - [1, 2, 3], axis=1).max() > 2.3  # fills the ball
    atoms = s.atoms(pts[:5])
    assert not atoms.pbc.any() and not atoms.constraints and len(atoms) == 5
    assert s.template_atoms() is None and s.frozen_mask().shape == (0,)
    assert g == s.geometry()
    with pytest.raises(ValueError):
        g.cell[0, 0] = 1.0  # read-only
    with pytest.raises(ValueError):
        s.atoms(pts[:4])


def test_formula_parses_to_sorted_symbols():
    assert parse_formula("Pt5Au2") == {"Pt": 5, "Au": 2}
    assert parse_formula("AuPt5Au") == {"Pt": 5, "Au": 2}
    s = System.from_dict(
        slab_dict(mobile="Pt5Au2", template={"builder": "fcc111", "symbol": "Pt", "size": [4, 4, 2], "vacuum": 8.0})
    )
    assert s.mobile_symbols == ["Pt"] * 5 + ["Au"] * 2
    assert s.mobile_numbers.tolist() == [78] * 5 + [79] * 2
    assert s.n_mobile == 7
    assert System.from_dict(s.to_dict()) == s
    assert s == System.from_dict(
        slab_dict(
            mobile={"Au": 2, "Pt": 5},
            template={"builder": "fcc111", "symbol": "Pt", "size": (4, 4, 2), "vacuum": 8, "a": None},
        )
    )


def test_default_min_distance_from_covalent_radii():
    s = System.from_dict(slab_dict())
    from ase.data import covalent_radii

    assert s.pair_min_distance("Pt", "Au") == pytest.approx(0.7 * (covalent_radii[78] + covalent_radii[79]))
    assert System.from_dict(cluster_dict()).pair_min_distance("Ar", "Ar") == 0.7


def test_surface_builder_loads():
    s = System.from_dict(
        slab_dict(template={"builder": "surface", "symbol": "Pt", "indices": [1, 2, 2], "layers": 5, "vacuum": 8.0})
    )
    ref = surface("Pt", (1, 2, 2), 5, vacuum=8.0)
    t = s.template_atoms()
    np.testing.assert_allclose(t.positions, ref.positions)
    assert list(t.pbc) == [True, True, False]
    assert fingerprint(s)["facet"] == [1, 2, 2]


def test_frozen_bottom_and_indices():
    t = {"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 3], "vacuum": 8.0}
    s = System.from_dict(slab_dict(template={**t, "frozen": {"bottom": 2}}))
    z = s.template_atoms().positions[:, 2]
    assert s.frozen_mask().tolist() == (z < z.max() - 0.1).tolist()
    s = System.from_dict(slab_dict(template={**t, "frozen": [3, 1]}))
    assert np.flatnonzero(s.frozen_mask()).tolist() == [1, 3]
    s = System.from_dict(slab_dict(template={**t, "frozen": "none"}))
    assert not s.frozen_mask().any() and not s.atoms(np.zeros((2, 3)) + 20).constraints


def test_file_template_loads(tmp_path):
    slab = fcc111("Pt", (3, 3, 3), vacuum=8.0)
    slab.pbc = True
    slab.set_constraint(FixAtoms(indices=[0]))
    (tmp_path / "sub").mkdir()
    ase.io.write(tmp_path / "sub" / "slab.traj", slab)
    yaml_path = tmp_path / "sys.yaml"
    yaml_path.write_text(
        "name: from-file\nmobile: Au2\n"
        "template: {file: sub/slab.traj, frozen: {bottom: 1}}\n"
        "box: {kind: slab, z_min: 1.0, z_max: 5.0}\n"
    )
    s = System.from_yaml(yaml_path)
    t = s.template_atoms()
    assert len(t) == 27 and list(t.pbc) == [True, True, False] and not t.constraints
    assert s.frozen_mask().sum() == 9
    assert fingerprint(s)["template_kind"] == "file"
    assert s.energy == {"calculator": "emt"}
    assert System.from_dict(s.to_dict()) == s  # the path was made absolute


def test_no_torch_import():
    import subprocess

    code = "import sys, godiff.system, godiff.system.shipped; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ bad input


def _bad_cell_file(tmp_path):
    atoms = fcc111("Pt", (2, 2, 2), vacuum=8.0)
    cell = atoms.cell[:].copy()
    cell[2, 0] = 2.0  # c tilted away from z
    atoms.set_cell(cell)
    path = tmp_path / "tilted.traj"
    ase.io.write(path, atoms)
    return str(path)


BAD = [
    ("unknown-element", lambda p: slab_dict(mobile="Pt3Xx2"), "mobile: unknown element 'Xx'"),
    ("empty-formula", lambda p: slab_dict(mobile=""), "mobile: empty composition"),
    ("empty-mapping", lambda p: slab_dict(mobile={}), "mobile: empty composition"),
    ("zero-count", lambda p: slab_dict(mobile={"Pt": 0}), "mobile: count of 'Pt'"),
    ("bad-formula", lambda p: slab_dict(mobile="Pt-2"), "mobile: cannot parse"),
    (
        "z-order",
        lambda p: slab_dict(box={"kind": "slab", "z_min": 1.0, "z_max": 0.5}),
        "box.z_max: must be greater than box.z_min (1.0 >= 0.5)",
    ),
    ("box-kind", lambda p: slab_dict(box={"kind": "cube", "z_min": 1, "z_max": 2}), "box.kind: unknown 'cube'"),
    ("box-typo", lambda p: slab_dict(box={"kind": "slab", "z_min": 1, "z_mx": 2}), "box: unknown field 'z_mx'"),
    ("box-missing", lambda p: {k: v for k, v in slab_dict().items() if k != "box"}, "box: missing"),
    ("radius", lambda p: cluster_dict(box={"kind": "sphere", "radius": -1}), "box.radius: must be positive"),
    ("lengths", lambda p: cluster_dict(box={"kind": "cuboid", "lengths": [1, 2]}), "box.lengths"),
    (
        "too-small",
        lambda p: cluster_dict(mobile="Ar40", box={"kind": "cuboid", "lengths": 1.0}),
        "box: cannot hold 40 mobile atoms (volume 1.0 Å^3, needs at least",
    ),
    ("slab-no-template", lambda p: cluster_dict(box={"kind": "slab", "z_min": 1, "z_max": 2}), "box.kind"),
    ("template-cluster-box", lambda p: slab_dict(box={"kind": "cuboid", "lengths": 4.0}), "box.kind"),
    (
        "calculator",
        lambda p: slab_dict(energy={"calculator": "foo"}),
        "energy.calculator: unknown 'foo' (known: emt, lj, mace, mace-mp-0, chgnet, xtb, ase, gpaw)",
    ),
    ("mace-model", lambda p: slab_dict(energy={"calculator": "mace"}), "energy: calculator 'mace' needs a model file"),
    (
        "energy-typo",
        lambda p: cluster_dict(energy={"calculator": "lj", "epsilom": 1.0}),
        "energy: unknown option(s) 'epsilom' for calculator 'lj' (did you mean 'epsilon'?",
    ),
    (
        "lj-negative",
        lambda p: cluster_dict(energy={"calculator": "lj", "sigma": -1.0}),
        "energy: lj option 'sigma' must be positive",
    ),
    ("file-missing", lambda p: slab_dict(template={"file": str(p / "x.traj")}), "template.file: cannot read"),
    ("file-garbage", lambda p: slab_dict(template={"file": _garbage(p)}), "template.file: cannot read"),
    (
        "builder",
        lambda p: slab_dict(template={"builder": "fcc112", "symbol": "Pt", "size": [2, 2, 2]}),
        "template.builder: unknown 'fcc112' (known: fcc111",
    ),
    (
        "builder-typo",
        lambda p: slab_dict(template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2], "vacum": 8.0}),
        "template: unknown field 'vacum'",
    ),
    (
        "builder-symbol",
        lambda p: slab_dict(template={"builder": "fcc111", "symbol": "Qq", "size": [2, 2, 2]}),
        "template.symbol: unknown element 'Qq'",
    ),
    (
        "builder-size",
        lambda p: slab_dict(template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2]}),
        "template.size",
    ),
    (
        "no-vacuum",
        lambda p: slab_dict(template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2]}),
        "template: the cell has no c vector",
    ),
    (
        "little-vacuum",
        lambda p: slab_dict(template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2], "vacuum": 2.0}),
        "box.z_max: the box top",
    ),
    ("tilted-cell", lambda p: slab_dict(template={"file": _bad_cell_file(p)}), "template: a slab box needs"),
    (
        "frozen-bottom",
        lambda p: slab_dict(
            template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2], "vacuum": 8.0, "frozen": {"bottom": 3}}
        ),
        "template.frozen: bottom 3 exceeds the 2 layers",
    ),
    (
        "frozen-index",
        lambda p: slab_dict(
            template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2], "vacuum": 8.0, "frozen": [0, 99]}
        ),
        "template.frozen: index 99 out of range",
    ),
    (
        "frozen-word",
        lambda p: slab_dict(
            template={"builder": "fcc111", "symbol": "Pt", "size": [2, 2, 2], "vacuum": 8.0, "frozen": "some"}
        ),
        "template.frozen",
    ),
    ("top-typo", lambda p: {**slab_dict(), "mobil": "Pt"}, "unknown field 'mobil' (did you mean 'mobile'?"),
    ("reference", lambda p: slab_dict(reference={"energy": 1.0, "tolerance": -1}), "reference.tolerance"),
    (
        "reference-next",
        lambda p: slab_dict(reference={"energy": 1.0, "tolerance": 0.05, "next_energy": 1.02}),
        "reference.next_energy: 1.02 is not above energy + tolerance",
    ),
    (
        "reference-typo",
        lambda p: slab_dict(reference={"energy": 1.0, "sorce": "x"}),
        "reference: unknown field 'sorce'",
    ),
    ("min-distance", lambda p: slab_dict(min_distance=0), "min_distance: must be positive"),
    ("name", lambda p: slab_dict(name="has space"), "name: "),
    ("not-mapping", lambda p: ["name"], "system: expected a mapping"),
]


def _garbage(tmp_path):
    path = tmp_path / "garbage.traj"
    path.write_text("not a trajectory")
    return str(path)


@pytest.mark.parametrize("case, make, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_one_line(case, make, expected, tmp_path):
    with pytest.raises(SystemFileError) as info:
        System.from_dict(make(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected) or expected in message, message


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmobile: [Pt, \nbox: {kind: slab\n")
    with pytest.raises(SystemFileError) as info:
        System.from_yaml(path)
    assert str(info.value).startswith(f"{path}: not valid YAML (line ") and "\n" not in str(info.value)

    with pytest.raises(SystemNotFoundError, match="no such file") as info:  # exit 3, "not found"
        System.from_yaml(tmp_path / "absent.yaml")
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: no such file"

    path = tmp_path / "field.yaml"
    path.write_text("name: x\nmobile: Xx2\nbox: {kind: cuboid, lengths: 4}\n")
    with pytest.raises(SystemFileError) as info:
        System.from_yaml(path)
    assert str(info.value) == f"{path}: mobile: unknown element 'Xx'"


def test_load_system_unknown_name():
    with pytest.raises(SystemNotFoundError) as info:
        load_system("no-such-system")
    message = str(info.value)
    assert "no-such-system" in message and "lj13" in message and "pt7-pt111" in message
    assert info.value.exit_code == 3  # "not found", as the README's table says
    with pytest.raises(SystemNotFoundError, match="no such file"):
        load_system("missing/file.yaml")


def test_box_dataclasses_direct():
    assert CuboidBox(4).lengths == (4.0, 4.0, 4.0)
    assert SphereBox(2).center == (0.0, 0.0, 0.0)
    with pytest.raises(SystemFileError, match=r"^box.z_max"):
        SlabBox(2.0, 1.0)
    s = System(name="direct", mobile="Ar3", box=CuboidBox(3.0), energy={"calculator": "LJ"})
    assert s.mobile == {"Ar": 3} and s.energy == {"calculator": "lj", "epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0}
    from godiff.box import Box

    assert isinstance(s.geometry(), Box)


# ------------------------------------------------------------------ reference energies


def _icosahedron(nn: float = 1.1) -> np.ndarray:
    phi = (1 + 5**0.5) / 2
    v = []
    for s1 in (1, -1):
        for s2 in (1, -1):
            v += [(0, s1, s2 * phi), (s1, s2 * phi, 0), (s2 * phi, 0, s1)]
    v = np.array(v, dtype=float)
    v *= nn / np.linalg.norm(v[0])  # centre-to-vertex distance ~ nearest-neighbour distance
    return np.vstack([np.zeros(3), v])


def test_lj13_reference_energy():
    s = load_system("lj13")
    atoms = s.atoms(_icosahedron())
    atoms.calc = lj_calculator(s)
    BFGS(atoms, logfile=None).run(fmax=1e-5, steps=1000)
    assert atoms.get_potential_energy() == pytest.approx(-44.326801, abs=1e-4)
    assert s.reference["energy"] == -44.326801
    assert s.geometry().contains(atoms.positions).all()


def test_lj13_next_minimum_is_the_icosahedron_with_one_vertex_capping_a_face():
    # The system's next distinct minimum, built by hand: move one vertex atom of the icosahedron
    # onto the far side, above the centre of a face it is not part of, and relax.
    import itertools

    s = load_system("lj13")
    x = _icosahedron()
    vertices = x[1:]
    d = np.linalg.norm(vertices[:, None] - vertices[None], axis=-1)
    edge = d[d > 1e-6].min()
    faces = [
        f
        for f in itertools.combinations(range(1, 12), 3)
        if all(abs(d[i, j] - edge) < 1e-6 for i, j in itertools.combinations(f, 2))
    ]
    energies = []
    for face in faces:
        centre = vertices[list(face)].mean(0)
        y = x.copy()
        y[1] = centre * (1 + 0.8 * edge / np.linalg.norm(centre))
        atoms = s.atoms(y)
        atoms.calc = lj_calculator(s)
        BFGS(atoms, logfile=None).run(fmax=1e-4, steps=2000)
        energies.append(atoms.get_potential_energy())
    assert min(energies) == pytest.approx(s.reference["next_energy"], abs=1e-3)
    assert s.reference["next_energy"] - s.reference["energy"] == pytest.approx(2.855, abs=1e-3)


@pytest.mark.parametrize("name, energy", [("lj19", -72.659782), ("lj38", -173.928427), ("lj55", -279.248470)])
def test_lj_reference_values(name, energy):
    s = load_system(name)
    assert s.reference["energy"] == energy and s.reference["tolerance"] == 1e-3
    assert s.energy == {"calculator": "lj", "epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0}


def test_lj55_reference_is_the_mackay_icosahedron_relaxed_inside_its_box():
    from ase.cluster import Icosahedron

    s = load_system("lj55")
    x = Icosahedron("Ar", 3).positions
    x -= x.mean(axis=0)
    pair = np.linalg.norm(x[:, None] - x[None], axis=-1)
    x *= 2 ** (1 / 6) / np.sort(pair, axis=1)[:, 1].min()  # nearest neighbours at the pair minimum
    atoms = s.atoms(x)
    atoms.calc = lj_calculator(s)
    BFGS(atoms, logfile=None).run(fmax=1e-5, steps=2000)
    assert atoms.get_potential_energy() == pytest.approx(s.reference["energy"], abs=1e-5)
    assert s.geometry().contains(atoms.positions, tol=-0.5).all()  # half a sigma from every wall at least
    assert load_system("lj38").reference["next_energy"] == -173.252378


def _hexagonal_island(system, rings: int) -> np.ndarray:
    """The closed-shell hexagonal island (1, 7, 19 atoms for 0, 1, 2 rings) on hcp hollows."""
    slab = system.template_atoms()
    size = system.template["size"][0]
    a, b = slab.cell[0] / size, slab.cell[1] / size
    top = slab.positions[:, 2].max()
    # the hcp hollow, above a second-layer atom, lies 2 (a + b) / 3 from a top-layer atom; the fcc one (a + b) / 3
    centre = slab.positions[np.argmax(slab.positions[:, 2])] + 2 * (a + b) / 3 + (size // 3) * (a + b)
    centre[2] = top + 2.2
    return np.array(
        [
            centre + i * a + j * b
            for i in range(-rings, rings + 1)
            for j in range(-rings, rings + 1)
            if abs(i + j) <= rings
        ]
    )


@pytest.mark.parametrize("name, rings", [("pt7-pt111", 1), ("pt19-pt111", 2)])
def test_pt_island_reference_is_the_hexagon_relaxed(name, rings):
    s = load_system(name)
    atoms = s.atoms(_hexagonal_island(s, rings))
    assert len(atoms) - s.n_template == s.n_mobile
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=0.01)
    e = atoms.get_potential_energy()
    assert abs(e - s.reference["energy"]) < s.reference["tolerance"]
    assert e < s.reference.get("next_energy", np.inf) and e == pytest.approx(s.reference["energy"], abs=1e-3)


def test_pt1_step_reference_energy():
    s = load_system("pt1-step")
    atoms = s.atoms(np.array([[1.9, -0.6, 14.4]]))  # near the minimum found by the grid search
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=0.01)
    assert atoms.get_potential_energy() == pytest.approx(s.reference["energy"], abs=1e-3)
    assert s.geometry().contains(atoms.positions[-1:]).all()


def test_the_energy_spec_is_validated_once_with_its_defaults_filled():
    """Every option of the calculator is in System.energy, so a default and a spelled-out default
    are one system (equal spec, fingerprint, digest and a match distance of 0); an option the
    calculator does not take is refused in one line naming it."""
    from godiff.zoo.similarity import distance

    default = System.from_dict(cluster_dict(energy={"calculator": "mace-mp-0"}))
    spelled = System.from_dict(cluster_dict(energy={"calculator": "mace-mp-0", "model": "medium", "device": None}))
    assert (
        default.energy
        == spelled.energy
        == {"calculator": "mace-mp-0", "model": "medium", "device": "auto", "default_dtype": "float64"}
    )
    assert fingerprint(default) == fingerprint(spelled) and default.digest() == spelled.digest()
    assert distance(fingerprint(default), fingerprint(spelled)).total == 0
    assert System.from_dict(cluster_dict(energy={"calculator": "lj", "sigma": "2e0"})).energy["sigma"] == 2.0
    with pytest.raises(SystemFileError) as info:
        System.from_dict(cluster_dict(energy={"calculator": "emt", "cutoff": 5.0}))
    assert str(info.value) == "energy: unknown option(s) 'cutoff' for calculator 'emt' (allowed options: none)"
