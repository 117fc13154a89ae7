"""The system to optimise: a fixed template, the mobile atoms, their box and the energy spec.

A :class:`System` says *what* is searched: which atoms move (``mobile``), on what fixed
structure (``template``, ``None`` for a gas-phase cluster), inside which region (``box``),
and under which energy function (``energy``, a spec that :mod:`godiff.energy` turns into a
calculator). It is a frozen dataclass that round-trips through a plain dict and YAML::

    name: pt7-pt111
    mobile: Pt7                      # a formula string, or a mapping {Pt: 7}
    template: {builder: fcc111, symbol: Pt, size: [6, 6, 2], vacuum: 8.0, frozen: all}
    box: {kind: slab, z_min: 1.0, z_max: 6.0}
    energy: {calculator: emt}
    reference: {energy: 24.987, source: "...", tolerance: 0.05}

Every user mistake raises :class:`godiff.errors.SystemFileError` whose message is one line
that starts with the field at fault (``box.z_max: must be greater than box.z_min ...``).

Decisions worth knowing:

* Values are normalised when a ``System`` is made (formula -> mapping sorted by atomic
  number, tuples -> lists, numbers -> float, ``None``-valued builder keywords dropped,
  relative file paths made absolute), so ``System.from_dict(s.to_dict()) == s`` holds and
  :meth:`System.digest` does not depend on how the input was spelled.
* A template needs a ``slab`` box and a ``slab`` box needs a template; the cluster boxes
  (``cuboid``, ``sphere``) are for gas-phase clusters only.
* Whatever its source, the template gets ``pbc = (True, True, False)``; constraints and
  calculators read from a file are dropped (``frozen`` decides what is fixed).
* The template is built (or read) once, when the ``System`` is made, so a broken template
  is reported at load time; :meth:`System.template_atoms` returns a copy of that cache.
  A file changed on disk afterwards is not seen by an existing ``System``.
* Capacity rule (a cheap sanity check, not a packing proof): the box volume must be at
  least ``n_mobile * (4/3) pi (d/2)^3 / 0.64``, where ``d`` is the smallest
  :meth:`System.pair_min_distance` among the mobile species and 0.64 is the random close
  packing fraction of spheres.
* YAML 1.1 reads ``1e-3`` (no dot) as a string; numeric fields therefore also accept
  strings that parse as a finite float.
* :class:`godiff.box.Box` (from :meth:`System.geometry`) has one field beyond its minimal description: ``origin`` (the
  corner of ``cell``; zero for slabs, ``center - side/2`` for clusters), which is what
  makes the cluster cell "centred on the box centre".

This module must not import torch.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import ase
import ase.build
import ase.io
import numpy as np
import yaml
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states

from godiff.box import Box, CuboidGeometry, SlabGeometry, SphereGeometry
from godiff.energy import CALCULATOR_OPTIONS, KNOWN_CALCULATORS, energy_unit, normalize_spec
from godiff.errors import EnergyFunctionError, SystemFileError, SystemNotFoundError
from godiff.errors import shown as _shown

__all__ = [
    "SlabBox",
    "CuboidBox",
    "SphereBox",
    "Box",
    "System",
    "box_from_dict",
    "parse_formula",
    "load_system",
    "KNOWN_CALCULATORS",
    "ENERGY_FIELDS",
    "SLAB_BUILDERS",
    "PACKING_FRACTION",
    "LAYER_TOLERANCE",
]

logger = logging.getLogger(__name__)

#: The fields each calculator spec accepts besides ``calculator`` (anything else is a typo);
#: :mod:`godiff.energy` owns the list of calculators and their options.
ENERGY_FIELDS: dict[str, tuple[str, ...]] = {name: tuple(opts) for name, opts in CALCULATOR_OPTIONS.items()}

#: Slab builders from :mod:`ase.build` (name -> (crystal structure, facet indices)).
SLAB_BUILDERS: dict[str, tuple[str, tuple[int, ...]]] = {
    "fcc111": ("fcc", (1, 1, 1)),
    "fcc100": ("fcc", (1, 0, 0)),
    "fcc110": ("fcc", (1, 1, 0)),
    "fcc211": ("fcc", (2, 1, 1)),
    "bcc110": ("bcc", (1, 1, 0)),
    "bcc100": ("bcc", (1, 0, 0)),
    "hcp0001": ("hcp", (0, 0, 0, 1)),
}
_SURFACE_FIELDS = ("symbol", "indices", "layers", "vacuum", "a")
_KNOWN_BUILDERS = (*SLAB_BUILDERS, "surface")
_FILE_FIELDS = ("file", "index", "format", "frozen")

#: Random close packing fraction of equal spheres, used by the box capacity rule.
PACKING_FRACTION = 0.64
#: Atoms whose z differ by at most this much (Å) belong to the same layer (``frozen: {bottom: N}``).
LAYER_TOLERANCE = 0.3
#: Default minimum distance is this fraction of the sum of covalent radii.
_COVALENT_FRACTION = 0.7
#: The Pt-Pt bond from covalent radii (2.72 Å): the length on which godiff's length-valued
#: defaults were measured (sampler steps, basin-hopping hops); :meth:`System.length_scale`.
REFERENCE_BOND_LENGTH = 2 * 1.36
#: Extra side length (Å) of the non-periodic cell around a cluster box.
_CLUSTER_CELL_PADDING = 10.0
#: Tolerance (Å) on the slab cell: a, b in the xy plane and c along z.
_CELL_TOLERANCE = 1e-4

_TOP_FIELDS = (
    "name",
    "description",
    "mobile",
    "template",
    "box",
    "energy",
    "min_distance",
    "reference",
)
_REFERENCE_FIELDS = ("energy", "source", "tolerance", "next_energy")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_FORMULA_RE = re.compile(r"([A-Z][a-z]?)(\d*)")
_ELEMENTS = frozenset(chemical_symbols[1:])  # 'X' (dummy, Z = 0) is not an element


# --------------------------------------------------------------------------------------
# small validation helpers (all raise SystemFileError with "<field>: <what is wrong>")
# --------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    """Collapse whitespace so that a message from a third party fits on one line."""
    return " ".join(str(text).split())


def _fail(where: str, what: str) -> SystemFileError:
    return SystemFileError(f"{where}: {_one_line(what)}" if where else _one_line(what))


def _check_keys(where: str, data: Mapping, known: Sequence[str]) -> None:
    """Refuse keys of ``data`` that are not in ``known`` (typos), suggesting the closest."""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            prefix = f"{where}: " if where else ""
            raise SystemFileError(
                f"{prefix}unknown field '{str(key)[:60]}' ({hint}known: {', '.join(known)})"
            )


def _as_mapping(where: str, value: object) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {_shown(value)}")
    return value


def _as_float(where: str, value: object) -> float:
    """A finite float from a number (or a numeric string: YAML 1.1 reads ``1e-3`` as one)."""
    if isinstance(value, bool) or value is None:
        raise _fail(where, f"expected a number, got {_shown(value)}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise _fail(where, f"expected a number, got {_shown(value)}") from None
    else:
        raise _fail(where, f"expected a number, got {_shown(value)}")
    if not math.isfinite(out):
        raise _fail(where, f"expected a finite number, got {_shown(value)}")
    return out


MAX_LENGTH = 1.0e4  # Å (or σ): no box, cell or distance of a system is larger


def _as_length(where: str, value: object) -> float:
    """A finite coordinate or length of at most :data:`MAX_LENGTH` in size (1e308 overflows the SDE)."""
    out = _as_float(where, value)
    if abs(out) > MAX_LENGTH:
        raise _fail(where, f"{out:g} is out of range (lengths and coordinates are at most {MAX_LENGTH:g} in size)")
    return out


def _as_positive(where: str, value: object) -> float:
    out = _as_float(where, value)
    if out <= 0.0:
        raise _fail(where, f"must be positive (got {out})")
    return out


def _as_int(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(where, f"expected an integer, got {_shown(value)}")
    return int(value)


def _as_vector(where: str, value: object, length: int = 3) -> tuple[float, ...]:
    """``length`` coordinates (each checked by :func:`_as_length`)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise _fail(where, f"expected {length} numbers, got {_shown(value)}")
    if len(value) != length:
        raise _fail(where, f"expected {length} numbers, got {len(value)}")
    return tuple(_as_length(where, v) for v in value)


def _as_str(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {_shown(value)}")
    return value


def _check_element(where: str, symbol: object) -> str:
    if not isinstance(symbol, str) or symbol not in _ELEMENTS:
        raise _fail(where, f"unknown element {_shown(symbol)}")
    return symbol


def parse_formula(formula: str | Mapping[str, int], *, where: str = "mobile") -> dict[str, int]:
    """Parse a composition into a mapping sorted by atomic number, then symbol.

    Args:
        formula: a formula string such as ``"Pt5Au2"`` (a missing count means 1; repeated
            elements add up) or a mapping such as ``{"Pt": 5, "Au": 2}``.
        where: the field name used in error messages.

    Returns:
        ``{symbol: count}`` with positive counts, e.g. ``{"Pt": 5, "Au": 2}``.

    Raises:
        SystemFileError: unknown element, non-positive count, unparsable or empty formula.

    Example:
        >>> parse_formula("Pt5Au2")
        {'Pt': 5, 'Au': 2}
    """
    counts: dict[str, int] = {}
    if isinstance(formula, str):
        text = "".join(formula.split())
        pos = 0
        for match in _FORMULA_RE.finditer(text):
            if match.start() != pos:
                break
            symbol, digits = match.group(1), match.group(2)
            _check_element(where, symbol)
            count = int(digits) if digits else 1
            if count <= 0:
                raise _fail(where, f"count of '{symbol}' must be a positive integer (got {count})")
            counts[symbol] = counts.get(symbol, 0) + count
            pos = match.end()
        if pos != len(text):
            bad = re.match(r"[A-Za-z]+", text[pos:])
            if bad and text[pos].isupper():
                raise _fail(where, f"unknown element '{bad.group(0)}'")
            raise _fail(where, f"cannot parse formula {_shown(formula)} (write e.g. 'Pt5Au2')")
    elif isinstance(formula, Mapping):
        for symbol, count in formula.items():
            _check_element(where, symbol)
            n = _as_int(f"{where}.{symbol}", count)
            if n <= 0:
                raise _fail(where, f"count of '{symbol}' must be a positive integer (got {n})")
            counts[symbol] = counts.get(symbol, 0) + n
    else:
        raise _fail(where, f"expected a formula string or a mapping, got {_shown(formula)}")
    if not counts:
        raise _fail(where, "empty composition")
    return {s: counts[s] for s in sorted(counts, key=lambda s: (atomic_numbers[s], s))}


def _format_formula(counts: Mapping[str, int]) -> str:
    return "".join(f"{s}{n}" for s, n in counts.items())


# --------------------------------------------------------------------------------------
# boxes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlabBox:
    """A slab box: the whole periodic cell of the template in-plane, a z range above it.

    YAML: ``box: {kind: slab, z_min: 1.0, z_max: 6.0}``.

    Attributes:
        z_min: lower end of the box in Å above the template's highest atom (may be negative
            to reach below the top atom, e.g. on stepped surfaces).
        z_max: upper end in Å above the template's highest atom; must exceed ``z_min``.
    """

    z_min: float
    z_max: float
    kind: ClassVar[str] = "slab"

    def __post_init__(self) -> None:
        z_min = _as_length("box.z_min", self.z_min)
        z_max = _as_length("box.z_max", self.z_max)
        if z_max <= z_min:
            raise _fail("box.z_max", f"must be greater than box.z_min ({z_min} >= {z_max})")
        object.__setattr__(self, "z_min", z_min)
        object.__setattr__(self, "z_max", z_max)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, e.g. ``{"kind": "slab", "z_min": 1.0, "z_max": 6.0}``."""
        return {"kind": "slab", "z_min": self.z_min, "z_max": self.z_max}


@dataclass(frozen=True)
class CuboidBox:
    """An axis-aligned cuboid for a gas-phase cluster.

    YAML: ``box: {kind: cuboid, lengths: [4, 4, 4], center: [0, 0, 0]}``; a single number
    for ``lengths`` means a cube; ``center`` defaults to the origin.

    Attributes:
        lengths: edge lengths along x, y, z in Å (positive).
        center: centre in Å.
    """

    lengths: tuple[float, float, float]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kind: ClassVar[str] = "cuboid"

    def __post_init__(self) -> None:
        lengths = self.lengths
        if isinstance(lengths, (int, float, str, np.number)) and not isinstance(lengths, bool):
            lengths = (lengths,) * 3
        lengths = _as_vector("box.lengths", lengths)
        if min(lengths) <= 0.0:
            raise _fail("box.lengths", f"must be positive (got {list(lengths)})")
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "center", _as_vector("box.center", self.center))

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, e.g. ``{"kind": "cuboid", "lengths": [4.0, 4.0, 4.0], "center": [...]}``."""
        return {"kind": "cuboid", "lengths": list(self.lengths), "center": list(self.center)}


@dataclass(frozen=True)
class SphereBox:
    """A sphere for a gas-phase cluster.

    YAML: ``box: {kind: sphere, radius: 2.5, center: [0, 0, 0]}``.

    Attributes:
        radius: radius in Å (positive).
        center: centre in Å.
    """

    radius: float
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kind: ClassVar[str] = "sphere"

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", _as_positive("box.radius", _as_length("box.radius", self.radius)))
        object.__setattr__(self, "center", _as_vector("box.center", self.center))

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, e.g. ``{"kind": "sphere", "radius": 2.5, "center": [0.0, 0.0, 0.0]}``."""
        return {"kind": "sphere", "radius": self.radius, "center": list(self.center)}


Box = Union[SlabBox, CuboidBox, SphereBox]
_BOX_TYPES: dict[str, type] = {"slab": SlabBox, "cuboid": CuboidBox, "sphere": SphereBox}
_BOX_FIELDS: dict[str, tuple[str, ...]] = {
    "slab": ("kind", "z_min", "z_max"),
    "cuboid": ("kind", "lengths", "center"),
    "sphere": ("kind", "radius", "center"),
}


def box_from_dict(data: Mapping[str, Any] | Box) -> Box:
    """Build a box from its YAML form (``{"kind": "slab", ...}``); a box is returned as is.

    Raises:
        SystemFileError: unknown kind, unknown or missing field, invalid value.
    """
    if isinstance(data, (SlabBox, CuboidBox, SphereBox)):
        return data
    data = _as_mapping("box", data)
    if "kind" not in data:
        raise _fail("box.kind", f"missing (known: {', '.join(_BOX_TYPES)})")
    kind = data["kind"]
    if kind not in _BOX_TYPES:
        raise _fail("box.kind", f"unknown {_shown(kind)} (known: {', '.join(_BOX_TYPES)})")
    _check_keys("box", data, _BOX_FIELDS[kind])
    kwargs = {k: v for k, v in data.items() if k != "kind"}
    required = {"slab": ("z_min", "z_max"), "cuboid": ("lengths",), "sphere": ("radius",)}[kind]
    for key in required:
        if key not in kwargs:
            raise _fail(f"box.{key}", f"missing (a {kind} box needs {', '.join(required)})")
    return _BOX_TYPES[kind](**kwargs)


# --------------------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------------------


def _builder_fields(builder: str) -> tuple[str, ...]:
    """The keywords a builder accepts (from ase's signature; ``periodic`` is set by godiff)."""
    if builder == "surface":
        return _SURFACE_FIELDS
    params = inspect.signature(getattr(ase.build, builder)).parameters
    return tuple(p for p in params if p != "periodic")


def _normalize_frozen(value: object) -> str | dict[str, int] | list[int]:
    where = "template.frozen"
    if isinstance(value, str):
        if value in ("all", "none"):
            return value
        raise _fail(where, f"unknown {_shown(value)} (use all, none, {{bottom: N}} or a list of indices)")
    if isinstance(value, Mapping):
        _check_keys(where, value, ("bottom",))
        if "bottom" not in value:
            raise _fail(where, "expected {bottom: N}")
        n = _as_int(f"{where}.bottom", value["bottom"])
        if n < 0:
            raise _fail(f"{where}.bottom", f"must be >= 0 (got {n})")
        return {"bottom": n}
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, bytes):
        indices = sorted({_as_int(where, v) for v in value})
        if indices and indices[0] < 0:
            raise _fail(where, f"indices must be >= 0 (got {indices[0]})")
        return indices
    raise _fail(where, f"expected all, none, {{bottom: N}} or a list of indices, got {_shown(value)}")


def _normalize_template(spec: object) -> dict[str, Any]:
    """Check a template spec and return its canonical form (see the module docstring)."""
    spec = _as_mapping("template", spec)
    has_builder, has_file = "builder" in spec, "file" in spec
    if has_builder and has_file:
        raise _fail("template", "give either 'builder' or 'file', not both")
    if not (has_builder or has_file):
        raise _fail("template", f"needs 'builder' ({', '.join(_KNOWN_BUILDERS)}) or 'file'")
    frozen = _normalize_frozen(spec.get("frozen", "all"))

    if has_file:
        _check_keys("template", spec, _FILE_FIELDS)
        name = _as_str("template.file", spec["file"])
        out: dict[str, Any] = {"file": _resolve(name, None)}
        out["index"] = _as_int("template.index", spec.get("index", -1))
        if spec.get("format") is not None:
            out["format"] = _as_str("template.format", spec["format"])
        out["frozen"] = frozen
        return out

    builder = spec["builder"]
    if builder not in _KNOWN_BUILDERS:
        raise _fail("template.builder", f"unknown {_shown(builder)} (known: {', '.join(_KNOWN_BUILDERS)})")
    known = ("builder", *_builder_fields(builder), "frozen")
    _check_keys("template", spec, known)
    out = {"builder": builder}
    if "symbol" not in spec:
        raise _fail("template.symbol", f"missing (the {builder} builder needs an element)")
    out["symbol"] = _check_element("template.symbol", spec["symbol"])
    if builder == "surface":
        for key in ("indices", "layers"):
            if key not in spec:
                raise _fail(f"template.{key}", "missing (the surface builder needs indices and layers)")
        indices = spec["indices"]
        if isinstance(indices, (str, Mapping)) or not isinstance(indices, (Sequence, np.ndarray)):
            raise _fail("template.indices", f"expected 3 Miller indices, got {_shown(indices)}")
        if len(indices) != 3:
            raise _fail("template.indices", f"expected 3 Miller indices, got {len(indices)}")
        out["indices"] = [_as_int("template.indices", i) for i in indices]
        if not any(out["indices"]):
            raise _fail("template.indices", "must not all be zero")
        out["layers"] = _as_int("template.layers", spec["layers"])
        if out["layers"] <= 0:
            raise _fail("template.layers", f"must be positive (got {out['layers']})")
    else:
        if "size" not in spec:
            raise _fail("template.size", f"missing (the {builder} builder needs [nx, ny, layers])")
        size = spec["size"]
        if isinstance(size, (str, Mapping)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 3:
            raise _fail("template.size", f"expected 3 positive integers, got {_shown(size)}")
        out["size"] = [_as_int("template.size", n) for n in size]
        if min(out["size"]) <= 0:
            raise _fail("template.size", f"expected 3 positive integers, got {out['size']}")
    for key, value in spec.items():
        if key in out or key == "frozen" or value is None:  # None means the ase default
            continue
        if key in ("a", "c"):
            out[key] = _as_positive(f"template.{key}", _as_length(f"template.{key}", value))
        elif key == "vacuum":
            out[key] = _as_length("template.vacuum", value)
            if out[key] < 0:
                raise _fail("template.vacuum", f"must be >= 0 (got {out[key]})")
        elif key == "orthogonal":
            if not isinstance(value, bool):
                raise _fail("template.orthogonal", f"expected true or false, got {_shown(value)}")
            out[key] = value
        else:  # a keyword a future ase builder accepts: pass through as written
            out[key] = value
    out["frozen"] = frozen
    return out


def _resolve(path: str, base_dir: str | Path | None) -> str:
    """``path`` made absolute: joined to ``base_dir`` (default: the current directory)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return str(p.absolute())


def _beside(name: str, base_dir: str | Path) -> str:
    """A template file named by a system file: relative to its folder and inside it (through
    links too), made absolute. A system file is data people share; it may not make godiff read
    ``/etc/passwd`` or ``../../secrets`` as a structure."""
    path = Path(name)
    if path.is_absolute() or name.startswith("~"):
        raise _fail("template.file", f"'{name[:200]}' must be relative to the system file's folder")
    full = Path(base_dir).absolute() / path
    root = Path(base_dir).resolve()
    target = full.resolve()
    if target != root and root not in target.parents:
        raise _fail("template.file", f"'{name[:200]}' leads outside the system file's folder; "
                    "a system file reads only files in its folder or below")
    return str(full)


def _build_template(spec: Mapping[str, Any]) -> ase.Atoms:
    """Build or read the template of a canonical spec; pbc (True, True, False), no constraints."""
    if "file" in spec:
        path = spec["file"]
        if not os.path.isfile(path):
            reason = "is a directory" if os.path.isdir(path) else "no such file"
            raise _fail("template.file", f"cannot read '{path}': {reason}")
        try:
            atoms = ase.io.read(path, index=spec["index"], format=spec.get("format"))
        except Exception as exc:  # ase raises many types for a bad file; report, don't crash
            reason = _one_line(exc) or type(exc).__name__
            raise _fail("template.file", f"cannot read '{path}': {reason}") from exc
        if not isinstance(atoms, ase.Atoms):
            raise _fail("template.index", "must select a single structure, not several")
        atoms.set_constraint()
        atoms.calc = None
    else:
        builder = spec["builder"]
        kwargs = {k: v for k, v in spec.items() if k not in ("builder", "frozen")}
        try:
            if builder == "surface":
                # Miller indices of the conventional cubic cell, as ase.build.surface("Pt", ...) does
                lattice = ase.build.bulk(kwargs.pop("symbol"), a=kwargs.pop("a", None), cubic=True)
                atoms = ase.build.surface(
                    lattice, tuple(kwargs.pop("indices")), kwargs.pop("layers"), **kwargs
                )
            else:
                kwargs["size"] = tuple(kwargs["size"])
                atoms = getattr(ase.build, builder)(**kwargs)
        except Exception as exc:  # ase reports bad keyword combinations in many ways
            raise _fail("template", f"cannot build {builder}: {exc}") from exc
    if len(atoms) == 0:
        raise _fail("template", "has no atoms")
    atoms.pbc = (True, True, False)
    return atoms


def _layers(z: np.ndarray, tol: float = LAYER_TOLERANCE) -> np.ndarray:
    """Layer index of each atom, 0 = lowest; a new layer starts at a z gap above ``tol`` Å."""
    order = np.argsort(z, kind="stable")
    layer = np.zeros(len(z), dtype=int)
    current = 0
    for prev, idx in zip(order[:-1], order[1:]):
        if z[idx] - z[prev] > tol:
            current += 1
        layer[idx] = current
    return layer


def _frozen_mask(atoms: ase.Atoms, frozen: str | dict | list) -> np.ndarray:
    n = len(atoms)
    if frozen == "all":
        return np.ones(n, dtype=bool)
    if frozen == "none":
        return np.zeros(n, dtype=bool)
    if isinstance(frozen, Mapping):
        layer = _layers(atoms.positions[:, 2])
        n_layers = int(layer.max()) + 1
        if frozen["bottom"] > n_layers:
            raise _fail(
                "template.frozen",
                f"bottom {frozen['bottom']} exceeds the {n_layers} layers of the template",
            )
        return layer < frozen["bottom"]
    mask = np.zeros(n, dtype=bool)
    if frozen and frozen[-1] >= n:
        raise _fail("template.frozen", f"index {frozen[-1]} out of range ({n} template atoms)")
    mask[list(frozen)] = True
    return mask


def _check_slab_cell(cell: np.ndarray) -> None:
    a, b, c = cell
    tol = _CELL_TOLERANCE
    if np.allclose(c, 0.0):
        raise _fail("template", "the cell has no c vector (no room above the slab: give a vacuum)")
    if abs(a[2]) > tol or abs(b[2]) > tol or abs(c[0]) > tol or abs(c[1]) > tol or c[2] <= tol:
        raise _fail(
            "template",
            "a slab box needs cell vectors a, b in the xy plane and c along +z "
            f"(got a = {np.round(a, 4).tolist()}, b = {np.round(b, 4).tolist()}, "
            f"c = {np.round(c, 4).tolist()})",
        )
    if abs(a[0] * b[1] - a[1] * b[0]) <= tol:
        raise _fail("template", "the cell vectors a, b span no area in the xy plane")


# --------------------------------------------------------------------------------------
# the other specs
# --------------------------------------------------------------------------------------


def _normalize_energy(spec: object) -> dict[str, Any]:
    """The energy spec with every option filled in: validated once, by
    :func:`godiff.energy.normalize_spec` (the one list of calculators and their options), so an
    option is never dropped and ``mace-mp-0`` and ``{calculator: mace-mp-0, model: medium}`` are
    the same system."""
    if isinstance(spec, str):  # shorthand: ``energy: emt``
        spec = {"calculator": spec}
    spec = _as_mapping("energy", spec)
    if "calculator" not in spec:
        raise _fail("energy.calculator", f"missing (known: {', '.join(KNOWN_CALCULATORS)})")
    name = spec["calculator"]
    if isinstance(name, str):
        name = name.strip().lower()
    if name not in KNOWN_CALCULATORS:
        raise _fail(
            "energy.calculator",
            f"unknown {_shown(spec['calculator'])} (known: {', '.join(KNOWN_CALCULATORS)})",
        )
    try:
        return normalize_spec({**spec, "calculator": name})
    except EnergyFunctionError as exc:
        raise _fail("energy", str(exc)) from None


def _normalize_reference(spec: object) -> dict[str, Any]:
    spec = _as_mapping("reference", spec)
    _check_keys("reference", spec, _REFERENCE_FIELDS)
    if "energy" not in spec:
        raise _fail("reference.energy", "missing")
    out: dict[str, Any] = {"energy": _as_float("reference.energy", spec["energy"])}
    if spec.get("source") is not None:
        out["source"] = _as_str("reference.source", spec["source"])
    if spec.get("tolerance") is not None:
        out["tolerance"] = _as_positive("reference.tolerance", spec["tolerance"])
    if spec.get("next_energy") is not None:
        out["next_energy"] = _as_float("reference.next_energy", spec["next_energy"])
        if out["next_energy"] <= out["energy"] + out.get("tolerance", 0.0):
            raise _fail("reference.next_energy", f"{out['next_energy']} is not above energy + tolerance "
                        f"({out['energy'] + out.get('tolerance', 0.0)}): it is the next distinct minimum")
    return out


class _SystemLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: a system file is data that people share, and a few
    nested aliases (``&a [*b, *b, ...]``) expand a kilobyte into gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a system file", mark)
        return super().compose_node(parent, index)


class _YamlDumper(yaml.SafeDumper):
    """Block mappings, lists of scalars inline (``size: [6, 6, 2]``), multi-line text as ``|``."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(x, (int, float, str, bool)) or x is None for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_YamlDumper.add_representer(list, _represent_list)
_YamlDumper.add_representer(str, _represent_str)


# --------------------------------------------------------------------------------------
# the system
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """What is optimised: the mobile atoms, the fixed template, the box and the energy spec.

    Attributes:
        name: identifier, letters, digits and ``_ . + -`` (e.g. ``"pt7-pt111"``).
        mobile: composition ``{symbol: count}`` (YAML: a formula ``Pt5Au2`` or a mapping),
            stored sorted by atomic number, then symbol.
        box: where the mobile atoms live (:class:`SlabBox` with a template,
            :class:`CuboidBox` or :class:`SphereBox` without one). A dict is accepted.
        energy: energy-function spec, e.g. ``{"calculator": "emt"}``,
            ``{"calculator": "lj", "epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0}``,
            ``{"calculator": "mace", "model": "path.model"}``,
            ``{"calculator": "mace-mp-0", "model": "medium"}``, ``{"calculator": "chgnet"}``.
            Fields per calculator: :data:`ENERGY_FIELDS`.
        template: how to build the fixed structure (``{builder: fcc111, ...}``,
            ``{builder: surface, ...}`` or ``{file: ..., index: -1}``, each with ``frozen``:
            ``all`` (default), ``none``, ``{bottom: N}`` or a list of indices); ``None`` for
            a gas-phase cluster.
        description: free text; its first line is the one-line summary.
        reference: known global minimum ``{"energy": eV, "source": str, "tolerance": eV}``, and
            optionally ``next_energy``, the lowest known distinct minimum above it (eV): an
            evaluated energy below that lies in the global minimum's basin, unrelaxed.
        min_distance: minimum allowed distance in Å between a mobile atom and any other
            atom; ``None`` means 0.7 times the sum of covalent radii (see
            :meth:`pair_min_distance`).

    Raises:
        SystemFileError: on any invalid field (one line naming the field).

    Example:
        >>> s = System.from_dict({"name": "lj13", "mobile": "Ar13",
        ...     "box": {"kind": "cuboid", "lengths": 4.0},
        ...     "energy": {"calculator": "lj", "epsilon": 1.0, "sigma": 1.0, "cutoff": 1000.0}})
        >>> s.n_mobile, s.geometry().kind
        (13, 'cuboid')
    """

    name: str
    mobile: dict[str, int]
    box: Box
    energy: dict = field(default_factory=lambda: {"calculator": "emt"})
    template: dict | None = None
    description: str = ""
    reference: dict | None = None
    min_distance: float | None = None
    _template_atoms: ase.Atoms | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._check()

    # ---------------------------------------------------------------- validation

    def validate(self) -> None:
        """Check every field (and rebuild the template); run by the constructor.

        Raises:
            SystemFileError: one line naming the field, e.g. ``mobile: unknown element 'Xx'``.
        """
        self._check()

    def _check(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise _fail(
                "name",
                f"expected letters, digits and _ . + - (starting with a letter or digit), "
                f"got {_shown(self.name)}",
            )
        if not isinstance(self.description, str):
            raise _fail("description", f"expected a string, got {_shown(self.description)}")
        put("mobile", parse_formula(self.mobile, where="mobile"))
        put("box", box_from_dict(self.box))
        put("energy", _normalize_energy(self.energy))
        put("reference", None if self.reference is None else _normalize_reference(self.reference))
        if self.min_distance is not None:
            put("min_distance", _as_positive("min_distance", _as_length("min_distance", self.min_distance)))

        if self.template is None:
            if isinstance(self.box, SlabBox):
                raise _fail("box.kind", "a slab box needs a template (or use cuboid/sphere for a cluster)")
            put("_template_atoms", None)
        else:
            if not isinstance(self.box, SlabBox):
                raise _fail(
                    "box.kind",
                    f"a template needs a slab box (got {_shown(self.box.kind)}; "
                    "cuboid and sphere are for gas-phase clusters)",
                )
            template = _normalize_template(self.template)
            put("template", template)
            atoms = _build_template(template)
            _frozen_mask(atoms, template["frozen"])  # checks indices / layer count
            _check_slab_cell(atoms.cell[:])
            top = float(atoms.positions[:, 2].max())
            height = float(atoms.cell[2, 2])
            if top + self.box.z_max > height + 1e-9:
                raise _fail(
                    "box.z_max",
                    f"the box top (z = {top + self.box.z_max:.2f} Å) is above the template "
                    f"cell (height {height:.2f} Å); add vacuum or lower box.z_max",
                )
            put("_template_atoms", atoms)
            logger.debug("system %s: template of %d atoms", self.name, len(atoms))

        volume = self.geometry().volume()
        d = min(self.pair_min_distance(a, b) for a in self.mobile for b in self.mobile)
        needed = self.n_mobile * (4.0 / 3.0) * math.pi * (d / 2.0) ** 3 / PACKING_FRACTION
        if volume < needed:
            raise _fail(
                "box",
                f"cannot hold {self.n_mobile} mobile atoms (volume {volume:.1f} Å^3, "
                f"needs at least {needed:.1f} Å^3)",
            )

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | Path | None = None) -> System:
        """Build a system from its plain-dict (YAML) form.

        Args:
            data: the mapping, as in a system YAML file.
            base_dir: directory against which relative paths (``template.file``, a mace
                ``energy.model``) are resolved. Without it, ``template.file`` is made
                absolute against the current directory and a mace model is kept as written.

        Raises:
            SystemFileError: on any invalid or unknown field.
        """
        data = _as_mapping("system", data)
        _check_keys("", data, _TOP_FIELDS)
        for key in ("name", "mobile", "box"):
            if key not in data:
                raise _fail(key, "missing")
        kwargs = {k: data[k] for k in _TOP_FIELDS if k in data}
        for key in ("description", "energy"):
            if key in kwargs and kwargs[key] is None:
                del kwargs[key]
        if base_dir is not None:  # resolve relative paths against base_dir, not the cwd
            template, energy = kwargs.get("template"), kwargs.get("energy")
            if isinstance(template, Mapping) and isinstance(template.get("file"), str):
                kwargs["template"] = {**template, "file": _beside(template["file"], base_dir)}
            if (
                isinstance(energy, Mapping)
                and str(energy.get("calculator", "")).strip().lower() == "mace"
                and isinstance(energy.get("model"), str)
            ):
                kwargs["energy"] = {**energy, "model": _resolve(energy["model"], base_dir)}
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> System:
        """Read a system YAML file; relative paths in it are resolved against its directory.

        A missing ``name`` defaults to the file's stem.

        Raises:
            SystemFileError: ``<path>: no such file``, ``<path>: not valid YAML (line N: ...)``
                or ``<path>: <field>: <problem>``.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SystemNotFoundError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise SystemFileError(f"{path}: is a directory, not a system file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemFileError(f"{path}: cannot read: {_one_line(exc)}") from None
        try:
            data = yaml.load(text, Loader=_SystemLoader)  # noqa: S506 (a SafeLoader without aliases)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or _one_line(exc)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise SystemFileError(f"{path}: not valid YAML ({where}{_one_line(problem)})") from None
        if not isinstance(data, Mapping):
            raise SystemFileError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
        data = dict(data)
        data.setdefault("name", path.stem)
        try:
            return cls.from_dict(data, base_dir=path.parent.absolute())
        except SystemFileError as exc:
            raise SystemFileError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The plain (JSON/YAML-able) form; ``System.from_dict(s.to_dict()) == s``.

        Optional fields left at their default (``None``, empty description) are omitted.
        """
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["mobile"] = _format_formula(self.mobile)
        if self.template is not None:
            out["template"] = json.loads(json.dumps(self.template))
        out["box"] = self.box.to_dict()
        out["energy"] = json.loads(json.dumps(self.energy))
        if self.min_distance is not None:
            out["min_distance"] = self.min_distance
        if self.reference is not None:
            out["reference"] = dict(self.reference)
        return out

    def to_yaml(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as YAML (atomically: a temporary file, then a rename).

        Returns:
            The path written.
        """
        path = Path(path)
        text = yaml.dump(
            self.to_dict(), Dumper=_YamlDumper, sort_keys=False, allow_unicode=True, width=100
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict` (sorted keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest())

    # ---------------------------------------------------------------- composition

    @property
    def mobile_symbols(self) -> list[str]:
        """Mobile species expanded, sorted by atomic number then symbol, e.g. ``['Pt', 'Pt', 'Au']``."""
        return [s for s, n in self.mobile.items() for _ in range(n)]

    @property
    def mobile_numbers(self) -> np.ndarray:
        """(n_mobile,) int atomic numbers, in :attr:`mobile_symbols` order."""
        return np.array([atomic_numbers[s] for s in self.mobile_symbols], dtype=int)

    @property
    def n_mobile(self) -> int:
        """Number of mobile atoms."""
        return sum(self.mobile.values())

    @property
    def n_template(self) -> int:
        """Number of template atoms (0 for a cluster)."""
        return 0 if self._template_atoms is None else len(self._template_atoms)

    def bond_length(self) -> float:
        """Typical bond of the mobile atoms, Å: the same-species minimum distance over 0.7 (the
        sum of covalent radii by default), averaged over the mobile species.

        Example:
            >>> round(load_system("pt7-pt111").bond_length(), 3), load_system("lj13").bond_length()
            (2.72, 1.0)
        """
        symbols = sorted(set(self.mobile_symbols))
        return float(np.mean([self.pair_min_distance(s, s) for s in symbols]) / _COVALENT_FRACTION)

    def length_scale(self) -> float:
        """:meth:`bond_length` over :data:`REFERENCE_BOND_LENGTH`: 1 for Pt, 0.368 for a
        Lennard-Jones cluster in reduced units. Settings measured on Pt in Å scale with it."""
        return self.bond_length() / REFERENCE_BOND_LENGTH

    def energy_unit(self) -> str:
        """The unit its energies are in: ``"ε"`` for a Lennard-Jones cluster (reduced units), else ``"eV"``.

        Example:
            >>> load_system("lj13").energy_unit(), load_system("pt7-pt111").energy_unit()
            ('ε', 'eV')
        """
        return energy_unit(self.energy)

    def pair_min_distance(self, sym_a: str, sym_b: str) -> float:
        """Minimum allowed distance in Å between atoms of species ``sym_a`` and ``sym_b``.

        ``min_distance`` when set, else ``0.7 * (r_a + r_b)`` with ``ase.data.covalent_radii``.
        """
        if self.min_distance is not None:
            return self.min_distance
        for s in (sym_a, sym_b):
            if s not in _ELEMENTS:
                raise ValueError(f"unknown element {_shown(s)}")
        r = covalent_radii[atomic_numbers[sym_a]] + covalent_radii[atomic_numbers[sym_b]]
        return float(_COVALENT_FRACTION * r)

    # ---------------------------------------------------------------- structures

    def template_atoms(self) -> ase.Atoms | None:
        """A fresh copy of the template (pbc ``(True, True, False)``, no constraints), or ``None``."""
        return None if self._template_atoms is None else self._template_atoms.copy()

    def frozen_mask(self) -> np.ndarray:
        """(n_template,) bool: which template atoms are fixed (empty for a cluster)."""
        if self._template_atoms is None:
            return np.zeros(0, dtype=bool)
        return _frozen_mask(self._template_atoms, self.template["frozen"])

    def geometry(self) -> Box:
        """The box in absolute Cartesian coordinates (Å): a :class:`godiff.box.Box` of its kind.

        Slab: ``z_lo = max template z + z_min``, ``z_hi = max template z + z_max``, the
        template cell, periodic in-plane. Clusters: a cubic non-periodic cell of side
        (largest box extent + 10 Å) centred on the box centre.
        """
        box = self.box
        if isinstance(box, SlabBox):
            atoms = self._template_atoms
            cell = np.array(atoms.cell[:], dtype=float)
            top = float(atoms.positions[:, 2].max())
            z_lo, z_hi = top + box.z_min, top + box.z_max
            center = np.empty(3)
            center[:2] = 0.5 * (cell[0, :2] + cell[1, :2])
            center[2] = 0.5 * (z_lo + z_hi)
            return SlabGeometry(
                cell=cell,
                periodic=(True, True, False),
                lower=np.array([np.nan, np.nan, z_lo]),
                upper=np.array([np.nan, np.nan, z_hi]),
                center=center,
                radius=None,
                origin=np.zeros(3),
            )
        center = np.array(box.center, dtype=float)
        if isinstance(box, SphereBox):
            half = np.full(3, box.radius)
            radius = box.radius
        else:
            half = 0.5 * np.array(box.lengths, dtype=float)
            radius = None
        side = 2.0 * float(half.max()) + _CLUSTER_CELL_PADDING
        kind = SphereGeometry if isinstance(box, SphereBox) else CuboidGeometry
        return kind(
            cell=np.eye(3) * side,
            periodic=(False, False, False),
            lower=center - half,
            upper=center + half,
            center=center,
            radius=radius,
            origin=center - side / 2.0,
        )

    def atoms(self, mobile_positions: np.ndarray) -> ase.Atoms:
        """The full structure: template first, then the mobile atoms.

        Args:
            mobile_positions: (n_mobile, 3) in Å, in :attr:`mobile_symbols` order.

        Returns:
            ``ase.Atoms`` with the template's cell and pbc (clusters: the geometry cell,
            pbc False), ``FixAtoms`` on the frozen template atoms and
            ``info["godiff_system"] = name``.
        """
        pos = np.asarray(mobile_positions, dtype=float)
        if pos.shape != (self.n_mobile, 3):
            raise ValueError(
                f"mobile_positions must have shape ({self.n_mobile}, 3), got {pos.shape}"
            )
        mobile = ase.Atoms(self.mobile_symbols, positions=pos)
        if self._template_atoms is None:
            out = mobile
            out.cell = self.geometry().cell
            out.pbc = False
        else:
            out = self._template_atoms.copy()
            out.extend(mobile)
            frozen = np.flatnonzero(self.frozen_mask())
            if len(frozen):
                out.set_constraint(FixAtoms(indices=frozen))
        out.info["godiff_system"] = self.name
        return out

    # ---------------------------------------------------------------- identity

    def fingerprint(self) -> dict[str, Any]:
        """The features used to find related systems (plain JSON-able dict).

        Keys: ``composition`` ({symbol: count}), ``n_mobile``, ``mobile_species``,
        ``template_kind`` (builder name, ``"file"`` or ``"cluster"``), ``template_species``
        (sorted), ``n_template``, ``crystal`` (fcc/bcc/hcp or None), ``facet`` (Miller
        indices or None), ``lattice_constant`` (Å, the given ``a`` or ase's reference
        state; None when unknown), ``energy_calculator``, ``energy_model`` (or None), ``box``
        (kind, dimensions in Å and volume in Å^3).
        """
        template = self.template
        crystal = facet = lattice = None
        if template is None:
            kind, species = "cluster", []
        else:
            species = sorted(set(self._template_atoms.get_chemical_symbols()))
            if "file" in template:
                kind = "file"
            else:
                kind = template["builder"]
                ref = reference_states[atomic_numbers[template["symbol"]]] or {}
                if kind == "surface":
                    crystal = ref.get("symmetry")
                    facet = list(template["indices"])
                else:
                    crystal, indices = SLAB_BUILDERS[kind]
                    facet = list(indices)
                lattice = template.get("a", ref.get("a"))
                lattice = None if lattice is None else float(lattice)
        geometry = self.geometry()
        box: dict[str, Any] = {"kind": self.box.kind}
        if isinstance(self.box, SlabBox):
            box.update(
                z_min=self.box.z_min,
                z_max=self.box.z_max,
                area=abs(float(np.linalg.det(geometry.cell[:2, :2]))),
            )
        elif isinstance(self.box, CuboidBox):
            box["lengths"] = list(self.box.lengths)
        else:
            box["radius"] = self.box.radius
        box["volume"] = geometry.volume()
        return {
            "composition": dict(self.mobile),
            "n_mobile": self.n_mobile,
            "mobile_species": list(self.mobile),
            "template_kind": kind,
            "template_species": species,
            "n_template": self.n_template,
            "crystal": crystal,
            "facet": facet,
            "lattice_constant": lattice,
            "energy_calculator": self.energy["calculator"],
            "energy_model": self.energy.get("model"),
            "box": box,
        }


def load_system(spec: str | Path | Mapping[str, Any] | System) -> System:
    """Load a system from a preset name, a YAML path, a dict or a System.

    A string that names a preset (see :func:`godiff.presets.list_presets`) and does not look
    like a path (no ``.yaml``/``.yml`` suffix, no directory separator) is the preset;
    otherwise it is a file path.

    Raises:
        SystemFileError: unknown name that is not a file (the message lists the presets),
            or any problem in the file.
        TypeError: ``spec`` is none of the accepted types.

    Example:
        >>> load_system("lj13").n_mobile
        13
    """
    from godiff import presets  # local: presets imports nothing from here, keep it that way

    if isinstance(spec, System):
        return spec
    if isinstance(spec, Mapping):
        return System.from_dict(spec)
    if isinstance(spec, Path):
        return System.from_yaml(spec)
    if isinstance(spec, str):
        looks_like_path = spec.endswith((".yaml", ".yml")) or "/" in spec or os.sep in spec
        if not looks_like_path and spec in presets.list_presets():
            return System.from_yaml(presets.preset_path(spec))
        if looks_like_path or os.path.isfile(spec):
            return System.from_yaml(spec)
        raise SystemNotFoundError(
            f"unknown system '{spec}': no such file and no preset of that name "
            f"(presets: {', '.join(presets.list_presets())})"
        )
    raise TypeError(f"load_system expects a name, a path, a dict or a System, got {type(spec).__name__}")
