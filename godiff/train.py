"""The training step: one optimizer step of the score network on a buffer at a temperature.

One step draws ``batch_size`` buffer structures by their Boltzmann weights, noises them with the
SDE at uniform times and asks the denoising loss of the score head; beside them ``force_batch``
evaluated structures at ``sigma_min`` give the force loss and the energy-head loss. The total,
``dsm + force_weight * force + energy_weight * energy``, is clipped to ``grad_clip`` and stepped.

The search trains through :class:`Trainer` and ``godiff bench-speed`` times the same
:meth:`Trainer.step`, so the speed figure is what a run spends. Random numbers come only from
the generator passed in, in a fixed order (buffer indices, times, noise, force indices), so a
resumed run trains exactly as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from godiff.loss import boltzmann_weights, draw_weighted, dsm_loss, energy_loss, force_loss

__all__ = ["TrainingData", "StepLosses", "Trainer"]


@dataclass(frozen=True)
class TrainingData:
    """What one iteration trains on.

    Attributes:
        positions: (n, n_mobile, 3) buffer structures, Å.
        weights: (n,) their Boltzmann weights at the iteration's temperature.
        force_positions: (m, n_mobile, 3) evaluated structures with forces, Å.
        forces: (m, n_mobile, 3) their forces, eV/Å.
        energies: (m,) their energies, eV.
        energy_ceiling: energies above it are capped in the energy loss (the median).
    """

    positions: torch.Tensor
    weights: torch.Tensor
    force_positions: torch.Tensor
    forces: torch.Tensor
    energies: torch.Tensor
    energy_ceiling: float

    @classmethod
    def at_temperature(cls, buffer, memory, temperature: float) -> "TrainingData":
        """The buffer weighted at ``temperature`` and the force memory (see :mod:`godiff.buffer`)."""
        return cls(
            positions=torch.as_tensor(buffer.positions, dtype=torch.float32),
            weights=boltzmann_weights(torch.as_tensor(buffer.energies), temperature),
            force_positions=torch.as_tensor(memory.positions, dtype=torch.float32),
            forces=torch.as_tensor(memory.forces, dtype=torch.float32),
            energies=torch.as_tensor(memory.energies, dtype=torch.float32),
            energy_ceiling=float(np.median(memory.energies)),
        )


@dataclass(frozen=True)
class StepLosses:
    """The losses of one step (or their means over several)."""

    dsm: float
    force: float
    energy: float

    def as_log(self) -> dict:
        """The names ``log.jsonl`` uses."""
        return {"loss_dsm": self.dsm, "loss_force": self.force, "loss_energy": self.energy}


class Trainer:
    """Optimizer steps of a score model over one system's SDE, box and graph.

    Args:
        model: the :class:`godiff.score.ScoreModel`; its ``force_scale`` and ``energy_scale``
            (set from the first data) normalise the force and energy losses.
        optimizer: its optimizer.
        sampler: the :class:`godiff.sampler.Sampler` of the system (its SDE, domain and graph).
        config: the settings (:class:`godiff.search.SearchConfig`: ``batch_size``,
            ``force_batch``, ``force_weight``, ``energy_weight``, ``force_clip``, ``grad_clip``).
    """

    def __init__(self, model, optimizer, sampler, config):
        self.model, self.optimizer, self.config = model, optimizer, config
        self.sde, self.domain, self.graph = sampler.sde, sampler.domain, sampler.graph
        self.device = sampler.device

    def step(self, data: TrainingData, generator: torch.Generator) -> StepLosses:
        """One optimizer step; returns its losses."""
        cfg, model = self.config, self.model
        idx = draw_weighted(data.weights, cfg.batch_size, generator)
        t = torch.rand(cfg.batch_size, generator=generator)
        xt, sigma, eps = self.sde.perturb(data.positions[idx], t, self.domain, generator)
        fidx = torch.randint(len(data.force_positions), (cfg.force_batch,), generator=generator)
        # every draw above is made on the CPU in a fixed order; only the network's work moves
        dev = self.device
        positions = torch.cat([xt, data.force_positions[fidx]]).to(dev)
        sigmas = torch.cat([sigma, torch.full((cfg.force_batch,), self.sde.sigma_min)]).to(dev)
        out = model(positions, sigmas, self.graph, model.template_context(self.graph))
        l_dsm = dsm_loss(out.eps[: cfg.batch_size], eps.to(dev))
        l_force = force_loss(out.forces[cfg.batch_size:], data.forces[fidx].to(dev), float(model.force_scale), cfg.force_clip)
        l_energy = energy_loss(out.energy[cfg.batch_size:], data.energies[fidx].to(dev), float(model.energy_scale),
                               data.energy_ceiling)
        loss = l_dsm + cfg.force_weight * l_force + cfg.energy_weight * l_energy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return StepLosses(l_dsm.item(), l_force.item(), l_energy.item())

    def train(self, data: TrainingData, steps: int, generator: torch.Generator) -> StepLosses:
        """``steps`` steps (at least one); returns the mean losses."""
        self.model.train()
        totals = np.zeros(3)
        for _ in range(steps):
            losses = self.step(data, generator)
            totals += (losses.dsm, losses.force, losses.energy)
        return StepLosses(*(float(v) / steps for v in totals))
