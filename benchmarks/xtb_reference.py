"""Establish the reference minimum of a gas-phase Pt cluster under GFN2-xTB (tblite).

Candidates: the textbook motifs of the size (built below), then random compact placements;
each is relaxed with BFGS to fmax 0.01 eV/Å (at most 400 steps) and its energy, the number of
calculator calls and the final structure are appended to ``OUT/minima.jsonl`` the moment it is
done, so the script resumes where it was stopped. At the end (or with ``--summary``) it prints
the distinct minima (energies within 2 meV merged), the lowest, how many relaxations reached it,
and the gap to the next distinct minimum.

Run: ``python3 benchmarks/xtb_reference.py --atoms 6 --random 200 --out benchmarks/pt6-xtb-reference``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.optimize import BFGS

BOND = 2.55  # Å, a Pt-Pt bond near the GFN2-xTB minimum of small clusters


def motifs(n: int) -> dict[str, np.ndarray]:
    """Textbook shapes of ``n`` atoms with bonds of about :data:`BOND` Å."""
    a = BOND
    shapes = {}
    if n == 6:
        h = a / np.sqrt(2)
        shapes["octahedron"] = np.array([[h, 0, 0], [-h, 0, 0], [0, h, 0], [0, -h, 0], [0, 0, h], [0, 0, -h]])
        tri = np.array([[0, a / np.sqrt(3), 0], [-a / 2, -a / (2 * np.sqrt(3)), 0], [a / 2, -a / (2 * np.sqrt(3)), 0]])
        shapes["trigonal prism"] = np.vstack([tri, tri + [0, 0, a]])
        shapes["planar triangle"] = np.array(
            [
                [0, 0, 0],
                [a, 0, 0],
                [2 * a, 0, 0],
                [a / 2, a * np.sqrt(3) / 2, 0],
                [3 * a / 2, a * np.sqrt(3) / 2, 0],
                [a, a * np.sqrt(3), 0],
            ]
        )
        pent = [
            [
                a / (2 * np.sin(np.pi / 5)) * np.cos(2 * np.pi * k / 5),
                a / (2 * np.sin(np.pi / 5)) * np.sin(2 * np.pi * k / 5),
                0,
            ]
            for k in range(5)
        ]
        shapes["pentagonal pyramid"] = np.array(pent + [[0, 0, a * 0.53]])
        sq = np.array([[0, 0, 0], [a, 0, 0], [0, a, 0], [a, a, 0]])
        shapes["capped square pyramid"] = np.vstack([sq, [[a / 2, a / 2, a / np.sqrt(2)], [a / 2, -a * 0.8, a * 0.5]]])
        shapes["edge-sharing tetrahedra"] = np.array(
            [
                [0, 0, 0],
                [a, 0, 0],
                [a / 2, a * np.sqrt(3) / 2, 0],
                [a / 2, a * np.sqrt(3) / 6, a * np.sqrt(2 / 3)],
                [a / 2, a * np.sqrt(3) / 6, -a * np.sqrt(2 / 3)],
                [a * 1.5, a * np.sqrt(3) / 2 * 0.33, a * 0.7],
            ]
        )
    return shapes


def random_compact(n: int, rng: np.random.Generator) -> np.ndarray:
    """Atoms added one by one at a bond's length from a random earlier one, never closer than 0.8 bond."""
    pos = [np.zeros(3)]
    while len(pos) < n:
        d = rng.normal(size=3)
        trial = pos[rng.integers(len(pos))] + BOND * d / np.linalg.norm(d)
        if min(np.linalg.norm(trial - p) for p in pos) > 0.8 * BOND:
            pos.append(trial)
    return np.array(pos)


def relax(positions: np.ndarray, symbol: str) -> dict:
    from tblite.ase import TBLite

    atoms = Atoms(f"{symbol}{len(positions)}", positions=positions, cell=[30, 30, 30])
    atoms.center()
    calc = TBLite(method="GFN2-xTB", verbosity=0)
    calls = [0]
    original = calc.calculate

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    calc.calculate = counted
    atoms.calc = calc
    start = time.perf_counter()
    try:
        converged = BFGS(atoms, logfile=None).run(fmax=0.01, steps=400)
        energy = float(atoms.get_potential_energy())
        error = None
    except Exception as exc:  # an SCF that does not converge: recorded, not fatal
        converged, energy, error = False, None, f"{type(exc).__name__}: {exc}"
    return {
        "energy": energy,
        "converged": bool(converged),
        "calls": calls[0],
        "seconds": time.perf_counter() - start,
        "positions": atoms.positions.round(5).tolist(),
        "error": error,
    }


def summary(records: list[dict]) -> str:
    ok = sorted((r for r in records if r["energy"] is not None and r["converged"]), key=lambda r: r["energy"])
    distinct: list[list[dict]] = []
    for r in ok:
        if distinct and abs(r["energy"] - distinct[-1][0]["energy"]) < 2e-3:
            distinct[-1].append(r)
        else:
            distinct.append([r])
    lines = [f"{len(records)} relaxations, {len(ok)} converged, {len(distinct)} distinct minima (2 meV)"]
    for group in distinct[:6]:
        names = sorted({g["candidate"] for g in group if not g["candidate"].startswith("random")})
        lines.append(f"  {group[0]['energy']:.4f} eV  reached {len(group)}x  {', '.join(names)}")
    if len(distinct) > 1:
        lines.append(f"gap to the next distinct minimum: {distinct[1][0]['energy'] - distinct[0][0]['energy']:.4f} eV")
    calls = [r["calls"] for r in records]
    lines.append(
        f"calls per relaxation: median {int(np.median(calls))}, seconds per call: "
        f"{sum(r['seconds'] for r in records) / max(1, sum(calls)):.3f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=6)
    parser.add_argument("--symbol", default="Pt")
    parser.add_argument("--random", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "minima.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {r["candidate"] for r in records}
    rng = np.random.default_rng(0)
    candidates = list(motifs(args.atoms).items())
    candidates += [(f"random {k}", random_compact(args.atoms, rng)) for k in range(args.random)]
    for name, positions in [] if args.summary else candidates:
        if name in done:
            continue
        record = {"candidate": name, **relax(positions, args.symbol)}
        records.append(record)
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    print(summary(records))


if __name__ == "__main__":
    main()
