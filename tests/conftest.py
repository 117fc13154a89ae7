"""Shared test set-up: one torch thread, and small systems built the way users write them."""

import pytest
import torch

from godiff.system import System


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
