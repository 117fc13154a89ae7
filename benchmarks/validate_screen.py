"""Relax a random sample of connected structures evaluated in an energy window of a Pt7 run.

    python benchmarks/validate_screen.py RUN_DIR LO HI [--n 300] [--system pt7-pt111]

Prints how many of them relax (BFGS, fmax 0.05, slab frozen) into the reference basin: the
measurement behind the success check's energy screen (godiff/bench/success.py).
"""

import argparse

import numpy as np
from ase.constraints import FixAtoms

from godiff.bench.success import is_connected, relaxed_energy
from godiff.energy import make_calculator
from godiff.rundir import RunDir
from godiff.system import load_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("lo", type=float, help="window start, eV above the reference")
    parser.add_argument("hi", type=float, help="window end, eV above the reference")
    parser.add_argument("--n", type=int, default=300, help="structures to relax (a random sample)")
    parser.add_argument("--system", default="pt7-pt111")
    args = parser.parse_args()
    system = load_system(args.system)
    ref, tol, nt = system.reference["energy"], system.reference.get("tolerance", 0.05), system.n_template
    rows = [
        r
        for r in RunDir.open(args.run_dir).rows()
        if r.ok and ref + args.lo < r.energy <= ref + args.hi and is_connected(system, r.positions[nt:])
    ]
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(rows), size=min(args.n, len(rows)), replace=False).tolist())
    calculator, hits = make_calculator(system.energy), []
    for i in chosen:
        atoms = rows[i].toatoms()
        atoms.set_constraint(FixAtoms(indices=range(nt)))
        energy = relaxed_energy(atoms, calculator)
        if energy <= ref + tol:
            hits.append((rows[i].id, round(rows[i].energy - ref, 3)))
    print(
        f"{args.run_dir}: window ({args.lo}, {args.hi}] eV: relaxed {len(chosen)} of {len(rows)} connected "
        f"structures; {len(hits)} reached the reference (row id, eV above it): {hits}"
    )


if __name__ == "__main__":
    main()
