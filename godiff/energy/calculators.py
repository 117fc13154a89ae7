"""Calculators built from energy specs: one builder per calculator, the trust check before any is
built, and a program's calculator built and run inside its own directory (see :mod:`godiff.energy`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator

from godiff.energy.specs import _MACE_MP_0_URLS, _PROBE_HOST, _PROBE_SECONDS, calculator_class, normalize_spec
from godiff.errors import EnergyFunctionError, one_line, shown
from godiff.trust import check_trusted

logger = logging.getLogger(__name__)


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
