"""The registry: named, versioned model folders on this machine.

Two roots, searched in this order:

- the **local** registry, read-write: ``$GODIFF_ZOO`` if set, else ``$XDG_CACHE_HOME/godiff/zoo``
  (``~/.cache/godiff/zoo``);
- the **shipped** registry, read-only: the repository's ``zoo/`` folder, which an installed
  wheel carries as ``godiff/_shipped_zoo``.

Layout of either: ``<root>/<name>/<version>/`` holding one model folder
(:mod:`godiff.zoo.format`). References are ``name@MAJOR.MINOR.PATCH``, ``name@latest`` or just
``name`` (latest). A registered version is immutable: registering the same name and version with
different content is refused unless ``force=True``; the same content again is a no-op.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from godiff.errors import ConfigError, ModelNotFoundError, VersionExistsError
from godiff.manifest import ModelManifest
from godiff.zoo.format import check_name, content_digest, parse_version, read_metadata, verify_folder
from godiff.zoo.similarity import Distance, distance, fingerprint, related

__all__ = ["Registry", "Entry", "Match", "match", "local_root", "shipped_root", "split_ref"]

ENV = "GODIFF_ZOO"


def local_root() -> Path:
    """The local registry's folder (``$GODIFF_ZOO``, else the user's cache directory).

    Raises :class:`ConfigError` when that path exists and is not a directory.
    """
    if os.environ.get(ENV):
        root = Path(os.environ[ENV]).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(cache) / "godiff" / "zoo"
    if root.exists() and not root.is_dir():
        where = f"${ENV}" if os.environ.get(ENV) else "the local registry"
        raise ConfigError(f"{where} ({root}) is not a directory; point {ENV} at a directory for the local registry")
    return root


def shipped_root() -> Path:
    """The shipped models (read-only): ``godiff/_shipped_zoo`` in an installed wheel, which
    carries the repository's ``zoo/`` there (see ``pyproject.toml``), else ``zoo/`` of the
    checkout this package runs from (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_shipped_zoo"
    return installed if installed.is_dir() else package.parent / "zoo"


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"name@1.0.0"`` -> ``("name", "1.0.0")``; ``"name"`` and ``"name@latest"`` -> ``("name", None)``.

    Example:
        >>> split_ref("pt-islands-emt@1.2.0"), split_ref("pt-islands-emt@v1.2.0"), split_ref("pt-islands-emt@latest")
        (('pt-islands-emt', '1.2.0'), ('pt-islands-emt', '1.2.0'), ('pt-islands-emt', None))
    """
    name, sep, version = str(ref).partition("@")
    if not name:
        raise ConfigError(f"model reference {ref!r}: expected NAME@VERSION, e.g. pt-islands-emt@1.0.0")
    if sep and not version:
        raise ConfigError(
            f"model reference {ref!r}: the version after '@' is empty (write {name}@1.0.0 or {name}@latest)"
        )
    if version in ("", "latest"):
        return name, None
    return name, ".".join(map(str, parse_version(version)))


@dataclass(frozen=True)
class Entry:
    """One registered model version."""

    name: str
    version: str
    path: Path
    source: str  # "local" or "shipped"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def metadata(self) -> ModelManifest:
        """Its folder's metadata (:class:`godiff.manifest.ModelManifest`), digests not checked."""
        return read_metadata(self.path)


class Registry:
    """The local and shipped registries (see the module docstring).

    Example:
        >>> import tempfile
        >>> reg = Registry(local=tempfile.mkdtemp(), shipped=tempfile.mkdtemp())
        >>> reg.entries()
        []
    """

    def __init__(self, local=None, shipped=None):
        self.local = Path(local) if local is not None else local_root()
        self.shipped = Path(shipped) if shipped is not None else shipped_root()

    def _roots(self) -> list[tuple[str, Path]]:
        return [("local", self.local), ("shipped", self.shipped)]

    def entries(self) -> list[Entry]:
        """Every registered version, by name then version; a local copy hides a shipped one."""
        return self._entries(self._roots())

    def _entries(self, roots) -> list[Entry]:
        seen: dict[tuple[str, str], Entry] = {}
        for source, root in roots:
            if not root.is_dir():
                continue
            for name_dir in sorted(root.iterdir()):
                if not name_dir.is_dir() or name_dir.name.startswith("."):
                    continue
                for vdir in name_dir.iterdir():
                    if vdir.is_dir() and (vdir / "manifest.json").is_file() and _is_version(vdir.name):
                        seen.setdefault((name_dir.name, vdir.name), Entry(name_dir.name, vdir.name, vdir, source))
        return sorted(seen.values(), key=lambda e: (e.name, parse_version(e.version)))

    def shipped_entries(self) -> list[Entry]:
        """Every version shipped with godiff (``zoo/``), as :meth:`entries` orders them, whatever
        the local registry holds: what the cards, the docs' table and ``push --all`` are made of
        (a local copy of a shipped version once hid it from all three)."""
        return self._entries([("shipped", self.shipped)])

    def versions(self, name: str) -> list[str]:
        return [e.version for e in self.entries() if e.name == name]

    def resolve(self, ref: str) -> Entry:
        """The entry of ``name@version`` / ``name@latest``; a one-line error names what exists."""
        name, version = split_ref(ref)
        check_name(name)
        entries = [e for e in self.entries() if e.name == name]
        if not entries:
            known = sorted({e.name for e in self.entries()})
            raise ModelNotFoundError(f"no model {name!r} in the registry (known: {', '.join(known) or 'none'})")
        if version is None:
            return entries[-1]
        for e in entries:
            if e.version == version:
                return e
        raise ModelNotFoundError(
            f"model {name!r} has no version {version} (available: {', '.join(e.version for e in entries)})"
        )

    def add(self, folder, *, force: bool = False, move: bool = False) -> Entry:
        """Register the model folder ``folder`` under its own name and version (from training.json).

        The folder is verified first, copied (or moved) to a temporary name inside the registry
        and renamed into place. The same content under the same version is a no-op.
        """
        folder = Path(folder)
        verify_folder(folder)
        training = read_metadata(folder).training
        name, version = check_name(training.name), training.version
        parse_version(version)
        existing = next((e for e in self.entries() if e.name == name and e.version == version), None)
        if existing is not None:
            if content_digest(existing.path) == content_digest(folder):
                return existing
            if not force:
                raise VersionExistsError(
                    f"{name}@{version} is already registered with different content ({existing.path}); "
                    "register a new version, or pass --force to replace it"
                )
        target = self.local / name / version
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{version}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if move:
                os.replace(folder, tmp)
            else:
                shutil.copytree(folder, tmp)
            verify_folder(tmp)
            if target.exists():
                old = target.with_name(f".{version}.{uuid.uuid4().hex[:8]}.old")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Entry(name, version, target, "local")

    def add_run(self, run, *, name: str, version: str, force: bool = False) -> Entry:
        """Register the model of a finished (or running) ``godiff run`` directory."""
        from godiff.zoo.model import from_run

        zoo_model = from_run(run, name=name, version=version)
        staging = self.local / f".staging-{uuid.uuid4().hex[:8]}"
        try:
            folder = zoo_model.save_pretrained(staging / name)
            return self.add(folder, force=force, move=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _is_version(text: str) -> bool:
    try:
        parse_version(text)
    except ConfigError:
        return False
    return True


@dataclass(frozen=True)
class Match:
    """A registered model and its distance to the system being matched."""

    entry: object
    distance: Distance
    related: bool


def match(system, registry=None) -> list[Match]:
    """Every registered model, closest first (ties by name and newest version first)."""
    target = fingerprint(system)
    found = []
    for entry in (registry or Registry()).entries():
        fp = entry.metadata().system.fingerprint
        found.append(Match(entry, distance(target, fp), related(target, fp)))
    return sorted(
        found, key=lambda m: (m.distance.total, m.entry.name, tuple(-v for v in parse_version(m.entry.version)))
    )
