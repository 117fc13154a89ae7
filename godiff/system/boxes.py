"""The box settings of a system file (``box:``), relative to the template; :meth:`godiff.system.System.geometry`
resolves them into a :class:`godiff.box.Box`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np

from godiff.box import CuboidGeometry, SlabGeometry, SphereGeometry
from godiff.errors import shown as _shown
from godiff.system.fields import (  # noqa: F401
    _CLUSTER_CELL_PADDING,
    _as_length,
    _as_mapping,
    _as_positive,
    _as_vector,
    _check_keys,
    _fail,
)

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

    def resolve(self, template) -> SlabGeometry:
        """In Å over ``template`` (ase Atoms): its cell, periodic in-plane, z from its top atom."""
        cell = np.array(template.cell[:], dtype=float)
        top = float(template.positions[:, 2].max())
        z_lo, z_hi = top + self.z_min, top + self.z_max
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

    def features(self, geometry) -> dict[str, Any]:
        """What a fingerprint records of this box (its geometry: the resolved box)."""
        return {
            "kind": "slab",
            "z_min": self.z_min,
            "z_max": self.z_max,
            "area": abs(float(np.linalg.det(geometry.cell[:2, :2]))),
        }


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

    def resolve(self, template=None) -> CuboidGeometry:
        """In Å, inside a cubic non-periodic cell of side (largest edge + 10 Å) around it."""
        return _cluster_geometry(
            CuboidGeometry, np.array(self.center, dtype=float), 0.5 * np.array(self.lengths, dtype=float), None
        )

    def features(self, geometry) -> dict[str, Any]:
        """What a fingerprint records of this box."""
        return {"kind": "cuboid", "lengths": list(self.lengths)}


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

    def resolve(self, template=None) -> SphereGeometry:
        """In Å, inside a cubic non-periodic cell of side (diameter + 10 Å) around it."""
        return _cluster_geometry(
            SphereGeometry, np.array(self.center, dtype=float), np.full(3, self.radius), self.radius
        )

    def features(self, geometry) -> dict[str, Any]:
        """What a fingerprint records of this box."""
        return {"kind": "sphere", "radius": self.radius}


def _cluster_geometry(kind, center: np.ndarray, half: np.ndarray, radius):
    """A cluster box in Å inside a cubic non-periodic cell of side (largest extent + 10 Å)."""
    side = 2.0 * float(half.max()) + _CLUSTER_CELL_PADDING
    return kind(
        cell=np.eye(3) * side,
        periodic=(False, False, False),
        lower=center - half,
        upper=center + half,
        center=center,
        radius=radius,
        origin=center - side / 2.0,
    )


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
