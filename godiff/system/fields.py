"""Field validation and formula parsing for system definitions: each helper raises
:class:`~godiff.errors.SystemFileError` with ``<field>: <what is wrong>``, and the constants
the other parts share.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from godiff.energy import CALCULATOR_OPTIONS
from godiff.errors import SystemFileError, one_line
from godiff.errors import shown as _shown

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


def _fail(where: str, what: str) -> SystemFileError:
    return SystemFileError(f"{where}: {one_line(what)}" if where else one_line(what))


def _check_keys(where: str, data: Mapping, known: Sequence[str]) -> None:
    """Refuse keys of ``data`` that are not in ``known`` (typos), suggesting the closest."""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            prefix = f"{where}: " if where else ""
            raise SystemFileError(f"{prefix}unknown field '{str(key)[:60]}' ({hint}known: {', '.join(known)})")


def _as_mapping(where: str, value: object) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {_shown(value)}")
    return value


def _as_float(where: str, value: object) -> float:
    """A finite float from a number (or a numeric string: YAML 1.1 reads ``1e-3`` as one)."""
    if isinstance(value, bool) or value is None:
        raise _fail(where, f"expected a number, got {_shown(value)}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            out = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise _fail(where, f"expected a finite number, got {_shown(value)}") from None
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

MAX_ATOMS = 2000
"""The most atoms (template and mobile together) a system may have unless the environment variable
``GODIFF_MAX_ATOMS`` says otherwise: a shared system file must not make godiff build ten thousand
atoms, taking gigabytes before anything is checked. The largest shipped system has 19 mobile atoms on
a 144-atom template; a raised limit costs memory and time in proportion (the network's graph grows with
the atoms near each mobile one)."""


def max_atoms() -> int:
    """:data:`MAX_ATOMS`, or the positive integer in ``GODIFF_MAX_ATOMS``."""
    import os

    text = os.environ.get("GODIFF_MAX_ATOMS", "").strip()
    if not text:
        return MAX_ATOMS
    if not text.isdigit() or int(text) < 1 or len(text) > 9:
        raise SystemFileError(f"GODIFF_MAX_ATOMS: expected a positive integer, got {_shown(text)}")
    return int(text)


def check_atom_count(where: str, n: int) -> None:
    """Refuse ``n`` atoms above :func:`max_atoms`, naming the field and how to raise the limit."""
    limit = max_atoms()
    if n > limit:
        raise _fail(
            where,
            f"{n} atoms are more than godiff's limit of {limit} (set GODIFF_MAX_ATOMS to raise it, if you meant it)",
        )


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
            if len(digits) > 9:
                raise _fail(where, f"count of '{symbol}' has {len(digits)} digits")
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
            check_atom_count(where, counts[symbol])
    else:
        raise _fail(where, f"expected a formula string or a mapping, got {_shown(formula)}")
    if not counts:
        raise _fail(where, "empty composition")
    check_atom_count(where, sum(counts.values()))
    return {s: counts[s] for s in sorted(counts, key=lambda s: (atomic_numbers[s], s))}


def _format_formula(counts: Mapping[str, int]) -> str:
    return "".join(f"{s}{n}" for s, n in counts.items())
