"""What a Dask cluster buys: one iteration's evaluation phase, serial against N workers.

A stand-in for an expensive energy function, :class:`godiff.bench.slow.SlowEMT` (EMT that sleeps
``--seconds`` per calculation), evaluates one iteration of ``--samples`` structures of Pt7 on
Pt(111), once in this process and once on a LocalCluster of ``--workers`` processes on
127.0.0.1; then once more on the cluster with one worker killed (SIGKILL) mid-iteration. It
prints the evaluation phase's wall time of each (the run's own ``log.jsonl`` figure), the
speed-up, and the rows of the database after the kill (all samples, none twice). The workers
are started and have imported godiff's evaluator before the timed iterations (a run pays that
once, before its first evaluation; the figure is printed too).

Run: ``python3 -m godiff.bench.cluster_speed --workers 8 --samples 64 --seconds 1``
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def _search(out: Path, samples: int, seconds: float, executor=None):
    from godiff.bench.slow import SlowEMT
    from godiff.search import Search

    return Search(
        "pt7-pt111",
        out=out,
        calculator=SlowEMT(seconds=seconds),
        executor=executor,
        iterations=1,
        samples=samples,
        train_steps=1,
        steps=3,
        relax_steps=0,
        oversample=1,
    )


def _evaluation_seconds(result) -> float:
    return float(result.history[-1]["seconds"]["evaluation"])


def _samples(run_dir: Path) -> list[int]:
    from godiff.rundir import RunDir

    if not (run_dir / "evaluations.db").exists():
        return []
    return [int(r.sample) for r in RunDir.open(run_dir, lock=False).rows(0)]


def _kill_one_worker_when(run_dir: Path, pid: int, after_rows: int) -> threading.Thread:
    def kill():
        while len(_samples(run_dir)) < after_rows:
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    from distributed import LocalCluster

    from godiff.cluster import dask_executor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        serial = _evaluation_seconds(_search(tmp / "serial", args.samples, args.seconds).run())
        start = time.perf_counter()
        with (
            LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            dask_executor(cluster.scheduler_address) as executor,
        ):
            executor._client.run(importlib.import_module, "godiff.energy")
            executor._client.run(importlib.import_module, "godiff.bench.slow")
            ready = time.perf_counter() - start
            parallel = _evaluation_seconds(_search(tmp / "dask", args.samples, args.seconds, executor).run())
            pid = next(iter(executor._client.run(os.getpid).values()))
            killer = _kill_one_worker_when(tmp / "killed", pid, after_rows=args.workers)
            killed = _search(tmp / "killed", args.samples, args.seconds, executor).run()
            killer.join(timeout=10)
        rows = _samples(tmp / "killed")
    print(f"evaluation phase, {args.samples} samples at {args.seconds:g} s each (SlowEMT, Pt7/Pt(111)):")
    print(f"  serial, this process:           {serial:6.1f} s")
    print(f"  (starting the cluster and importing the evaluator on its workers: {ready:.1f} s, once per run)")
    print(f"  Dask LocalCluster, {args.workers} workers:   {parallel:6.1f} s  ({serial / parallel:.1f}x serial)")
    print(
        f"  the same, one worker killed:     {_evaluation_seconds(killed):6.1f} s; database rows {len(rows)}, "
        f"distinct samples {len(set(rows))}, most rows of one sample {max(Counter(rows).values())}"
    )


if __name__ == "__main__":
    main()
