"""Energy specs: every calculator a spec may name, its options and their one validation, and the
classes an ``ase`` spec may name (see :mod:`godiff.energy`). Cheap: imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ase.calculators.calculator import BaseCalculator

from godiff.errors import ConfigError, EnergyFunctionError, one_line, shown

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
