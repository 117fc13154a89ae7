"""The README's promises: its Python example runs as written, and CI installs as it says."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _example(marker: str = "<!-- readme-example") -> str:
    block = re.search(r"```python\n(.*?)```", README[README.index(marker) :], re.S)
    return block.group(1)


def test_readme_python_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_example())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    energy, evaluations = proc.stdout.split()[-2:]
    assert int(evaluations) == 16  # 2 iterations x 8 samples
    assert float(energy) < 0.0  # an LJ13 structure with at least some binding
    from ase.io import read

    best = read(tmp_path / "lj13-best.xyz")
    assert len(best) == 13
    assert (tmp_path / "runs" / "lj13-example" / "evaluations.db").exists()


def test_readme_zoo_example_loads_the_shipped_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _example("<!-- zoo-example")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GODIFF_ZOO": str(tmp_path / "empty-registry")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("(8, 13, 3) godiff run lj13")


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    ci = (ROOT / ".ci" / "run").read_text()
    setup = re.search(r"^SETUP='(.*)'$", ci, re.M).group(1)
    tests = re.search(r"^TESTS='(.*)'$", ci, re.M).group(1)
    quick_start = README[README.index("## Quick start") : README.index("## From Python")]
    commands = [line for line in quick_start.splitlines() if line.startswith("python3 ")]
    assert commands[0].startswith(setup + " && godiff run pt7-pt111")
    assert commands[1] == tests
