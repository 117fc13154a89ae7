"""Evaluations on a real Dask cluster (a LocalCluster of worker processes on 127.0.0.1, started
and stopped here): a killed worker loses no evaluation and pays none twice, and a run killed
with tasks in flight resumes by evaluating exactly the samples that have no row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

distributed = pytest.importorskip("distributed")

from godiff.bench.slow import SlowEMT  # noqa: E402
from godiff.cluster import dask_executor, parse_address  # noqa: E402
from godiff.errors import ConfigError  # noqa: E402
from godiff.rundir import RunDir  # noqa: E402
from godiff.search import Search  # noqa: E402

SAMPLES = 16
TINY = dict(
    iterations=1, samples=SAMPLES, train_steps=1, steps=3, relax_steps=0, oversample=1, batch_size=4, force_batch=4
)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=4, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster


def _rows(run_dir):
    rows = RunDir.open(run_dir, lock=False).rows(0)
    return [int(r.sample) for r in rows]


def _search(out, executor):
    """A one-iteration search of one Pt adatom on a step, each EMT evaluation taking 0.5 s."""
    from godiff.score import ScoreConfig

    score = ScoreConfig(
        scalars=8, vectors=4, lmax=1, layers=1, cutoff=5.0, mobile_cutoff=6.0, radial_hidden=8, head_hidden=16
    )
    return Search("pt1-step", out=out, calculator=SlowEMT(seconds=0.5), executor=executor, score=score, **TINY)


def test_a_worker_killed_mid_iteration_loses_no_evaluation_and_pays_none_twice(cluster, tmp_path):
    with dask_executor(cluster.scheduler_address) as executor:
        search = _search(tmp_path / "run", executor)
        client = executor._client
        pids = list(client.run(os.getpid).values())

        def kill_one_worker():
            while not (tmp_path / "run" / "evaluations.db").exists() or len(_rows(tmp_path / "run")) < 2:
                time.sleep(0.05)
            os.kill(pids[0], signal.SIGKILL)  # mid-iteration, with its task running

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        result = search.run()
        killer.join(timeout=5)
    samples = _rows(result.run_dir)
    assert sorted(samples) == list(range(SAMPLES)) and max(Counter(samples).values()) == 1
    assert result.n_evaluations == SAMPLES


_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_cluster import _search
    from godiff.cluster import dask_executor
    with dask_executor({address!r}) as executor:
        _search({out!r}, executor).run()
""")


def test_a_run_killed_with_tasks_in_flight_resumes_with_exactly_the_missing_samples(cluster, tmp_path):
    out = tmp_path / "run"
    script = _RUN.format(tests=os.path.dirname(__file__), address=cluster.scheduler_address, out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "evaluations.db").exists() and len(_rows(out)) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)  # kill -9, tasks in flight on the cluster
    finally:
        proc.wait(timeout=30)
    before = _rows(out)
    assert 3 <= len(before) < SAMPLES and max(Counter(before).values()) == 1

    with dask_executor(cluster.scheduler_address) as executor:
        search = Search.resume(out, calculator=SlowEMT(seconds=0.5), executor=executor)
        evaluator = search._evaluator
        result = search.run()
    after = _rows(out)
    assert sorted(after) == list(range(SAMPLES)) and max(Counter(after).values()) == 1
    assert evaluator.n_calls == SAMPLES - len(before)  # exactly the samples without a row
    assert result.n_evaluations == SAMPLES


def test_addresses_are_checked_before_anything_starts():
    assert parse_address("local:3") == ("local", 3)
    for bad in ("local:0", "local:x", "head:8786", "tcp://", ""):
        with pytest.raises(ConfigError, match="--dask"):
            parse_address(bad)
    with pytest.raises(ConfigError, match="no scheduler answered"):
        with dask_executor("tcp://127.0.0.1:9", timeout=2):
            pass
