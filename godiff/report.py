"""Summaries and figures of a run directory, finished or still running.

Everything is read from the run directory only: ``run.json`` (system and settings),
``evaluations.db`` (one row per evaluation, in the order they were made) and ``log.jsonl``
(one line per finished iteration). A run that is still going, or was killed mid-iteration, is
reported as it stands: the rows of an unfinished iteration are counted and plotted, and the
summary says that iteration is in progress.

Example:
    >>> from godiff.report import summarize, plot
    >>> print(summarize("runs/lj13-20250101-120000"))           # doctest: +SKIP
    >>> plot("runs/lj13-20250101-120000", "figures")           # doctest: +SKIP
    [PosixPath('figures/best_vs_evaluations.png'), PosixPath('figures/energy_histogram.png')]

Decisions:

* The evaluation number of a row is its position in the database (1-based); "first reached"
  is the first evaluation whose energy equals the final best.
* The energy histogram is clipped above the best energy (see :func:`energy_window`) so that the
  huge energies of early, clashing structures do not squash the interesting range; how many
  energies of each iteration lie above the window is written above it.
* Nothing here builds the system's template or imports torch: the system is read as the plain
  dict stored in ``run.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from godiff.cost import network_seconds
from godiff.errors import CheckpointError, ConfigError, GodiffError, one_line
from godiff.rundir import RunDir
from godiff.system import parse_formula

if TYPE_CHECKING:
    from godiff.manifest import RunManifest

log = logging.getLogger(__name__)

__all__ = ["RunData", "load_run", "summarize", "plot", "energy_window", "FIGURES"]

#: File names written by :func:`plot`, in order.
FIGURES = ("best_vs_evaluations.png", "energy_histogram.png")


@dataclass
class RunData:
    """What a report needs from a run directory.

    Attributes:
        path: the run directory.
        manifest: ``run.json`` (:class:`godiff.manifest.RunManifest`).
        log: the lines of ``log.jsonl`` (finished iterations), in order.
        iteration: (n,) int, the iteration of each evaluation, in evaluation order.
        ok: (n,) bool, whether each evaluation succeeded.
        energy: (n,) float energies in eV (``nan`` where failed).
    """

    path: Path
    manifest: "RunManifest"
    log: list = field(default_factory=list)
    iteration: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    ok: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def system(self) -> dict:
        return self.manifest.system

    @property
    def settings(self) -> dict:
        return self.manifest.search

    @property
    def unit(self) -> str:
        """The run's energy unit (eV; ε for Lennard-Jones)."""
        from godiff.energy import energy_unit

        return energy_unit(self.system.get("energy"))

    @property
    def reference(self) -> dict | None:
        return self.system.get("reference")

    @property
    def n_evaluations(self) -> int:
        return len(self.ok)

    def best_so_far(self) -> np.ndarray:
        """(n,) running minimum of the successful energies (``inf`` before the first success)."""
        e = np.where(self.ok, self.energy, np.inf)
        return np.minimum.accumulate(e) if len(e) else e

    def best(self) -> tuple[float, int | None]:
        """(best energy, 1-based evaluation number where it was first reached)."""
        if not self.ok.any():
            return math.inf, None
        e = np.where(self.ok, self.energy, np.inf)
        i = int(np.argmin(e))  # argmin returns the first occurrence
        return float(e[i]), i + 1

    def first_within(self, target: float, tolerance: float) -> int | None:
        """1-based number of the first evaluation with energy <= target + tolerance, or None."""
        hit = np.flatnonzero(self.ok & (self.energy <= target + tolerance))
        return int(hit[0]) + 1 if len(hit) else None


def load_run(run_dir) -> RunData:
    """Read a run directory (finished or not).

    Raises:
        NotARunError: ``run_dir`` is not a run directory.
        CheckpointError: ``run.json`` is unreadable or of an unsupported format.
    """
    run = RunDir.open(run_dir, lock=False)  # report reads beside a live run
    data = RunData(path=run.path, manifest=run.manifest, log=run.read_log())
    if run.db_path.exists():
        import sqlite3

        import ase.db

        db = ase.db.connect(str(run.db_path), type="db", use_lock_file=False)
        try:
            rows = sorted(
                db.select(include_data=False, columns=["id", "energy", "key_value_pairs"]), key=lambda r: r.id
            )
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"{run.db_path}: unreadable database ({exc})") from exc
        iteration, ok, energy = [], [], []
        for r in rows:
            kv = r.key_value_pairs
            good = bool(kv.get("ok", False)) and r.get("energy") is not None
            iteration.append(int(kv.get("iteration", -1)))
            ok.append(good)
            energy.append(float(r.energy) if good else math.nan)
        data.iteration = np.array(iteration, dtype=int)
        data.ok = np.array(ok, dtype=bool)
        data.energy = np.array(energy, dtype=float)
    log.debug("read %s: %d evaluations, %d finished iterations", run.path, data.n_evaluations, len(data.log))
    return data


# -- text ---------------------------------------------------------------------------------------
def _composition(mobile: dict) -> str:
    return "".join(f"{s}{n if n != 1 else ''}" for s, n in mobile.items())


def template_summary(system: dict) -> str:
    """One phrase for a system's template, from its dict form: ``fcc111 Pt 6x6x2``, ``none``."""
    t = system.get("template")
    box = (system.get("box") or {}).get("kind", "?")
    if not t:
        return f"none (gas phase, {box} box)"
    if "file" in t:
        return f"file {Path(t['file']).name} ({box} box)"
    if t.get("builder") == "surface":
        idx = "".join(str(i) for i in t.get("indices", []))
        return f"surface {t.get('symbol')}({idx}), {t.get('layers')} layers ({box} box)"
    size = "x".join(str(n) for n in t.get("size", []))
    return f"{t.get('builder')} {t.get('symbol')} {size} ({box} box)"


def _energy_summary(energy: dict) -> str:
    name = energy.get("calculator", "?")
    if name == "python":
        return f"python calculator {energy.get('class', '')}".strip()
    extra = ", ".join(f"{k}={v}" for k, v in energy.items() if k != "calculator")
    return f"{name} ({extra})" if extra else name


def _median(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.median(values)) if values else None


def _fmt(value: float | None, unit: str = " eV", digits: int = 6) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}{unit}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 100 else f"{value / 60:.1f} min"


def summarize(run_dir) -> str:
    """A plain-text summary of a run: system, settings, progress, best energy, timings.

    Args:
        run_dir: a run directory (finished, interrupted or still running).

    Returns:
        Several lines of text, without a trailing newline.

    Raises:
        NotARunError: ``run_dir`` is not a run directory.
    """
    data = load_run(run_dir)
    sections = (_summary_header, _summary_settings, _summary_progress, _summary_best, _summary_minima, _summary_times)
    return "\n".join(line for section in sections for line in section(data))


def _summary_header(data: "RunData") -> list[str]:
    system = data.system
    try:
        mobile = parse_formula(system.get("mobile") or {})
    except GodiffError:
        mobile = {}
    lines = [f"run            {data.path}"]
    if data.manifest.command:
        lines.append(f"command        {data.manifest.command}")
    lines.append(f"created        {data.manifest.created or '-'} (godiff {data.manifest.godiff_version or '?'})")
    lines.append(
        f"system         {system.get('name', '?')}: {sum(mobile.values())} mobile atoms ({_composition(mobile)}), "
        f"template {template_summary(system)}"
    )
    lines.append(f"energy         {_energy_summary(data.manifest.energy or system.get('energy') or {})}")
    return lines


def _summary_settings(data: "RunData") -> list[str]:
    cfg = data.settings
    sampler = cfg.get("sampler", {})
    return [
        "settings       "
        f"iterations {cfg.get('iterations')}, samples {_batch_setting(cfg)}, train steps {cfg.get('train_steps')}"
        f" ({cfg.get('train_stop', 'fixed')}), budget {cfg.get('budget')}, patience {cfg.get('patience')}, "
        f"batch {cfg.get('batch_size')}, buffer {cfg.get('buffer_size')}, "
        f"T {cfg.get('schedule', 'exponential')} {cfg.get('temperature_start') or 'from the first batch'} -> "
        f"{cfg.get('temperature_end')} {data.unit}, acquisition {cfg.get('acquisition', 'energy')}, seed {cfg.get('seed')}, "
        f"workers {cfg.get('workers')}",
        "sampler        "
        f"steps {sampler.get('steps')}, corrector steps {sampler.get('corrector_steps')}, "
        f"guidance {sampler.get('guidance')}, relax steps {sampler.get('relax_steps')}"
        + (", started from a pretrained model" if data.manifest.pretrained else ""),
    ]


def _batch_setting(cfg: dict) -> str:
    if cfg.get("samples") is not None:
        return str(cfg["samples"])
    polish = f", polish {cfg['polish']} after each round" if cfg.get("polish") else ""
    return f"adaptive {cfg.get('min_samples')} to {cfg.get('max_samples')} (ESS {cfg.get('target_ess')}{polish})"


def _summary_progress(data: "RunData") -> list[str]:
    planned = data.settings.get("iterations")
    done = len(data.log)
    progress = f"{done}" + (
        f" of {planned}" if planned is not None and done <= planned else f" (run.json plans {planned})"
    )
    last_done = max((r.get("iteration", -1) for r in data.log), default=-1)
    partial = data.iteration[data.iteration > last_done] if len(data.iteration) else data.iteration
    if len(partial):
        k = int(partial.max())
        of = f" of {data.settings['samples']}" if data.settings.get("samples") else ""
        progress += f"; iteration {k + 1} in progress ({int(np.sum(data.iteration == k))}{of} evaluated)"
    n_ok = int(data.ok.sum())
    return [
        f"iterations     {progress}",
        f"evaluations    {data.n_evaluations} ({n_ok} ok, {data.n_evaluations - n_ok} failed)",
    ]


def _summary_best(data: "RunData") -> list[str]:
    best, at = data.best()
    if at is None:
        lines = ["best energy    - (no successful evaluation yet)"]
    else:
        lines = [
            f"best energy    {_fmt(best, ' ' + data.unit)}, first reached at evaluation {at} of {data.n_evaluations}"
        ]
    ref = data.reference
    if not ref or ref.get("energy") is None:
        return lines + ["reference      - (none known for this system)"]
    ref_e = float(ref["energy"])
    line = f"reference      {_fmt(ref_e, ' ' + data.unit)}"
    if at is not None:
        line += f", gap {best - ref_e:+.6f} {data.unit}"
        tol = ref.get("tolerance")
        if tol is not None:
            hit = data.first_within(ref_e, float(tol))
            line += (
                f"; within {tol:g} {data.unit} at evaluation {hit}"
                if hit is not None
                else f"; not within {tol:g} {data.unit} yet"
            )
    lines.append(line)
    if ref.get("source"):
        lines.append(f"               ({' '.join(str(ref['source']).split())})")
    return lines


def _summary_minima(data: "RunData", shown: int = 10) -> list[str]:
    """The lowest distinct minima of the run (:mod:`godiff.minima`), one line each."""
    from godiff.minima import distinct_minima
    from godiff.system import System

    if not data.ok.any():
        return []
    rows = RunDir.open(data.path, lock=False).rows()
    minima = distinct_minima(System.from_dict(data.system), rows, limit=shown)
    ref = (data.reference or {}).get("energy")
    lines = [f"distinct minima  the {len(minima)} lowest, as evaluated (all of them in minima.xyz when the run stops)"]
    for rank, (m, _) in enumerate(minima, start=1):
        gap = f" ({m.energy - float(ref):+.4f})" if ref is not None else ""
        lines.append(
            f"  {rank:2d}  {_fmt(m.energy, ' ' + data.unit)}{gap}  first at evaluation {m.first}, "
            f"lowest at {m.index}, {m.count} evaluation{'s' if m.count > 1 else ''}"
        )
    return lines


def _summary_times(data: "RunData") -> list[str]:
    seconds = [r.get("seconds") or {} for r in data.log]
    phases = {p: _median(s.get(p) for s in seconds) for p in ("sampling", "evaluation", "training")}
    if all(v is None for v in phases.values()):
        return ["time/iteration - (no finished iteration yet)"]
    total = sum(sum(v for v in s.values() if v is not None) for s in seconds)
    network = sum(network_seconds(s) for s in seconds)
    done = max((int(r.get("n_evaluations") or 0) for r in data.log), default=0)
    lines = [
        "time/iteration "
        + ", ".join(f"{p} {_secs(v)}" for p, v in phases.items())
        + f" (median over {len(seconds)}; {_secs(total)} in all)"
    ]
    if done:
        timed = [
            (r["calculator_per_evaluation"], r.get("samples") or 0)
            for r in data.log
            if r.get("calculator_per_evaluation") is not None
        ]
        calls = sum(n for _, n in timed)
        calculator = f", calculator {sum(c * n for c, n in timed) / calls:.3g} s" if calls else ""
        lines.append(
            f"per evaluation network {network / done:.3g} s{calculator} (the network's sampling and "
            f"training over the {done} evaluations of the finished iterations; the calculator's timed calls)"
        )
    stopped = data.path / "stopped.json"
    if stopped.exists():
        lines.append(f"stopped        {json.loads(stopped.read_text()).get('message')}")
    return lines


# -- figures ------------------------------------------------------------------------------------
def energy_window(energies: np.ndarray, best: float) -> tuple[float, float]:
    """The energy range shown in the histogram: from a little below ``best`` to a clip above it.

    The clip is the 75th percentile of all successful energies (what most of the search looked
    like), but at least 1 % of |best| (and 0.1 eV) above the best so a converged run still shows
    a visible spread.
    """
    finite = energies[np.isfinite(energies)]
    if not len(finite):
        return 0.0, 1.0
    span = max(float(np.percentile(finite, 75)) - best, 0.01 * abs(best), 0.1)
    return best - 0.05 * span, best + span


def plot(run_dir, out_dir) -> list[Path]:
    """Write the figures of a run (PNG, matplotlib's Agg backend).

    * ``best_vs_evaluations.png``: best energy so far against evaluations spent, every
      evaluated energy as a faint dot, the system's reference energy as a dashed line.
    * ``energy_histogram.png``: the energy distribution of each iteration (violins), clipped
      above the best energy (:func:`energy_window`).

    Args:
        run_dir: a run directory (finished, interrupted or still running).
        out_dir: where to write the figures (created if missing).

    Returns:
        The paths written, in the order of :data:`FIGURES`.

    Raises:
        NotARunError: ``run_dir`` is not a run directory.
        ConfigError: ``out_dir`` cannot be created or written (a read-only place, a file).
    """
    data = load_run(run_dir)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the figures to {out_dir}: {exc.strerror or one_line(exc)}") from None
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"cannot write the figures to {out_dir}: not writable")
    ref = data.reference
    ref_e = float(ref["energy"]) if ref and ref.get("energy") is not None else None
    paths = [out_dir / name for name in FIGURES]
    try:
        _plot_best(data, ref_e).savefig(paths[0], dpi=120)
        _plot_histogram(data, ref_e).savefig(paths[1], dpi=120)
    except OSError as exc:  # e.g. the disk filled up
        raise ConfigError(f"cannot write the figures to {out_dir}: {exc.strerror or one_line(exc)}") from None
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def _plot_best(data: RunData, ref_e: float | None):
    """The best energy so far against evaluations spent, every evaluated energy a faint dot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas, not pyplot: no GUI
    from matplotlib.figure import Figure

    name = data.system.get("name", "?")
    best, at = data.best()
    fig = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if at is None:
        ax.text(0.5, 0.5, "no successful evaluation yet", ha="center", va="center", transform=ax.transAxes)
    else:
        n = np.arange(1, data.n_evaluations + 1)
        running = data.best_so_far()
        shown = np.isfinite(running)
        ax.plot(n[data.ok], data.energy[data.ok], ".", color="0.6", ms=3, alpha=0.5, label="evaluated energy")
        ax.step(n[shown], running[shown], where="post", color="C0", lw=2, label="best so far")
        ax.plot([at], [best], "o", color="C0", ms=6)
        right = at > 0.6 * data.n_evaluations
        ax.annotate(
            f"{best:.4f} {data.unit} at evaluation {at}",
            (at, best),
            textcoords="offset points",
            xytext=(-6 if right else 6, -8),
            ha="right" if right else "left",
            va="top",
            fontsize=9,
        )
        # iteration boundaries
        ends = np.flatnonzero(np.diff(data.iteration) != 0) + 1.5
        for x in ends:
            ax.axvline(x, color="0.85", lw=0.8, zorder=0)
        lo = min(best, ref_e) if ref_e is not None else best
        # top: the best-so-far after the first 2 % of evaluations, so early clashes don't dominate
        first = running[shown][min(int(shown.sum()) - 1, max(0, data.n_evaluations // 50))]
        hi = max(first, lo + 0.1, (ref_e if ref_e is not None else lo) + 0.1)
        pad = 0.08 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(0, max(2, data.n_evaluations) + 0.5)
    if ref_e is not None:
        ax.axhline(ref_e, color="C3", ls="--", lw=1.2, label=f"reference {ref_e:.4f} {data.unit}")
    ax.set_xlabel("evaluations (energy calculations spent)")
    ax.set_ylabel(f"energy ({data.unit})")
    ax.set_title(f"{name}: best energy so far")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=3, fontsize=9, frameon=False)

    return fig


def _plot_histogram(data: RunData, ref_e: float | None):
    """The energies of each iteration (violins), clipped above the best (:func:`energy_window`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas, not pyplot: no GUI
    from matplotlib.figure import Figure

    name = data.system.get("name", "?")
    best, at = data.best()
    iterations = sorted(set(int(i) for i in data.iteration[data.ok])) if at is not None else []
    fig = Figure(figsize=(max(6.0, min(16.0, 2.5 + 0.45 * len(iterations))), 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if not iterations:
        ax.text(0.5, 0.5, "no successful evaluation yet", ha="center", va="center", transform=ax.transAxes)
    else:
        lo, hi = energy_window(data.energy[data.ok], best)
        if ref_e is not None:
            lo = min(lo, ref_e - 0.05 * (hi - ref_e))
        last_done = max((r.get("iteration", -1) for r in data.log), default=-1)
        for k in iterations:
            e = data.energy[data.ok & (data.iteration == k)]
            inside = e[e <= hi]
            above = len(e) - len(inside)
            x = k + 1
            if len(np.unique(inside)) >= 2:
                parts = ax.violinplot(inside, positions=[x], widths=0.8, showextrema=False, showmedians=False)
                for body in parts["bodies"]:
                    body.set_facecolor("C0")
                    body.set_alpha(0.45)
            if len(inside):
                ax.plot(np.full(len(inside), x), inside, "_", color="C0", ms=6, alpha=0.6)
                if np.median(e) <= hi:
                    ax.plot([x], [np.median(e)], "o", color="k", ms=3)
            if above:
                ax.text(x, hi, f"+{above}", ha="center", va="bottom", fontsize=7, color="0.35")
            if k > last_done:
                ax.text(x, lo, "running", ha="center", va="bottom", fontsize=7, color="0.35")
        ax.plot([], [], "o", color="k", ms=3, label="median")
        ax.axhline(best, color="C0", lw=0.8, ls=":", label=f"best {best:.4f} {data.unit}")
        if ref_e is not None:
            ax.axhline(ref_e, color="C3", ls="--", lw=1.2, label=f"reference {ref_e:.4f} {data.unit}")
        ax.set_ylim(lo, hi + 0.06 * (hi - lo))
        ax.set_xlim(min(iterations) + 0.3, max(iterations) + 1.7)
        step = max(1, len(iterations) // 20)
        ax.set_xticks([k + 1 for k in iterations[::step]])
        fig.legend(loc="outside lower center", ncols=4, fontsize=9, frameon=False)
        ax.set_title(
            f"{name}: energies per iteration\n(shown up to {hi - best:.3g} {data.unit} above the best; "
            "+n: how many lie higher)",
            fontsize=10,
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"energy ({data.unit})")
    ax.grid(True, axis="y", alpha=0.3)
    return fig
