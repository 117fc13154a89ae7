"""Boltzmann-weighted denoising score matching and the force-head loss.

The buffer stands in for samples of the Boltzmann distribution pi_T(x) ~ exp(-E(x)/T), each
structure reweighted by w_i = exp(-E_i/T) / sum_j exp(-E_j/T) (computed as a softmax of -E/T,
i.e. with the log-sum-exp shift, so energies of any magnitude and T down to 1e-3 eV are safe).

The training batch is drawn from the buffer with probabilities w_i (with replacement), and the
denoising loss is the plain mean over the batch: in expectation this equals the weighted sum of
the paper's loss, with lower variance than multiplying each term by w_i when a few structures
carry most of the weight (which they do at low T). The network predicts epsilon, so the
lambda(t) = sigma^2 weighting of the score-matching loss becomes ``||eps_hat - eps||^2``.
"""

from __future__ import annotations

import torch

__all__ = ["boltzmann_weights", "draw_weighted", "dsm_loss", "force_loss", "energy_loss"]


def boltzmann_weights(energies: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised Boltzmann weights.

    Args:
        energies: (n,) in eV.
        temperature: in eV (k_B T), > 0.

    Returns:
        (n,) weights summing to one.

    Example:
        >>> w = boltzmann_weights(torch.tensor([0.0, 0.1]), 0.1)
        >>> [round(float(v), 4) for v in w]
        [0.7311, 0.2689]
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.softmax(-energies.double() / temperature, dim=0).to(energies.dtype)


def draw_weighted(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``k`` indices with probabilities ``weights`` (with replacement)."""
    return torch.multinomial(weights.double(), k, replacement=True, generator=generator)


def dsm_loss(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted noise, averaged over samples, atoms and axes x 3."""
    return ((eps_hat - eps) ** 2).sum(-1).mean()


def force_loss(predicted: torch.Tensor, target: torch.Tensor, scale: float, clip: float) -> torch.Tensor:
    """Mean squared error of forces in units of ``scale`` (eV/Å); each target atom's force is
    clipped to norm ``clip`` eV/Å first so that a single near-collision does not dominate."""
    norm = target.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    clipped = target * torch.clamp(clip / norm, max=1.0)
    return (((predicted - clipped) / scale) ** 2).sum(-1).mean()


def energy_loss(predicted: torch.Tensor, target: torch.Tensor, scale: float, ceiling: float) -> torch.Tensor:
    """Mean squared error of total energies in units of ``scale`` (eV), targets capped at ``ceiling``.

    Only the low-energy end matters for ranking candidates; capping the targets keeps the
    thousands of eV of a near-collision from swamping the differences that matter, and the
    prediction is only pulled down to the ceiling, never up to it, when both exceed it.
    """
    capped = target.clamp(max=ceiling)
    over = (predicted > ceiling) & (target >= ceiling)
    err = torch.where(over, torch.zeros_like(predicted), (predicted - capped) / scale)
    return (err**2).mean()
