"""The built wheel carries the shipped zoo: ``godiff zoo list``, ``show`` and ``load`` work from an
installed wheel outside the checkout (the wheel unpacked onto ``PYTHONPATH`` is what ``pip install``
puts in site-packages; its dependencies come from this environment)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_is_recent() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68


def test_the_wheel_carries_the_shipped_models_and_they_load_outside_the_checkout(tmp_path):
    # with a recent setuptools here, build without fetching one (an isolated build downloads it)
    isolation = ["--no-build-isolation"] if _setuptools_is_recent() else []
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", *isolation, "-w", str(tmp_path / "dist"), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("godiff-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(ROOT / "zoo").as_posix() for p in (ROOT / "zoo").rglob("*") if p.is_file())
    assert shipped, "the checkout ships no models"
    missing = [name for name in shipped if f"godiff/_shipped_zoo/{name}" not in names]
    assert not missing, missing
    assert "godiff/system/shipped/pt7-pt111.yaml" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "GODIFF_ZOO": str(tmp_path / "empty-registry"),
        "OMP_NUM_THREADS": "1",
    }

    def zoo(*args, entry="godiff.cli.main", prefix=("zoo",)):
        code = f"import sys; from {entry} import main; main([*{list(prefix)!r}, *sys.argv[1:]])"
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
        )

    listed = zoo("list")
    deprecated = zoo("list", entry="godiff.cli.zoo", prefix=())  # the godiff-zoo console script of 0.1
    assert deprecated.returncode == 0 and deprecated.stdout == listed.stdout, deprecated.stderr
    assert listed.returncode == 0, listed.stderr
    for model in {name.split("/")[0] for name in shipped}:
        assert model in listed.stdout
    shown = zoo("show", "pt-islands-emt@1.0.0")
    assert shown.returncode == 0 and "all digests verified" in shown.stdout, shown.stderr
    code = (
        "import godiff, godiff.zoo; print(godiff.__file__); "
        "print(godiff.zoo.load('lj13-lj@1.0.0').sample(2, seed=0).shape)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    where, shape = loaded.stdout.split()[:2], loaded.stdout.strip().splitlines()[-1]
    assert where[0].startswith(str(site)) and shape == "(2, 13, 3)"
