"""The energy and reference specs of a system file, and the YAML loader (no aliases) and dumper."""

from __future__ import annotations

from typing import Any

import yaml

from godiff.energy import KNOWN_CALCULATORS, normalize_spec
from godiff.errors import EnergyFunctionError
from godiff.errors import shown as _shown
from godiff.system.fields import (  # noqa: F401
    _REFERENCE_FIELDS,
    _as_float,
    _as_mapping,
    _as_positive,
    _as_str,
    _check_keys,
    _fail,
)

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
            raise _fail(
                "reference.next_energy",
                f"{out['next_energy']} is not above energy + tolerance "
                f"({out['energy'] + out.get('tolerance', 0.0)}): it is the next distinct minimum",
            )
    return out


MAX_FILE_BYTES = 1 << 20
"""The largest system file read (1 MiB; the shipped ones are under 2 KiB): a bigger one is refused
before it is parsed."""

MAX_DEPTH = 32
"""The deepest nesting of lists and mappings in a system file (the shipped ones nest 4 deep)."""


class _SystemLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases, duplicate keys or deep nesting: a system file is data
    that people share. A few nested aliases (``&a [*b, *b, ...]``) expand a kilobyte into
    gigabytes; a key given twice (``mobile: Pt3`` then ``mobile: Au3``) would silently keep the
    last; lists nested 20,000 deep exhaust the recursion of any reader."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a system file", mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a name or a number", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def refuse_tag(self, node):
        """Sets, dates, bytes and ordered pairs are not data a system file holds (JSON's types are)."""
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{node.tag.rpartition(':')[2]} values are not allowed"
            + (" (quote a date as text)" if node.tag.endswith("timestamp") else ""),
            node.start_mark,
        )


for _tag in ("set", "timestamp", "binary", "omap", "pairs"):
    _SystemLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _SystemLoader.refuse_tag)


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
