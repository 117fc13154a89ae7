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

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import importlib.util
import io
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase
import numpy as np
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes

from godiff.errors import ConfigError, EnergyFunctionError, EvaluationFailureError, one_line, shown
from godiff.trust import check_trusted

__all__ = [
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

logger = logging.getLogger(__name__)

#: Every calculator an energy spec may name, with its optional fields and their defaults.
#: The one list of them in godiff: :mod:`godiff.system` validates system files against it.
CALCULATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "emt": {},
    "lj": {"epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0},
    "mace": {"model": None, "device": "auto", "default_dtype": "float64"},
    "mace-mp-0": {"model": "medium", "device": "auto", "default_dtype": "float64"},
    "chgnet": {"model": None, "device": None},
    "xtb": {
        "method": "GFN2-xTB",
        "accuracy": 1.0,
        "electronic_temperature": 300.0,
        "max_iterations": 250,
        "charge": None,
        "multiplicity": None,
    },
    "ase": {"class": None, "options": {}},
    "gpaw": {"mode": "lcao", "xc": "PBE", "basis": "dzp", "h": 0.2, "ecut": 400.0, "kpts": None, "charge": 0},
}

_GPAW_MODES = ("lcao", "fd", "pw")

_XTB_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")
ENTRY_POINTS = "godiff.calculators"
"""The entry-point group through which installed packages offer calculators to ``ase`` specs."""

KNOWN_CALCULATORS: tuple[str, ...] = tuple(CALCULATOR_OPTIONS)
"""The calculator names an energy spec may use."""

#: MACE-MP-0 release files (ACEsuit/mace-mp, release ``mace_mp_0``), by size.
_MACE_MP_0_URLS: dict[str, str] = {
    "small": "https://github.com/ACEsuit/mace-mp/releases/download/mace_mp_0/"
    "2023-12-10-mace-128-L0_energy_epoch-249.model",
    "medium": "https://github.com/ACEsuit/mace-mp/releases/download/mace_mp_0/2023-12-03-mace-128-L1_epoch-199.model",
    "large": "https://github.com/ACEsuit/mace-mp/releases/download/mace_mp_0/MACE_MPtrj_2022.9.model",
}
_PROBE_HOST = ("github.com", 443)
_PROBE_SECONDS = 3.0
_DTYPES = ("float32", "float64")
_MAX_ERROR_CHARS = 500


# ----------------------------------------------------------------------------- specs


def _fields(name: str) -> dict[str, Any]:
    """The optional fields of a calculator spec and their defaults."""
    return dict(CALCULATOR_OPTIONS[name])


def normalize_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an energy spec and fill in its defaults, without building anything.

    Cheap: imports nothing heavy and opens no connection, so a system file can be checked
    before a run starts. A ``mace`` model file must exist.

    Args:
        spec: A dict with a ``"calculator"`` key (one of :data:`KNOWN_CALCULATORS`) and that
            calculator's options.

    Returns:
        A new dict with every option of that calculator present.

    Raises:
        EnergyFunctionError: An unknown calculator, an unknown or invalid option, or a missing
            model file.

    Example:
        >>> normalize_spec({"calculator": "lj", "sigma": 2.0})
        {'calculator': 'lj', 'epsilon': 1.0, 'sigma': 2.0, 'cutoff': 1000.0}
    """
    if not isinstance(spec, Mapping):
        raise EnergyFunctionError(f"an energy spec must be a dict with a 'calculator' key, not {type(spec).__name__}")
    name = spec.get("calculator")
    if name not in KNOWN_CALCULATORS:
        raise EnergyFunctionError(
            f"unknown calculator {shown(name)}; known calculators: {', '.join(KNOWN_CALCULATORS)}"
        )
    defaults = _fields(name)
    _refuse_unknown_options(name, spec, defaults)
    given = {k: v for k, v in spec.items() if v is not None}  # None: the option's default
    out: dict[str, Any] = {"calculator": name, **defaults, **given}
    _OPTION_CHECKS.get(name, lambda out: None)(out)
    return out


def _refuse_unknown_options(name: str, spec: Mapping[str, Any], defaults: dict[str, Any]) -> None:
    unknown = sorted(set(spec) - set(defaults) - {"calculator"}, key=str)
    if unknown:
        import difflib

        allowed = ", ".join(defaults) or "none"
        close = difflib.get_close_matches(str(unknown[0]), list(defaults), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EnergyFunctionError(
            f"unknown option(s) {', '.join(shown(k) for k in unknown)} for calculator {shown(name)} "
            f"({hint}allowed options: {allowed})"
        )


def _check_lj(out: dict[str, Any]) -> None:
    for key in ("epsilon", "sigma", "cutoff"):
        value = out[key]
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EnergyFunctionError(f"lj option {shown(key)} must be a number, not {shown(value)}")
        if not (math.isfinite(value) and value > 0):
            raise EnergyFunctionError(f"lj option {shown(key)} must be positive, not {shown(value)}")
        out[key] = float(value)


def _check_mace_options(out: dict[str, Any]) -> None:
    name = out["calculator"]
    if out["default_dtype"] not in _DTYPES:
        raise EnergyFunctionError(
            f"{name} option 'default_dtype' must be one of {', '.join(_DTYPES)}, not {shown(out['default_dtype'])}"
        )
    if not isinstance(out["device"], str):
        raise EnergyFunctionError(f"{name} option 'device' must be a string")


def _check_mace(out: dict[str, Any]) -> None:
    _check_mace_options(out)
    model = out["model"]
    if not model:
        raise EnergyFunctionError("calculator 'mace' needs a model file: {calculator: mace, model: PATH}")
    if not Path(model).is_file():
        raise EnergyFunctionError(f"MACE model file not found: {model}")
    out["model"] = str(model)


def _check_mace_mp_0(out: dict[str, Any]) -> None:
    _check_mace_options(out)
    model = out["model"]
    # a size is a size, never a file of that name in the working directory
    if not isinstance(model, (str, os.PathLike)) or (str(model) not in _MACE_MP_0_URLS and not Path(model).is_file()):
        raise EnergyFunctionError(
            f"unknown MACE-MP-0 model {shown(model)}: give one of "
            f"{', '.join(_MACE_MP_0_URLS)} or an existing model file"
        )
    out["model"] = str(model)


def _option_number(calculator: str, key: str, value: object, **bounds):
    """``checks.number`` for an energy option: the same range check, as an EnergyFunctionError
    (exit 2) naming the calculator's option."""
    from godiff.checks import number

    try:
        return number(key, value, **bounds)
    except ConfigError as exc:
        message = str(exc).replace(key.replace("_", "-"), key, 1)  # the option as the system file spells it
        raise EnergyFunctionError(f"{calculator} option {message}") from None


def _check_xtb(out: dict[str, Any]) -> None:
    if out["method"] not in _XTB_METHODS:
        raise EnergyFunctionError(
            f"xtb option 'method' must be one of {', '.join(_XTB_METHODS)}, not {shown(out['method'])}"
        )
    for key in ("accuracy", "electronic_temperature"):
        out[key] = float(_option_number("xtb", key, out[key], above=0))
    _option_number("xtb", "max_iterations", out["max_iterations"], minimum=1, integer=True)
    for key, low in (("charge", None), ("multiplicity", 1)):
        if out[key] is not None:
            _option_number("xtb", key, out[key], minimum=low, integer=True)


def _check_gpaw(out: dict[str, Any]) -> None:
    if out["mode"] not in _GPAW_MODES:
        raise EnergyFunctionError(
            f"gpaw option 'mode' must be one of {', '.join(_GPAW_MODES)}, not {shown(out['mode'])}"
        )
    for key in ("xc", "basis"):
        if not isinstance(out[key], str):
            raise EnergyFunctionError(f"gpaw option {key!r} must be a string, not {shown(out[key])}")
    for key in ("h", "ecut"):
        out[key] = float(_option_number("gpaw", key, out[key], above=0))
    kpts = out["kpts"]
    if kpts is not None and not (
        isinstance(kpts, (list, tuple))
        and len(kpts) == 3
        and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in kpts)
    ):
        raise EnergyFunctionError(f"gpaw option 'kpts' must be three positive integers, not {shown(kpts)}")
    _option_number("gpaw", "charge", out["charge"])


def _check_ase(out: dict[str, Any]) -> None:
    name = out["class"]
    if not isinstance(name, str) or not name:
        raise EnergyFunctionError("calculator 'ase' needs a class: {calculator: ase, class: ase.calculators.emt.EMT}")
    if not isinstance(out["options"], Mapping) or not all(isinstance(k, str) for k in out["options"]):
        raise EnergyFunctionError(
            f"ase option 'options' must be a mapping of keyword arguments, not {shown(out['options'])}"
        )
    out["options"] = dict(out["options"])
    calculator_class(name)  # refused here, before a run starts, unless it is an allowed calculator class


def calculator_class(name: str) -> type:
    """The calculator class an ``ase`` spec names, if it may name it (see the module docstring):
    ``ase.calculators.MODULE.CLASS``, or an entry point of :data:`ENTRY_POINTS` (by its name or
    its ``module.attr``). Anything else, or something that is not a calculator class, is an
    :class:`~godiff.errors.EnergyFunctionError` (exit 2).

    Example:
        >>> calculator_class("ase.calculators.emt.EMT").__name__
        'EMT'
        >>> calculator_class("os.system")
        Traceback (most recent call last):
        ...
        godiff.errors.EnergyFunctionError: class 'os.system' is not an allowed calculator: give an ASE calculator (ase.calculators.MODULE.CLASS) or one an installed package registers as a godiff.calculators entry point (none registered)
    """
    registered = _registered_calculators()
    if name in registered:
        target = registered[name].load()
    elif (
        name.startswith("ase.calculators.") and name.count(".") >= 3 and all(p.isidentifier() for p in name.split("."))
    ):
        module, _, attr = name.rpartition(".")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise EnergyFunctionError(f"class {shown(name)}: not found ({one_line(exc)})") from None
    else:
        known = ", ".join(sorted(registered)) or "none registered"
        raise EnergyFunctionError(
            f"class {shown(name)} is not an allowed calculator: give an ASE calculator (ase.calculators.MODULE.CLASS) "
            f"or one an installed package registers as a {ENTRY_POINTS} entry point ({known})"
        )
    if not (isinstance(target, type) and issubclass(target, BaseCalculator)):
        raise EnergyFunctionError(f"class {shown(name)} is not an ASE calculator class")
    return target


def _registered_calculators() -> dict[str, Any]:
    """The entry points of :data:`ENTRY_POINTS`, by name and by ``module.attr``."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINTS):
        found[ep.name] = ep
        found[ep.value.replace(":", ".")] = ep
    return found


#: The checks of each calculator's options, after the defaults are filled in (in place).
_OPTION_CHECKS = {
    "lj": _check_lj,
    "mace": _check_mace,
    "mace-mp-0": _check_mace_mp_0,
    "xtb": _check_xtb,
    "ase": _check_ase,
    "gpaw": _check_gpaw,
}


def energy_unit(spec: Mapping[str, Any] | None) -> str:
    """The unit an energy spec's energies (and temperatures) are in: ``"ε"`` for Lennard-Jones in
    reduced units, else ``"eV"``; the one place that decides it from the calculator's name.

    Example:
        >>> energy_unit({"calculator": "lj"}), energy_unit({"calculator": "emt"})
        ('ε', 'eV')
    """
    return "ε" if (spec or {}).get("calculator") == "lj" else "eV"


def make_calculator(
    spec: Mapping[str, Any], *, trust_energy: bool = False, directory: str | os.PathLike | None = None
) -> Calculator:
    """Build a fresh ASE calculator from an energy spec.

    Args:
        spec: An energy spec (see the module docstring and :func:`normalize_spec`).
        trust_energy: Allow what a shared file may not do (:mod:`godiff.trust`): load a pickled
            model, honour a program, a path or a directory named in the spec.
        directory: Where a calculator that runs a program is built (its ``directory``, and the
            working directory while it is built); ``None``: where we are.

    Returns:
        A new calculator; nothing is shared with earlier calls.

    Raises:
        EnergyFunctionError: The spec is invalid or not trusted, an optional package is missing,
            or a model cannot be found or loaded.

    Example:
        >>> from ase.build import bulk
        >>> atoms = bulk("Cu", cubic=True)
        >>> atoms.calc = make_calculator({"calculator": "emt"})
        >>> round(float(atoms.get_potential_energy()), 4)
        -0.0227
    """
    spec = normalize_spec(spec)
    check_trusted(spec, trust_energy=trust_energy)
    return _build(spec, directory)


def runs_a_program(spec: Mapping[str, Any]) -> bool:
    """Whether a normalized spec's calculator may start a program or write files: any ``ase``
    class but ASE's in-process potentials (:data:`_IN_PROCESS_ASE`). godiff builds and runs such a
    calculator inside a scratch directory (its own directory and the process's working directory),
    so that nothing it writes lands outside the run directory, and never builds it before a run
    directory exists.

    Example:
        >>> runs_a_program({"calculator": "ase", "class": "ase.calculators.gaussian.Gaussian"})
        True
        >>> runs_a_program({"calculator": "ase", "class": "ase.calculators.emt.EMT"}), runs_a_program({"calculator": "xtb"})
        (False, False)
    """
    if spec.get("calculator") != "ase":
        return False
    module = str(spec.get("class", "")).rpartition(".")[0]
    return module not in _IN_PROCESS_ASE


#: ASE's calculators that compute in this process and write nothing (the rest drive a program).
_IN_PROCESS_ASE = tuple(
    f"ase.calculators.{m}"
    for m in (
        "emt",
        "lj",
        "morse",
        "eam",
        "ff",
        "tersoff",
        "tip3p",
        "tip4p",
        "acn",
        "combine_mm",
        "counterions",
        "h2morse",
        "harmonic",
        "idealgas",
        "test",
        "mixing",
        "qmmm",
        "fd",
        "singlepoint",
    )
)

_CWD_LOCK = threading.RLock()


@contextlib.contextmanager
def _inside(directory: str | os.PathLike | None) -> Iterator[None]:
    """Run the block with ``directory`` (created) as the process's working directory and its
    temporary directory (``tempfile``'s and ``TMPDIR``, which ASE's LAMMPS uses for its files), so
    that what a calculator writes there stays inside; ``None``: where we are. One thread of a
    process at a time."""
    if directory is None:
        yield
        return
    import tempfile

    directory = os.path.abspath(directory)
    Path(directory).mkdir(parents=True, exist_ok=True)
    with _CWD_LOCK:
        here, saved_tempdir, saved_env = os.getcwd(), tempfile.tempdir, os.environ.get("TMPDIR")
        os.chdir(directory)
        tempfile.tempdir = os.environ["TMPDIR"] = directory
        try:
            yield
        finally:
            os.chdir(here)
            tempfile.tempdir = saved_tempdir
            if saved_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_env


def _build(spec: dict[str, Any], directory: str | os.PathLike | None = None) -> Calculator:
    """A calculator of a normalized spec that the trust check has admitted; one that runs a
    program is built inside ``directory`` (:func:`runs_a_program`)."""
    if directory is None or not runs_a_program(spec):
        return _BUILDERS[spec["calculator"]](spec)
    with _inside(directory):
        return _build_ase(spec, directory=os.path.abspath(directory))


def _build_emt(spec: dict[str, Any]) -> Calculator:
    from ase.calculators.emt import EMT

    return EMT()


def _build_lj(spec: dict[str, Any]) -> Calculator:
    from ase.calculators.lj import LennardJones

    # smooth=False: ASE shifts the pair energy to zero at rc; with the default rc of 1000 Å the
    # shift is ~1e-18 eV, so cluster minima are the textbook ones.
    return LennardJones(epsilon=spec["epsilon"], sigma=spec["sigma"], rc=spec["cutoff"], smooth=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Route what third-party code prints to stdout into this module's log (DEBUG)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                logger.debug("%s", line.strip())


def _torch_device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _import_mace_calculator() -> type:
    try:
        import godiff._e3nn  # noqa: F401  (allow-lists `slice` before e3nn loads its constants)

        with _quiet():
            from mace.calculators import MACECalculator
    except ImportError as exc:
        raise EnergyFunctionError(f"mace-torch is not importable: {exc}") from exc
    return MACECalculator


def _load_mace(path: str, spec: dict[str, Any]) -> Calculator:
    mace_calculator = _import_mace_calculator()
    try:
        with _quiet():
            # A list, not a string: MACECalculator globs a string path.
            return mace_calculator(
                model_paths=[path],
                device=_torch_device(spec["device"]),
                default_dtype=spec["default_dtype"],
            )
    except Exception as exc:
        raise EnergyFunctionError(f"could not load MACE model {path}: {type(exc).__name__}: {exc}") from exc


def _build_mace(spec: dict[str, Any]) -> Calculator:
    return _load_mace(spec["model"], spec)


def _mace_cache_file(url: str) -> Path:
    """Where ``mace_mp`` keeps the download of ``url`` (same rule as mace's own)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mace"
    name = "".join(c for c in os.path.basename(url) if c.isalnum() or c in "_")
    return cache / name


def _reachable(host: str, port: int, *, timeout: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds in total.

    Name resolution is not bounded by socket timeouts, so the probe runs in a daemon thread
    that is abandoned when the deadline passes.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="godiff-net-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _mace_mp_0_file(model: str) -> str:
    """The local file of a MACE-MP-0 model: a given file, mace's cache, or a quick download. A size
    (``medium``) is looked up in mace's cache only, never as a file of that name where we are."""
    if model not in _MACE_MP_0_URLS:
        return model
    url = _MACE_MP_0_URLS[model]
    cached = _mace_cache_file(url)
    if cached.is_file():
        return str(cached)
    hint = "pass a model file as `energy: {calculator: mace, model: PATH}`"
    if not _reachable(*_PROBE_HOST, timeout=_PROBE_SECONDS):
        raise EnergyFunctionError(
            f"the MACE-MP-0 weights ({shown(model)}) could not be obtained: not in mace's cache "
            f"({cached}) and {_PROBE_HOST[0]} is unreachable; {hint}"
        )
    _import_mace_calculator()
    try:
        from mace.calculators.foundations_models import download_mace_mp_checkpoint

        logger.info("downloading the MACE-MP-0 %s weights from %s", model, url)
        with _quiet():
            path = download_mace_mp_checkpoint(url)
    except Exception as exc:
        raise EnergyFunctionError(
            f"the MACE-MP-0 weights ({shown(model)}) could not be obtained: {type(exc).__name__}: {exc}; {hint}"
        ) from exc
    return str(path)


def _build_mace_mp_0(spec: dict[str, Any]) -> Calculator:
    return _load_mace(_mace_mp_0_file(spec["model"]), spec)


def _build_chgnet(spec: dict[str, Any]) -> Calculator:
    if importlib.util.find_spec("chgnet") is None:
        raise EnergyFunctionError(
            "the chgnet package is not importable; install the optional extra: pip install godiff[chgnet]"
        )
    try:
        with _quiet():
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            model = CHGNet.load(model_name=spec["model"]) if spec["model"] else None
            return CHGNetCalculator(model=model, use_device=spec["device"])
    except ImportError as exc:
        raise EnergyFunctionError(
            f"the chgnet package is not importable ({exc}); install the optional extra: pip install godiff[chgnet]"
        ) from exc
    except Exception as exc:
        raise EnergyFunctionError(f"could not build the CHGNet calculator: {type(exc).__name__}: {exc}") from exc


def _build_xtb(spec: dict[str, Any]) -> Calculator:
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise EnergyFunctionError(
            f"calculator 'xtb' needs tblite ({exc}); install it with: pip install 'godiff[xtb]'"
        ) from None
    options = {
        k: spec[k]
        for k in ("method", "accuracy", "electronic_temperature", "max_iterations", "charge", "multiplicity")
        if spec[k] is not None
    }
    return TBLite(verbosity=0, **options)


def _build_gpaw(spec: dict[str, Any]) -> Calculator:
    try:
        from gpaw import GPAW, PW
    except ImportError as exc:
        raise EnergyFunctionError(
            f"calculator 'gpaw' needs GPAW ({exc}); docs/tutorials/clusters.md, \"GPAW\", says how to build it"
        ) from None
    options: dict[str, Any] = {"xc": spec["xc"], "txt": None, "charge": spec["charge"]}
    if spec["mode"] == "pw":
        options["mode"] = PW(spec["ecut"])
    else:
        options.update(mode=spec["mode"], h=spec["h"])
        if spec["mode"] == "lcao":
            options["basis"] = spec["basis"]
    if spec["kpts"] is not None:
        options["kpts"] = tuple(spec["kpts"])
    return GPAW(**options)


def _build_ase(spec: dict[str, Any], directory: str | None = None) -> Calculator:
    cls = calculator_class(spec["class"])
    options = dict(spec["options"])
    if directory is not None and _takes_directory(cls):
        options["directory"] = directory
    try:
        calc = cls(**options)
    except Exception as exc:
        raise EnergyFunctionError(f"could not build {spec['class']}: {type(exc).__name__}: {one_line(exc)}") from exc
    if directory is not None and hasattr(calc, "directory"):
        _set_directory(calc, directory)
    return calc


def _set_directory(calc: Calculator, directory: str | os.PathLike) -> None:
    """Point ``calc`` at ``directory``, in the type its class keeps (a ``Path`` for ASE's
    :class:`~ase.calculators.genericfileio.GenericFileIOCalculator`, Espresso's and ORCA's, which
    call ``directory.mkdir``; a string for the others)."""
    from ase.calculators.genericfileio import GenericFileIOCalculator

    calc.directory = Path(directory) if isinstance(calc, GenericFileIOCalculator) else str(directory)


def _takes_directory(cls: type) -> bool:
    """Whether ``cls(directory=...)`` is accepted: a ``directory`` parameter, or ``**kwargs`` that
    reach :class:`~ase.calculators.calculator.Calculator` (which takes one)."""
    import inspect

    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return "directory" in params or (
        issubclass(cls, Calculator) and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    )


_BUILDERS: dict[str, Callable[[dict[str, Any]], Calculator]] = {
    "emt": _build_emt,
    "lj": _build_lj,
    "mace": _build_mace,
    "mace-mp-0": _build_mace_mp_0,
    "chgnet": _build_chgnet,
    "xtb": _build_xtb,
    "ase": _build_ase,
    "gpaw": _build_gpaw,
}


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one energy calculation.

    Attributes:
        energy: Potential energy in eV; ``None`` if the calculation failed.
        forces: (n_atoms, 3) float64 forces in eV/Å on every atom, constraints not applied;
            ``None`` if the calculation failed.
        ok: Whether the calculation succeeded with finite energy and forces.
        error: One line: the exception type and message, or ``"non-finite energy"`` /
            ``"non-finite forces"``; ``None`` if ``ok``.
        seconds: Wall time of this calculation in s (not counting building the calculator or
            moving the structure to a worker).
    """

    energy: float | None
    forces: np.ndarray | None
    ok: bool
    error: str | None
    seconds: float


def _one_line(exc: BaseException) -> str:
    """A failed evaluation's error as the database keeps it: the exception's type and message."""
    return one_line(f"{type(exc).__name__}: {exc}", _MAX_ERROR_CHARS)


def _failure(error: str, seconds: float = 0.0) -> Evaluation:
    return Evaluation(energy=None, forces=None, ok=False, error=error, seconds=seconds)


def _bare(atoms: ase.Atoms) -> ase.Atoms:
    """A copy of ``atoms`` without calculator and constraints (what is sent to a worker)."""
    if not isinstance(atoms, ase.Atoms):
        raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
    copy = atoms.copy()
    copy.set_constraint()
    return copy


def writes_files(calc: Calculator) -> bool:
    """Whether ``calc`` works through files in its ``directory`` (ASE's file-IO calculators)."""
    from ase.calculators.calculator import FileIOCalculator
    from ase.calculators.genericfileio import GenericFileIOCalculator

    return isinstance(calc, (FileIOCalculator, GenericFileIOCalculator))


def _compute(calc: Calculator, atoms: ase.Atoms, scratch: str | None = None, isolate: bool = False) -> Evaluation:
    """Energy and forces of a constraint-free ``atoms`` (modified: its calc is set) with ``calc``.

    A calculator that writes files works in its own new directory under ``scratch``, removed
    after a success and kept (named in the error) after a failure; one that runs a program
    (``isolate``, :func:`runs_a_program`) also has that directory as its working directory while
    it calculates. Never raises for a failing calculation.
    """
    directory = None
    if scratch is not None and (isolate or writes_files(calc)):
        directory = Path(scratch).absolute() / f"eval-{uuid.uuid4().hex[:12]}"
        directory.mkdir(parents=True)
        # inside its working directory a calculator is pointed at "." (ASE's LAMMPS builds file
        # names from its directory, which must not hold a path); elsewhere at the directory itself
        _set_directory(calc, "." if isolate else directory)
    with _inside(directory if isolate else None):
        evaluation = _calculate(calc, atoms)
    if directory is not None:
        if evaluation.ok:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            evaluation = _failure(f"{evaluation.error} (its files are kept in {directory})", evaluation.seconds)
    return evaluation


def _calculate(calc: Calculator, atoms: ase.Atoms) -> Evaluation:
    start = time.perf_counter()
    try:
        reset = getattr(calc, "reset", None)  # GPAW's new calculator has none (and checks positions itself)
        if reset is not None:
            reset()  # a new structure always recomputes, whatever the calculator caches
        atoms.calc = calc
        # forces first: a calculator asked for the energy alone may run its program once for it and
        # again for the forces (ASE's Dftb does); asked for forces it keeps the energy of that run
        forces = np.array(atoms.get_forces(), dtype=np.float64, copy=True)
        energy = float(atoms.get_potential_energy())
    except Exception as exc:
        return _failure(_one_line(exc), time.perf_counter() - start)
    finally:
        atoms.calc = None
    seconds = time.perf_counter() - start
    if not math.isfinite(energy):
        return _failure("non-finite energy", seconds)
    if forces.shape != (len(atoms), 3):
        return _failure(f"forces of shape {forces.shape}, expected ({len(atoms)}, 3)", seconds)
    if not np.isfinite(forces).all():
        return _failure("non-finite forces", seconds)
    return Evaluation(energy=energy, forces=forces, ok=True, error=None, seconds=seconds)


# Worker side: calculators built once per (evaluator, thread) and kept.
_WORKER_LOCAL = threading.local()
_WORKER_SOURCES: dict[str, dict[str, Any] | bytes] = {}
_WORKER_CACHE_SIZE = 4


def _worker_register(key: str, source: dict[str, Any] | bytes) -> None:
    """Pool initializer: remember how to build this evaluator's calculator (builds nothing).

    Workers ignore SIGINT: Ctrl-C is the parent's to handle (it cancels queued work), and a
    worker that died of it would only print a second traceback.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_SOURCES[key] = source


def _worker_calculator(
    key: str, source: dict[str, Any] | bytes | None, threads: int | None, scratch: str | None = None
) -> Calculator:
    cache = getattr(_WORKER_LOCAL, "calculators", None)
    if cache is None:
        cache = _WORKER_LOCAL.calculators = collections.OrderedDict()
    if key in cache:
        return cache[key]
    source = source if source is not None else _WORKER_SOURCES[key]
    if isinstance(source, bytes):  # a calculator object the user gave in Python, never one from a file
        try:
            calc = pickle.loads(source)
        except Exception as exc:
            raise EnergyFunctionError(f"the calculator could not be unpickled in a worker: {_one_line(exc)}") from None
    else:
        calc = _build(source, scratch)  # the spec was checked, trust included, by the Evaluator
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    cache[key] = calc
    while len(cache) > _WORKER_CACHE_SIZE:
        cache.popitem(last=False)
    return calc


def _worker_evaluate(
    key: str,
    source: dict[str, Any] | bytes | None,
    atoms: ase.Atoms,
    threads: int | None,
    scratch: str | None = None,
) -> Evaluation:
    """The task run by an executor: one calculation with this worker's calculator."""
    known = source if source is not None else _WORKER_SOURCES[key]
    isolate = isinstance(known, dict) and runs_a_program(known)
    return _compute(_worker_calculator(key, source, threads, scratch), atoms, scratch, isolate)


def worker_context() -> multiprocessing.context.BaseContext:
    """The one safe way godiff starts worker processes: ``forkserver`` (``spawn`` where it is
    missing), never ``fork`` once torch has started threads (see the module docstring). Used by
    the evaluator's pool and the benchmark harness's."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class BudgetExhausted(Exception):
    """An :class:`EvaluatorCalculator`'s budget of evaluations is spent (control flow, not an error)."""


class EvaluatorCalculator(Calculator):
    """An ASE calculator whose every calculation is one counted call of an :class:`Evaluator`.

    The one adapter from godiff's evaluator to ASE (BFGS, basin hopping, AGOX): the evaluator
    counts every call, ``budget`` (evaluations through this calculator) raises
    :class:`BudgetExhausted` before one more is spent, and ``on_result(atoms, evaluation)``
    sees each evaluation the moment it is made (e.g. to write it to a run directory). A failed
    calculation raises :class:`~godiff.errors.EvaluationFailureError`.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, evaluator: Evaluator, *, budget: int | None = None, on_result=None):
        super().__init__()
        self.evaluator = evaluator
        self.budget = budget
        self.on_result = on_result
        self.spent = 0

    def evaluate(self, atoms: ase.Atoms) -> Evaluation:
        """One counted single point of ``atoms`` (failures returned, not raised)."""
        if self.budget is not None and self.spent >= self.budget:
            raise BudgetExhausted()
        evaluation = self.evaluator.single_point(atoms)
        self.spent += 1
        if self.on_result is not None:
            self.on_result(atoms, evaluation)
        return evaluation

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        evaluation = self.evaluate(self.atoms)
        if not evaluation.ok:
            raise EvaluationFailureError(f"energy evaluation failed: {evaluation.error}")
        self.results = {
            "energy": evaluation.energy,
            "free_energy": evaluation.energy,
            "forces": evaluation.forces.copy(),
        }


class Evaluator:
    """The one place where energy is computed: every call counted, failures survived, parallel
    dispatch pluggable.

    Args:
        energy: An energy spec dict (see :func:`normalize_spec`) or an ASE calculator.
        workers: Number of worker processes; ``1`` computes in this process with one calculator
            built once and reused. Ignored when ``executor`` is given.
        executor: Any :class:`concurrent.futures.Executor` (or an object with the same
            ``submit``/``result`` semantics, e.g. a cluster executor) to dispatch calculations
            to; the caller owns it and must keep it open while this evaluator is used.
        scratch: The folder under which a file-writing calculator gets one new directory per
            evaluation (see the module docstring); ``None``: its own ``directory`` as given.
            Workers of another machine need it on a shared file system. A calculator that
            runs a program (:func:`runs_a_program`) is built at its first evaluation, inside it.
        trust_energy: Allow a spec what a shared file may not do (:mod:`godiff.trust`); without
            it such a spec is refused here, before anything is built.

    Attributes:
        spec: The normalized energy spec (see :func:`normalize_spec`), or ``None`` when a
            calculator object was given; record it to rebuild the energy function.
        workers: The number of worker processes asked for.

    Raises:
        EnergyFunctionError: The spec is invalid, the calculator cannot be built (in-process),
            or a calculator object cannot be pickled for the workers.
        ConfigError: ``workers`` is not a positive integer.

    Example:
        >>> from ase.build import fcc111
        >>> with Evaluator({"calculator": "emt"}) as evaluator:
        ...     evaluation = evaluator.single_point(fcc111("Pt", (2, 2, 2), vacuum=6.0))
        >>> evaluation.ok, evaluator.n_calls
        (True, 1)
    """

    def __init__(
        self,
        energy: Mapping[str, Any] | Calculator,
        *,
        workers: int = 1,
        executor: concurrent.futures.Executor | None = None,
        scratch: str | os.PathLike | None = None,
        trust_energy: bool = False,
    ):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, not {shown(workers)}")
        self.workers = workers
        self.scratch = scratch
        self._lock = threading.Lock()
        self._n_calls = 0
        self._n_failed = 0
        self._closed = False
        self._key = uuid.uuid4().hex
        self._calc: Calculator | None = None
        self._source: dict[str, Any] | bytes | None = None
        self._external = executor
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pool_broken = False
        parallel = executor is not None or workers > 1
        self._in_process = not parallel
        self._isolate = False  # whether the calculator runs a program (built and run in scratch)

        if isinstance(energy, BaseCalculator):  # GenericFileIOCalculator (Espresso, ORCA) is no Calculator
            self.spec: dict[str, Any] | None = None
            if parallel:
                try:
                    self._source = pickle.dumps(energy)
                except Exception as exc:
                    raise EnergyFunctionError(
                        f"the calculator {type(energy).__name__} cannot be pickled to send it "
                        f"to workers ({_one_line(exc)}); pass an energy spec dict or use "
                        "workers=1"
                    ) from exc
            else:
                self._calc = energy
        else:
            self.spec = normalize_spec(energy)
            check_trusted(self.spec, trust_energy=trust_energy)
            self._isolate = runs_a_program(self.spec)
            if not parallel:
                if not self._isolate:  # one that runs a program waits for its first evaluation, in scratch
                    self._calc = _build(self.spec)
            else:
                source = dict(self.spec)
                if source["calculator"] == "mace-mp-0":
                    # Fetch once here, so that workers never race on one download.
                    source["model"] = _mace_mp_0_file(source["model"])
                self._source = source

    def __repr__(self) -> str:
        what = self.spec["calculator"] if self.spec else "calculator object"
        where = "executor" if self._external is not None else f"workers={self.workers}"
        return f"Evaluator({what}, {where}, n_calls={self._n_calls}, n_failed={self._n_failed})"

    @property
    def n_calls(self) -> int:
        """Every calculation ever dispatched, failed ones included."""
        return self._n_calls

    @property
    def n_failed(self) -> int:
        """The calculations that failed (an exception, or non-finite energy or forces)."""
        return self._n_failed

    def evaluate(
        self,
        structures: Sequence[ase.Atoms],
        *,
        on_result: Callable[[int, ase.Atoms, Evaluation], None] | None = None,
    ) -> list[Evaluation]:
        """Energy and forces of a batch of structures; a failing calculation is recorded.

        Args:
            structures: The structures; they are not modified (each is evaluated as a copy
                without constraints).
            on_result: Called in this process as ``on_result(index, structure, evaluation)``
                as soon as each result arrives (in completion order when parallel), so a caller
                can persist it before the batch ends. An exception it raises propagates, after
                queued calculations are cancelled (and uncounted).

        Returns:
            One :class:`Evaluation` per structure, in input order.

        Raises:
            EnergyFunctionError: A worker could not build the calculator.
            TypeError: A structure is not an :class:`ase.Atoms`.
        """
        if self._closed:
            raise RuntimeError("this Evaluator is closed")
        structures = list(structures)
        payloads = [_bare(atoms) for atoms in structures]
        if self._in_process:
            if self._calc is None:
                self._calc = _build(self.spec, self._scratch())
            results = []
            for index, (atoms, payload) in enumerate(zip(structures, payloads)):
                with self._lock:
                    self._n_calls += 1
                evaluation = _compute(self._calc, payload, self._scratch(), self._isolate)
                self._record(index, len(structures), evaluation)
                results.append(evaluation)
                if on_result is not None:
                    on_result(index, atoms, evaluation)
            return results
        return self._evaluate_parallel(structures, payloads, on_result)

    def _evaluate_parallel(self, structures, payloads, on_result) -> list[Evaluation]:
        executor, source, threads = self._executor()
        n = len(structures)
        results: list[Evaluation | None] = [None] * n
        futures: dict[concurrent.futures.Future, int] = {}

        def deliver(index: int, evaluation: Evaluation) -> None:
            results[index] = evaluation
            self._record(index, n, evaluation)
            if on_result is not None:
                on_result(index, structures[index], evaluation)

        def outcome(future: concurrent.futures.Future) -> Evaluation:
            try:
                return future.result()
            except EnergyFunctionError:
                with self._lock:
                    self._n_calls -= 1  # no calculation happened: the calculator was not built
                raise
            except Exception as exc:  # infrastructure: a crashed worker, a lost task
                self._pool_broken |= isinstance(exc, BrokenProcessPool)
                return _failure(_one_line(exc))

        try:
            early: list[tuple[int, Evaluation]] = []
            for index, payload in enumerate(payloads):
                with self._lock:
                    self._n_calls += 1
                try:
                    future = executor.submit(_worker_evaluate, self._key, source, payload, threads, self._scratch())
                except Exception as exc:  # a broken or shut-down executor
                    self._pool_broken |= isinstance(exc, BrokenProcessPool)
                    early.append((index, _failure(_one_line(exc))))
                else:
                    futures[future] = index
            for index, evaluation in early:
                deliver(index, evaluation)
            for future in concurrent.futures.as_completed(list(futures)):
                index = futures.pop(future)
                try:
                    evaluation = outcome(future)
                except EnergyFunctionError:
                    # Cancel what is queued, but keep what other workers computed meanwhile.
                    self._cancel(futures)
                    for other in concurrent.futures.as_completed(list(futures)):
                        with contextlib.suppress(EnergyFunctionError):
                            deliver(futures.pop(other), outcome(other))
                    raise
                deliver(index, evaluation)
        finally:
            self._cancel(futures)
        return results  # type: ignore[return-value]

    def _scratch(self) -> str | None:
        return None if self.scratch is None else str(Path(self.scratch).absolute())

    def _cancel(self, futures: dict[concurrent.futures.Future, int]) -> None:
        """Cancel the queued futures (uncounted); the running ones are left in ``futures``."""
        for future in list(futures):
            if future.cancel():
                del futures[future]
                with self._lock:
                    self._n_calls -= 1

    def _record(self, index: int, n: int, evaluation: Evaluation) -> None:
        if not evaluation.ok:
            with self._lock:
                self._n_failed += 1
            logger.warning("evaluation %d of %d failed: %s", index, n, evaluation.error)

    def _executor(self) -> tuple[Any, dict[str, Any] | bytes | None, int | None]:
        """The executor, what a task must carry to build the calculator, and torch threads."""
        if self._external is not None:
            return self._external, self._source, None
        if self._pool is not None and self._pool_broken:
            logger.warning("the worker pool broke; starting a new one")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._pool is None:
            self._pool_broken = False
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=worker_context(),
                initializer=_worker_register,
                initargs=(self._key, self._source),
            )
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return self._pool, None, threads

    def single_point(self, atoms: ase.Atoms) -> Evaluation:
        """One counted calculation of ``atoms`` (energy in eV, forces in eV/Å)."""
        return self.evaluate([atoms])[0]

    def check(self) -> None:
        """Build the energy function once in this process, so that a broken one (a missing
        package or model file, an unreachable download) fails here, before anything is
        written; an in-process evaluator has built it already, and a calculator object is
        taken as it is. The check's calculator is dropped (workers build their own). A
        calculator that runs a program is not built here: it could start that program and
        write files before the run directory exists (:func:`runs_a_program`)."""
        if self._calc is None and self.spec is not None and not self._isolate:
            _build(self._source if isinstance(self._source, dict) else self.spec)

    def as_calculator(self, *, budget: int | None = None, on_result=None) -> EvaluatorCalculator:
        """An ASE calculator backed by this evaluator, for classical methods (BFGS, ...).

        Every energy/forces calculation it does is one counted :meth:`single_point`; ASE's own
        caching means asking for the energy after the forces of the same positions costs
        nothing. A failed calculation raises :class:`~godiff.errors.EvaluationFailureError`.
        Constraints of the atoms it is attached to are applied by ASE, as usual. ``budget`` and
        ``on_result``: see :class:`EvaluatorCalculator`.
        """
        return EvaluatorCalculator(self, budget=budget, on_result=on_result)

    def close(self) -> None:
        """Shut down the owned worker pool (a given executor is left to its owner)."""
        self._closed = True
        self._calc = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_iteration(evaluations: Sequence[Evaluation], *, max_failed_fraction: float = 0.5) -> None:
    """Raise when too many evaluations of one iteration failed.

    Args:
        evaluations: The evaluations of one iteration.
        max_failed_fraction: The largest tolerated fraction of failed evaluations, in [0, 1].

    Raises:
        EvaluationFailureError: More than ``max_failed_fraction`` of them failed.
        ConfigError: ``max_failed_fraction`` is outside [0, 1].
    """
    if not 0.0 <= max_failed_fraction <= 1.0:
        raise ConfigError(f"max_failed_fraction must be in [0, 1], not {shown(max_failed_fraction)}")
    failed = [e for e in evaluations if not e.ok]
    total = len(evaluations)
    if total and len(failed) / total > max_failed_fraction:
        raise EvaluationFailureError(
            f"{len(failed)} of {total} evaluations failed in this iteration; first error: {failed[0].error}"
        )
