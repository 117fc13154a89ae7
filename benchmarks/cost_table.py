"""What the network costs as the system grows: issue 16's cost table.

For each preset it builds a search with the run's own defaults (untrained model) and times, with
:mod:`godiff.bench.speed`, exactly what a run executes: drawing ``--samples`` structures
(:meth:`godiff.search.Search.draw`: oversampling, every diffusion step, guidance, relaxation in
the learned field, the acquisition's pick), one training step of the run's own
:class:`godiff.train.Trainer`, and one forward pass over ``--samples`` structures with the
template cached. Beside the times it counts the graph's edges per mobile atom, mobile -> mobile
(``mm``) and template -> mobile (``tm``), on the structures the sampler draws, and how long the
mobile -> mobile neighbour search takes alone, so the table says what dominates.

``--mobile-cutoff X`` sets the mobile -> mobile range to X bond lengths for every system (the
default, :meth:`godiff.score.ScoreConfig.for_length_scale`, is 10 Å on Pt scaled by the bond,
3.6 bond lengths, up to 20 mobile atoms and the template range, 1.8 bond lengths, beyond).

Prints a Markdown table; with ``--out FILE`` appends one JSON line per system as it goes.

Run: ``python3 benchmarks/cost_table.py lj13 lj26 lj38 lj55 pt7-pt111 pt13-pt111 pt19-pt111 --threads 1``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from godiff.bench.speed import forward_costs, iteration_costs, median_seconds
from godiff.geometry import mobile_mobile_edges, template_mobile_edges, wrap
from godiff.score import ScoreConfig
from godiff.search import Search
from godiff.system import load_system
from godiff.threads import limit_threads


def edge_counts(search, x: torch.Tensor) -> dict:
    """Edges per mobile atom of structures ``x`` and the seconds of the mobile neighbour search."""
    model, graph = search.model, search.graph
    cell = graph.cell.to(x)
    pos = wrap(x, cell, graph.periodic)
    b, n, _ = pos.shape
    mm = mobile_mobile_edges(pos, cell, graph.periodic, model.config.mobile_cutoff)
    tm = template_mobile_edges(pos.reshape(b * n, 3), graph.images, model.config.cutoff)
    search_s = median_seconds(
        lambda: mobile_mobile_edges(pos, cell, graph.periodic, model.config.mobile_cutoff), repeats=3
    )
    return {"mm_per_atom": len(mm) / (b * n), "tm_per_atom": len(tm) / (b * n), "mm_search_s": search_s}


def measure(name: str, samples: int, mobile_cutoff: float | None) -> dict:
    system = load_system(name)
    overrides = {}
    if mobile_cutoff is not None:
        bond = system.bond_length()
        overrides["score"] = ScoreConfig.for_length_scale(bond, mobile_cutoff=round(mobile_cutoff * bond, 3))
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(system, out=Path(tmp) / "run", **overrides)
        it = iteration_costs(search, samples=samples, repeats=1)
        fw = forward_costs(search, samples=samples, repeats=3)
        drawn = torch.as_tensor(search.draw(1, 0, samples), dtype=torch.float32)
        edges = edge_counts(search, drawn)
    n = system.n_mobile
    return {
        "system": name,
        "n_mobile": n,
        "n_template": system.n_template,
        "mobile_cutoff": search.model.config.mobile_cutoff,
        "samples": samples,
        **it,
        **fw,
        **edges,
        "sampling_s_per_atom": it["sampling_s"] / n,
        "train_step_s_per_atom": it["train_step_s"] / n,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| system | mobile atoms | mm edges / atom | tm edges / atom | sampling (s) | per atom (ms) | "
        "train step (ms) | per atom (ms) | forward (ms) | mm neighbour search (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['n_mobile']} | {r['mm_per_atom']:.1f} | {r['tm_per_atom']:.1f} | "
            f"{r['sampling_s']:.2f} | {r['sampling_s_per_atom'] * 1e3:.0f} | {r['train_step_s'] * 1e3:.0f} | "
            f"{r['train_step_s_per_atom'] * 1e3:.1f} | {r['forward_cached_s'] * 1e3:.1f} | {r['mm_search_s'] * 1e3:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("systems", nargs="+")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mobile-cutoff", type=float, default=None, help="mobile -> mobile range in bond lengths")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    rows = []
    for name in args.systems:
        row = measure(name, args.samples, args.mobile_cutoff)
        rows.append(row)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
        print(
            f"{name}: sampling {row['sampling_s']:.2f} s, train step {row['train_step_s'] * 1e3:.0f} ms, "
            f"mm {row['mm_per_atom']:.1f}/atom",
            flush=True,
        )
    print(table(rows))


if __name__ == "__main__":
    main()
