"""The ``godiff`` command line: commands, exit codes, one-line errors, a tiny real run.

The tiny run (lj13, 2 iterations of 4 samples, 2 training steps) is made once per module and
shared; the tests that extend it (resume, report) run in file order after it.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import ase.db
import pytest
from click.testing import CliRunner
from conftest import SHIPPED, console_script

import godiff
from godiff.cli.main import cli
from godiff.cli.progress import LogHandler, Progress, choose_mode, format_seconds
from godiff.errors import GodiffError, NotARunError

TINY = ["--iterations", "2", "--samples", "4", "--train-steps", "2", "--sampling-steps", "3"]


def _script(name: str) -> str:
    return console_script(name)


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, code: int, prefix: str = "godiff: error: ") -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def _db_rows(run: Path) -> int:
    import sqlite3

    with sqlite3.connect(run / "evaluations.db") as con:
        return con.execute("select count(*) from systems").fetchone()[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "r"
    result = _invoke("run", "lj13", *TINY, "--out", out, "--quiet")
    assert result.exit_code == 0, (result.output, result.stderr)
    return out, result


# -- systems, help, version ----------------------------------------------------------------------
def test_systems_lists_the_shipped_systems_in_process():
    result = _invoke("systems")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    names = [line.split()[0] for line in lines[1:]]
    assert names == SHIPPED
    lj13 = next(line for line in lines if line.startswith("lj13 "))
    assert "13 Ar13" in lj13 and "lj" in lj13 and "-44.326801 ε" in lj13
    pt7 = next(line for line in lines if line.startswith("pt7-pt111 "))
    assert "fcc111 Pt 6x6x2" in pt7 and "emt" in pt7 and "24.987000 eV" in pt7


def test_systems_console_script():
    proc = subprocess.run([_script("godiff"), "systems"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in SHIPPED:
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines()), name
    assert proc.stderr == ""


def test_help_documents_exit_codes_and_version():
    result = _invoke("--help")
    assert result.exit_code == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert code in result.stdout
    for command in ("run", "resume", "report", "systems"):
        assert command in result.stdout
    assert _invoke("--version").stdout.strip().endswith(godiff.__version__)


def test_usage_error_keeps_click_exit_code_in_one_line():
    result = _invoke("run")  # missing SYSTEM
    assert result.exit_code == 2
    assert result.stderr.strip() == "godiff: error: Missing argument 'SYSTEM'. (see 'godiff run --help')"
    result = _invoke("run", "lj13", "--iterations", "many")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "'--iterations'" in result.stderr


def test_threads_is_accepted_by_run_and_zero_is_refused(tmp_path):
    # In a subprocess: setting threads in the test process would leak into later tests.
    godiff = _script("godiff")
    ok = subprocess.run(
        [godiff, "run", "lj13", *TINY, "--iterations", "1", "--threads", "1", "--out", str(tmp_path / "r"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [godiff, "run", "lj13", "--threads", "0", "--out", str(tmp_path / "z")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--threads" in bad.stderr and not (tmp_path / "z").exists()


# -- bad input -----------------------------------------------------------------------------------
def test_unknown_system_exits_3_not_found(tmp_path):
    line = _one_line_error(_invoke("run", "no-such-system", "--out", tmp_path / "r"), 3)
    assert "no-such-system" in line and "lj13" in line
    assert not (tmp_path / "r").exists()


BAD_YAML = """\
name: bad
mobile: Xx3
box: {kind: cuboid, lengths: [4.0, 4.0, 4.0]}
energy: {calculator: lj}
"""


def test_bad_system_yaml_exits_2_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    line = _one_line_error(_invoke("run", path, "--out", tmp_path / "r"), 2)
    assert "mobile" in line and "Xx" in line


def test_traceback_flag_shows_the_stack(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    proc = subprocess.run(
        [_script("godiff"), "--traceback", "run", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2  # the stack is shown, the exit code stays that of the error
    assert "Traceback (most recent call last)" in proc.stderr
    assert "SystemFileError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("godiff: error: ")
    # without the flag: one line, exit 2, through the real console script
    proc = subprocess.run(
        [_script("godiff"), "run", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("godiff: error: ")


def test_internal_error_is_one_line(monkeypatch):
    import godiff.system.shipped

    def boom():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(godiff.system.shipped, "list_systems", boom)
    result = _invoke("systems")
    line = _one_line_error(result, 1, prefix="godiff: internal error: ZeroDivisionError: division by zero")
    assert "--traceback" in line
    result = _invoke("--traceback", "systems")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "ZeroDivisionError" in result.stderr


def test_resume_not_a_run_exits_3(tmp_path):
    line = _one_line_error(_invoke("resume", tmp_path / "not-a-run"), 3)
    assert "not-a-run" in line
    (tmp_path / "empty").mkdir()
    _one_line_error(_invoke("resume", tmp_path / "empty"), 3)


def test_report_not_a_run_exits_3(tmp_path):
    line = _one_line_error(_invoke("report", tmp_path), 3)
    assert "not a godiff run directory" in line


# -- the tiny run, resumed and reported ----------------------------------------------------------
def test_tiny_run(tiny_run):
    out, result = tiny_run
    assert _db_rows(out) == 8
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [0, 1]
    assert (out / "best.xyz").is_file()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["command"].startswith("godiff run lj13 --iterations 2")
    assert manifest["search"]["sampler"]["steps"] == 3
    # --quiet: the summary only, nothing on stderr
    assert result.stderr == ""
    assert "best energy" in result.stdout and str(out / "best.xyz") in result.stdout
    assert "evaluations     8" in result.stdout


def test_run_into_existing_run_exits_2(tiny_run):
    out, _ = tiny_run
    line = _one_line_error(_invoke("run", "lj13", *TINY, "--out", out), 2)
    assert "already holds a run" in line
    assert _db_rows(out) == 8


def test_resume_extends_the_run(tiny_run):
    out, _ = tiny_run
    result = _invoke("resume", out, "--iterations", "3")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert _db_rows(out) == 12
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    # not a terminal: plain lines, one per finished iteration, after the run directory
    err = result.stderr.strip().splitlines()
    assert err[0].startswith("godiff: resuming") and str(out) in err[0]
    assert [e.split("] ", 1)[1][:15] for e in err[1:]] == ["iteration 3/3  "]
    assert "\r" not in result.stderr
    assert "evaluations     12" in result.stdout


def test_report_prints_summary_and_writes_pngs(tiny_run, tmp_path):
    out, _ = tiny_run
    result = _invoke("report", out, "--out", tmp_path / "figs")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    text = result.stdout
    assert "lj13" in text and "evaluations    12 (12 ok, 0 failed)" in text
    assert "reference      -44.326801 ε" in text and "gap" in text and " eV" not in text  # LJ's reduced unit
    for name in ("best_vs_evaluations.png", "energy_histogram.png"):
        png = tmp_path / "figs" / name
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 10_000, (name, len(data))
        assert f"wrote {png}" in text


# -- the progress display ------------------------------------------------------------------------
class _Tty:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_modes_and_live_line(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    tty = _Tty()
    assert choose_mode(quiet=False, stream=tty) == "live"
    assert choose_mode(quiet=True, stream=tty) == "quiet"
    assert choose_mode(quiet=False, stream=object()) == "lines"
    assert format_seconds(0.25) == "0.2s" and format_seconds(185) == "3m05s"

    events = [
        {"event": "phase", "iteration": 0, "phase": "sampling", "temperature": 5.0},
        {"event": "phase", "iteration": 0, "phase": "evaluating", "temperature": 5.0},
        {"event": "evaluated", "iteration": 0, "n_evaluations": 1, "energy": -3.5},
        {"event": "evaluated", "iteration": 0, "n_evaluations": 2, "energy": None},
    ]
    with Progress(total_iterations=4, samples=8, mode="live", stream=tty) as progress:
        for event in events:
            progress(event)
        line = progress.status_line()
        assert "iteration 1/4" in line and "evaluating 2/8" in line and "-3.500000 eV" in line
        progress(
            {
                "event": "iteration",
                "iteration": 0,
                "temperature": 5.0,
                "n_evaluations": 8,
                "n_failed": 1,
                "best_energy": -3.5,
                "iteration_min": -3.5,
                "iteration_median": 1.0,
                "seconds": {"sampling": 0.1, "evaluation": 2.0, "training": 30.0},
                "network_per_evaluation": 3.8,
                "calculator_per_evaluation": 0.25,
            }
        )
        assert "train 30s" in progress.status_line() and "(1 failed)" in progress.status_line()
        assert "per eval: network 3.8s, calc 0.25s" in progress.status_line()
        LogHandler().emit(logging.LogRecord("godiff", logging.WARNING, __file__, 1, "a log line", None, None))
        assert "\x1b[2Ka log line\n" in tty.text  # the live line erased, the record printed, the line redrawn below
    assert "evaluating 0/8" in tty.text and "iteration 1/4  T 5 eV  best -3.500000 eV" in tty.text
    assert tty.text.endswith("\x1b[2K")  # the live line is erased at the end

    quiet = _Tty()
    with Progress(total_iterations=4, samples=8, mode="quiet", stream=quiet) as progress:
        for event in events:
            progress(event)
    assert quiet.text == ""


def test_error_classes_have_exit_codes():
    assert NotARunError.exit_code == 3 and GodiffError.exit_code == 1


# Ctrl-C and SIGTERM on a real run: tests/test_integrity.py::test_a_signal_saves_every_evaluation_and_prints_the_resume_command


def test_logging_configuration_is_restored_after_a_command():
    import logging

    logger = logging.getLogger("godiff")
    before = (logger.level, list(logger.handlers))
    assert _invoke("-vv", "systems").exit_code == 0
    assert _invoke("resume", "/nonexistent/run", "--quiet").exit_code == 3
    assert (logger.level, list(logger.handlers)) == before


def test_bench_set_passes_search_settings_to_godiff_runs_and_refuses_bad_ones(tmp_path):
    out = tmp_path / "b"
    result = _invoke(
        "bench",
        "lj13",
        "--methods",
        "godiff",
        "--seeds",
        "1",
        "--budget",
        "8",
        "--out",
        out,
        "--set",
        "samples=4",
        "--set",
        "train_steps=1",
        "--set",
        "sampling_steps=2",
        "--set",
        "temperature_start=3",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "runs" / "godiff" / "seed-0" / "run.json").read_text())
    assert manifest["search"]["temperature_start"] == 3 and manifest["search"]["sampler"]["steps"] == 2
    assert "| godiff | " in result.output
    for bad, message in [
        ("foo=1", "unknown search setting 'foo'"),
        ("samples=abc", "samples: expected an integer"),
        ("samples", "expected KEY=VALUE"),
    ]:
        line = _one_line_error(_invoke("bench", "lj13", "--out", tmp_path / "c", "--set", bad), 2)
        assert message in line


def test_a_reader_that_goes_away_is_not_an_internal_error():
    """`godiff systems | head`: the closed pipe ends the command quietly with 141, as for `yes | head`."""
    proc = subprocess.Popen([_script("godiff"), "systems"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before godiff has written a line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "internal error" not in stderr, stderr


def test_budget_stops_a_run_says_why_and_a_resume_with_more_budget_goes_on(tmp_path):
    out = tmp_path / "r"
    args = (
        "--sampling-steps",
        "3",
        "--train-steps",
        "2",
        "--min-samples",
        "3",
        "--max-samples",
        "6",
        "--seed",
        "1",
        "--polish",
        "2",
        "--reheat",
        "40",
        "--improvement",
        "0.5",
    )
    result = _invoke("run", "lj13", "--budget", "7", *args, "--out", out, "--quiet")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert _db_rows(out) == 7  # 3 from the prior, then rounds cut by the budget
    assert "stopped         the budget of 7 evaluations is spent" in result.stdout
    assert json.loads((out / "stopped.json").read_text())["reason"] == "budget"
    again = _invoke("resume", out)
    assert again.exit_code == 0 and "nothing to run" in again.stderr and "--budget" in again.stderr
    more = _invoke("resume", out, "--budget", "11", "--quiet")
    assert more.exit_code == 0, (more.stdout, more.stderr)
    assert _db_rows(out) == 11 and json.loads((out / "run.json").read_text())["search"]["budget"] == 11
    assert json.loads((out / "stopped.json").read_text())["n_evaluations"] == 11
    assert {
        k: json.loads((out / "run.json").read_text())["search"][k] for k in ("polish", "reheat", "improvement")
    } == {"polish": 2, "reheat": 40, "improvement": 0.5}
    with ase.db.connect(out / "evaluations.db") as db:
        assert 1 <= db.count("polish=True") <= 4  # after each round of 3, up to 2 polished (the budget cuts)
    line = _one_line_error(_invoke("run", "lj13", "--polish", "-1", "--out", tmp_path / "z"), 2)
    assert "polish" in line and not (tmp_path / "z").exists()
    line = _one_line_error(_invoke("run", "lj13", "--reheat", "-1", "--out", tmp_path / "z"), 2)
    assert "reheat" in line and not (tmp_path / "z").exists()
    line = _one_line_error(_invoke("run", "lj13", "--improvement", "-0.1", "--out", tmp_path / "z"), 2)
    assert "improvement" in line and not (tmp_path / "z").exists()


def test_run_takes_any_setting_with_set_and_refuses_a_conflict_or_an_unknown_name(tmp_path):
    out = tmp_path / "r"
    result = _invoke(
        "run",
        "lj13",
        "--out",
        out,
        "--budget",
        "8",
        "--quiet",
        "--set",
        "max_samples=8",
        "--set",
        "min_samples=4",
        "--set",
        "schedule=adaptive",
        "--set",
        "train_steps=2",
        "--set",
        "sampling_steps=3",
    )
    assert result.exit_code == 0, result.stderr
    search = json.loads((out / "run.json").read_text())["search"]
    assert (search["max_samples"], search["min_samples"], search["train_steps"], search["sampler"]["steps"]) == (
        8,
        4,
        2,
        3,
    )
    assert _one_line_error(_invoke("run", "lj13", "--set", "budget=8", "--budget", "9", "--out", tmp_path / "a"), 2)
    assert "nonsense" in _one_line_error(_invoke("run", "lj13", "--set", "nonsense=1", "--out", tmp_path / "b"), 2)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
