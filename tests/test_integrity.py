"""What survives what: a run directory and a model folder are never corrupted, and bad input is one
line with the documented exit code (issue 12). Each test reproduces a fault a user can meet.

Runs are tiny (LJ13, a few samples, a few steps); the concurrency and signal tests start the real
``godiff`` console script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

import godiff
from godiff.cli.main import cli
from godiff.errors import CheckpointError, ConfigError, DigestMismatchError, RunLockedError, SystemFileError
from godiff.rundir import RunDir
from godiff.score import ScoreConfig
from godiff.search import Search, SearchConfig

TINY = ScoreConfig(
    scalars=8, vectors=4, lmax=1, layers=2, cutoff=2.5, mobile_cutoff=3.5, radial_hidden=8, head_hidden=16
)
SAMPLES = 6
CLI_TINY = ["--samples", "4", "--train-steps", "2", "--sampling-steps", "3", "--threads", "1"]


def tiny_config(**overrides) -> SearchConfig:
    """Candidates not sized to the timings (``network_share=None``), so runs compare bit for bit."""
    base = SearchConfig(
        score=TINY, batch_size=8, force_batch=4, samples=SAMPLES, train_steps=3, seed=7, network_share=None
    )
    return base.with_overrides(steps=4, **overrides)


def _invoke(*args, app=cli, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _one_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _godiff() -> str:
    path = Path(sys.executable).parent / "godiff"
    return str(path) if path.exists() else shutil.which("godiff")


def rows(run: Path) -> list:
    return sorted(ase.db.connect(str(run / "evaluations.db"), type="db").select(), key=lambda r: r.id)


def energies(run: Path) -> dict:
    return {(r.iteration, r.sample): r.get("energy") for r in rows(run)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Three uninterrupted iterations; the faults below are made on copies of its first two."""
    out = tmp_path_factory.mktemp("reference") / "r"
    result = Search("lj13", config=tiny_config(iterations=3), out=out).run()
    return out, result


@pytest.fixture
def two_iterations(tmp_path):
    out = tmp_path / "r"
    Search("lj13", config=tiny_config(iterations=2), out=out).run()
    return out


def _finish(out: Path, **kwargs):
    search = Search.resume(out, iterations=3, **kwargs)
    return search, search.run()


# -- 1. one process at a time ---------------------------------------------------------------------
def test_a_locked_run_is_refused_in_one_line_naming_the_holder_and_report_still_reads_it(two_iterations):
    holder = RunDir.open(two_iterations)  # this process holds the lock, as a live run would
    try:
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            Search.resume(two_iterations, iterations=3)
        line = _one_line(_invoke("resume", two_iterations, "--iterations", "3"), 2)
        assert f"in use by process {os.getpid()}" in line
        assert _invoke("report", two_iterations).exit_code == 0  # a reader beside the live run
    finally:
        holder.release()
    assert len(rows(two_iterations)) == 2 * SAMPLES
    _finish(two_iterations)  # released: the run continues


ITERATIONS = 6  # the first resume holds the lock long enough for the second to start and be refused


def test_two_resumes_started_together_one_is_refused_and_the_database_stays_exact(tmp_path):
    out = tmp_path / "r"
    assert _invoke("run", "lj13", "--iterations", "1", *CLI_TINY, "--out", out, "--quiet").exit_code == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [_godiff(), "resume", str(out), "--iterations", str(ITERATIONS), "--quiet", "--threads", "1"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.3)
    # the second starts once the first has imported torch and holds the lock (0.3 s apart is
    # before either has; on a loaded machine the first could otherwise finish before the second
    # asks), and the first has many iterations left to run beside it
    deadline = time.monotonic() + 120
    while f"process {first.pid} " not in ((out / "run.lock").read_text() if (out / "run.lock").exists() else ""):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outcomes = [(p.wait(timeout=300), p.communicate()[1]) for p in (first, second)]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for code, err in outcomes if code == 2)
    errors = [line for line in refused.splitlines() if line.startswith("godiff: error: ")]
    assert len(errors) == 1 and "in use by process" in errors[0] and "Traceback" not in refused, refused
    keys = Counter((r.iteration, r.sample) for r in rows(out))
    assert set(keys) == {(k, i) for k in range(ITERATIONS) for i in range(4)} and max(keys.values()) == 1
    log = [json.loads(line)["iteration"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == list(range(ITERATIONS))


# -- 2. corrupt checkpoint weights -----------------------------------------------------------------
def _flip_tensor_bytes(path: Path, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: length, JSON header, tensor data
    for i in range(header + 40, header + 40 + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_checkpoint_weights_are_refused_and_the_earlier_checkpoint_resumes_the_same_run(
    two_iterations, reference
):
    weights = two_iterations / "checkpoints" / "iter-0001" / "model.safetensors"
    _flip_tensor_bytes(weights)
    manifest = (two_iterations / "run.json").read_bytes()
    with pytest.raises(DigestMismatchError, match="model.safetensors") as info:
        Search.resume(two_iterations, iterations=3)
    assert "--from-checkpoint 0" in str(info.value)
    line = _one_line(_invoke("resume", two_iterations, "--iterations", "3"), 4)
    assert str(weights) in line
    assert (two_iterations / "run.json").read_bytes() == manifest  # nothing written by the refusals

    search, result = _finish(two_iterations, from_checkpoint=0)
    assert search.n_evaluations == result.n_evaluations == 3 * SAMPLES
    reference_dir, expected = reference
    assert energies(two_iterations) == energies(reference_dir)  # iteration 1's rows reused, not paid again
    assert result.best_energy == expected.best_energy


# -- 3. and 4. a lost, short or truncated database -------------------------------------------------
def test_a_deleted_database_is_refused_unless_rebuilt_from_the_saved_samples(two_iterations, reference):
    (two_iterations / "evaluations.db").unlink()
    with pytest.raises(CheckpointError, match="evaluations.db: missing"):
        Search.resume(two_iterations, iterations=3)
    assert "--rebuild-database" in _one_line(_invoke("resume", two_iterations, "--iterations", "3"), 4)
    assert not (two_iterations / "evaluations.db").exists()  # not silently made anew

    result = _invoke("resume", two_iterations, "--iterations", "3", "--rebuild-database", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert "rebuilding" in result.stderr
    reference_dir, expected = reference
    assert energies(two_iterations) == energies(reference_dir)  # a serial run rebuilds to the same run
    assert f"evaluations     {3 * SAMPLES}" in result.output


def test_a_writer_killed_mid_write_does_not_block_the_resume(two_iterations, reference):
    """ASE's database lock file, made and removed around each write, outlives a process killed
    between the two (seen with a Dask run killed -9): godiff relies on its own run lock instead."""
    (two_iterations / "evaluations.db.lock").write_text("")  # what a kill -9 mid-write leaves
    # one thread, as the reference ran (conftest): two threads' sums may differ in the last bits, and a
    # search carries such a difference on to other samples
    script = (
        "import torch; torch.set_num_threads(1); from godiff.search import Search; "
        f"Search.resume({str(two_iterations)!r}, iterations=3).run()"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert energies(two_iterations) == energies(reference[0])


def test_a_database_with_rows_lost_is_refused(two_iterations):
    import sqlite3

    with sqlite3.connect(two_iterations / "evaluations.db") as con:
        con.execute("delete from systems where id > 4")
    with pytest.raises(
        CheckpointError, match=f"holds 4 evaluations of iterations 0..1 where checkpoint 1 counts {2 * SAMPLES}"
    ):
        Search.resume(two_iterations, iterations=3)


def test_a_truncated_database_is_exit_4_and_nothing_is_written(two_iterations):
    db = two_iterations / "evaluations.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    before = {p: p.read_bytes() for p in two_iterations.rglob("*") if p.is_file() and p.name != "run.lock"}
    line = _one_line(_invoke("resume", two_iterations, "--iterations", "3", "--workers", "2"), 4)
    assert "evaluations.db" in line
    after = {p: p.read_bytes() for p in two_iterations.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before  # run.json included: the failed command changed nothing
    assert _one_line(_invoke("report", two_iterations), 4)


# -- 5. a broken energy function leaves no run directory behind --------------------------------------
def test_an_energy_function_that_cannot_be_built_leaves_no_run_directory(tmp_path):
    model = tmp_path / "broken.model"
    model.write_bytes(b"not a MACE model")
    system = tmp_path / "mace.yaml"
    system.write_text(
        "name: m\nmobile: Ar3\nbox: {kind: cuboid, lengths: 4}\nenergy: {calculator: mace, model: broken.model}\n"
    )
    result = _invoke("run", system, "--out", tmp_path / "r", *CLI_TINY, "--iterations", "1", "--trust-energy")
    assert result.exit_code == 2, result.stderr
    assert "could not load MACE model" in result.stderr
    assert not (tmp_path / "r").exists()
    assert _invoke("run", "lj13", "--out", tmp_path / "r", *CLI_TINY, "--iterations", "1", "--quiet").exit_code == 0


# -- 6. a model folder's manifest stays in the folder ----------------------------------------------
def test_a_manifest_entry_outside_the_folder_is_refused(tmp_path):
    from godiff.digests import sha256_file
    from godiff.zoo.format import MANIFEST, verify_folder

    folder = tmp_path / "model"
    shutil.copytree(Path(godiff.__file__).resolve().parents[1] / "zoo" / "lj13-lj" / "1.0.0", folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of any model\n")
    manifest["files"]["../secret.txt"] = {"sha256": sha256_file(secret), "size": secret.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="leaves the folder"):
        verify_folder(folder)
    assert "leaves the folder" in _one_line(_invoke("zoo", "show", folder), 4)

    del manifest["files"]["../secret.txt"]
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(secret)  # a link that leads out is refused too
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="leaves the folder"):
        verify_folder(folder)


# -- 7. and 8. what a system file may make godiff read ---------------------------------------------
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nname: b\nmobile: *a8\nbox: {kind: cuboid, lengths: 4}\n")
    assert bomb.stat().st_size < 1200
    started = time.monotonic()
    line = _one_line(_invoke("run", bomb, "--out", tmp_path / "r"), 2)
    assert time.monotonic() - started < 10
    assert "aliases" in line and len(line) < 300
    assert not (tmp_path / "r").exists()


def test_a_template_file_is_read_only_from_the_system_files_folder(tmp_path):
    from ase.build import fcc111

    folder = tmp_path / "systems"
    (folder / "slabs").mkdir(parents=True)
    ase.io.write(folder / "slabs" / "slab.xyz", fcc111("Pt", (3, 3, 2), vacuum=6.0), format="extxyz")
    ase.io.write(tmp_path / "outside.xyz", fcc111("Pt", (3, 3, 2), vacuum=6.0), format="extxyz")
    body = "mobile: Pt2\nbox: {kind: slab, z_min: 1.5, z_max: 4.5}\nenergy: {calculator: emt}\n"
    for name, file in [
        ("inside", "slabs/slab.xyz"),
        ("up", "../outside.xyz"),
        ("absolute", str(tmp_path / "outside.xyz")),
    ]:
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntemplate: {{file: '{file}'}}\n" + body)
    assert godiff.load_system(folder / "inside.yaml").n_template == 18
    with pytest.raises(SystemFileError, match="leads outside the system file's folder"):
        godiff.load_system(folder / "up.yaml")
    with pytest.raises(SystemFileError, match="must be relative to the system file's folder"):
        godiff.load_system(folder / "absolute.yaml")
    (folder / "link.xyz").symlink_to(tmp_path / "outside.xyz")
    (folder / "link.yaml").write_text("name: link\ntemplate: {file: link.xyz}\n" + body)
    with pytest.raises(SystemFileError, match="leads outside"):
        godiff.load_system(folder / "link.yaml")


# -- 9. numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value",
    [
        ("--temperature-start", "inf"),
        ("--temperature-end", "nan"),
        ("--guidance", "nan"),
        ("--guidance", "-1"),
        ("--relax-steps", "-1"),
        ("--network-share", "0"),
        ("--network-share", "nan"),
        ("--samples", "0"),
        ("--sampling-steps", "0"),
    ],
)
def test_non_finite_and_out_of_range_options_are_one_line_and_exit_2(tmp_path, option, value):
    line = _one_line(_invoke("run", "lj13", option, value, "--out", tmp_path / "r"), 2)
    assert option.lstrip("-") in line
    assert not (tmp_path / "r").exists()


def test_absurd_box_lengths_are_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(
        "name: huge\nmobile: Ar3\nbox: {kind: cuboid, lengths: [1e308, 1e308, 1e308]}\nenergy: {calculator: lj}\n"
    )
    line = _one_line(_invoke("run", path, "--out", tmp_path / "r"), 2)
    assert "box.lengths" in line and "out of range" in line
    with pytest.raises(ConfigError, match="max-failed-fraction"):
        SearchConfig(max_failed_fraction=2.0)


# -- 10. and 11. the documented exit codes ----------------------------------------------------------
def test_an_out_that_cannot_be_made_is_bad_input(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_line(_invoke("run", "lj13", "--out", blocker / "r", "--iterations", "1"), 2)
    assert "cannot create the run directory" in line


def test_missing_models_bad_references_and_a_bad_zoo_root_have_their_codes(tmp_path):
    assert "no such model folder" in _one_line(_invoke("zoo", "show", tmp_path / "nothing"), 3)
    _one_line(_invoke("zoo", "show", "../../etc@1.0.0"), 3)
    _one_line(_invoke("run", "lj13", "--from", tmp_path / "nothing", "--out", tmp_path / "r"), 3)
    assert "empty" in _one_line(_invoke("zoo", "show", "lj13-lj@"), 2)
    assert "ORGANIZATION/NAME" in _one_line(_invoke("zoo", "push", "lj13-lj@1.0.0", "--repo", "../../x"), 2)
    not_a_dir = tmp_path / "zoo-file"
    not_a_dir.write_text("")
    assert "GODIFF_ZOO" in _one_line(_invoke("zoo", "list", env={"GODIFF_ZOO": str(not_a_dir)}), 2)
    assert not (tmp_path / "r").exists()


# -- 12. SIGTERM is Ctrl-C with its own code -------------------------------------------------------
@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_saves_every_evaluation_and_prints_the_resume_command(tmp_path, sig, code, word):
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal gives it: a suite started in the background (``cmd &``) passes its
    # children SIGINT ignored, and the run would then finish and exit 0
    proc = subprocess.Popen(
        [_godiff(), "run", "lj13", "--iterations", "3", *CLI_TINY, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out / "evaluations.db").exists() or len(rows(out)) < 5:  # the database appears whole
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert word in stderr and f"continue with: godiff resume {out}" in stderr and "Traceback" not in stderr
    kept = len(rows(out))
    resumed = subprocess.run(
        [_godiff(), "resume", str(out), "--quiet", "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    keys = Counter((r.iteration, r.sample) for r in rows(out))
    assert len(keys) == 3 * 4 and max(keys.values()) == 1 and kept <= 3 * 4


def test_a_relaxation_step_names_its_start_by_id_and_a_flag_is_refused(tmp_path):
    """RunDir.record's ``relaxation`` is the id of the evaluation the relaxation started from
    (stored as ``relaxed_from``); True or False would be stored as id 1 or 0, so they are refused."""
    from ase import Atoms

    from godiff.energy.evaluator import Evaluation
    from godiff.rundir import RunDir

    run = RunDir.create(tmp_path / "r", {"system": {"name": "ar2"}, "energy": {"calculator": "lj"}})
    atoms = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 1.1]])
    done = Evaluation(energy=-1.0, forces=np.zeros((2, 3)), ok=True, error=None, seconds=0.0)
    first = run.record(atoms, done, iteration=0, sample=0, temperature=0.0)
    step = run.record(atoms, done, iteration=1, sample=0, temperature=0.0, relaxation=first)
    row = run.get_row(step)
    assert row.relaxation and row.polish and row.relaxed_from == first
    assert run.get_row(first).get("relaxed_from") is None
    for flag in (True, False):
        with pytest.raises(TypeError, match="relaxation is the id"):
            run.record(atoms, done, iteration=1, sample=1, temperature=0.0, relaxation=flag)
    assert len(run.rows()) == 2
