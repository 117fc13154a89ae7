"""Shared test set-up: one torch thread, and small systems built the way users write them."""

import numpy as np
import pytest
import torch

from godiff.system import System

#: The presets godiff ships, as ``godiff systems`` lists them (the one list the tests check).
SHIPPED = [
    "ag7-ag111",
    "au7-au111",
    "lj13",
    "lj19",
    "lj26",
    "lj38",
    "lj55",
    "ni7-ni100",
    "pd7-pd111",
    "pt1-step",
    "pt13-pt111",
    "pt19-pt111",
    "pt6-xtb",
    "pt7-pt100",
    "pt7-pt111",
    "pt7-pt111-chgnet",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: OpenMP threads only contend on a busy 2-core machine (index_add_ became
    # 1000x slower). One thread also makes every run do bit-identical arithmetic.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def slab_system(z_min: float = 1.5, z_max: float = 4.5, mobile: str = "Pt3", vacuum: float = 6.0) -> System:
    """Mobile Pt atoms over a frozen 3x3x2 Pt(111) slab under EMT."""
    return System.from_dict(
        {
            "name": "slab",
            "mobile": mobile,
            "template": {"builder": "fcc111", "symbol": "Pt", "size": [3, 3, 2], "vacuum": vacuum},
            "box": {"kind": "slab", "z_min": z_min, "z_max": z_max},
            "energy": {"calculator": "emt"},
        }
    )


def cuboid_system() -> System:
    """Five LJ atoms in an off-centre cuboid."""
    return System.from_dict(
        {
            "name": "cuboid",
            "mobile": "Ar5",
            "box": {"kind": "cuboid", "lengths": [3.0, 4.0, 5.0], "center": [1.0, -2.0, 0.5]},
            "energy": {"calculator": "lj"},
            "min_distance": 0.7,
        }
    )


def console_script(name: str) -> str:
    """The path of an installed console script (``godiff``), or skip the test where it is missing."""
    import shutil
    import sys
    from pathlib import Path

    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"console script {name} is not installed")
    return found


@pytest.fixture(scope="session")
def tiny_mace_model(tmp_path_factory):
    """A tiny random MACE model for Pt, saved the way mace saves models (a full pickle)."""
    import godiff._e3nn  # noqa: F401  (before e3nn is imported by mace)

    torch = pytest.importorskip("torch")
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    model = modules.MACE(
        r_max=4.0,
        num_bessel=4,
        num_polynomial_cutoff=3,
        max_ell=1,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=1,
        num_elements=1,
        hidden_irreps=o3.Irreps("8x0e"),
        MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=np.zeros(1),
        avg_num_neighbors=8.0,
        atomic_numbers=[78],
        correlation=1,
        gate=torch.nn.functional.silu,
    )
    path = tmp_path_factory.mktemp("mace") / "tiny.model"
    torch.save(model, path)
    return path


def lj_cut_at(at: int):
    """An LJ calculator whose call number ``at`` is Ctrl-C: a run cut where a test wants it."""
    from godiff.energy import make_calculator

    calc = make_calculator({"calculator": "lj"})
    calls, inner = [0], calc.calculate

    def calculate(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            raise KeyboardInterrupt
        return inner(*args, **kwargs)

    calc.calculate = calculate
    return calc


def assert_first_bfgs_step_from(start, row) -> None:
    """``row`` is BFGS's first step from evaluation ``start`` (database rows): moved along
    ``start``'s forces, so the relaxation began there without evaluating it again."""
    step = np.asarray(row.positions) - np.asarray(start.positions)
    forces = np.asarray(start.forces)
    assert np.abs(step).max() > 0
    cosine = float((step * forces).sum() / (np.linalg.norm(step) * np.linalg.norm(forces)))
    assert cosine > 0.999, cosine
