"""The shipped system presets: one YAML file per system, with its reference minimum.

This package holds data and a loader only; :func:`godiff.system.load_system` turns a
preset name into a :class:`~godiff.system.System`.

Example:
    >>> "lj13" in list_presets()
    True
    >>> preset_path("lj13").name
    'lj13.yaml'
"""

from __future__ import annotations

from pathlib import Path

import yaml

from godiff.errors import SystemFileError

__all__ = ["list_presets", "preset_path", "preset_description", "preset_descriptions"]

_PRESET_DIR = Path(__file__).resolve().parent


def list_presets() -> list[str]:
    """The preset names (file stems), sorted, e.g. ``['lj13', 'lj19', ..., 'pt7-pt111']``."""
    return sorted(p.stem for p in _PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``.

    Raises:
        SystemFileError: no preset of that name (the message lists the presets).
    """
    if name not in list_presets():
        raise SystemFileError(f"unknown preset {name!r} (presets: {', '.join(list_presets())})")
    return _PRESET_DIR / f"{name}.yaml"


def preset_description(name: str) -> str:
    """The one-line summary of a preset: the first line of its YAML ``description``."""
    with open(preset_path(name), encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    text = str(data.get("description") or "").strip()
    return text.splitlines()[0].strip() if text else ""


def preset_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` for every preset."""
    return {name: preset_description(name) for name in list_presets()}
