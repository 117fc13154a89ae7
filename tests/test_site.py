"""The documentation site builds strictly, its benchmark pages are fresh, and its code blocks work.

Every code block of ``README.md`` and ``docs/`` is checked by its kind:

* ``python``: run in a fresh interpreter in a temporary directory (the README's marked examples
  are run by ``test_readme.py``, and their copies in the docs are not run twice); a block that
  needs a site's own infrastructure (``dask_jobqueue`` on a Slurm cluster) is compiled only;
* ``bash``: every ``godiff`` command line (``godiff zoo`` included) is parsed by the real command-line
  interface, every option and argument checked as a user's would be, without running the search;
* ``yaml``: a system file loads as a :class:`godiff.system.System`.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```(?P<kind>\w*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
NEEDS_A_SITE = ("dask_jobqueue",)


def _blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for match in BLOCK.finditer(page.read_text()):
            if match.group("kind") == kind:
                body = "\n".join(line[len(match.group("indent")) :] for line in match.group("body").splitlines())
                found.append((f"{page.relative_to(ROOT)}:{match.start()}", body))
    return found


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--trust-energy" in cli and "godiff zoo finetune" in cli  # generated from the commands
    assert "check_trusted" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def test_the_benchmark_pages_are_generated_from_the_records_and_fresh():
    from godiff.bench.pages import render

    for relative, content in render(ROOT).items():
        path = ROOT / "docs" / "benchmarks" / relative
        assert path.exists() and path.read_bytes() == content, f"{path} is stale: run python -m godiff.bench.pages"


def _readme_tested() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return {m.group("body").strip() for m in BLOCK.finditer(text) if m.group("kind") == "python"}


@pytest.mark.parametrize("where, body", _blocks("python"), ids=lambda v: v if ":" in str(v) else "")
def test_python_blocks_run(where, body, tmp_path):
    if body.strip() in _readme_tested():
        pytest.skip("the README's example, run by test_readme.py")
    compile(body, where, "exec")
    if any(name in body for name in NEEDS_A_SITE):
        return  # compiled only: it needs a site's scheduler
    proc = subprocess.run(
        [sys.executable, "-c", body],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "GODIFF_ZOO": str(tmp_path / "zoo")},
    )
    assert proc.returncode == 0, f"{where}: {proc.stderr[-2000:]}"


def _command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for where, body in _blocks("bash"):
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "godiff":
                lines.append((where, words))
            for i, word in enumerate(words):  # `... && godiff run pt7-pt111`
                if word == "&&" and i + 1 < len(words) and words[i + 1] == "godiff":
                    lines.append((where, words[i + 1 :]))
    return lines


@pytest.mark.parametrize("where, words", _command_lines(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_command_lines_parse(where, words):
    import click

    from godiff.cli.main import cli

    try:
        group, ctx = cli, cli.make_context(words[0], words[1:])
        rest = [*ctx._protected_args, *ctx.args]
        while rest:  # godiff zoo finetune ...: down through the groups
            name, command, args = group.resolve_command(ctx, rest)
            ctx = command.make_context(name, args, parent=ctx)
            group, rest = command, [*ctx._protected_args, *ctx.args] if isinstance(command, click.Group) else []
    except click.exceptions.Exit:  # --help, --version
        pass
    except click.ClickException as exc:
        pytest.fail(f"{where}: {' '.join(words)}: {exc.format_message()}")


@pytest.mark.parametrize("where, body", _blocks("yaml"), ids=lambda v: v if ":" in str(v) else "")
def test_system_files_load(where, body):
    import yaml

    from godiff.system import System

    data = yaml.safe_load(body)
    if isinstance(data, dict) and "mobile" in data:
        System.from_dict({k: v for k, v in data.items()})
    else:
        assert isinstance(data, dict), where  # an energy or settings fragment: valid YAML at least


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in (
        "tutorials/first-search",
        "tutorials/own-system",
        "tutorials/zoo",
        "tutorials/clusters",
        "tutorials/reading-a-run",
        "concepts/method",
        "concepts/trust",
        "benchmarks/index",
        "reference/cli",
        "reference/api",
    ):
        assert f"docs/{page}.md" in readme, page
        assert (ROOT / "docs" / f"{page}.md").exists(), page
