"""The methods a benchmark can run, each a function ``(system, seed, budget, out) -> run directory``.

Every method writes its evaluations, in the order they were made, to ``evaluations.db`` in its
own run directory, through the one counting :class:`godiff.energy.Evaluator`, so the harness
judges them all the same way (:mod:`godiff.bench.success`). A method that is interrupted is
resumed (godiff) or restarted (a method without state) by the harness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from godiff.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Method", "METHODS", "get_method"]


@dataclass(frozen=True)
class Method:
    """A benchmark method.

    Attributes:
        name: as given on the command line.
        description: one line for tables and help.
        run: ``run(system, *, seed, budget, out, executor=None, **overrides) -> None``; writes a
            run directory at ``out``, evaluating on ``executor`` (a Dask cluster's, say; default:
            this process); ``overrides`` are search settings (godiff methods only).
        trajectories: each ``iteration`` of its rows is one local relaxation (see
            :func:`godiff.bench.success.first_success`).
        pretrained: starts from a zoo model; its ``run`` takes ``start`` (a zoo reference or None).
        stoppable: its ``run`` takes ``stop`` (see :meth:`godiff.search.Search.run`), so a
            benchmark can end it at its first success.
    """

    name: str
    description: str
    run: Callable = field(repr=False)
    trajectories: bool = False
    pretrained: bool = False
    stoppable: bool = False


def _godiff(name: str, preset: str | None = None, **settings) -> Callable:
    def run(
        system, *, seed: int, budget: int, out: Path, stop=None, executor=None, trust_energy: bool = False, **overrides
    ) -> None:
        from godiff.search import Search, SearchConfig

        base = SearchConfig.preset(preset) if preset else SearchConfig()
        config = base.with_overrides(seed=seed, **{**settings, **overrides})
        limits = _limits(config, budget)
        if (Path(out) / "run.json").exists():
            search = Search.resume(out, executor=executor, trust_energy=trust_energy, **limits)
        else:
            search = Search(
                system,
                config=config,
                out=out,
                executor=executor,
                trust_energy=trust_energy,
                **limits,
                command=f"godiff bench (method {name}, seed {seed}, budget {budget})",
            )
        search.run(stop=stop)

    return run


def _limits(config, budget: int) -> dict:
    """The settings that hold a godiff search to ``budget`` evaluations: the budget itself for an
    adaptive batch, the iterations that fit it for a fixed one (as the paper counts)."""
    if config.adaptive_batch:
        return {"budget": budget}
    return {"iterations": max(1, budget // config.samples)}


def _godiff_transfer(
    system,
    *,
    seed: int,
    budget: int,
    out: Path,
    start=None,
    stop=None,
    executor=None,
    trust_energy: bool = False,
    **overrides,
) -> None:
    """The fine-tune search of :func:`godiff.zoo.transfer.start_search` from ``start`` or the
    closest related registered model, held to ``budget`` as a scratch search is; nothing is
    registered."""
    from godiff.search import Search
    from godiff.zoo.transfer import start_search, transfer_config

    limits = _limits(transfer_config().with_overrides(**overrides), budget)
    if (Path(out) / "run.json").exists():
        Search.resume(out, executor=executor, trust_energy=trust_energy, **limits).run(stop=stop)
        return
    search = start_search(
        system,
        start=start,
        out=out,
        seed=seed,
        executor=executor,
        trust_energy=trust_energy,
        **{**overrides, **limits},
        command=f"godiff bench (method godiff-transfer, seed {seed}, budget {budget})",
    )
    search.run(stop=stop)


METHODS: dict[str, Method] = {
    "godiff": Method(
        "godiff",
        "godiff's defaults without force-field guidance or relaxation in the learned field",
        _godiff("godiff", guidance=0.0, relax_steps=0),
        stoppable=True,
    ),
    "godiff-ffg": Method(
        "godiff-ffg",
        "godiff's defaults: adaptive batches and temperature, candidates relaxed in the learned model and acquired by a lower confidence bound",
        _godiff("godiff-ffg"),
        stoppable=True,
    ),
    "godiff-paper": Method(
        "godiff-paper",
        "the paper's fixed schedule (--preset paper: 20 x 128, exponential from 5 eV) with guidance and ranking by predicted energy",
        _godiff("godiff-paper", preset="paper"),
        stoppable=True,
    ),
    "godiff-transfer": Method(
        "godiff-transfer",
        "godiff-ffg fine-tuned from a zoo model (--from, else the closest related one)",
        _godiff_transfer,
        pretrained=True,
        stoppable=True,
    ),
}


def _classical(name: str, **kwargs) -> Callable:
    def run(
        system, *, seed: int, budget: int, out: Path, executor=None, trust_energy: bool = False, **overrides
    ) -> None:
        from godiff.bench import classical

        func = {"random": classical.run_random, "rss": classical.run_rss, "basin-hopping": classical.run_basin_hopping}[
            name
        ]
        func(system, seed=seed, budget=budget, out=out, executor=executor, trust_energy=trust_energy, **kwargs)

    return run


METHODS.update(
    {
        "random": Method(
            "random", "uniform placement in the box, one single point each (the floor)", _classical("random")
        ),
        "rss": Method(
            "rss",
            "random structure search: uniform placement, BFGS to 0.05 eV/Å, repeated",
            _classical("rss"),
            trajectories=True,
        ),
        "rss-cluster": Method(
            "rss-cluster",
            "random structure search with the mobile atoms grown as one cluster",
            _classical("rss", cluster=True),
            trajectories=True,
        ),
        "basin-hopping": Method(
            "basin-hopping",
            "basin hopping on the mobile atoms, Metropolis on relaxed energies (metals T 0.2 eV, hops up to 1 Å; LJ 0.8 epsilon, 0.37 sigma)",
            _classical("basin-hopping"),
            trajectories=True,
        ),
    }
)


def _agox(name: str) -> Callable:
    def run(
        system, *, seed: int, budget: int, out: Path, executor=None, trust_energy: bool = False, **overrides
    ) -> None:
        from godiff.bench import agox

        func = {
            "agox-random": agox.run_agox_random,
            "agox-basin-hopping": agox.run_agox_basin_hopping,
            "agox-gofee": agox.run_agox_gofee,
        }[name]
        func(system, seed=seed, budget=budget, out=out, executor=executor, trust_energy=trust_energy)

    return run


# External references, where the agox package imports (its own environment: see godiff.bench.agox).
METHODS.update(
    {
        "agox-random": Method(
            "agox-random",
            "AGOX's random structure search (its defaults): contiguous placement, BFGS to 0.05 eV/Å, at most 100 steps",
            _agox("agox-random"),
            trajectories=True,
        ),
        "agox-basin-hopping": Method(
            "agox-basin-hopping",
            "AGOX's basin hopping (its defaults): rattle, BFGS, Metropolis at T 0.25 eV",
            _agox("agox-basin-hopping"),
            trajectories=True,
        ),
        "agox-gofee": Method(
            "agox-gofee",
            "AGOX's GOFEE (its defaults): 10 candidates relaxed in a Gaussian-process LCB, the best evaluated plus one BFGS step",
            _agox("agox-gofee"),
            trajectories=True,
        ),
    }
)


def get_method(name: str) -> Method:
    """Look a method up by name; a one-line ConfigError lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"methods: unknown method '{name}' (known: {', '.join(METHODS)})") from None
