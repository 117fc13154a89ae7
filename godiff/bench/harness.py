"""Run methods x seeds on one problem with one budget; judge, tabulate and plot them alike.

Layout of a benchmark directory::

    results.json                  one record per finished (method, seed), rewritten atomically
    table.md                      the summary table
    success_vs_evaluations.png    fraction of seeds that have succeeded against evaluations spent
    runs/<method>/seed-<k>/       each run's own directory (evaluations.db etc.)

Seeds are 0..N-1, never hand-picked. Restarted with the same command, a benchmark skips the
(method, seed) pairs already in ``results.json`` and resumes an interrupted godiff run from its
last checkpoint. A record judged under another success criterion (``judge`` in the record, see
:func:`godiff.bench.success.criterion`) is judged again from its run directory, without a rerun;
one whose run directory is gone keeps its figures, and a figure it lacks prints as ``-``.

The first figure of every table is what a user is handed: the first evaluation whose energy is
within tolerance of the minimum as evaluated (``evaluations_to_energy``), every calculator call
counted, with the wall seconds to it and the network's share of them beside it
(``seconds_to_energy``, ``network_share``). Then the counted figure (``evaluations_counted``, see
:meth:`godiff.bench.success.Success.counted`: the minimum in hand with the relaxation of an
evaluated structure paid for), the relaxed check (an uncounted relaxation) and the basin figure.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from itertools import product
from pathlib import Path

from godiff.bench.methods import get_method
from godiff.bench.success import criterion, evaluations_counted, first_within
from godiff.cost import network_seconds
from godiff.energy import worker_context
from godiff.errors import BenchmarkInterruptedError
from godiff.rundir import RunDir, atomic_write_text
from godiff.threads import limit_threads

log = logging.getLogger(__name__)

__all__ = ["run_benchmark", "summarize", "table_markdown", "plot_success", "success_curves"]


def _versions() -> dict:
    import ase
    import e3nn
    import numpy
    import torch

    from godiff import __version__

    versions = {
        "godiff": __version__,
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "ase": ase.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    return versions | _optional_versions()


#: Packages whose version decides a record's numbers when they are installed: the universal
#: potentials (the CHGNet reference was relaxed under 0.4.2) and AGOX for its methods.
OPTIONAL_PACKAGES = ("agox", "chgnet", "mace-torch")


def _optional_versions() -> dict:
    """Versions of the installed :data:`OPTIONAL_PACKAGES`, read without importing them."""
    found = {}
    for name in OPTIONAL_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def source_commit() -> str | None:
    """The git commit godiff's source was checked out at (``+dirty`` when it held uncommitted
    changes), or None outside a git checkout (an installed wheel): what a record names so that the
    algorithm behind it can be found again."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "godiff"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _resolved_config(run_dir: Path) -> dict:
    """Every setting the run used, as its ``run.json`` records them (a godiff search's whole
    ``SearchConfig``; a classical method's method, seed and budget)."""
    manifest = RunDir(run_dir).manifest
    return manifest.search or {"method": manifest.method, "seed": manifest.seed, "budget": manifest.budget}


def _start_model(run_dir: Path) -> str | None:
    """The zoo model a transfer run started from, as its lineage names it (None from scratch):
    a record says which model it measured even where ``--from`` was left to the match."""
    return RunDir(run_dir).manifest.parent


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def _reference(system) -> tuple[float, float]:
    ref = system.reference or {}
    if "energy" not in ref:
        from godiff.errors import ConfigError

        raise ConfigError(
            f"{system.name}: no reference energy; add 'reference: {{energy: ..., tolerance: ...}}' to the system file"
        )
    return float(ref["energy"]), float(ref.get("tolerance", 0.05))


def _next_energy(system) -> float | None:
    """The lowest known minimum above the reference (``reference.next_energy``), or None."""
    value = (system.reference or {}).get("next_energy")
    return None if value is None else float(value)


def _unrelaxed_figures(system, rows) -> dict:
    """Figures read off the evaluated energies alone (no relaxation): evaluations to the first
    energy within tolerance of the reference, and, where the system names its next distinct
    minimum, to the first energy more than the tolerance below that one: a structure certainly in
    the global minimum's basin (its descent can only end in a minimum lower still; the margin keeps
    the next minimum itself, evaluated to rounding, out)."""
    return {key: first_within(rows, threshold) for key, threshold in _unrelaxed_thresholds(system).items()}


def _unrelaxed_thresholds(system) -> dict:
    """Each unrelaxed figure's record key and the energy an evaluation must reach for it."""
    reference, tolerance = _reference(system)
    next_energy = _next_energy(system)
    thresholds = {"evaluations_to_energy": reference + tolerance}
    if next_energy is not None:
        thresholds["evaluations_to_basin"] = next_energy - tolerance
    return thresholds


#: Seconds in a year, the unit of an ASE database row's ``ctime``.
_YEAR = 365.25 * 24 * 3600


def _time_figures(run, rows, hit: int | None, watch=None) -> dict:
    """What the user waited for the first evaluation within tolerance (``hit`` evaluations in):

    ``seconds_to_energy``: wall seconds from the start of the run's first evaluation to the moment
    that one was written (each row's ``ctime``; a run resumed after a pause counts the pause),
    less the seconds the benchmark's own ``watch`` spent judging before it (a user's run has no
    watch: under CHGNet its relaxations were two thirds of those seconds);
    ``network_share``: the network's share of the run's seconds up to and including that
    iteration (``log.jsonl``'s sampling and training over sampling, evaluation and training),
    None for a method without a network or a run without a log. Both None without a hit.
    """
    if hit is None or not rows:
        return {"seconds_to_energy": None, "network_share": None}
    first, found = rows[0], rows[hit - 1]
    seconds = (found.ctime - first.ctime) * _YEAR + float((first.data or {}).get("seconds", 0.0))
    if watch is not None:
        seconds -= watch.seconds_before(hit)
    phases = [r.get("seconds") or {} for r in run.read_log() if r.get("iteration", 0) <= found.get("iteration", 0)]
    network = sum(network_seconds(p) for p in phases)
    total = network + sum(p.get("evaluation") or 0.0 for p in phases)
    return {"seconds_to_energy": seconds, "network_share": network / total if total > 0 else None}


def judge(system, method: str, run_dir: Path, budget: int, watch=None, trust_energy: bool = False) -> dict:
    """The success fields of a record, judged from a finished run directory under :func:`criterion`.

    ``evaluations_counted``: evaluations until the minimum is in hand with the relaxation counted
    (:func:`godiff.bench.success.evaluations_counted`; it may exceed the budget, and tables count
    it a success only within it); ``success_relax_calls``: the calls of the first success's
    relaxation in the judge (None for relaxation-trajectory methods, whose rows count them).

    ``watch``: the :class:`godiff.bench.success.SuccessWatch` that watched the run, whose verdict
    is taken when it has seen a success or every row, rather than relaxing them all again.
    """
    from godiff.bench.success import first_success
    from godiff.rundir import RunDir

    reference, tolerance = _reference(system)
    rows = RunDir(run_dir).rows()[:budget]
    ok = [r for r in rows if r.get("ok", True) and r.get("energy") is not None]
    trajectories = get_method(method).trajectories
    if watch is not None:
        watch.scan(rows)  # rows evaluated after its last look (e.g. an interrupted iteration resumed)
        success = watch.success
    else:
        success = first_success(
            rows, system, reference=reference, tolerance=tolerance, trajectories=trajectories, trust_energy=trust_energy
        )
    unrelaxed = _unrelaxed_figures(system, rows)
    return {
        **_time_figures(RunDir(run_dir), rows, unrelaxed["evaluations_to_energy"], watch),
        "evaluations": len(rows),
        "evaluations_counted": evaluations_counted(success, unrelaxed["evaluations_to_energy"]),
        "evaluations_to_success": None if success is None else success.evaluations,
        **unrelaxed,
        "success_relaxed_energy": None if success is None else success.relaxed_energy,
        "success_relax_calls": None if success is None else success.relax_calls,
        "best_energy": min((r.energy for r in ok), default=None),
        "judge": criterion(system, trajectories=trajectories),
    }


def run_one(
    system_dict: dict,
    method: str,
    seed: int,
    budget: int,
    out: str,
    overrides: dict | None = None,
    start_from: str | None = None,
    stop_at_success: bool = False,
    dask: str | None = None,
    trust_energy: bool = False,
) -> dict:
    """Run one (method, seed) and judge it; returns its record. Runs in a worker process.

    ``stop_at_success``: a method that can be stopped (godiff's) ends after the iteration in which
    both its first success and its first evaluated energy within tolerance are in
    (:class:`godiff.bench.success.SuccessWatch`); both figures are the same as in a full run, its
    ``evaluations`` and best energy are those of the shortened run. ``stopped_at_success`` says
    that the watch ended it; a run that never saw both figures ran its whole schedule.
    ``dask``: the address of a Dask cluster to evaluate on (:mod:`godiff.cluster`).
    ``trust_energy``: what the command line's ``--trust-energy`` allows (:mod:`godiff.trust`).
    """
    from godiff.bench.success import SuccessWatch
    from godiff.cluster import dask_executor
    from godiff.system import System

    system = System.from_dict(system_dict)
    reference, tolerance = _reference(system)
    run_dir = Path(out) / "runs" / method / f"seed-{seed}"
    resumed = (run_dir / "run.json").exists()
    if not resumed:
        RunDir.discard_unstarted(run_dir)  # a process killed while it created the run left it
    start = time.perf_counter()
    spec = get_method(method)
    extra = {"start": start_from} if spec.pretrained else {}
    watch = None
    if stop_at_success and spec.stoppable:
        watch = extra["stop"] = SuccessWatch(
            system, reference=reference, tolerance=tolerance, trust_energy=trust_energy
        )
    with dask_executor(dask) as executor:
        spec.run(
            system,
            seed=seed,
            budget=budget,
            out=run_dir,
            executor=executor,
            trust_energy=trust_energy,
            **extra,
            **(overrides or {}),
        )
    wall = time.perf_counter() - start
    return {
        "method": method,
        "seed": seed,
        "budget": budget,
        "settings": overrides or {},
        **judge(system, method, run_dir, budget, watch=watch, trust_energy=trust_energy),
        "stopped_at_success": watch is not None and watch.success is not None and watch.within is not None,
        "wall_seconds": wall,
        "resumed": resumed,
        "run_dir": str(run_dir),
        "versions": _versions(),
        "commit": source_commit(),
        "config": _resolved_config(run_dir),
        "start_model": _start_model(run_dir),
        "machine": _machine(),
        "threads": _torch_threads(),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def rejudge_one(system_dict: dict, record: dict, trust_energy: bool = False) -> dict:
    """``record`` with its success fields judged again under the current criterion (no rerun)."""
    from godiff.rundir import RunDir
    from godiff.system import System

    system = System.from_dict(system_dict)
    if not (Path(record["run_dir"]) / "run.json").exists():
        log.warning(
            "%s seed %s: run directory %s is gone; keeping the record as judged before",
            record["method"],
            record["seed"],
            record["run_dir"],
        )
        return record
    if record.get("judge") == criterion(system, trajectories=get_method(record["method"]).trajectories):
        rows = RunDir(Path(record["run_dir"])).rows()[: record["budget"]]  # only unrelaxed figures are missing
        return {**record, **_unrelaxed_figures(system, rows)}
    return {
        **record,
        **judge(system, record["method"], Path(record["run_dir"]), record["budget"], trust_energy=trust_energy),
    }


def run_benchmark(
    system,
    *,
    methods: list[str],
    seeds: int,
    budget: int,
    out,
    jobs: int = 1,
    progress=None,
    overrides: dict | None = None,
    start: str | None = None,
    stop_at_success: bool = False,
    beside=(),
    threads: int | None = None,
    dask: str | None = None,
    trust_energy: bool = False,
) -> list[dict]:
    """Run every (method, seed) not yet in ``out/results.json``; write results, table and plot.

    Args:
        system: a :class:`godiff.system.System`.
        methods: method names (see :data:`godiff.bench.methods.METHODS`).
        seeds: seeds 0..seeds-1.
        budget: energy evaluations per run.
        out: benchmark directory.
        jobs: runs in parallel.
        threads: torch and BLAS threads of each run (default: cores // jobs).
        progress: called with each finished record.
        overrides: search settings applied to every godiff method (e.g. a smaller ``samples``).
        start: the zoo model ``godiff-transfer`` starts from (default: the closest related one).
        stop_at_success: end godiff runs once both their success figures are in (saves the rest
            of the budget; see :func:`run_one`).
        dask: evaluate on the Dask cluster at this address (:mod:`godiff.cluster`; each run
            connects on its own, and ``local:N`` starts N workers for each run).
        beside: other benchmark directories of the same system whose methods the table and plot
            show too, at their own budgets (:func:`beside_records`).
        trust_energy: what the command line's ``--trust-energy`` allows (:mod:`godiff.trust`);
            refused here, before anything is written, when the system's energy spec needs it.
    """
    from godiff.trust import check_trusted

    check_trusted(system.energy, trust_energy=trust_energy)
    for m in methods:
        get_method(m)
    if dask is not None:
        from godiff.cluster import parse_address

        parse_address(dask)  # a bad address fails here, not in every run
    out = Path(out)
    beside = [
        os.path.relpath(Path(p).resolve(), out.resolve()) for p in beside
    ]  # a directory moves with its neighbours
    beside_records(beside, system.name, out)  # refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    header = {"system": system.to_dict(), "budget": budget, "methods": list(methods), "seeds": seeds, "beside": beside}
    records = _previous_records(results_path, budget, overrides or {})

    def keep(record: dict) -> None:  # each record on disk the moment its run ends
        nonlocal records
        records = [r for r in records if (r["method"], r["seed"]) != (record["method"], record["seed"])] + [record]
        atomic_write_text(results_path, json.dumps({**header, "records": records}, indent=1, sort_keys=True))
        if progress:
            progress(record)

    done = {(r["method"], r["seed"]) for r in records}
    todo = [(m, s) for m in methods for s in range(seeds) if (m, s) not in done]
    stale = _stale_records(system, records, set(product(methods, range(seeds))))
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    if todo or stale:
        with ProcessPoolExecutor(
            max_workers=jobs, initializer=limit_threads, initargs=(threads,), mp_context=worker_context()
        ) as pool:  # never fork a process with torch threads
            futures = [pool.submit(rejudge_one, system.to_dict(), r, trust_energy) for r in stale]
            futures += [
                pool.submit(
                    run_one,
                    system.to_dict(),
                    m,
                    s,
                    budget,
                    str(out),
                    overrides,
                    start,
                    stop_at_success,
                    dask,
                    trust_energy,
                )
                for m, s in todo
            ]
            try:
                for fut in as_completed(futures):
                    keep(fut.result())
            except BrokenProcessPool:
                raise BenchmarkInterruptedError(
                    f"a benchmark process ended abruptly (killed, or out of memory); the {len(records)} finished "
                    f"runs are in {results_path}, and the same command resumes the others"
                ) from None
    atomic_write_text(results_path, json.dumps({**header, "records": records}, indent=1, sort_keys=True))
    wanted = [r for r in records if r["method"] in methods and r["seed"] < seeds]
    atomic_write_text(out / "table.md", table_of_results(results_path))
    plot_success(
        wanted + beside_records(beside, system.name, out),
        out / "success_vs_evaluations.png",
        budget=budget,
        title=f"{system.name}, {budget} evaluations",
    )
    return wanted


def table_of_results(path) -> str:
    """The ``table.md`` of a benchmark's ``results.json``, from that file alone: its records of
    the methods and seeds its last invocation asked for (a directory written before the file
    kept them: every method, in the order of its records)."""
    from godiff.system import System

    data = json.loads(Path(path).read_text())
    system = System.from_dict(data["system"])
    wanted = _asked_records(data)
    beside = beside_records(data.get("beside") or [], system.name, Path(path).parent)
    methods = list(dict.fromkeys(r["method"] for r in wanted + beside))
    return table_markdown(summarize(wanted + beside, methods), system=system, budget=data["budget"])


def _asked_records(data: dict) -> list[dict]:
    """The records of a ``results.json`` of the methods and seeds its last invocation asked for."""
    records = data["records"]
    methods = data.get("methods") or list(dict.fromkeys(r["method"] for r in records))
    seeds = data.get("seeds")
    return sorted(
        (r for r in records if r["method"] in methods and (seeds is None or r["seed"] < seeds)),
        key=lambda r: methods.index(r["method"]),
    )


def beside_records(paths, system_name: str, base: Path) -> list[dict]:
    """The records of other benchmark directories of the same system (``paths`` relative to the
    benchmark directory ``base``), each method named with its budget (``agox-gofee (budget 150)``),
    shown beside a benchmark's own (``godiff bench --beside``): a method whose cost grows with its
    data may run at a smaller budget than the rest."""
    from godiff.errors import ConfigError
    from godiff.system import System

    shown = []
    for path in paths:
        results = Path(os.path.normpath(Path(base).resolve() / path)) / "results.json"  # base may not exist yet
        if not results.is_file():
            raise ConfigError(f"--beside {path}: no results.json there (not a benchmark directory)")
        data = json.loads(results.read_text())
        theirs = System.from_dict(data["system"]).name
        if theirs != system_name:
            raise ConfigError(f"--beside {path}: a benchmark of {theirs}, not {system_name}")
        shown += [{**r, "method": f"{r['method']} (budget {r['budget']})"} for r in _asked_records(data)]
    return shown


def _previous_records(results_path: Path, budget: int, settings: dict) -> list[dict]:
    """The records of an earlier invocation; refused when they were run at another budget (its
    runs/ would be resumed under the new one, and its records dropped) or with other settings
    (``--set``; the table would mix them). Records written before settings were recorded pass."""
    from godiff.errors import ConfigError

    if not results_path.exists():
        return []
    records = json.loads(results_path.read_text()).get("records", [])
    budgets = sorted({r.get("budget") for r in records} - {budget}, key=str)
    if budgets:
        raise ConfigError(
            f"{results_path.parent}: holds runs at budget {', '.join(map(str, budgets))}, not {budget}; "
            "give another --out for another budget"
        )
    other = next((r["settings"] for r in records if "settings" in r and r["settings"] != settings), None)
    if other is not None:
        raise ConfigError(
            f"{results_path.parent}: holds runs with settings {_settings_text(other)}, not "
            f"{_settings_text(settings)}; give another --out for other settings"
        )
    return records


def _settings_text(settings: dict) -> str:
    """``{"refine": 0.5}`` -> ``--set refine=0.5``; ``{}`` -> ``the defaults``."""
    return " ".join(f"--set {k}={json.dumps(v)}" for k, v in sorted(settings.items())) or "the defaults"


def _stale_records(system, records: list[dict], pairs: set) -> list[dict]:
    """Records of the asked (method, seed) pairs judged by another criterion than today's, or
    lacking the unrelaxed figures while their run directory is still there to judge again."""
    return [
        r
        for r in records
        if (r["method"], r["seed"]) in pairs
        and (
            r.get("judge") != criterion(system, trajectories=get_method(r["method"]).trajectories)
            or (_lacks_unrelaxed_figures(system, r) and (Path(r["run_dir"]) / "run.json").exists())
        )
    ]


def _lacks_unrelaxed_figures(system, record: dict) -> bool:
    return any(key not in record for key in _unrelaxed_thresholds(system))


def summarize(records: list[dict], methods: list[str]) -> list[dict]:
    """One row per method: successes, median and worst evaluations to success, counted (see
    :func:`_counted_over_seeds`) and relaxed, the unrelaxed medians, energies, time."""
    rows = []
    for m in methods:
        rs = sorted((r for r in records if r["method"] == m), key=lambda r: r["seed"])
        if not rs:
            continue
        hits = [r["evaluations_to_success"] for r in rs if r["evaluations_to_success"] is not None]
        rows.append(
            {
                "method": m,
                "seeds": len(rs),
                **_counted_over_seeds(rs),
                "successes": len(hits),
                "median_to_success": statistics.median(hits) if hits else None,
                "worst_to_success": max(hits) if hits else None,
                **_as_evaluated(rs),
                "median_to_basin": _median_over_seeds(rs, "evaluations_to_basin"),
                "median_best_energy": statistics.median(r["best_energy"] for r in rs if r["best_energy"] is not None),
                "median_wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
                "median_seconds_to_energy": _median_over_seeds(rs, "seconds_to_energy"),
                "median_network_share": _median_of_known(rs, "network_share"),
            }
        )
    return rows


def _as_evaluated(records: list[dict]) -> dict:
    """Seeds that evaluated an energy within tolerance of the minimum, the median over all seeds (a
    seed that never did counts as infinite) and the worst of those that did; None where a record
    lacks the figure (judged before it existed)."""
    if any("evaluations_to_energy" not in r for r in records):
        return {"successes_to_energy": None, "median_to_energy": None, "worst_to_energy": None}
    hits = [r["evaluations_to_energy"] for r in records if r["evaluations_to_energy"] is not None]
    return {
        "successes_to_energy": len(hits),
        "median_to_energy": _median_over_seeds(records, "evaluations_to_energy"),
        "worst_to_energy": max(hits) if hits else None,
    }


def _counted_over_seeds(records: list[dict]) -> dict:
    """Seeds whose counted figure (``evaluations_counted``) is within their budget, and its median
    and worst over those seeds; all None when a record lacks the figure (judged before it existed,
    its run directory gone)."""
    hits = _counted_hits(records)
    if hits is None:
        return {"successes_counted": None, "median_counted": None, "worst_counted": None}
    return {
        "successes_counted": len(hits),
        "median_counted": statistics.median(hits) if hits else None,
        "worst_counted": max(hits) if hits else None,
    }


def _counted_hits(records: list[dict]) -> list[int] | None:
    """The counted figures of the seeds that hold the minimum within their budget; None when a
    record lacks the figure."""
    counted = [_counted(r) for r in records]
    if any(c is _MISSING for c in counted):
        return None
    return [c for c, r in zip(counted, records) if c is not None and c <= r["budget"]]


_MISSING = object()


def _counted(record: dict):
    """A record's counted figure. A record judged before the figure existed has it all the same
    when its method's evaluations are relaxation steps and it holds the unrelaxed figure, which is
    then the counted one by definition (:meth:`godiff.bench.success.Success.counted`)."""
    if "evaluations_counted" in record:
        return record["evaluations_counted"]
    if (record.get("judge") or {}).get("trajectories") and "evaluations_to_energy" in record:
        return record["evaluations_to_energy"]
    return _MISSING


def _median_over_seeds(records: list[dict], key: str) -> float | None:
    """Median over seeds of the figure ``key`` (a seed that never got there counts as infinite);
    None when a record lacks the figure (judged before it existed) or most seeds never got there."""
    if any(key not in r for r in records):
        return None
    values = sorted(math.inf if r[key] is None else r[key] for r in records)
    median = statistics.median(values)
    return None if math.isinf(median) else median


def _median_of_known(records: list[dict], key: str) -> float | None:
    """Median of ``key`` over the records that hold a value for it; None if none does."""
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


#: The columns of every table, what the user is handed first: (heading, summary key, format).
COLUMNS = (
    ("as evaluated", "successes_to_energy", None),
    ("median", "median_to_energy", "{:.0f}"),
    ("worst", "worst_to_energy", "{:.0f}"),
    ("seconds to it, median", "median_seconds_to_energy", "{:.0f}"),
    ("network share", "median_network_share", "{:.0%}"),
    ("relaxation counted", "successes_counted", None),
    ("median", "median_counted", "{:.0f}"),
    ("worst", "worst_counted", "{:.0f}"),
    ("relaxed check (uncounted)", "successes", None),
    ("median", "median_to_success", "{:.0f}"),
)


def table_markdown(summary: list[dict], *, system=None, budget: int | None = None) -> str:
    """The summary as a markdown table (:data:`COLUMNS`): the first energy within tolerance as
    evaluated, the seconds to it and the network's share of them first, then the counted figure,
    the relaxed check, the basin figure where the system names a next minimum, the best energy and
    the run's whole wall time; ``-`` where a figure is missing (records judged before it existed),
    ``k/n`` for the seeds that got there."""
    title = f"{system.name}, budget {budget} evaluations" if system is not None else "benchmark"
    basin = system is not None and _next_energy(system) is not None
    unit = system.energy_unit() if system is not None else "eV"
    columns = COLUMNS + ((("below the next minimum, median", "median_to_basin", "{:.0f}"),) if basin else ())
    columns += (
        (f"median best energy ({unit})", "median_best_energy", "{:.3f}"),
        ("run wall (s), median", "median_wall_seconds", "{:.0f}"),
    )
    lines = [
        f"### {title}",
        "",
        "| method | " + " | ".join(heading for heading, _, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for r in summary:
        cells = [_cell(r, key, spec) for _, key, spec in columns]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, key: str, spec: str | None) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value}/{row['seeds']}" if spec is None else spec.format(value)


def success_curves(records: list[dict], *, budget: int) -> list[dict]:
    """The step curves of :func:`plot_success`: per method, the fraction of its seeds that hold the
    minimum against evaluations spent, with the relaxation counted (``evaluations_counted``, the
    tables' first figure) where its records have that figure, and under the relaxed check
    (``evaluations_to_success``, its relaxation uncounted) always. Each curve is a dict of
    ``method``, ``label``, ``xs``, ``ys`` (a step after each x) and ``counted``.

    Example:
        >>> records = [{"method": "m", "seed": s, "budget": 100, "evaluations_to_success": hit,
        ...             "evaluations_counted": paid} for s, hit, paid in [(0, 10, 30), (1, 20, None)]]
        >>> [(c["label"], c["xs"], c["ys"]) for c in success_curves(records, budget=100)]
        [('m, relaxation counted (1/2)', [0, 30, 100], [0, 0.5, 0.5]), ('m, relaxed check (2/2)', [0, 10, 20, 100], [0, 0.5, 1.0, 1.0])]
    """
    curves = []
    for m in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == m]
        end = min(budget, max(r.get("budget") or budget for r in rs))  # a method stops at its own budget
        paid = _counted_hits(rs)
        if paid is not None:
            curves.append(_step_curve(m, paid, len(rs), end, counted=True))
        relaxed = [r["evaluations_to_success"] for r in rs if r["evaluations_to_success"] is not None]
        curves.append(_step_curve(m, relaxed, len(rs), end, counted=False))
    return curves


def _step_curve(method: str, hits: list[int], seeds: int, end: int, *, counted: bool) -> dict:
    hits = sorted(hits)
    name = f"{method}, {'relaxation counted' if counted else 'relaxed check'}"
    return {
        "method": method,
        "label": f"{name} ({len(hits)}/{seeds})",
        "xs": [0] + hits + [end],
        "ys": [0] + [(i + 1) / seeds for i in range(len(hits))] + [len(hits) / seeds],
        "counted": counted,
    }


def plot_success(records: list[dict], path: Path, *, budget: int, title: str = "") -> Path:
    """Fraction of seeds succeeded against evaluations spent (:func:`success_curves`): per method
    a solid line with the relaxation counted and a dashed one, in the same colour, under the
    relaxed check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {}
    for curve in success_curves(records, budget=budget):
        colour = colours.setdefault(curve["method"], f"C{len(colours)}")
        ax.step(
            curve["xs"],
            curve["ys"],
            where="post",
            label=curve["label"],
            color=colour,
            linestyle="-" if curve["counted"] else "--",
            alpha=1.0 if curve["counted"] else 0.6,
        )
    ax.set_xlabel("energy evaluations")
    ax.set_ylabel("fraction of seeds succeeded")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, budget)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
