"""How close two systems are, from their metadata alone: the distance ``godiff zoo match`` ranks by.

The distance is a sum of named, dimensionless terms (each 0 for identical systems), so a user sees
why a model ranks where it does:

============  =====================================================================  ==========
term          what it compares                                                       weight
============  =====================================================================  ==========
mobile        mobile species: each element's distance to the nearest element of the   1
              other system (symmetrised mean); element distance =
              0.5 |Δgroup| + 0.5 |Δperiod|, capped at 3 (Au-Pt 0.5, Au-Ag 0.5,
              Au-Cu 1, Pt-Ar 3)
template      template species, the same measure (0 when both are clusters)           0.5
kind          template kind: same kind and facet 0, same crystal other facet or a     1
              step 0.5, another crystal 0.75, file vs builder 1, cluster vs slab 2
lattice       relative lattice-constant mismatch x 5 (Pt-Au 0.2, Pt-Cu 0.4)          1
size          |ln(n_mobile / n_mobile')| (Pt7-Pt5 0.34, Pt7-Pt3 0.85)                1
energy        energy function: same calculator and model 0, same calculator another   1
              model 0.5, another calculator 1
box           |ln| of the ratio of box volume per mobile atom                         0.25
============  =====================================================================  ==========

Two systems are **unrelated** when they share no element (mobile or template) and have different
template kinds: no model transfers between them, and ``finetune`` says so.

Example:
    >>> from godiff.system import load_system
    >>> distance(fingerprint(load_system("pt7-pt111")), fingerprint(load_system("pt7-pt111"))).total
    0.0
    >>> element_distance("Au", "Pt"), element_distance("Au", "Ag"), element_distance("Pt", "Ar")
    (0.5, 0.5, 3.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ase.data import atomic_numbers, reference_states

from godiff.system import SLAB_BUILDERS

__all__ = [
    "fingerprint",
    "element_distance",
    "period_group",
    "distance",
    "Distance",
    "WEIGHTS",
    "related",
]

WEIGHTS = {"mobile": 1.0, "template": 0.5, "kind": 1.0, "lattice": 1.0, "size": 1.0, "energy": 1.0, "box": 0.25}
ELEMENT_CAP = 3.0
_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)
_STEPS = {"fcc211", "surface"}


def fingerprint(system) -> dict[str, Any]:
    """The features of a :class:`godiff.system.System` that find its related systems (a plain
    JSON-able dict, stored in a model folder's ``system.json``).

    Keys: ``composition`` ({symbol: count}), ``n_mobile``, ``mobile_species``,
    ``template_kind`` (builder name, ``"file"`` or ``"cluster"``), ``template_species``
    (sorted), ``n_template``, ``crystal`` (fcc/bcc/hcp or None), ``facet`` (Miller
    indices or None), ``lattice_constant`` (Å, the given ``a`` or ase's reference
    state; None when unknown), ``energy_calculator``, ``energy_model`` (or None), ``box``
    (kind, dimensions in Å and volume in Å^3).
    """
    template = system.template
    crystal = facet = lattice = None
    if template is None:
        kind, species = "cluster", []
    else:
        species = sorted(set(system.template_atoms().get_chemical_symbols()))
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
    geometry = system.geometry()
    box: dict[str, Any] = system.box.features(geometry)
    box["volume"] = geometry.volume()
    return {
        "composition": dict(system.mobile),
        "n_mobile": system.n_mobile,
        "mobile_species": list(system.mobile),
        "template_kind": kind,
        "template_species": species,
        "n_template": system.n_template,
        "crystal": crystal,
        "facet": facet,
        "lattice_constant": lattice,
        "energy_calculator": system.energy["calculator"],
        "energy_model": system.energy.get("model"),
        "box": box,
    }


def period_group(symbol: str) -> tuple[int, int]:
    """(period, group) of an element; lanthanides and actinides count as group 3.

    Example:
        >>> period_group("Pt"), period_group("Ar"), period_group("Ce")
        ((6, 10), (3, 18), (6, 3))
    """
    z = atomic_numbers[symbol]
    period = next(i + 1 for i, end in enumerate(_PERIOD_ENDS) if z <= end)
    pos = z - (0, *_PERIOD_ENDS)[period - 1]
    if period == 1:
        return 1, 1 if z == 1 else 18
    if period <= 3:
        return period, pos if pos <= 2 else pos + 10
    if period <= 5:
        return period, pos
    if pos <= 2:
        return period, pos
    return period, 3 if pos <= 17 else pos - 14


def element_distance(a: str, b: str) -> float:
    """0.5 |Δgroup| + 0.5 |Δperiod|, capped at 3."""
    (pa, ga), (pb, gb) = period_group(a), period_group(b)
    return min(ELEMENT_CAP, 0.5 * abs(ga - gb) + 0.5 * abs(pa - pb))


def _species_distance(a: list[str], b: list[str]) -> float:
    if not a and not b:
        return 0.0
    if not a or not b:
        return ELEMENT_CAP

    def one_way(x, y):
        return sum(min(element_distance(s, t) for t in y) for s in x) / len(x)

    return 0.5 * (one_way(a, b) + one_way(b, a))


def _kind_distance(fa: dict, fb: dict) -> float:
    ka, kb = fa.get("template_kind"), fb.get("template_kind")
    if ka == kb and fa.get("facet") == fb.get("facet"):
        return 0.0
    if "cluster" in (ka, kb):
        return 2.0
    if "file" in (ka, kb):
        return 1.0
    if fa.get("crystal") == fb.get("crystal") and fa.get("crystal") is not None:
        return 0.5
    if ka in _STEPS or kb in _STEPS:
        return 0.5
    return 0.75


def _lattice_distance(fa: dict, fb: dict) -> float:
    a, b = fa.get("lattice_constant"), fb.get("lattice_constant")
    if not a or not b:
        return 0.0 if a == b else 0.5
    return 5.0 * abs(a - b) / (0.5 * (a + b))


def _energy_distance(fa: dict, fb: dict) -> float:
    if fa.get("energy_calculator") != fb.get("energy_calculator"):
        return 1.0
    return 0.0 if fa.get("energy_model") == fb.get("energy_model") else 0.5


def _box_distance(fa: dict, fb: dict) -> float:
    va = (fa.get("box") or {}).get("volume")
    vb = (fb.get("box") or {}).get("volume")
    if not va or not vb:
        return 0.0
    return abs(math.log((va / fa["n_mobile"]) / (vb / fb["n_mobile"])))


@dataclass(frozen=True)
class Distance:
    """A distance with its weighted terms (``terms[name]`` already includes the weight)."""

    terms: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return round(sum(self.terms.values()), 6)


def distance(fa: dict, fb: dict) -> Distance:
    """The distance between two system fingerprints (:meth:`godiff.system.System.fingerprint`)."""
    raw = {
        "mobile": _species_distance(fa["mobile_species"], fb["mobile_species"]),
        "template": _species_distance(fa.get("template_species", []), fb.get("template_species", [])),
        "kind": _kind_distance(fa, fb),
        "lattice": _lattice_distance(fa, fb),
        "size": abs(math.log(fa["n_mobile"] / fb["n_mobile"])),
        "energy": _energy_distance(fa, fb),
        "box": _box_distance(fa, fb),
    }
    return Distance({k: round(WEIGHTS[k] * v, 6) for k, v in raw.items()})


def related(fa: dict, fb: dict) -> bool:
    """Whether a model of one system can sensibly start a search of the other (see the module docstring)."""
    elements_a = set(fa["mobile_species"]) | set(fa.get("template_species", []))
    elements_b = set(fb["mobile_species"]) | set(fb.get("template_species", []))
    return bool(elements_a & elements_b) or fa.get("template_kind") == fb.get("template_kind")
