"""Did a search find the global minimum, and after how many evaluations?

Success (the criterion of the benchmarks): an evaluated structure that, relaxed afterwards with
BFGS to ``fmax`` = 0.05 eV/Å under the system's own energy function (template frozen as in the
search; these relaxations are *not* counted as evaluations), lands within ``tolerance`` of the
reference global-minimum energy.

Relaxing every evaluated structure would cost far more than the search itself, so structures
are checked in evaluation order and the scan stops at the first success, and two screens skip
structures that cannot succeed (both off for gas-phase clusters, whose relaxations are cheap):

* connectivity: a structure whose mobile atoms do not form one connected group (bond graph with
  edges up to 1.5 x the bond length, minimum image in-plane) is skipped: its fragments sit
  beyond the range where a local relaxation could join them;
* energy: a structure evaluated more than ``screen`` eV above the reference is skipped. The
  default, 3 eV on slabs, was chosen by relaxing random samples of 300 connected structures per
  window in full Pt7/Pt(111) runs (docs/benchmarks/index.md, "How the success check was validated"): in godiff's
  (1, 3] eV window 6 of 300 reached the reference basin, all evaluated at most 1.7 eV above it
  (an earlier 1 eV screen was therefore unsound and was dropped); the (3, 6] eV windows of basin
  hopping and cluster RSS are reported there.

:func:`criterion` names these settings; the benchmark stores it with every record and re-judges
records judged under another one.

``prefilter=False`` and ``screen=None`` relax everything.

The counted figure (:meth:`Success.counted`, the benchmarks' headline): evaluations until the
global-minimum structure is in hand *with the relaxation paid for*. For a method whose rows are
single points, the 1-based index of the first success plus the energy-and-forces calls its
relaxation in the judge made, or the first evaluated energy within tolerance if that comes
earlier (a structure evaluated at the minimum needs no relaxation). A method whose rows are its
own relaxation steps has already paid: its figure is the first evaluated energy within tolerance.
The relaxations of structures before the first success, which a user could not know to skip, are
not added, so for single-point methods the figure is a floor on what a user pays.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.optimize import BFGS

from godiff.energy import make_calculator, writes_files
from godiff.errors import one_line

log = logging.getLogger(__name__)

__all__ = [
    "SuccessWatch",
    "first_within",
    "within",
    "Success",
    "relaxation",
    "relaxed_energy",
    "is_connected",
    "first_success",
    "evaluations_counted",
    "criterion",
]


@dataclass(frozen=True)
class Success:
    """Where a run first succeeded.

    Attributes:
        evaluations: evaluations spent up to and including the successful one (1-based).
        row_id: the database row of that evaluation.
        energy: its energy as evaluated, eV.
        relaxed_energy: after the judge's relaxation (not among ``evaluations``), eV.
        relax_calls: energy-and-forces calls that relaxation made; None where the method's rows
            are its own relaxation steps (``trajectories``), which its evaluations already count.
    """

    evaluations: int
    row_id: int
    energy: float
    relaxed_energy: float
    relax_calls: int | None = None

    def counted(self, within: int | None) -> int | None:
        """Evaluations until the minimum structure is in hand, the relaxation counted.

        ``within``: evaluations to the first evaluated energy within tolerance (None: none), which
        wins when earlier. Single points: ``min(within, evaluations + relax_calls)``; relaxation
        trajectories (``relax_calls`` None): ``within`` itself (None: not in hand).
        """
        if self.relax_calls is None:
            return within
        paid = self.evaluations + self.relax_calls
        return paid if within is None else min(within, paid)


def evaluations_counted(success: Success | None, within: int | None) -> int | None:
    """The counted figure of a run (see :meth:`Success.counted`): ``within`` when there is no success."""
    return within if success is None else success.counted(within)


class _Counting(Calculator):
    """Passes ``inner``'s energy and forces through, counting each structure it computes them for."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        self.results = {
            "energy": self.inner.get_potential_energy(self.atoms),
            "forces": self.inner.get_forces(self.atoms),
        }


def relaxation(atoms, calculator, *, fmax: float = 0.05, steps: int = 500) -> tuple[float, int]:
    """Relax a copy of ``atoms`` (constraints kept) with BFGS: its energy in eV and the number of
    structures ``calculator`` computed energy and forces for on the way (the initial one included)."""
    work = atoms.copy()
    counting = work.calc = _Counting(calculator)
    opt = BFGS(work, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return float(work.get_potential_energy()), counting.calls


def relaxed_energy(atoms, calculator, *, fmax: float = 0.05, steps: int = 500) -> float:
    """Relax a copy of ``atoms`` (constraints kept) with BFGS and return its energy in eV."""
    return relaxation(atoms, calculator, fmax=fmax, steps=steps)[0]


def is_connected(system, mobile_positions: np.ndarray, *, factor: float = 1.5) -> bool:
    """Whether the mobile atoms form one group, bonds up to ``factor`` x the bond length."""
    n = len(mobile_positions)
    if n < 2:
        return True
    positions = np.asarray(mobile_positions, dtype=float)
    d = system.geometry().displacement(positions[:, None, :], positions[None, :, :])  # minimum image
    dist = np.linalg.norm(d, axis=-1)
    sym = system.mobile_symbols
    limit = np.array([[factor * system.pair_min_distance(a, b) / 0.7 for b in sym] for a in sym])
    adj = dist < limit
    seen, stack = {0}, [0]
    while stack:
        i = stack.pop()
        for j in np.nonzero(adj[i])[0]:
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    return len(seen) == n


SLAB_SCREEN = 3.0
#: 3: records carry the counted figure (``evaluations_counted``, ``success_relax_calls``).
CRITERION_VERSION = 3


def criterion(system, *, trajectories: bool = False, fmax: float = 0.05) -> dict:
    """The settings :func:`first_success` judges ``system`` with, as stored in benchmark records."""
    slab = system.template_atoms() is not None
    return {
        "version": CRITERION_VERSION,
        "fmax": fmax,
        "prefilter": slab,
        "screen": SLAB_SCREEN if slab else None,
        "trajectories": trajectories,
    }


def first_success(
    rows,
    system,
    *,
    reference: float,
    tolerance: float,
    fmax: float = 0.05,
    prefilter: bool | None = None,
    screen: float | None | str = "default",
    trajectories: bool = False,
    trust_energy: bool = False,
) -> Success | None:
    """Scan evaluated rows in evaluation order; return the first success, or None.

    Args:
        rows: ASE database rows in evaluation order (e.g. ``RunDir.rows()``).
        system: the :class:`godiff.system.System` (its energy spec relaxes the structures).
        reference: global-minimum energy, eV.
        tolerance: eV.
        fmax: relaxation threshold, eV/Å.
        prefilter: skip disconnected structures; default on for slabs, off for clusters.
        screen: skip structures evaluated more than this many eV above the reference;
            default 3 eV on slabs, none for clusters; ``None`` for none.
        trajectories: the rows of one ``iteration`` are the steps of one local relaxation (RSS,
            basin hopping). Each is judged by its last row, the method's own endpoint; when that
            succeeds, the earliest row of the trajectory that succeeds is the first success. This
            assumes the points of a descent path share its endpoint's basin, and saves relaxing
            every step. Its success has ``relax_calls`` None (see :meth:`Success.counted`).
        trust_energy: as for the run judged (:mod:`godiff.trust`).
    """
    judge = _Judge(
        system,
        reference=reference,
        tolerance=tolerance,
        fmax=fmax,
        prefilter=prefilter,
        screen=screen,
        trust_energy=trust_energy,
    )
    if not trajectories:
        for count, row in enumerate(rows, start=1):
            if judge.succeeds(row):
                return judge.success(count, row)
        return None
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and rows[end].iteration == rows[start].iteration:
            continue
        if judge.succeeds(rows[end - 1]):
            for count in range(start + 1, end + 1):
                if judge.succeeds(rows[count - 1]):
                    return replace(judge.success(count, rows[count - 1]), relax_calls=None)
        start = end
    return None


def within(row, threshold: float) -> bool:
    """Whether ``row`` is a finished evaluation whose *evaluated* energy is at most ``threshold``."""
    return bool(row.get("ok", True)) and row.get("energy") is not None and row.energy <= threshold


def first_within(rows, threshold: float) -> int | None:
    """Evaluations spent up to the first row :func:`within` ``threshold`` (no relaxation): the
    strict figure beside the relaxed success check; None if there is none."""
    return next((count for count, row in enumerate(rows, start=1) if within(row, threshold)), None)


class SuccessWatch:
    """Judges a run's evaluations as they arrive; the ``stop`` of :meth:`godiff.search.Search.run`.

    Each call scans the rows evaluated since the last one, in order, exactly as
    :func:`first_success` does (same judge, each structure relaxed at most once, none after the
    first success), and also notes the first row whose *evaluated* energy is within tolerance of
    the reference (no relaxation). It answers True once both are seen: a random placement that
    happens to relax into the minimum (common on LJ13) does not end a run before the model itself
    samples the minimum. ``success`` and ``within`` (evaluations to each) are then the run's, and
    so is the counted figure, :func:`evaluations_counted` of the two;
    ``scanned`` rows have been judged, so the harness does not judge them a second time. For
    methods whose rows are single points (not relaxation trajectories). ``judged`` holds each
    call's (rows there were when it began, its seconds): the watch runs inside the search, and
    its relaxations (tens of calculator calls per structure, under CHGNet most of a run's wall
    time) are the benchmark's, not what a user waits for (:meth:`seconds_before`).

    Example:
        >>> watch = SuccessWatch(system, reference=24.987, tolerance=0.05)   # doctest: +SKIP
        >>> Search(system, out="runs/s").run(stop=watch); watch.success       # doctest: +SKIP
    """

    def __init__(self, system, *, reference: float, tolerance: float, fmax: float = 0.05, trust_energy: bool = False):
        self._judge = _Judge(
            system,
            reference=reference,
            tolerance=tolerance,
            fmax=fmax,
            prefilter=None,
            screen="default",
            trust_energy=trust_energy,
        )
        self.threshold = reference + tolerance
        self.scanned = 0
        self.success: Success | None = None
        self.within: int | None = None
        self.judged: list[tuple[int, float]] = []

    def __call__(self, search) -> bool:
        rows = search.run_dir.rows()
        start = time.perf_counter()
        try:
            return self.scan(rows)
        finally:
            self.judged.append((len(rows), time.perf_counter() - start))

    def seconds_before(self, row: int) -> float:
        """The watch's seconds spent before the ``row``-th evaluation (1-based) was written."""
        return sum(seconds for rows, seconds in self.judged if rows < row)

    def scan(self, rows) -> bool:
        """Judge ``rows[scanned:]`` (rows in evaluation order); True once both figures are seen."""
        for count, row in enumerate(rows[self.scanned :], start=self.scanned + 1):
            self.scanned = count
            if self.within is None and within(row, self.threshold):
                self.within = count
            if self.success is None and self._judge.succeeds(row):
                self.success = self._judge.success(count, row)
            if self.success is not None and self.within is not None:
                break
        return self.success is not None and self.within is not None


class _Judge:
    """Relaxes one evaluated row at a time (each at most once) and says whether it succeeds."""

    def __init__(self, system, *, reference, tolerance, fmax, prefilter, screen, trust_energy=False):
        self.trust_energy = trust_energy
        slab = system.template_atoms() is not None
        self.system = system
        self.prefilter = slab if prefilter is None else prefilter
        self.screen = (SLAB_SCREEN if slab else None) if screen == "default" else screen
        self.reference, self.tolerance, self.fmax = reference, tolerance, fmax
        self._scratch = tempfile.TemporaryDirectory(prefix="godiff-judge-")  # removed with the judge
        self.calculator = self._new_calculator()
        self.relaxed: dict[int, float] = {}
        self.calls: dict[int, int] = {}  # energy-and-forces calls of each relaxation

    def succeeds(self, row) -> bool:
        if not row.get("ok", True) or row.get("energy") is None:
            return False
        if self.screen is not None and row.energy > self.reference + self.screen:
            return False
        return self.relax(row) <= self.reference + self.tolerance

    def relax(self, row) -> float:
        if row.id in self.relaxed:
            return self.relaxed[row.id]
        system, n_template = self.system, self.system.n_template
        atoms = row.toatoms()
        self.calls[row.id] = 0
        if self.prefilter and not is_connected(system, atoms.positions[n_template:]):
            self.relaxed[row.id] = float("inf")
            return float("inf")
        atoms.set_constraint()
        if n_template:
            from ase.constraints import FixAtoms

            atoms.set_constraint(FixAtoms(mask=np.r_[system.frozen_mask(), np.zeros(system.n_mobile, bool)]))
        try:
            self.relaxed[row.id], self.calls[row.id] = relaxation(atoms, self.calculator, fmax=self.fmax)
        except Exception as exc:  # the energy function failed on the way down (an SCF that does not converge)
            log.warning("row %d: its relaxation failed (%s); judged as no success", row.id, one_line(exc, 300))
            self.relaxed[row.id] = float("inf")
            self.calculator = self._new_calculator()  # a fresh one, whatever state the failure left
        return self.relaxed[row.id]

    def _new_calculator(self):
        """The system's calculator; one that writes files works in a temporary directory of its
        own, never in the user's working directory."""
        calculator = make_calculator(self.system.energy, trust_energy=self.trust_energy, directory=self._scratch.name)
        if writes_files(calculator):
            calculator.directory = self._scratch.name
        return calculator

    def success(self, count: int, row) -> Success:
        return Success(count, int(row.id), float(row.energy), self.relaxed[row.id], self.calls[row.id])
