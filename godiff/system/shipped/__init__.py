"""The systems shipped with godiff: one YAML file per system, with its reference minimum.

This package holds data and a loader only; :func:`godiff.system.load_system` turns a shipped
system's name into a :class:`~godiff.system.System` (``godiff run lj13``; ``godiff systems`` lists
them). ("Preset" names a set of search settings, :meth:`godiff.config.SearchConfig.preset`.)

Example:
    >>> "lj13" in list_systems()
    True
    >>> system_path("lj13").name
    'lj13.yaml'
"""

from __future__ import annotations

from pathlib import Path

import yaml

from godiff.errors import SystemFileError

__all__ = ["list_systems", "system_path", "system_description", "system_descriptions"]

_HERE = Path(__file__).resolve().parent


def list_systems() -> list[str]:
    """The shipped systems' names (file stems), sorted, e.g. ``['au7-au111', 'lj13', ...]``."""
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def system_path(name: str) -> Path:
    """The YAML file of the shipped system ``name``.

    Raises:
        SystemFileError: no shipped system of that name (the message lists them).
    """
    if name not in list_systems():
        raise SystemFileError(f"unknown system {name!r} (shipped systems: {', '.join(list_systems())})")
    return _HERE / f"{name}.yaml"


def system_description(name: str) -> str:
    """The one-line summary of a shipped system: the first line of its YAML ``description``."""
    with open(system_path(name), encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    text = str(data.get("description") or "").strip()
    return text.splitlines()[0].strip() if text else ""


def system_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` for every shipped system."""
    return {name: system_description(name) for name in list_systems()}
