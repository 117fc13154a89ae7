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

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ase
import ase.build
import ase.io
import numpy as np
import yaml
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, covalent_radii

import godiff.box as _box_kinds
from godiff.energy import KNOWN_CALCULATORS, energy_unit
from godiff.errors import SystemFileError, SystemNotFoundError, one_line
from godiff.errors import shown as _shown
from godiff.system.boxes import (  # noqa: F401
    Box,
    CuboidBox,
    SlabBox,
    SphereBox,
    box_from_dict,
)
from godiff.system.fields import (  # noqa: F401  # re-exported
    _CLUSTER_CELL_PADDING,
    _COVALENT_FRACTION,
    _ELEMENTS,
    _NAME_RE,
    _TOP_FIELDS,
    ENERGY_FIELDS,
    LAYER_TOLERANCE,
    PACKING_FRACTION,
    REFERENCE_BOND_LENGTH,
    SLAB_BUILDERS,
    _as_length,
    _as_mapping,
    _as_positive,
    _check_keys,
    _fail,
    _format_formula,
    check_atom_count,
    parse_formula,
)
from godiff.system.specs import (  # noqa: F401
    MAX_FILE_BYTES,
    _normalize_energy,
    _normalize_reference,
    _SystemLoader,
    _YamlDumper,
)
from godiff.system.template import (  # noqa: F401
    _beside,
    _build_template,
    _check_slab_cell,
    _frozen_mask,
    _normalize_template,
    _resolve,
)

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
    _template_atoms: ase.Atoms | None = field(default=None, init=False, repr=False, compare=False)

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
                f"expected letters, digits and _ . + - (starting with a letter or digit), got {_shown(self.name)}",
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
            check_atom_count("mobile", len(atoms) + self.n_mobile)  # with the template's
            logger.debug("system %s: template of %d atoms", self.name, len(atoms))

        volume = self.geometry().volume()
        d = min(self.pair_min_distance(a, b) for a in self.mobile for b in self.mobile)
        needed = self.n_mobile * (4.0 / 3.0) * math.pi * (d / 2.0) ** 3 / PACKING_FRACTION
        if volume < needed:
            raise _fail(
                "box",
                f"cannot hold {self.n_mobile} mobile atoms (volume {volume:.1f} Å^3, needs at least {needed:.1f} Å^3)",
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
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
                raise SystemFileError(
                    f"{path}: {path.stat().st_size:,} bytes is larger than a system file may be "
                    f"({MAX_FILE_BYTES:,}); give a large template as template.file"
                )
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SystemNotFoundError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise SystemFileError(f"{path}: is a directory, not a system file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemFileError(f"{path}: cannot read: {one_line(exc)}") from None
        try:
            data = yaml.load(text, Loader=_SystemLoader)  # noqa: S506 (a SafeLoader without aliases)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or one_line(exc)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise SystemFileError(f"{path}: not valid YAML ({where}{one_line(problem)})") from None
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
        text = yaml.dump(self.to_dict(), Dumper=_YamlDumper, sort_keys=False, allow_unicode=True, width=100)
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

    def geometry(self) -> _box_kinds.Box:
        """The box in absolute Cartesian coordinates (Å): a :class:`godiff.box.Box` of its kind.

        Slab: ``z_lo = max template z + z_min``, ``z_hi = max template z + z_max``, the
        template cell, periodic in-plane. Clusters: a cubic non-periodic cell of side
        (largest box extent + 10 Å) centred on the box centre.
        """
        return self.box.resolve(self._template_atoms)

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
            raise ValueError(f"mobile_positions must have shape ({self.n_mobile}, 3), got {pos.shape}")
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


def load_system(spec: str | Path | Mapping[str, Any] | System) -> System:
    """Load a system from a shipped system's name, a YAML path, a dict or a System.

    A string that names a shipped system (see :func:`godiff.system.shipped.list_systems`) and does
    not look like a path (no ``.yaml``/``.yml`` suffix, no directory separator) is that system;
    otherwise it is a file path.

    Raises:
        SystemFileError: unknown name that is not a file (the message lists the shipped systems),
            or any problem in the file.
        TypeError: ``spec`` is none of the accepted types.

    Example:
        >>> load_system("lj13").n_mobile
        13
    """
    from godiff.system import shipped  # local: shipped imports nothing from here, keep it that way

    if isinstance(spec, System):
        return spec
    if isinstance(spec, Mapping):
        return System.from_dict(spec)
    if isinstance(spec, Path):
        return System.from_yaml(spec)
    if isinstance(spec, str):
        looks_like_path = spec.endswith((".yaml", ".yml")) or "/" in spec or os.sep in spec
        if not looks_like_path and spec in shipped.list_systems():
            return System.from_yaml(shipped.system_path(spec))
        if looks_like_path or os.path.isfile(spec):
            return System.from_yaml(spec)
        raise SystemNotFoundError(
            f"unknown system '{spec}': no such file and no shipped system of that name "
            f"(shipped systems: {', '.join(shipped.list_systems())})"
        )
    raise TypeError(f"load_system expects a name, a path, a dict or a System, got {type(spec).__name__}")
