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

With ``--steps-sweep`` and a run directory it also measures sample quality against the number
of sampling steps: for each step count, the median and lowest energy of structures drawn from
that run's last checkpoint (each evaluation counted, none written to the run).
"""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["median_seconds", "forward_costs", "iteration_costs", "evaluation_costs", "steps_sweep"]


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
    buffer, memory = search.buffer, search.memory
    if len(buffer) == 0 or len(memory) == 0:
        x = search.sampler.finish(search.domain.sample_uniform((cfg.batch_size, search.system.n_mobile), gen)).double().numpy()
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
    return {"sampling_s": sample_s, "train_step_s": step_s, "training_s": step_s * cfg.train_steps}


def evaluation_costs(search, *, evaluations: int = 8) -> dict:
    """Median seconds of one single point (energy and forces) with the system's energy function."""
    from godiff.energy import Evaluator

    gen = torch.Generator().manual_seed(1)
    x = search.sampler.finish(search.domain.sample_uniform((evaluations + 1, search.system.n_mobile), gen))
    structures = [search.system.atoms(p) for p in x.double().numpy()]
    energy = search.calculator if search.calculator is not None else search.system.energy
    times = []
    with Evaluator(energy) as evaluator:
        for i, atoms in enumerate(structures):
            t = time.perf_counter()
            evaluator.single_point(atoms)
            if i:  # the first call loads the model
                times.append(time.perf_counter() - t)
    return {"evaluation_s": statistics.median(times), "evaluations": len(times)}


def steps_sweep(search, step_counts, *, samples: int = 64, seed: int = 0) -> list[dict]:
    """Energies of structures drawn with each number of sampling steps (same model, same seed)."""
    from dataclasses import replace

    from godiff.energy import Evaluator
    from godiff.sampler import Sampler

    energy = search.calculator if search.calculator is not None else search.system.energy
    out = []
    with Evaluator(energy) as evaluator:
        for steps in step_counts:
            sampler = Sampler(search.model, search.sde, search.domain, search.graph,
                              replace(search.sampler.config, steps=int(steps)),  # scaled to the system
                              min_distance=search.sampler.min_distance,
                              template_min_distance=search.sampler.template_min_distance)
            t = time.perf_counter()
            x = sampler.sample(samples, generator=torch.Generator().manual_seed(seed)).double().numpy()
            seconds = time.perf_counter() - t
            results = evaluator.evaluate([search.system.atoms(p) for p in x])
            energies = sorted(r.energy for r in results if r.ok)
            out.append({"steps": int(steps), "seconds": seconds, "median_energy": statistics.median(energies),
                        "lowest_energy": energies[0], "n": len(energies)})
    return out
