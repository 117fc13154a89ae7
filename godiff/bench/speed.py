"""Speed figures: what one forward pass, one sampling run and one training step cost.

``godiff bench-speed SYSTEM`` prints medians of several repeats of:

* a forward pass of the score network over ``samples`` structures with the template's features
  cached (as the sampler runs it) and recomputed (the plain path): the saving of treating the
  template as frozen context;
* drawing ``samples`` structures as a run's iteration does (:meth:`godiff.search.Search.draw`:
  ``oversample`` candidates each, all sampling steps, guidance and relaxation included, then the
  acquisition's pick);
* one training step, the search's own :class:`godiff.train.Trainer` step (denoising batch,
  force and energy batch, template context included);
* one energy evaluation with the system's own energy function (a single point with forces on
  structures drawn from the prior; the first call, which loads the model, is not counted).

Given a run directory, it also prints the network's seconds per evaluation of that run: the
candidate and the training step timed above, each times how many of them an evaluation of the run
took (:func:`spent_per_evaluation`: the candidates its checkpoint counts, the training steps of
its ``log.jsonl``): the adaptive search's batches, its polish (evaluations without a draw), the
rounds that duplicates add, the candidates ``network_share`` chose and the training stop all
change those counts, so the figure is the run's own, on this machine, now. With ``--set`` it
times the same run's counts under other sampler settings (:func:`time_with_settings`).

With ``--steps-sweep`` and a run directory it also measures sample quality against the number
of sampling steps: for each step count, the median and lowest energy of structures drawn from
that run's last checkpoint (each evaluation counted, none written to the run).

With ``--draws N`` and a run directory it measures what a draw hands the calculator under the
sampler settings given with ``--set`` (:func:`draw_quality`): N rounds of 16 drawn from the run's
last checkpoint as its iterations draw them (candidates, relaxation, acquisition), each evaluated;
a setting meant to make candidates cheaper is checked here before a benchmark.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time

import torch

__all__ = [
    "median_seconds",
    "forward_costs",
    "iteration_costs",
    "evaluation_costs",
    "spent_per_evaluation",
    "network_per_evaluation",
    "steps_sweep",
    "draw_quality",
    "time_with_settings",
]


def time_with_settings(search, settings: dict) -> None:
    """Make ``search`` draw and train with ``settings`` (``--set``; ``None`` values ignored), its
    sampler's lengths scaled to the system as a run scales them; nothing is written."""
    settings = {key: value for key, value in settings.items() if value is not None}
    if not settings:
        return
    search.config = search.config.with_settings(settings)
    search.sampler.config = search.config.sampler.for_length_scale(search.system.length_scale())
    search.oversample = search.config.sampler.oversample


def median_seconds(fn, *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def forward_costs(search, *, samples: int = 128, repeats: int = 5) -> dict:
    """Seconds per forward pass with the template context cached and recomputed."""
    model, graph = search.model, search.graph
    x = search.domain.sample_uniform((samples, search.system.n_mobile), torch.Generator().manual_seed(0))
    sigma = torch.full((samples,), 0.5)
    with torch.no_grad():
        context = model.template_context(graph)
        cached = median_seconds(lambda: model(x, sigma, graph, context), repeats=repeats)
        plain = median_seconds(lambda: model(x, sigma, graph, None), repeats=repeats)
        ctx = median_seconds(lambda: model.template_context(graph), repeats=repeats)
    return {"forward_cached_s": cached, "forward_plain_s": plain, "template_context_s": ctx}


def iteration_costs(search, *, samples: int = 128, repeats: int = 3) -> dict:
    """Seconds to draw ``samples`` structures, per training step, and an estimated iteration
    (``train_steps`` steps: under the agreement stop, the most an iteration takes).

    A training step is the search's own :meth:`godiff.train.Trainer.step` (the same losses,
    batch sizes and template context as a run), timed on copies of the model and optimizer so
    the search's weights are left as they were; its data are the run's buffer and force memory,
    or prior draws for a search that has none yet.
    """
    import copy

    import numpy as np

    from godiff.buffer import ForceMemory, ReplayBuffer
    from godiff.train import Trainer, TrainingData

    cfg = search.config
    gen = torch.Generator().manual_seed(0)
    sample_s = median_seconds(lambda: search.draw(1, 0, samples), repeats=repeats)
    candidates = cfg.sampler.candidate_count(samples, search.oversample)
    buffer, memory = search.buffer, search.memory
    if len(buffer) == 0 or len(memory) == 0:
        x = (
            search.sampler.finish(search.domain.sample_uniform((cfg.batch_size, search.system.n_mobile), gen))
            .double()
            .numpy()
        )
        buffer, memory = ReplayBuffer(cfg.buffer_size), ForceMemory(search.system.n_mobile)
        energies = np.linspace(0.0, 1.0, len(x))
        buffer.add(x, energies, np.arange(len(x)))
        memory.add(x, np.zeros_like(x), energies)
    model = copy.deepcopy(search.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    optimizer.load_state_dict(copy.deepcopy(search.optimizer.state_dict()))
    trainer = Trainer(model, optimizer, search.sampler, cfg)
    data = TrainingData.at_temperature(buffer, memory, search.temperature or cfg.temperature_end)
    model.train()
    step_s = median_seconds(lambda: trainer.step(data, gen), repeats=max(5, repeats))
    return {
        "sampling_s": sample_s,
        "candidate_s": sample_s / candidates,
        "train_step_s": step_s,
        "training_s": step_s * cfg.train_steps,
    }


def spent_per_evaluation(log: list[dict], *, train_steps: int = 0, cost=None) -> dict | None:
    """Structures drawn by the network and training steps per evaluation of a run, from its log,
    and with ``cost`` (the run's :class:`godiff.cost.CostMeter`, in its checkpoints since 0.2.0)
    the candidates it drew per evaluation (``None`` without).

    Iteration 0 places its batch from the prior (no draw); a polished evaluation is a line
    search, not a draw. ``train_steps``: the steps of an iteration whose record does not say
    (logs written before the training stop was adaptive, when every iteration took the run's
    fixed ``train_steps``). None for a run without a finished iteration.

    Example:
        >>> log = [{"iteration": 0, "samples": 16, "polished": 0, "n_evaluations": 16, "train_steps": 60},
        ...        {"iteration": 1, "samples": 19, "polished": 3, "n_evaluations": 35, "train_steps": 50}]
        >>> spent = spent_per_evaluation(log)
        >>> round(spent["draws"], 4), round(spent["train_steps"], 4)   # 16 / 35 and 110 / 35
        (0.4571, 3.1429)
        >>> spent_per_evaluation([{"iteration": 0, "samples": 128, "n_evaluations": 128}], train_steps=200)["train_steps"]
        1.5625
    """
    iterations = [r for r in log if "iteration" in r]
    evaluations = max((int(r.get("n_evaluations") or 0) for r in iterations), default=0)
    if not evaluations:
        return None
    draws = sum(int(r.get("samples") or 0) - int(r.get("polished") or 0) for r in iterations if r["iteration"] > 0)
    steps = sum(int(r.get("train_steps", train_steps) or 0) for r in iterations)
    candidates = cost.candidates / cost.evaluations if cost is not None and cost.evaluations else None
    return {
        "draws": draws / evaluations,
        "candidates": candidates,
        "train_steps": steps / evaluations,
        "evaluations": evaluations,
    }


def network_per_evaluation(costs: dict, *, samples: int, spent: dict) -> dict:
    """Seconds of sampling and training per evaluation: :func:`iteration_costs`' candidate (or,
    for a run that did not count its candidates, its draw of ``samples``) and training step, times
    the counts of :func:`spent_per_evaluation`.

    Example:
        >>> costs = {"sampling_s": 8.0, "candidate_s": 0.015625, "train_step_s": 0.05}
        >>> network_per_evaluation(costs, samples=16, spent={"draws": 0.8, "candidates": 32.0, "train_steps": 2.0})
        {'sampling_s': 0.5, 'training_s': 0.1, 'network_s': 0.6}
        >>> network_per_evaluation(costs, samples=16, spent={"draws": 0.8, "candidates": None, "train_steps": 2.0})
        {'sampling_s': 0.4, 'training_s': 0.1, 'network_s': 0.5}
    """
    if spent.get("candidates") is not None:
        sampling = costs["candidate_s"] * spent["candidates"]
    else:
        sampling = costs["sampling_s"] / samples * spent["draws"]
    training = costs["train_step_s"] * spent["train_steps"]
    return {"sampling_s": sampling, "training_s": training, "network_s": sampling + training}


def evaluation_costs(search, *, evaluations: int = 8) -> dict:
    """Median seconds of one single point (energy and forces) with the system's energy function."""
    gen = torch.Generator().manual_seed(1)
    x = search.sampler.finish(search.domain.sample_uniform((evaluations + 1, search.system.n_mobile), gen))
    structures = [search.system.atoms(p) for p in x.double().numpy()]
    times = []
    with _scratch_evaluator(search) as evaluator:
        for i, atoms in enumerate(structures):
            t = time.perf_counter()
            evaluator.single_point(atoms)
            if i:  # the first call loads the model
                times.append(time.perf_counter() - t)
    return {"evaluation_s": statistics.median(times), "evaluations": len(times)}


def steps_sweep(search, step_counts, *, samples: int = 64, seed: int = 0) -> list[dict]:
    """Energies of structures drawn with each number of sampling steps (same model, same seed)."""
    from dataclasses import replace

    from godiff.sampler import Sampler

    out = []
    with _scratch_evaluator(search) as evaluator:
        for steps in step_counts:
            sampler = Sampler(
                search.model,
                search.sde,
                search.domain,
                search.graph,
                replace(search.sampler.config, steps=int(steps)),  # scaled to the system
                min_distance=search.sampler.min_distance,
                template_min_distance=search.sampler.template_min_distance,
            )
            t = time.perf_counter()
            x = sampler.sample(samples, generator=torch.Generator().manual_seed(seed)).double().numpy()
            seconds = time.perf_counter() - t
            results = evaluator.evaluate([search.system.atoms(p) for p in x])
            energies = sorted(r.energy for r in results if r.ok)
            out.append(
                {
                    "steps": int(steps),
                    "seconds": seconds,
                    "median_energy": statistics.median(energies),
                    "lowest_energy": energies[0],
                    "n": len(energies),
                }
            )
    return out


def draw_quality(search, rounds: int, *, size: int = 16) -> dict:
    """Energies of ``rounds`` draws of ``size`` structures from ``search`` as its iterations draw
    them (:meth:`godiff.search.Search.draw`, at ``search.oversample`` candidates each, from random
    streams no run uses), each evaluated with the system's energy function; nothing is written.

    Returns the median energy, the mean of each round's lowest, the lowest, the median seconds of
    a draw and how many were evaluated."""
    energies, lowest, seconds = [], [], []
    with _scratch_evaluator(search) as evaluator:
        for r in range(rounds):
            t = time.perf_counter()
            x = search.draw(1_000_000 + r, 0, size)
            seconds.append(time.perf_counter() - t)
            found = [e.energy for e in evaluator.evaluate([search.system.atoms(p) for p in x]) if e.ok]
            energies += found
            lowest.append(min(found))
    return {
        "median_energy": statistics.median(energies),
        "mean_round_lowest": statistics.mean(lowest),
        "lowest_energy": min(energies),
        "draw_s": statistics.median(seconds),
        "n": len(energies),
    }


@contextlib.contextmanager
def _scratch_evaluator(search):
    """The search's energy function in a throw-away scratch directory: evaluations that measure
    and are written nowhere."""
    from godiff.energy import Evaluator

    energy = search.calculator if search.calculator is not None else search.system.energy
    with (
        tempfile.TemporaryDirectory(prefix="godiff-speed-") as scratch,
        Evaluator(energy, trust_energy=search.trust_energy, scratch=scratch) as evaluator,
    ):
        yield evaluator
