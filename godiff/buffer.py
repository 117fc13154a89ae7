"""The replay buffer and the force memory: what the score model is trained on.

Policy (elitist, bounded): the buffer holds the ``capacity`` lowest-energy successful evaluations
seen so far, one entry per structure, lowest first. A failed evaluation never enters. Every new
evaluation competes with the buffer, so a good structure found early is never forgotten (the
authors' code redraws its 64 from all data by Boltzmann-weighted sampling each stage, which can
drop the best structure at high temperature); the Boltzmann weights of the loss then decide how
strongly each member counts at the current temperature.

The force memory (:class:`ForceMemory`, recent, bounded) holds the most recent successful
evaluations with their forces and energies, for the force and energy heads: every evaluated
structure teaches forces, not only the low ones the buffer keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ReplayBuffer", "ForceMemory"]

MEMORY = 20000  # evaluated structures the force memory keeps (the most recent)


@dataclass
class ReplayBuffer:
    """Bounded elitist buffer of (mobile positions, energy).

    Attributes:
        capacity: the most structures held.
        positions: (n, n_mobile, 3) in Å, lowest energy first.
        energies: (n,) in eV.
        ids: (n,) run-wide evaluation ids (the database row order), for provenance.
    """

    capacity: int
    positions: np.ndarray | None = None
    energies: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self):
        if self.capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        if self.energies is None:
            self.positions = np.zeros((0, 0, 3))
            self.energies = np.zeros(0)
            self.ids = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.energies.shape[0])

    def add(self, positions: np.ndarray, energies: np.ndarray, ids: np.ndarray) -> None:
        """Offer new structures; keep the ``capacity`` lowest of old and new.

        Args:
            positions: (k, n_mobile, 3) in Å.
            energies: (k,) in eV; non-finite entries are ignored.
            ids: (k,) evaluation ids.
        """
        positions = np.asarray(positions, dtype=float)
        energies = np.asarray(energies, dtype=float)
        ids = np.asarray(ids, dtype=np.int64)
        keep = np.isfinite(energies)
        positions, energies, ids = positions[keep], energies[keep], ids[keep]
        if len(energies) == 0:
            return
        if len(self) == 0:
            all_pos, all_e, all_id = positions, energies, ids
        else:
            all_pos = np.concatenate([self.positions, positions])
            all_e = np.concatenate([self.energies, energies])
            all_id = np.concatenate([self.ids, ids])
        order = np.lexsort((all_id, all_e))[: self.capacity]
        self.positions, self.energies, self.ids = all_pos[order], all_e[order], all_id[order]

    def state(self) -> dict:
        """Arrays for a checkpoint."""
        return {"positions": self.positions, "energies": self.energies, "ids": self.ids}

    @classmethod
    def from_state(cls, capacity: int, state: dict) -> "ReplayBuffer":
        buf = cls(capacity)
        if len(state.get("energies", ())):
            buf.positions = np.asarray(state["positions"], dtype=float)
            buf.energies = np.asarray(state["energies"], dtype=float)
            buf.ids = np.asarray(state["ids"], dtype=np.int64)
        return buf


class ForceMemory:
    """The most recent ``capacity`` successful evaluations with forces, oldest first.

    Attributes:
        positions: (n, n_mobile, 3) mobile positions, Å.
        forces: (n, n_mobile, 3) forces on the mobile atoms, eV/Å.
        energies: (n,) energies, eV.
    """

    def __init__(self, n_mobile: int, capacity: int = MEMORY):
        if capacity < 1:
            raise ValueError("force memory capacity must be at least 1")
        self.capacity = int(capacity)
        self.positions = np.zeros((0, n_mobile, 3))
        self.forces = np.zeros((0, n_mobile, 3))
        self.energies = np.zeros(0)

    def __len__(self) -> int:
        return int(self.energies.shape[0])

    def add(self, positions: np.ndarray, forces: np.ndarray, energies: np.ndarray) -> None:
        """Append new evaluations; the oldest fall out past ``capacity``."""
        self.positions = np.concatenate([self.positions, positions])[-self.capacity :]
        self.forces = np.concatenate([self.forces, forces])[-self.capacity :]
        self.energies = np.concatenate([self.energies, energies])[-self.capacity :]
