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

import logging
from dataclasses import dataclass

import numpy as np
import torch

from godiff.loss import boltzmann_weights, draw_weighted, dsm_loss, energy_loss, force_loss

log = logging.getLogger(__name__)

__all__ = ["TrainingData", "StepLosses", "Trainer", "AgreementStop", "set_output_scales", "anchor_energy_shift"]


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
    """The losses of one step (or their means over several), and how many steps were taken.

    ``agreement``: of one step measured for :class:`AgreementStop`, the cosine between its
    gradient and the optimizer's momentum before it moved."""

    dsm: float
    force: float
    energy: float
    steps: int = 1
    agreement: float | None = None

    def as_log(self) -> dict:
        """The names ``log.jsonl`` uses."""
        return {"loss_dsm": self.dsm, "loss_force": self.force, "loss_energy": self.energy, "train_steps": self.steps}


class AgreementStop:
    """Ends an iteration's training once its gradients stop agreeing with the optimizer's momentum.

    After each step the cosine between the gradient and Adam's first moment (``exp_avg``, the
    direction the optimizer has been moving) is taken. While the loss still has a direction to
    go, successive gradients agree and the cosine is high; once the model has learned what the
    new data teach, gradients are noise around a minimum and the cosine falls. Training stops
    when the cosine has stayed below ``fraction`` of its running peak for ``patience`` steps,
    and never before ``min_steps`` (the rule of the authors' ``MomentumConsensusStop``).

    Example:
        >>> stop = AgreementStop(min_steps=2, patience=2, fraction=0.9)
        >>> [stop.update(c) for c in (0.5, 1.0, 0.8, 0.95, 0.5, 0.4)]
        [False, False, False, False, False, True]
    """

    def __init__(self, *, min_steps: int = 50, patience: int = 20, fraction: float = 0.9):
        self.min_steps, self.patience, self.fraction = int(min_steps), int(patience), float(fraction)
        self.steps, self.peak, self.below = 0, -1.0, 0

    def update(self, cosine: float) -> bool:
        """Take one step's cosine; True when training should stop."""
        self.steps += 1
        self.peak = max(self.peak, float(cosine))
        self.below = self.below + 1 if cosine < self.fraction * self.peak else 0
        return self.steps >= self.min_steps and self.below >= self.patience


def momentum_agreement(optimizer) -> float:
    """Cosine between the current gradients and the optimizer's ``exp_avg`` (1 before it has any)."""
    dot = g2 = m2 = 0.0
    for group in optimizer.param_groups:
        for p in group["params"]:
            m = optimizer.state.get(p, {}).get("exp_avg")
            if p.grad is None or m is None:
                continue
            dot += float((p.grad * m).sum())
            g2 += float(p.grad.pow(2).sum())
            m2 += float(m.pow(2).sum())
    if g2 == 0.0 or m2 == 0.0:
        return 1.0
    return dot / (g2 * m2) ** 0.5


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

    def step(self, data: TrainingData, generator: torch.Generator, *, agreement: bool = False) -> StepLosses:
        """One optimizer step; returns its losses (and, with ``agreement``, its
        :func:`momentum_agreement`)."""
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
        l_force = force_loss(
            out.forces[cfg.batch_size :], data.forces[fidx].to(dev), float(model.force_scale), cfg.force_clip
        )
        l_energy = energy_loss(
            out.energy[cfg.batch_size :], data.energies[fidx].to(dev), float(model.energy_scale), data.energy_ceiling
        )
        loss = l_dsm + cfg.force_weight * l_force + cfg.energy_weight * l_energy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        cosine = momentum_agreement(self.optimizer) if agreement else None
        self.optimizer.step()
        return StepLosses(l_dsm.item(), l_force.item(), l_energy.item(), agreement=cosine)

    def train(
        self, data: TrainingData, steps: int, generator: torch.Generator, stop: AgreementStop | None = None
    ) -> StepLosses:
        """At most ``steps`` steps (at least one), fewer when ``stop`` says so; returns the mean
        losses and the steps taken."""
        self.model.train()
        totals = np.zeros(3)
        taken = 0
        for _ in range(steps):
            losses = self.step(data, generator, agreement=stop is not None)
            totals += (losses.dsm, losses.force, losses.energy)
            taken += 1
            if stop is not None and stop.update(losses.agreement):
                break
        return StepLosses(*(float(v) / taken for v in totals), steps=taken)


def set_output_scales(model, memory, *, force_clip: float) -> None:
    """Set the output scales of ``model``'s force and energy heads once, from a search's first data.

    Forces: RMS of the force components, each force clipped to ``force_clip``. Energies: shift at
    the median, scale the standard deviation of the energies capped at that median (the low end
    that ranking needs). A search sets them once, so the meaning of the outputs never changes mid-run.
    """
    f = torch.as_tensor(memory.forces, dtype=torch.float32)
    norm = f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    f = f * torch.clamp(force_clip / norm, max=1.0)
    model.force_scale.fill_(float(f.pow(2).mean().sqrt().clamp_min(1e-2)))
    e = np.asarray(memory.energies, dtype=float)
    median = float(np.median(e))
    model.energy_shift.fill_(median)
    model.energy_scale.fill_(float(max(np.minimum(e, median).std(), 1e-2)))


def anchor_energy_shift(model, sampler, memory) -> float:
    """Move a pretrained ``model``'s energy shift onto a new energy function, from its first data;
    returns the shift added.

    The shift is an additive reference that belongs to the energy function (and the atom count)
    the model was trained on: a Pt island model trained under EMT predicts about +46 eV where
    CHGNet gives -446 eV, and an energy loss of that size (1,000 in units of the scale, against
    0.01 from scratch) overwrote what the model knew in its first training steps. Adding the
    median residual on the first evaluated structures removes the offset and keeps every relative
    prediction, so the ranking is unchanged.
    """
    with torch.no_grad():
        positions = torch.as_tensor(memory.positions, dtype=torch.float32)
        predicted = sampler.predicted_energy(positions).double().numpy()
    residual = float(np.median(np.asarray(memory.energies, dtype=float) - predicted))
    model.energy_shift += residual
    log.info("energy shift of the pretrained model moved by %+.4f eV onto this energy function", residual)
    return residual
