"""The documentation's benchmark pages, generated from the records: ``python -m godiff.bench.pages``.

Every table of ``docs/benchmarks/tables.md`` is :func:`godiff.bench.harness.table_of_results` of one
canonical directory's ``results.json`` (today's defaults and the baselines run beside them), with
its figure; the findings page ``docs/benchmarks/index.md`` is written by hand but for its one table,
the standings of every canonical directory (:func:`standings`, between the markers
:data:`BEGIN` and :data:`END`); ``docs/benchmarks/archive.md`` names, for each sweep that has left the tree, the commit
where its records were last written (``benchmarks/archive.json``), so ``git show COMMIT:benchmarks/DIR``
brings them back. The test suite regenerates both and fails when a committed page is stale.

Example:
    >>> pages = render(Path(__file__).resolve().parents[2])   # doctest: +SKIP
    >>> sorted(pages)[:2]                                      # doctest: +SKIP
    ['archive.md', 'img/au7-au111.png']
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from godiff.generated import between_markers

__all__ = ["CANONICAL", "render", "standings", "write", "main"]

#: The canonical directory of each problem, in the order the page shows them: (directory, title).
CANONICAL: tuple[tuple[str, str], ...] = (
    (
        "pt7-share1-timed",
        "Pt7/Pt(111), EMT: today's defaults (candidates sized to the calculator: 8 per evaluation under EMT)",
    ),
    (
        "pt7-keep025-timed",
        "Pt7/Pt(111), EMT: 32 candidates per evaluation (20 steps, a quarter relaxed), as a costly calculator gets",
    ),
    (
        "pt7-steps20-keep025",
        "Pt7/Pt(111), EMT: 20 steps, a quarter of the candidates relaxed (seconds include the benchmark's judge)",
    ),
    ("pt7-defaults", "Pt7/Pt(111), EMT: the defaults before 0.3.0 (40 steps, every candidate relaxed), seeds 0..7"),
    ("pt7-oversample32", "Pt7/Pt(111), EMT: 0.2.0's defaults as first recorded, seeds 0..7"),
    ("pt7-oversample32-seeds16", "Pt7/Pt(111), EMT: 0.2.0's defaults as first recorded, seeds 0..15"),
    ("pt7-pt111", "Pt7/Pt(111), EMT: the paper's defaults beside random structure search and basin hopping"),
    ("pt7-pt111-10k", "Pt7/Pt(111), EMT: the classical methods at 10,000 evaluations"),
    ("pt7-pt111-gofee", "Pt7/Pt(111), EMT: AGOX's GOFEE"),
    (
        "pt7-transfer-fcc111-polish10",
        "Pt7/Pt(111), EMT: transfer from fcc111-islands-emt@1.0.0, a ten-point polish, no relaxation of the first batch",
    ),
    ("pt7-transfer-v2", "Pt7/Pt(111), EMT: transfer from pt-islands-emt@2.0.0, retrained with today's search"),
    ("pt7-transfer-fcc111", "Pt7/Pt(111), EMT: transfer from fcc111-islands-emt@1.0.0 (Pt5, Pt6, then Au6)"),
    (
        "pt7-transfer-energy",
        "Pt7/Pt(111), EMT: transfer from pt-islands-emt@1.0.0 (today's transfer: the adaptive search, energy ranking)",
    ),
    (
        "pt7-transfer-t3-first32",
        "Pt7/Pt(111), EMT: transfer from the Pt-island model on the fixed schedule (before 0.3.0)",
    ),
    ("au7-transfer-fcc111", "Au7/Au(111), EMT: transfer from fcc111-islands-emt@1.0.0, the best match"),
    ("au7-transfer-v2", "Au7/Au(111), EMT: transfer from pt-islands-emt@2.0.0"),
    ("au7-transfer-energy", "Au7/Au(111), EMT: transfer from pt-islands-emt@1.0.0 (today's transfer)"),
    (
        "ag7-transfer-relax60",
        "Ag7/Ag(111), EMT, held out: from fcc111-islands-emt@1.0.0, the best match (today's transfer)",
    ),
    (
        "ag7-transfer-polish10",
        "Ag7/Ag(111), EMT, held out: from fcc111-islands-emt@1.0.0, the best match, a ten-point polish, no relaxation of the first batch",
    ),
    (
        "ag7-transfer-fcc111",
        "Ag7/Ag(111), EMT, held out of the zoo: transfer from fcc111-islands-emt@1.0.0, the best match",
    ),
    ("ag7-transfer-v2", "Ag7/Ag(111), EMT, held out of the zoo: transfer from pt-islands-emt@2.0.0"),
    (
        "pd7-transfer-relax60",
        "Pd7/Pd(111), EMT, held out: from pt-islands-emt@2.0.0, the best match (today's transfer)",
    ),
    (
        "pd7-transfer-polish10",
        "Pd7/Pd(111), EMT, held out: from pt-islands-emt@2.0.0, the best match, a ten-point polish, no relaxation of the first batch",
    ),
    ("pd7-transfer-v2", "Pd7/Pd(111), EMT, held out of the zoo: transfer from pt-islands-emt@2.0.0, the best match"),
    ("pd7-transfer-fcc111", "Pd7/Pd(111), EMT, held out of the zoo: transfer from fcc111-islands-emt@1.0.0"),
    (
        "pd7-transfer",
        "Pd7/Pd(111), EMT: transfer from pt-islands-emt@1.0.0 beside a search from scratch (an element no model saw)",
    ),
    (
        "ni7-ni100-transfer",
        "Ni7/Ni(100), EMT, held out: from fcc100-islands-emt@1.0.0 (Cu6/Cu(100)), the best match",
    ),
    (
        "pt7-pt100-transfer-carry-on",
        "Pt7/Pt(100), EMT, held out: from pt-islands-emt@2.0.0 (Pt(111)), a relaxation cut short carried on (today's transfer)",
    ),
    (
        "pt7-pt100-transfer-relax-stalled",
        "Pt7/Pt(100), EMT, held out: from pt-islands-emt@2.0.0 (Pt(111)), every stall to a new structure",
    ),
    (
        "pt7-pt100-transfer",
        "Pt7/Pt(100), EMT, held out: from pt-islands-emt@2.0.0 (Pt(111)), the best match, no stalled relaxation",
    ),
    (
        "pt7-pt100-transfer-fcc100",
        "Pt7/Pt(100), EMT, held out: from fcc100-islands-emt@1.0.0 (Cu(100)), seeds 0..1",
    ),
    ("pt7-pt100-scratch", "Pt7/Pt(100), EMT: today's defaults from scratch"),
    (
        "au7-share1",
        "Au7/Au(111), EMT: today's defaults (candidates sized to the calculator: 8 per evaluation under EMT)",
    ),
    (
        "au7-steps20-keep025",
        "Au7/Au(111), EMT: 32 candidates per evaluation (20 steps, a quarter of the candidates relaxed)",
    ),
    ("au7-oversample32", "Au7/Au(111), EMT: 0.2.0's defaults"),
    ("au7-au111", "Au7/Au(111), EMT: earlier defaults and transfer"),
    (
        "pt7-chgnet-transfer-relax60",
        "Pt7/Pt(111), CHGNet: from the EMT-trained pt-islands-emt@2.0.0 (today's transfer)",
    ),
    (
        "pt7-chgnet-transfer-polish10",
        "Pt7/Pt(111), CHGNet: from the EMT-trained pt-islands-emt@2.0.0, a ten-point polish, no relaxation of the first batch",
    ),
    ("pt7-chgnet-transfer-v2", "Pt7/Pt(111), CHGNet: transfer from pt-islands-emt@2.0.0"),
    ("pt7-chgnet-transfer", "Pt7/Pt(111), CHGNet: transfer from the EMT-trained Pt-island model (today's)"),
    ("pt7-chgnet-share1-timed", "Pt7/Pt(111), CHGNet: today's defaults (about 22 candidates per evaluation)"),
    ("pt7-chgnet-oversample32", "Pt7/Pt(111), CHGNet: 0.2.0's defaults"),
    ("pt7-pt111-chgnet", "Pt7/Pt(111), CHGNet: earlier defaults, transfer and the classical methods"),
    ("lj13", "LJ13"),
    ("lj19-transfer-relax60", "LJ19: transfer from lj13-lj@2.0.0, the first batch's best relaxed"),
    (
        "lj19-transfer-polish10",
        "LJ19: transfer from lj13-lj@2.0.0, a ten-point polish, no relaxation of the first batch",
    ),
    ("lj19-transfer-v2", "LJ19: transfer from lj13-lj@2.0.0, retrained with today's search"),
    (
        "lj19-transfer-maxstep",
        "LJ19: transfer from lj13-lj@2.0.0, the relaxation's step scaled to the bond (today's transfer)",
    ),
    (
        "lj19-transfer-carry-on",
        "LJ19: transfer from lj13-lj@2.0.0, a relaxation cut short carried on at the next stall",
    ),
    (
        "lj19-transfer-relax-stalled",
        "LJ19: transfer from lj13-lj@2.0.0 with relax_stalled=60 (every stall to a new structure)",
    ),
    (
        "lj19-scratch-relax60",
        "LJ19 from scratch, relax_first=60 and relax_stalled=60 with a cut relaxation carried on, seeds 0..1: no gain, off",
    ),
    ("lj19-share1", "LJ19: today's defaults (candidates sized to the calculator: 8 per evaluation under LJ)"),
    ("lj19-steps20-keep025", "LJ19: 32 candidates per evaluation (20 steps, a quarter of the candidates relaxed)"),
    ("lj19-oversample32", "LJ19: 0.2.0's defaults"),
    ("lj19", "LJ19: earlier defaults, transfer and basin hopping"),
    (
        "lj26-transfer-maxstep",
        "LJ26: transfer from lj19-lj@1.0.0, the relaxation's step scaled to the bond as well (today's transfer)",
    ),
    (
        "lj26-transfer-carry-on",
        "LJ26: transfer from lj19-lj@1.0.0, a relaxation cut short carried on at the next stall",
    ),
    (
        "lj26-transfer",
        "LJ26: transfer from lj19-lj@1.0.0 (lj13-lj@2.0.0 fine-tuned on LJ19), every stall to a new structure",
    ),
    (
        "pt6-xtb-relax60-ends",
        "Pt6, GFN2-xTB: relax_first=60, relax_stalled=60 (the lowest structure away from where earlier relaxations began and ended)",
    ),
    (
        "pt6-xtb-relax60-v2",
        "Pt6, GFN2-xTB: relax_first=60, relax_stalled=60 (away from every step of earlier relaxations, the best first)",
    ),
    (
        "pt6-xtb-relax60",
        "Pt6, GFN2-xTB: relax_first=60, relax_stalled=60 as first written (polished structures skipped)",
    ),
    ("pt6-xtb-today", "Pt6, GFN2-xTB: today's defaults"),
    ("pt6-xtb", "Pt6, GFN2-xTB: the gas-phase cluster"),
    (
        "pt13-transfer-carry-on",
        "Pt13/Pt(111), EMT: today's transfer from pt-islands-emt@2.0.0 (a cut relaxation carried on), seeds 0..3",
    ),
    (
        "pt13-transfer-today",
        "Pt13/Pt(111), EMT: transfer from pt-islands-emt@2.0.0, every stall to a new structure, seeds 0..3",
    ),
    ("pt13-transfer", "Pt13/Pt(111), EMT: transfer from pt-islands-emt@2.0.0 (Pt5, Pt6), ten-point polish, seed 0"),
    ("pt13-classical", "Pt13/Pt(111), EMT: the classical methods"),
    ("pt19-classical", "Pt19/Pt(111), EMT: the classical methods"),
)

FIGURE = "success_vs_evaluations.png"
BEGIN = "<!-- generated by python -m godiff.bench.pages: standings -->"
END = "<!-- end of generated standings -->"
ARCHIVE = "archive.json"


def render(root: Path) -> dict[str, bytes]:
    """The pages under ``docs/benchmarks/`` generated from the benchmark directories of the checkout
    at ``root``: ``{path relative to docs/benchmarks: content}``."""
    from godiff.bench.harness import table_of_results

    bench = Path(root) / "benchmarks"
    lines = [
        "# Tables from the records",
        "",
        "Generated by `python -m godiff.bench.pages` from each directory's `results.json`; do not edit by hand.",
        "Each record names the godiff version and, since 0.2.0, the commit and every setting it ran with.",
        "The figures and their history are on [the findings page](index.md); the sweeps that have left the",
        "tree are in [the archive](archive.md).",
        "",
    ]
    pages: dict[str, bytes] = {}
    for name, title in CANONICAL:
        directory = bench / name
        records = json.loads((directory / "results.json").read_text())
        lines += [f"## {title}", "", f"`benchmarks/{name}`: {_command(name, records)}", ""]
        lines += [table_of_results(directory / "results.json").strip(), ""]
        if (directory / FIGURE).exists():
            pages[f"img/{name}.png"] = (directory / FIGURE).read_bytes()
            lines += [f"![{title}](img/{name}.png)", ""]
    pages["tables.md"] = ("\n".join(lines).rstrip() + "\n").encode()
    pages["archive.md"] = _archive(bench / ARCHIVE).encode()
    findings = Path(root) / "docs" / "benchmarks" / "index.md"
    if findings.exists():
        pages["index.md"] = between_markers(findings.read_text(), BEGIN, END, standings(bench)).encode()
    return pages


def standings(bench: Path) -> str:
    """One row per canonical directory and method: the first energy within tolerance as evaluated
    (seeds, median over all seeds, worst), the seconds to it and the network's share of them, the
    counted figure's median and the run's wall time (:func:`godiff.bench.harness.summarize`)."""
    from godiff.bench.harness import summarize

    lines = [
        "| directory | method | budget | as evaluated | median | worst | seconds to it, median | network share "
        "| relaxation counted, median | run wall (s), median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _ in CANONICAL:
        records = json.loads((bench / name / "results.json").read_text())["records"]
        methods = list(dict.fromkeys(r["method"] for r in records))
        for row in summarize(records, methods):
            budget = statistics.median(r["budget"] for r in records if r["method"] == row["method"])
            lines.append(
                f"| [`{name}`](tables.md#{_anchor(name)}) | {row['method']} | {budget:.0f} "
                f"| {_of(row, 'successes_to_energy')} | {_number(row['median_to_energy'])} "
                f"| {_number(row['worst_to_energy'])} | {_number(row['median_seconds_to_energy'])} "
                f"| {_share(row['median_network_share'])} | {_number(row['median_counted'])} "
                f"| {_number(row['median_wall_seconds'])} |"
            )
    return "\n".join(lines) + "\n"


def _of(row: dict, key: str) -> str:
    return "-" if row.get(key) is None else f"{row[key]}/{row['seeds']}"


def _number(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _anchor(name: str) -> str:
    """The anchor of ``name``'s section in tables.md (its title, as mkdocs slugs it)."""
    import re

    title = dict(CANONICAL)[name]
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())


def _command(name: str, records: dict) -> str:
    """The command that grows the directory (each run skips the seeds already recorded)."""
    seeds = max((r["seed"] for r in records.get("records", [])), default=-1) + 1
    methods = ",".join(records.get("methods") or sorted({r["method"] for r in records.get("records", [])}))
    return (
        f"`godiff bench {records['system']['name']} --methods {methods} --seeds {seeds} "
        f"--budget {records['budget']} --out benchmarks/{name}` (settings per record in its `results.json`)"
    )


def _archive(path: Path) -> str:
    archive = json.loads(path.read_text()) if path.exists() else {}
    lines = [
        "# Archived sweeps",
        "",
        "Sweeps whose setting was superseded by today's defaults or measured not to help have left the",
        "tree; git keeps them. Each row names the commit where its records were last written:",
        "`git show COMMIT:benchmarks/DIR/table.md` shows its table, `git checkout COMMIT -- benchmarks/DIR`",
        "brings it back. The [findings page](index.md) tells what each one showed.",
        "",
        "| directory | commit | date | what that commit recorded |",
        "|---|---|---|---|",
    ]
    for name, entry in sorted(archive.items()):
        subject = entry["subject"].replace("|", "\\|")
        lines.append(f"| `{name}` | `{entry['commit'][:10]}` | {entry['date']} | {subject} |")
    return "\n".join(lines) + "\n"


def write(root: Path, docs: Path | None = None) -> list[Path]:
    """Write :func:`render` of ``root`` under ``docs`` (default ``root/docs/benchmarks``)."""
    docs = Path(docs) if docs is not None else Path(root) / "docs" / "benchmarks"
    written = []
    for relative, content in render(root).items():
        path = docs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m godiff.bench.pages [ROOT]``: regenerate the benchmark pages of the checkout."""
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    for path in write(root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
