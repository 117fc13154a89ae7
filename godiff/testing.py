"""Test helpers for score networks, shipped so that users can check their own models.

:func:`assert_equivariant` is godiff's counterpart of e3nn's ``e3nn.util.test.assert_equivariant``
for a *whole atomic system*: a score network of godiff sees the mobile atoms, the frozen template
and the cell, so a symmetry of the physics moves all three together. The helper applies random
rotations (proper and, optionally, improper), random translations and random permutations of
identical mobile atoms to the whole system, rebuilds the network's graph from the transformed
template and cell (hence the ``graph_builder`` argument), and checks that every per-atom vector
output rotates with the system, is unchanged by a translation and is permuted with the atoms.

:func:`system_graph_builder` makes the ``graph_builder`` for godiff's own
:class:`~godiff.score.SystemGraph`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["assert_equivariant", "system_graph_builder"]


def system_graph_builder(
    *,
    mobile_numbers: Sequence[int],
    template_numbers: Sequence[int] = (),
    periodic: Sequence[bool] = (False, False, False),
    cutoff: float,
) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """A ``graph_builder`` for :func:`assert_equivariant` that builds a godiff ``SystemGraph``.

    Args:
        mobile_numbers: (n_mobile,) atomic numbers of the mobile atoms.
        template_numbers: (n_template,) atomic numbers of the template atoms (empty: a cluster).
        periodic: three booleans, the periodic directions of the cell (slab: ``(True, True, False)``).
        cutoff: the template range of the model, in Å (``model.config.cutoff``).

    Returns:
        ``build(template_positions, cell) -> SystemGraph`` with ``template_positions`` of shape
        (n_template, 3) and ``cell`` of shape (3, 3), both in Å.
    """
    from godiff.score import SystemGraph

    mobile = [int(z) for z in mobile_numbers]
    template = [int(z) for z in template_numbers]
    periodic = tuple(bool(p) for p in periodic)

    def build(template_positions: torch.Tensor, cell: torch.Tensor):
        return SystemGraph.build(
            mobile_numbers=mobile,
            template_numbers=template,
            template_positions=np.asarray(torch.as_tensor(template_positions).detach().cpu(), dtype=float).reshape(
                -1, 3
            ),
            cell=np.asarray(torch.as_tensor(cell).detach().cpu(), dtype=float),
            periodic=periodic,
            cutoff=cutoff,
        )

    return build


def _random_rotation(generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A Haar-random proper rotation from e3nn's ``o3.rand_matrix``, drawn reproducibly."""
    from godiff._e3nn import o3

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rotation = o3.rand_matrix()
    return rotation.to(dtype)


def _random_permutation(species: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random permutation that only exchanges atoms of equal species."""
    perm = torch.arange(species.shape[0])
    for z in torch.unique(species):
        idx = torch.nonzero(species == z).flatten()
        perm[idx] = idx[torch.randperm(idx.shape[0], generator=generator)]
    return perm


def _outputs(out: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    if isinstance(out, Mapping):
        return {name: out[name].detach() for name in names}
    return {name: getattr(out, name).detach() for name in names}


def assert_equivariant(
    model: Callable[..., Any],
    graph_builder: Callable[[torch.Tensor, torch.Tensor], Any],
    positions: torch.Tensor,
    sigma: torch.Tensor,
    *,
    cell: torch.Tensor,
    template_positions: torch.Tensor | None = None,
    species: Sequence[int] | torch.Tensor | None = None,
    outputs: Sequence[str] = ("eps", "forces"),
    invariants: Sequence[str] = ("energy",),
    n_trials: int = 3,
    atol: float = 1e-4,
    parity: bool = True,
    generator: torch.Generator | int | None = None,
) -> dict[str, float]:
    """Check that a score network is E(3)-equivariant and permutation-equivariant on a whole system.

    For each of ``n_trials`` random draws of every transformation, the *whole* system (mobile
    positions, template positions and cell) is transformed, the graph is rebuilt with
    ``graph_builder`` from the transformed template and cell, the model is run again, and its
    outputs are compared with the transformed reference outputs:

    * ``"rotation"``: ``x -> x R^T`` for a Haar-random proper rotation ``R`` (e3nn's
      ``o3.rand_matrix``); every output must become ``out R^T``.
    * ``"inversion"`` (when ``parity``): the same with the improper ``-R``; polar vectors (1o,
      such as the noise and the forces) must become ``-out R^T``.
    * ``"translation"``: ``x -> x + t`` for a random ``t`` (about 3 Å in each direction); the
      outputs must not change.
    * ``"permutation"``: a random reordering of mobile atoms of equal ``species``; the outputs
      must be reordered the same way (the graph is not rebuilt: its species list is unchanged).

    Args:
        model: called as ``model(positions, sigma, graph)``; returns an object (or mapping) whose
            ``outputs`` fields are per-mobile-atom polar vectors of shape (n_samples, n_mobile, 3).
            Dropout and other randomness must be off (call ``model.eval()`` first).
        graph_builder: ``graph_builder(template_positions, cell) -> graph`` with
            ``template_positions`` (n_template, 3) and ``cell`` (3, 3) in Å; see
            :func:`system_graph_builder`.
        positions: (n_samples, n_mobile, 3) mobile positions in Å.
        sigma: (n_samples,) noise levels in Å.
        cell: (3, 3) cell in Å, rows are the cell vectors.
        template_positions: (n_template, 3) in Å; ``None`` for a gas-phase cluster.
        species: (n_mobile,) labels (atomic numbers); only atoms with equal labels are permuted.
            ``None``: all mobile atoms are identical.
        outputs: names of the output fields to check as polar vectors.
        invariants: names of output fields that must not change under any of the
            transformations (per-sample scalars such as the energy head, which ranks the
            sampler's candidates); ``()`` for a model without one.
        n_trials: random draws of each transformation.
        atol: largest tolerated absolute error, in the units of the outputs.
        parity: also check improper rotations (turn off for a network that is only
            SO(3)-equivariant, e.g. one built on cross products).
        generator: a ``torch.Generator`` or an int seed for the random transformations.

    Returns:
        ``{transformation: max absolute error}`` over all trials and outputs.

    Raises:
        AssertionError: naming each transformation whose error exceeds ``atol``, with the error
            and the output field where it was largest.

    Example:
        >>> import torch
        >>> from godiff.score import ScoreConfig, ScoreModel
        >>> from godiff.testing import assert_equivariant, system_graph_builder
        >>> config = ScoreConfig(scalars=8, vectors=4, lmax=1, layers=1, cutoff=3.0,
        ...                      mobile_cutoff=4.0, radial_hidden=8, head_hidden=16)
        >>> model = ScoreModel(config)
        >>> build = system_graph_builder(mobile_numbers=[18] * 4, cutoff=config.cutoff)
        >>> errors = assert_equivariant(model, build, torch.randn(2, 4, 3), torch.tensor([0.1, 1.0]),
        ...                             cell=torch.eye(3) * 10.0, generator=0)
        >>> sorted(errors)
        ['inversion', 'permutation', 'rotation', 'translation']
        >>> max(errors.values()) < 1e-4
        True
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    positions, sigma, cell, template, labels = _system_tensors(positions, sigma, cell, template_positions, species)
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator or 0))
    fields = (*outputs, *invariants)

    def run(x, tpos, c):
        return _outputs(model(x, sigma, graph_builder(tpos, c)), fields)

    with _eval_mode(model), torch.no_grad():
        reference = run(positions, template, cell)
        worst: dict[str, tuple[float, str]] = {}

        def compare(name, got, moved):
            expected = {**moved, **{f: reference[f] for f in invariants}}  # invariants stay put
            for field in fields:
                err = float((got[field] - expected[field]).abs().max()) if got[field].numel() else 0.0
                if name not in worst or err > worst[name][0]:
                    worst[name] = (err, field)

        for _ in range(n_trials):
            rotation = _random_rotation(gen, positions.dtype)
            for name, r in [("rotation", rotation)] + ([("inversion", -rotation)] if parity else []):
                compare(
                    name, run(positions @ r.T, template @ r.T, cell @ r.T), {f: reference[f] @ r.T for f in outputs}
                )
            shift = 3.0 * torch.randn(3, generator=gen, dtype=positions.dtype)
            compare("translation", run(positions + shift, template + shift, cell), {f: reference[f] for f in outputs})
            perm = _random_permutation(labels, gen)
            compare("permutation", run(positions[:, perm], template, cell), {f: reference[f][:, perm] for f in outputs})

    failures = [
        f"{name}: max error {err:.3g} in '{field}' exceeds atol {atol:.3g}"
        for name, (err, field) in worst.items()
        if not err <= atol
    ]  # not <=: also catches nan
    if failures:
        raise AssertionError("not equivariant: " + "; ".join(failures))
    return {name: err for name, (err, _) in worst.items()}


def _system_tensors(positions, sigma, cell, template_positions, species):
    """The inputs of :func:`assert_equivariant` as tensors of one dtype, shapes checked."""
    positions = torch.as_tensor(positions)
    dtype = positions.dtype
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions must have shape (n_samples, n_mobile, 3), got {tuple(positions.shape)}")
    template = (
        torch.zeros(0, 3, dtype=dtype)
        if template_positions is None
        else torch.as_tensor(template_positions, dtype=dtype).reshape(-1, 3)
    )
    n_mobile = positions.shape[1]
    labels = (
        torch.zeros(n_mobile, dtype=torch.long)
        if species is None
        else torch.as_tensor(species, dtype=torch.long).reshape(-1)
    )
    if labels.shape[0] != n_mobile:
        raise ValueError(f"species has {labels.shape[0]} entries for {n_mobile} mobile atoms")
    return positions, torch.as_tensor(sigma, dtype=dtype), torch.as_tensor(cell, dtype=dtype), template, labels


@contextmanager
def _eval_mode(model):
    """``model`` in eval mode for the block, its training mode restored after."""
    training = getattr(model, "training", None)
    if training is not None:
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()
