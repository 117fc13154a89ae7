"""Establish the reference minimum of a metal island on an fcc(111) or fcc(100) slab (a
``ptN-pt111`` or ``cuN-cu100`` preset).

Two stages, each written to ``OUT`` as it goes so the script resumes where it was stopped:

1. **Lattice annealing** (``lattice.jsonl``): the island's atoms live on the sites of the ideal
   fcc stacking above the slab (on fcc(111) a first adlayer on fcc or hcp hollows and a second on
   the hollows of the first, each atom of it resting on three below; on fcc(100) the four-fold
   hollows, each second-layer atom resting on four); single-atom moves to empty sites
   next to the island are accepted by Metropolis on the preset's own energy (EMT, single points on
   the ideal sites), the temperature falling geometrically. Every distinct occupation met is kept
   with its energy.
2. **Relaxation** (``minima.jsonl``): the lowest distinct occupations are relaxed with ASE BFGS
   (fmax 0.01 eV/Å, slab frozen, at most 400 steps); energies within 2 meV are one minimum.

It prints the distinct minima, the lowest, how many relaxations reached it, and the gap to the
next distinct minimum. The lattice stage is a candidate generator, not a proof: the long
searches of the harness (``godiff bench PRESET --methods basin-hopping,rss-cluster,...``) are the
independent check, and the preset's ``reference.source`` says which were run.

Run: ``python3 benchmarks/island_reference.py pt13-pt111 --starts 4 --moves 3000 --relax 40 --relax-two-layer 10 --out benchmarks/pt13-reference``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from ase.optimize import BFGS

from godiff.energy import make_calculator
from godiff.system import load_system


def support_needed(system) -> int:
    """How many first-adlayer atoms a second-adlayer atom rests on: 3 on fcc(111), 4 on fcc(100)."""
    builder = system.template["builder"]
    if builder not in ("fcc111", "fcc100"):
        raise SystemExit(f"island_reference.py: template builder {builder!r} is not fcc111 or fcc100")
    return 3 if builder == "fcc111" else 4


def stacking_sites(system, layers: int = 2) -> tuple[np.ndarray, np.ndarray, float]:
    """Ideal adlayer sites above the slab's top layer.

    On fcc(111) the first adlayer takes the hcp hollows (over a second-layer atom) and the fcc
    ones (the other way round); on fcc(100) its one kind of hollow lies over a second-layer atom
    (marked ``hcp`` here, as the site over the layer below), and the second adlayer lies over the
    top layer's atoms.

    Returns:
        positions (n_sites, 3) in Å, level (n_sites,) 1 or 2, hollow (n_sites,) True where a
        first-layer site lies over a second-layer atom (hcp), and the nearest-neighbour distance.
    """
    slab = system.template_atoms()
    z = slab.positions[:, 2]
    top = slab.positions[np.isclose(z, z.max(), atol=0.1)]
    below = slab.positions[np.isclose(z, np.unique(np.round(z, 2))[-2], atol=0.1)]
    cell = slab.cell.array
    d_nn = float(np.linalg.norm(cell[0]) / system.template["size"][0])
    d_layer = float(z.max() - below[:, 2].max())
    shift_b = (below[0] - top[0])[:2]  # the hcp hollow lies over the second layer's atoms
    shift_c = -shift_b  # and the fcc hollow the other way round
    lateral = {"A": top[:, :2], "B": top[:, :2] + shift_b, "C": top[:, :2] + shift_c}
    if support_needed(system) == 4:
        lateral.pop("C")  # fcc(100): B and C are the same hollows
    positions, level, hollow = [], [], []
    for lv in range(1, layers + 1):
        for name, xy in lateral.items():
            if lv == 1 and name == "A":
                continue  # atop a surface atom
            positions.append(np.column_stack([xy, np.full(len(xy), z.max() + lv * d_layer)]))
            level += [lv] * len(xy)
            hollow += [lv == 1 and name == "B"] * len(xy)
    return np.vstack(positions), np.asarray(level), np.asarray(hollow), d_nn


def _lateral_distance(a: np.ndarray, b: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """In-plane minimum-image distances between rows of ``a`` and ``b`` (periodic along a and b)."""
    inv = np.linalg.inv(cell[:2, :2])
    d = a[:, None, :2] - b[None, :, :2]
    frac = d @ inv
    frac -= np.round(frac)
    return np.linalg.norm(frac @ cell[:2, :2], axis=-1)


class Lattice:
    """Which sites clash, which are bonded, and which second-layer sites are supported."""

    def __init__(self, system):
        self.system = system
        self.positions, self.level, self.hcp, d_nn = stacking_sites(system)
        self.needed = support_needed(system)
        cell = system.template_atoms().cell.array
        lateral = _lateral_distance(self.positions, self.positions, cell)
        dz = np.abs(self.positions[:, None, 2] - self.positions[None, :, 2])
        dist = np.sqrt(lateral**2 + dz**2)
        self.clash = (dist < 0.9 * d_nn) & ~np.eye(len(dist), dtype=bool)  # a hollow's neighbours, or atop
        self.bonded = (dist >= 0.9 * d_nn) & (dist < 1.2 * d_nn)
        self.support = [
            np.nonzero(self.bonded[i] & (self.level == 1))[0] if self.level[i] == 2 else np.zeros(0, int)
            for i in range(len(dist))
        ]

    def allowed(self, occupied: set, site: int) -> bool:
        if site in occupied or any(j in occupied for j in np.nonzero(self.clash[site])[0]):
            return False
        if self.level[site] == 2:
            return sum(j in occupied for j in self.support[site]) >= self.needed
        return True

    def supports_left(self, occupied: set) -> bool:
        return all(sum(j in occupied for j in self.support[i]) >= self.needed for i in occupied if self.level[i] == 2)

    def layers(self, sites) -> int:
        return int(max(self.level[list(sites)]))

    def flipped(self, sites) -> tuple | None:
        """The same one-layer island on the other kind of hollow (fcc <-> hcp), or None when
        ``sites`` has a second-layer atom. Site k of the hcp hollows and site k of the fcc hollows
        lie on either side of surface atom k, so the swap is a rigid translation."""
        first = np.nonzero(self.level == 1)[0]
        if self.needed == 4 or any(self.level[i] != 1 for i in sites):
            return None  # fcc(100) has one kind of hollow
        half = len(first) // 2
        return tuple(sorted(int(i + half if self.hcp[i] else i - half) for i in sites))

    def frontier(self, occupied: set) -> list[int]:
        near = set()
        for i in occupied:
            near.update(np.nonzero(self.bonded[i])[0].tolist())
        return [j for j in near if self.allowed(occupied, j)]


def distinct_shapes(pool: dict) -> list[tuple]:
    """The occupations of ``pool`` (sites -> lattice energy), lowest first, one per energy level:
    a translate or a mirror image of a shape has its energy to 1e-4 eV."""
    out = []
    for sites, e in sorted(pool.items(), key=lambda kv: kv[1]):
        if not out or e - pool[out[-1]] > 1e-4:
            out.append(sites)
    return out


def compact_start(lattice: Lattice, n: int, rng: np.random.Generator, hcp: bool) -> set:
    """A random connected island of first-layer sites grown from a random fcc or hcp hollow.

    Single-atom moves rarely carry a whole island from one kind of hollow to the other, so the
    starts alternate between the two."""
    first = np.nonzero((lattice.level == 1) & (lattice.hcp == hcp))[0]
    occupied = {int(rng.choice(first))}
    while len(occupied) < n:
        options = [j for j in lattice.frontier(occupied) if lattice.level[j] == 1 and lattice.hcp[j] == hcp]
        occupied.add(int(rng.choice(options)))
    return occupied


def anneal(lattice: Lattice, energy, n: int, rng, moves: int, t_start: float, t_end: float, seen: dict, hcp: bool):
    """Metropolis single-atom moves on the lattice; every occupation met goes into ``seen``."""
    occupied = compact_start(lattice, n, rng, hcp)
    e = energy(occupied)
    seen.setdefault(frozenset(occupied), e)
    for k in range(moves):
        t = t_start * (t_end / t_start) ** (k / max(1, moves - 1))
        leaving = int(rng.choice(sorted(occupied)))
        rest = occupied - {leaving}
        if not lattice.supports_left(rest):
            continue
        options = [j for j in lattice.frontier(rest) if j != leaving]
        if not options:
            continue
        trial = rest | {int(rng.choice(options))}
        key = frozenset(trial)
        e_trial = seen[key] if key in seen else energy(trial)
        seen[key] = e_trial
        if e_trial <= e or rng.random() < math.exp(-(e_trial - e) / t):
            occupied, e = trial, e_trial
    return seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("preset")
    p.add_argument("--starts", type=int, default=4)
    p.add_argument("--moves", type=int, default=3000)
    p.add_argument("--relax", type=int, default=40, help="lowest distinct lattice occupations to relax")
    p.add_argument(
        "--relax-two-layer",
        type=int,
        default=10,
        help="lowest distinct occupations with a second-layer atom to relax as well",
    )
    p.add_argument("--t-start", type=float, default=0.5)
    p.add_argument("--t-end", type=float, default=0.02)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    system = load_system(args.preset)
    lattice = Lattice(system)
    calc = make_calculator(system.energy)
    n = system.n_mobile

    def energy_of(positions):
        atoms = system.atoms(positions)
        atoms.calc = calc
        return float(atoms.get_potential_energy())

    def occupation_energy(occupied):
        return energy_of(lattice.positions[sorted(occupied)])

    args.out.mkdir(parents=True, exist_ok=True)
    lattice_file = args.out / "lattice.jsonl"
    done = [json.loads(line) for line in lattice_file.read_text().splitlines()] if lattice_file.exists() else []
    for start in range(len(done), args.starts):
        seen = anneal(
            lattice,
            occupation_energy,
            n,
            np.random.default_rng(start),
            args.moves,
            args.t_start,
            args.t_end,
            {},
            hcp=start % 2 == 1 or lattice.needed == 4,
        )
        # one occupation per energy level first: on fcc(100) the lowest hundreds are translates and
        # mirror images of a handful of shapes, and the lattice ranks shapes only roughly
        ranked = [(k, seen[k]) for k in distinct_shapes(seen)]
        best = ranked[: 4 * args.relax]
        two_layer = [kv for kv in ranked if lattice.layers(kv[0]) == 2][: 4 * args.relax]
        row = {
            "start": start,
            "evaluated": len(seen),
            "lowest": [[sorted(map(int, k)), e] for k, e in best + two_layer],
        }
        with lattice_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        print(f"start {start}: {len(seen)} occupations, lowest {best[0][1]:.4f} eV")
    pool = {}
    for row in done:
        for sites, e in row["lowest"]:
            pool[tuple(sites)] = e
    for sites, _ in sorted(pool.items(), key=lambda kv: kv[1])[: 4 * args.relax]:
        flipped = lattice.flipped(sites)
        if flipped is not None and flipped not in pool:
            pool[flipped] = occupation_energy(flipped)
    distinct = distinct_shapes({k: e for k, e in pool.items() if lattice.layers(k) == 1})[: args.relax]
    distinct += distinct_shapes({k: e for k, e in pool.items() if lattice.layers(k) == 2})[: args.relax_two_layer]
    minima_file = args.out / "minima.jsonl"
    minima = [json.loads(line) for line in minima_file.read_text().splitlines()] if minima_file.exists() else []
    relaxed = {tuple(m["sites"]) for m in minima}
    for sites in [d for d in distinct if d not in relaxed]:
        atoms = system.atoms(lattice.positions[list(sites)])
        atoms.calc = calc
        opt = BFGS(atoms, logfile=None)
        opt.run(fmax=0.01, steps=400)
        row = {
            "sites": list(sites),
            "lattice_energy": pool[sites],
            "energy": float(atoms.get_potential_energy()),
            "steps": int(opt.nsteps),
            "levels": np.bincount(lattice.level[list(sites)], minlength=3)[1:].tolist(),
            "positions": atoms.positions[-n:].round(5).tolist(),
        }
        with minima_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        minima.append(row)
    summarize(minima)


def summarize(minima):
    energies = sorted(m["energy"] for m in minima)
    groups = []
    for e in energies:
        if groups and e - groups[-1][0] <= 2e-3:
            groups[-1].append(e)
        else:
            groups.append([e])
    print(f"{len(minima)} relaxations, {len(groups)} distinct minima (within 2 meV merged)")
    for g in groups[:8]:
        shapes = sorted({tuple(m["levels"]) for m in minima if abs(m["energy"] - g[0]) <= 2e-3})
        print(f"  {g[0]:.5f} eV  reached {len(g)} times  (atoms per adlayer: {shapes})")
    if len(groups) > 1:
        print(
            f"lowest {groups[0][0]:.5f} eV; next distinct minimum {groups[1][0]:.5f} eV "
            f"({groups[1][0] - groups[0][0]:.3f} eV up)"
        )


if __name__ == "__main__":
    main()
