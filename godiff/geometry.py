"""Periodic geometry as torch tensors: wrapping, minimum images and the edges of the score graph.

Everything here is general in the cell: any 3x3 cell with any subset of periodic directions
(a slab is periodic along a and b, a cluster along none), so rotating the whole system
(positions and cell) rotates every edge vector. The slab convention (a, b in the xy plane,
the box's z-range along c) belongs to :mod:`godiff.sde`, not here.

Three families of edges feed the score network (:mod:`godiff.score`):

* template -> template (``tt``): the frozen template's own graph, with periodic images. It never
  changes during a search, so it is built once per system with :func:`template_self_edges`.
* template -> mobile (``tm``): every template atom, or periodic image of one, within ``cutoff``
  of a mobile atom. The images that can ever be in range of a wrapped mobile atom are listed once
  (:class:`TemplateImages`); each forward pass only measures distances to that fixed list.
* mobile -> mobile (``mm``): every ordered pair of mobile atoms of the same sample, and every
  periodic image, within ``mobile_cutoff``. For a few mobile atoms this range is long enough to
  let scattered atoms feel each other and gather; for many it is short, so the number of
  neighbours stays bounded (:meth:`godiff.score.ScoreConfig.for_length_scale`). The pairs are
  found without a gradient and only the kept pairs' vectors are built with one, so the largest
  temporary is a bounded chunk of lattice shifts' displacements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Edges",
    "TemplateImages",
    "wrap",
    "minimum_image",
    "lattice_shifts",
    "template_self_edges",
    "template_images",
    "template_mobile_edges",
    "mobile_mobile_edges",
]


@dataclass(frozen=True)
class Edges:
    """A directed edge list: messages flow from ``sender`` to ``receiver``.

    Attributes:
        sender: (n_edges,) int64 index of the sending node (its meaning depends on the family).
        receiver: (n_edges,) int64 index of the receiving node.
        vectors: (n_edges, 3) sender position minus receiver position, in Å.
    """

    sender: torch.Tensor
    receiver: torch.Tensor
    vectors: torch.Tensor

    def __len__(self) -> int:
        return int(self.sender.shape[0])


def _periodic_mask(periodic, device=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(periodic, dtype=bool), device=device)


def _shift_fractional(vectors: torch.Tensor, cell: torch.Tensor, periodic, to_integer) -> torch.Tensor:
    """Subtract ``to_integer(frac)`` from the fractional coordinates along periodic directions."""
    mask = _periodic_mask(periodic, vectors.device)
    if not bool(mask.any()):
        return vectors
    frac = vectors @ torch.linalg.inv(cell)
    frac = torch.where(mask, frac - to_integer(frac), frac)
    return frac @ cell


def wrap(positions: torch.Tensor, cell: torch.Tensor, periodic) -> torch.Tensor:
    """Wrap positions into the cell along its periodic directions.

    Args:
        positions: (..., 3) in Å.
        cell: (3, 3) rows are the cell vectors, in Å.
        periodic: three booleans.

    Returns:
        (..., 3) positions whose fractional coordinates lie in [0, 1) along periodic directions.
    """
    return _shift_fractional(positions, cell, periodic, torch.floor)


def minimum_image(vectors: torch.Tensor, cell: torch.Tensor, periodic) -> torch.Tensor:
    """Shift displacement vectors to their minimum image (fractional components in [-0.5, 0.5)).

    Exact for orthogonal cells; for oblique cells it is the image nearest in fractional
    coordinates, which is the nearest in space whenever the vector is shorter than half the
    smallest cell height.
    """
    return _shift_fractional(vectors, cell, periodic, torch.round)


def _cell_heights(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell along each lattice direction, in Å."""
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


def lattice_shifts(cell: np.ndarray, periodic, cutoff: float) -> np.ndarray:
    """Integer lattice translations that can bring a point of the cell within ``cutoff`` of another.

    Returns:
        (n_shifts, 3) int array, the zero shift included.
    """
    cell = np.asarray(cell, dtype=float)
    reach = [int(math.ceil(cutoff / h)) + 1 if p else 0 for h, p in zip(_cell_heights(cell), periodic)]
    ranges = [np.arange(-r, r + 1) for r in reach]
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid


def template_self_edges(positions: np.ndarray, cell: np.ndarray, periodic, cutoff: float) -> Edges:
    """All template -> template edges within ``cutoff``, periodic images included.

    Args:
        positions: (n_template, 3) in Å.
        cell: (3, 3) in Å.
        periodic: three booleans.
        cutoff: in Å.
    """
    pos = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    if len(pos) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return Edges(empty, empty, torch.zeros(0, 3))
    shifts = lattice_shifts(cell, periodic, cutoff) @ cell  # (S, 3)
    # vectors[s, i, j] = pos[j] + shift[s] - pos[i]
    vec = pos[None, None, :, :] + shifts[:, None, None, :] - pos[None, :, None, :]
    dist = np.linalg.norm(vec, axis=-1)
    keep = (dist < cutoff) & (dist > 1e-8)
    s_idx, i_idx, j_idx = np.nonzero(keep)
    return Edges(
        sender=torch.as_tensor(j_idx, dtype=torch.long),
        receiver=torch.as_tensor(i_idx, dtype=torch.long),
        vectors=torch.as_tensor(vec[s_idx, i_idx, j_idx], dtype=torch.float32),
    )


@dataclass(frozen=True)
class TemplateImages:
    """The template atoms and periodic images that a wrapped mobile atom can reach.

    Attributes:
        positions: (n_images, 3) float32, in Å.
        index: (n_images,) int64, the template atom each image copies.
    """

    positions: torch.Tensor
    index: torch.Tensor


def template_images(positions: np.ndarray, cell: np.ndarray, periodic, cutoff: float) -> TemplateImages:
    """List the template images within ``cutoff`` of the cell (in fractional padding).

    A mobile atom wrapped into the cell can only see images whose fractional coordinates lie
    within ``cutoff / height`` of [0, 1) along each periodic direction; this list is computed
    once per system and is all the template geometry a forward pass touches.
    """
    pos = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    n = len(pos)
    if n == 0:
        return TemplateImages(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    periodic = np.asarray(periodic, dtype=bool)
    shifts = lattice_shifts(cell, periodic, cutoff)
    image_pos = (pos[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    index = np.tile(np.arange(n), len(shifts))
    if periodic.any():
        frac = image_pos @ np.linalg.inv(cell)
        pad = cutoff / _cell_heights(cell) + 1e-6
        inside = np.ones(len(image_pos), dtype=bool)
        for k in np.nonzero(periodic)[0]:
            inside &= (frac[:, k] >= -pad[k]) & (frac[:, k] < 1.0 + pad[k])
        image_pos, index = image_pos[inside], index[inside]
    return TemplateImages(
        positions=torch.as_tensor(image_pos, dtype=torch.float32),
        index=torch.as_tensor(index, dtype=torch.long),
    )


def template_mobile_edges(mobile: torch.Tensor, images: TemplateImages, cutoff: float) -> Edges:
    """Template -> mobile edges.

    Args:
        mobile: (n_nodes, 3) mobile positions, already wrapped into the cell, in Å.
        images: the system's :class:`TemplateImages`.
        cutoff: in Å.

    Returns:
        Edges whose ``sender`` indexes template atoms (not images) and ``receiver`` mobile nodes.
    """
    if images.positions.shape[0] == 0 or mobile.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=mobile.device)
        return Edges(empty, empty, mobile.new_zeros(0, 3))
    img = images.positions.to(mobile)
    with torch.no_grad():
        dist = torch.cdist(mobile.detach(), img)
        receiver, image = torch.nonzero(dist < cutoff, as_tuple=True)
    vectors = img[image] - mobile[receiver]
    return Edges(images.index.to(mobile.device)[image], receiver, vectors)


def mobile_mobile_edges(positions: torch.Tensor, cell: torch.Tensor, periodic, cutoff: float) -> Edges:
    """Mobile -> mobile edges within each sample, every periodic image within ``cutoff``.

    Every lattice image counts (an atom may see several images of another, or images of
    itself, when the cell is small compared with the cutoff), so the edge set, and hence the
    network, changes continuously as atoms move, whatever the cell.

    Args:
        positions: (n_samples, n_mobile, 3) in Å.
        cell: (3, 3) in Å.
        periodic: three booleans.
        cutoff: in Å.

    Returns:
        Edges over flattened node indices ``sample * n_mobile + atom``.
    """
    b, n, _ = positions.shape
    shifts = torch.as_tensor(
        lattice_shifts(cell.detach().cpu().numpy().astype(float), periodic, cutoff), dtype=positions.dtype
    ) @ cell.to(positions)  # (S, 3)
    with torch.no_grad():
        sample, s_idx, i, j = _pairs_within(positions.detach(), shifts, cutoff)
    # only the kept pairs' vectors are built with a gradient: x_j + shift_s - x_i
    vectors = positions[sample, j] + shifts[s_idx] - positions[sample, i]
    return Edges(sample * n + j, sample * n + i, vectors)


def _pairs_within(
    positions: torch.Tensor, shifts: torch.Tensor, cutoff: float, chunk_elements: int = 1 << 24
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (sample, shift, i, j) indices, in lexicographic order, where x_j + shift_s lies within
    ``cutoff`` of x_i (and is not x_i itself).

    The work goes in blocks of whole samples, else whole shifts, else rows of receivers, so the
    largest temporary holds about ``chunk_elements`` displacement components whatever the size,
    and nothing of size n_samples x n_shifts x n_mobile^2 is ever built (a 3000-atom search
    held gigabytes, in operations too long for Ctrl-C to stop promptly)."""
    b, n, _ = positions.shape
    n_shifts = shifts.shape[0]
    rows = min(n, max(1, chunk_elements // max(1, 3 * n)))
    per_shift = 1 if rows < n else min(n_shifts, max(1, chunk_elements // max(1, 3 * n * n)))
    per_sample = 1 if per_shift < n_shifts else max(1, chunk_elements // max(1, 3 * n * n * n_shifts))
    found = []
    for b0 in range(0, b, per_sample):
        x = positions[b0 : b0 + per_sample]
        for s0 in range(0, n_shifts, per_shift):
            part = shifts[s0 : s0 + per_shift]
            for r0 in range(0, n, rows):
                dist = (
                    x[:, None, None, :, :] + part[None, :, None, None, :] - x[:, None, r0 : r0 + rows, None, :]
                ).norm(dim=-1)
                sample, s_idx, i, j = torch.nonzero((dist < cutoff) & (dist > 1e-6), as_tuple=True)
                found.append((sample + b0, s_idx + s0, i + r0, j))
    if not found:
        empty = torch.zeros(0, dtype=torch.long, device=positions.device)
        return empty, empty, empty, empty
    return tuple(torch.cat(column) for column in zip(*found))
