"""How many threads godiff's numerical libraries use: torch and numpy's BLAS together.

Torch and OpenBLAS each start one thread per core by default. Two such processes on one machine
(two searches, a search beside a benchmark) oversubscribe the cores, and both slow far more than
twofold: on a 2-core machine a second ``godiff run`` beside a benchmark spent more than 5 minutes
in an iteration that takes 8 s on one thread, and a busy BLAS made one 237 x 237 ``eigh`` of a
BFGS step take 0.35-0.9 s rather than 0.01 s. Give each process its share of the cores.

Example:
    >>> limit_threads(1); import torch; torch.get_num_threads()
    1
"""

from __future__ import annotations

__all__ = ["limit_threads"]

_limits = []  # threadpoolctl contexts, kept alive for the life of the process


def limit_threads(n: int | None) -> None:
    """Run torch and numpy's BLAS on ``n`` threads from now on; ``None`` keeps their defaults."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    _limits.append(threadpool_limits(limits=n))
