"""Where energy evaluations run: this process, its own worker processes, or a Dask cluster.

The :class:`~godiff.energy.Evaluator` dispatches every calculation through one
:class:`concurrent.futures.Executor`; this module makes that executor from what a user types,
``--dask ADDRESS``:

* ``local:N``: a :class:`distributed.LocalCluster` of ``N`` worker processes with one thread
  each, started here and stopped when the run ends;
* ``tcp://HOST:PORT`` (or ``tls://``, ``ws://``...): an existing scheduler, for example one that
  ``dask-jobqueue`` started on a Slurm or PBS cluster (see docs/tutorials/clusters.md); left running at the end.

Every evaluation is one task, submitted with ``pure=False`` so that two identical structures are
two calculations (never one result counted twice). A worker that dies mid-task has the task
rescheduled by Dask on another worker (``distributed.scheduler.allowed-failures`` times, 3 by
default), after which the task fails with ``KilledWorker`` and the evaluator records it as a
failed evaluation: never lost, and counted once, when it was submitted. Results reach the run
directory in completion order, the moment each arrives (:meth:`Evaluator.evaluate`'s
``on_result``).

Needs the optional extra ``godiff[dask]``.

Example:
    >>> from godiff.cluster import parse_address
    >>> parse_address("local:8"), parse_address("tcp://head:8786")
    (('local', 8), ('scheduler', 'tcp://head:8786'))
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from godiff.errors import ConfigError, shown

__all__ = ["parse_address", "dask_executor"]

log = logging.getLogger(__name__)

_LOCAL = re.compile(r"^local:([1-9][0-9]{0,3})$")
_SCHEDULER = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+$")


def parse_address(address: str) -> tuple[str, int | str]:
    """``("local", n_workers)`` for ``local:N``, ``("scheduler", address)`` for a scheduler's
    address; anything else is a :class:`~godiff.errors.ConfigError` (exit 2)."""
    text = str(address).strip()
    match = _LOCAL.match(text)
    if match:
        return "local", int(match.group(1))
    if _SCHEDULER.match(text):
        return "scheduler", text
    raise ConfigError(
        f"--dask {shown(address)}: expected local:N (N worker processes here) "
        "or a scheduler address such as tcp://head:8786"
    )


def _client(address: str, timeout: float):
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError(
            f"--dask needs dask.distributed ({exc}); install it with: pip install 'godiff[dask]'"
        ) from None
    kind, where = parse_address(address)
    if kind == "local":
        cluster = LocalCluster(
            n_workers=where, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
        )
        return Client(cluster), cluster
    try:
        return Client(where, timeout=f"{timeout}s"), None
    except OSError as exc:
        raise ConfigError(f"--dask {where}: no scheduler answered ({exc})") from None


@contextlib.contextmanager
def dask_executor(address: str | None, *, timeout: float = 20.0) -> Iterator[object | None]:
    """A :class:`concurrent.futures.Executor` on the Dask cluster at ``address`` (see the module
    docstring), closed at the end of the block; ``None`` (and nothing started) for ``None``.
    A scheduler that does not answer within ``timeout`` seconds is a one-line error."""
    if address is None:
        yield None
        return
    client, cluster = _client(address, timeout)
    try:
        n = len(client.scheduler_info().get("workers", {}))
        log.info("evaluating on Dask at %s (%d workers now)", client.scheduler.address, n)
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
