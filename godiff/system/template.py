"""Templates: built with :mod:`ase.build` or read from a file beside the system file, their frozen
atoms and the checks of a slab cell.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ase
import ase.build
import ase.io
import numpy as np

from godiff.digests import leaves
from godiff.errors import one_line
from godiff.errors import shown as _shown
from godiff.system.fields import (  # noqa: F401
    _CELL_TOLERANCE,
    _FILE_FIELDS,
    _KNOWN_BUILDERS,
    _SURFACE_FIELDS,
    LAYER_TOLERANCE,
    _as_int,
    _as_length,
    _as_mapping,
    _as_positive,
    _as_str,
    _check_element,
    _check_keys,
    _fail,
    check_atom_count,
)

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
    out = _file_template(spec) if has_file else _builder_template(spec)
    out["frozen"] = frozen
    return out


def _file_template(spec: Mapping) -> dict[str, Any]:
    _check_keys("template", spec, _FILE_FIELDS)
    out: dict[str, Any] = {"file": _resolve(_as_str("template.file", spec["file"]), None)}
    out["index"] = _as_int("template.index", spec.get("index", -1))
    if spec.get("format") is not None:
        out["format"] = _as_str("template.format", spec["format"])
    return out


def _builder_template(spec: Mapping) -> dict[str, Any]:
    builder = spec["builder"]
    if builder not in _KNOWN_BUILDERS:
        raise _fail("template.builder", f"unknown {_shown(builder)} (known: {', '.join(_KNOWN_BUILDERS)})")
    _check_keys("template", spec, ("builder", *_builder_fields(builder), "frozen"))
    if "symbol" not in spec:
        raise _fail("template.symbol", f"missing (the {builder} builder needs an element)")
    out = {"builder": builder, "symbol": _check_element("template.symbol", spec["symbol"])}
    out.update(_surface_shape(spec) if builder == "surface" else _slab_size(spec, builder))
    for key, value in spec.items():
        if key in out or key == "frozen" or value is None:  # None means the ase default
            continue
        out[key] = _builder_option(key, value)
    return out


def _surface_shape(spec: Mapping) -> dict[str, Any]:
    """``indices`` and ``layers`` of the ``surface`` builder."""
    for key in ("indices", "layers"):
        if key not in spec:
            raise _fail(f"template.{key}", "missing (the surface builder needs indices and layers)")
    indices = spec["indices"]
    if isinstance(indices, (str, Mapping)) or not isinstance(indices, (Sequence, np.ndarray)):
        raise _fail("template.indices", f"expected 3 Miller indices, got {_shown(indices)}")
    if len(indices) != 3:
        raise _fail("template.indices", f"expected 3 Miller indices, got {len(indices)}")
    out = {"indices": [_as_int("template.indices", i) for i in indices]}
    if not any(out["indices"]):
        raise _fail("template.indices", "must not all be zero")
    out["layers"] = _as_int("template.layers", spec["layers"])
    if out["layers"] <= 0:
        raise _fail("template.layers", f"must be positive (got {out['layers']})")
    check_atom_count("template.layers", out["layers"])
    return out


def _slab_size(spec: Mapping, builder: str) -> dict[str, Any]:
    """``size`` ([nx, ny, layers]) of the fcc111-like builders."""
    if "size" not in spec:
        raise _fail("template.size", f"missing (the {builder} builder needs [nx, ny, layers])")
    size = spec["size"]
    if isinstance(size, (str, Mapping)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 3:
        raise _fail("template.size", f"expected 3 positive integers, got {_shown(size)}")
    out = {"size": [_as_int("template.size", n) for n in size]}
    if min(out["size"]) <= 0:
        raise _fail("template.size", f"expected 3 positive integers, got {out['size']}")
    check_atom_count("template.size", int(np.prod([min(n, 10**6) for n in out["size"]])))  # before ase builds them
    return out


def _builder_option(key: str, value: object) -> object:
    """A builder's optional keyword, checked where godiff knows its meaning."""
    if key in ("a", "c"):
        return _as_positive(f"template.{key}", _as_length(f"template.{key}", value))
    if key == "vacuum":
        vacuum = _as_length("template.vacuum", value)
        if vacuum < 0:
            raise _fail("template.vacuum", f"must be >= 0 (got {vacuum})")
        return vacuum
    if key == "orthogonal":
        if not isinstance(value, bool):
            raise _fail("template.orthogonal", f"expected true or false, got {_shown(value)}")
        return value
    return value  # a keyword a future ase builder accepts: pass through as written


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
    reason = leaves(Path(base_dir).absolute(), name)
    if reason == "is absolute":
        raise _fail("template.file", f"{_shown(name)} must be relative to the system file's folder")
    if reason is not None:
        raise _fail(
            "template.file",
            f"{_shown(name)} leads outside the system file's folder; "
            "a system file reads only files in its folder or below",
        )
    return str(Path(base_dir).absolute() / name)


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
            reason = one_line(exc) or type(exc).__name__
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
                atoms = ase.build.surface(lattice, tuple(kwargs.pop("indices")), kwargs.pop("layers"), **kwargs)
            else:
                kwargs["size"] = tuple(kwargs["size"])
                atoms = getattr(ase.build, builder)(**kwargs)
        except Exception as exc:  # ase reports bad keyword combinations in many ways
            raise _fail("template", f"cannot build {builder}: {exc}") from exc
    if len(atoms) == 0:
        raise _fail("template", "has no atoms")
    check_atom_count("template", len(atoms))
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
