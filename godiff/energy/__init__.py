"""Energy functions and the counting :class:`Evaluator`.

Energy evaluations are the expensive resource of a global optimization, so this module is the
one place where energy is computed: every calculation is counted, a failing one is recorded
(never raised out of a batch, never lost), and a batch can be dispatched in parallel through any
:class:`concurrent.futures.Executor`. It knows nothing about diffusion.

An energy function is described by a plain, JSON-able *spec* dict::

    {"calculator": "emt"}
    {"calculator": "lj", "epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0}
    {"calculator": "mace", "model": "path/to/file.model", "device": "cpu",
     "default_dtype": "float64"}
    {"calculator": "mace-mp-0", "model": "medium"}
    {"calculator": "chgnet"}
    {"calculator": "xtb", "method": "GFN2-xTB"}            # tblite's GFN2-xTB / GFN1-xTB
    {"calculator": "gpaw", "mode": "lcao", "xc": "PBE", "basis": "dzp"}   # also fd, pw (ecut)
    {"calculator": "ase", "class": "ase.calculators.espresso.Espresso", "options": {...}}

or given directly as any ASE :class:`~ase.calculators.calculator.Calculator`.

``ase`` is any ASE calculator, built as ``class(**options)``. A system file is data that people
share, so naming a class in it must not run arbitrary code: ``class`` is accepted only from
``ase.calculators.*`` (checked to be a calculator class) and from the entry-point group
``godiff.calculators``, which installed packages register (``class`` is then the entry point's
name, or its ``module.attr``); anything else is refused in one line. What a spec may not do
without ``trust_energy`` (load a pickled model, name a program, a path or a directory) is
:mod:`godiff.trust`'s to say; :func:`make_calculator` and :class:`Evaluator` refuse it before
anything is built. A calculator that writes files (a
:class:`~ase.calculators.calculator.FileIOCalculator` or
:class:`~ase.calculators.genericfileio.GenericFileIOCalculator`, or any spec that
:func:`runs_a_program`) runs each evaluation in its own scratch directory (:class:`Evaluator`'s
``scratch``, a run's ``scratch/``), removed when the evaluation succeeds and kept, and named in its
error, when it fails; one built from a spec that runs a program is built at its first evaluation,
inside ``scratch``, and calculates with that directory as the working directory too.

Decisions (measured or reasoned; change them here, with the reason):

* **No torch at import.** ``mace`` and ``chgnet`` (and through them torch and e3nn) are imported
  inside their factories; ``godiff._e3nn`` is imported before mace so that e3nn's bundled
  constants load under torch's weights-only loader. Importing mace sets
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process (mace's model files are full
  pickles); that is mace's documented path for a user-given model file.
* **MACE-MP-0 never waits on the network.** The weights are looked up in mace's own cache
  (``$XDG_CACHE_HOME/mace`` or ``~/.cache/mace``, same file names as ``mace_mp``); only if they
  are missing *and* the download host answers within :data:`_PROBE_SECONDS` are they fetched,
  through mace's own downloader (which writes ``.part`` and renames). Otherwise an
  :class:`~godiff.errors.EnergyFunctionError` says to pass a model file. The default size is
  ``"medium"`` (the MACE-MP-0 medium model), pinned here rather than following mace's default,
  which has changed between mace releases.
* **Raw forces.** A structure is evaluated as a copy with its constraints removed, so
  :attr:`Evaluation.forces` are the physical forces on every atom (frozen atoms included); a
  caller applies its own frozen mask. :meth:`Evaluator.as_calculator` leaves constraints to ASE,
  as any calculator does.
* **No leaks between structures.** The calculator is ``reset()`` before each structure, so a
  calculator that caches on positions (EMT, LJ) always recomputes.
* **Process start method.** ``workers > 1`` uses a :class:`~concurrent.futures.ProcessPoolExecutor`
  with the ``forkserver`` start method (``spawn`` where forkserver is missing). ``fork`` is unsafe
  once torch (or any library) has started threads in the parent, which is always the case in a
  godiff search. forkserver pays the fresh-interpreter start once per process and then forks cheap
  workers from a clean server. Like ``spawn``, it re-imports the ``__main__`` module in the
  workers, so a script that uses ``workers > 1`` needs the usual ``if __name__ == "__main__":``
  guard. Measured on 2 CPUs with EMT on the 79-atom Pt7 on fcc111(6, 6, 2): 12 ms per energy and
  forces; ``workers=2`` is 1.9x faster than ``workers=1`` on 128 structures (fork: 2.0x); a pool
  starts in ~0.6 s (forkserver and spawn alike; ~1.7 s vs ~2.2 s when ``__main__`` imports torch).
* **LJ cutoff.** The default ``cutoff`` of 1000 Å suits clusters (no periodic images). For a
  periodic cell, ASE's neighbour list then spans ~cutoff² (slab) or cutoff³ (bulk) images; set
  ``cutoff`` to a few σ there (the energy is shifted to zero at the cutoff).
* **Workers build their calculator once, lazily.** A worker builds the calculator from the spec
  (or unpickles the given calculator) on its first task and keeps it, cached per thread so a
  thread-based executor never shares one calculator between threads. A calculator that cannot be
  built raises :class:`~godiff.errors.EnergyFunctionError` out of :meth:`Evaluator.evaluate`
  (a configuration error, not a failed calculation). Each worker of the owned pool limits torch to
  ``cpu_count // workers`` threads when torch is loaded, to avoid oversubscription.
* **Counting.** :attr:`Evaluator.n_calls` grows when a calculation is dispatched; a queued task
  that is cancelled (an exception raised by ``on_result``, Ctrl-C) is uncounted, and so is a task
  whose worker could not build the calculator (no calculation happened). A task lost to
  infrastructure (a crashed worker: ``BrokenProcessPool``) is counted and recorded as failed, and
  the owned pool is rebuilt before the next batch.
* **Executor hook.** ``executor=`` accepts any object with the ``submit``/``Future.result``
  semantics of :class:`concurrent.futures.Executor` (a cluster executor later). The task function
  and its arguments (the spec dict or the pickled calculator, and a constraint-free
  :class:`ase.Atoms`) are picklable; the caller owns that executor and :meth:`Evaluator.close`
  does not shut it down.
"""

from godiff.energy.calculators import (
    make_calculator,
    runs_a_program,
)
from godiff.energy.evaluator import (
    BudgetExhausted,
    Evaluation,
    Evaluator,
    EvaluatorCalculator,
    check_iteration,
    worker_context,
    writes_files,
)
from godiff.energy.specs import (
    CALCULATOR_OPTIONS,
    ENTRY_POINTS,
    KNOWN_CALCULATORS,
    calculator_class,
    energy_unit,
    normalize_spec,
)

__all__ = [
    "ENTRY_POINTS",
    "worker_context",
    "CALCULATOR_OPTIONS",
    "KNOWN_CALCULATORS",
    "Evaluation",
    "Evaluator",
    "check_iteration",
    "make_calculator",
    "normalize_spec",
    "energy_unit",
    "EvaluatorCalculator",
    "BudgetExhausted",
    "calculator_class",
    "runs_a_program",
    "writes_files",
]
