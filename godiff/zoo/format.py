"""One folder per model version, the layout that the registry, ``save_pretrained`` and the Hub share.

The JSON files' keys are those of :class:`godiff.manifest.ModelManifest` (one typed class per
file, read with :func:`read_metadata`). Layout::

    model.safetensors   the score network's weights (safetensors; never a pickle)
    config.json         {"format_version", "architecture": "ScoreModel", "score": ScoreConfig, "godiff_version"}
    system.json         {"system": the system definition, "fingerprint": features used to find
                         related systems, "digest": SHA-256 of the canonical system definition}
    training.json       name, version, iterations, evaluations, temperature schedule, best energy,
                        godiff version, the exact command, search settings and lineage (parent)
    README.md           the model card (:mod:`godiff.zoo.card`)
    sampler.json        {"format_version", "sde": VESDE, "sampler": SamplerConfig as applied to the
                        model's own system (lengths scaled)}: what it samples, kept with the
                        weights (as diffusers keeps scheduler_config.json), so a newer godiff
                        whose defaults changed samples it as published; absent in older folders
    template.xyz        only for a template read from a file: those atoms (extxyz), which
                        system.json names relative to the folder, so the model loads anywhere
    manifest.json       {"format_version", "files": {name: {"sha256", "size"}}} of every file above

A folder is written under a temporary name and renamed into place, so nothing half-written is
ever seen; it is read only after every digest in its manifest has been checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from godiff.digests import confined, sha256_file
from godiff.digests import read_json as _read_json
from godiff.errors import CheckpointError, ConfigError, DigestMismatchError
from godiff.manifest import (
    CONFIG_FILE,
    MODEL_FORMAT,
    SAMPLER_FILE,
    SYSTEM_FILE,
    TRAINING_FILE,
    ModelConfig,
    ModelManifest,
    ModelSampling,
    ModelSystem,
    ModelTraining,
    _check_model_format,
)

__all__ = [
    "FORMAT_VERSION",
    "FILES",
    "TEMPLATE_FILE",
    "SAMPLER_FILE",
    "MANIFEST",
    "check_name",
    "parse_version",
    "sha256_file",
    "write_manifest",
    "verify_folder",
    "link_root",
    "write_folder",
    "read_json",
    "read_metadata",
    "content_digest",
]

FORMAT_VERSION = MODEL_FORMAT
MANIFEST = "manifest.json"
FILES = ("model.safetensors", CONFIG_FILE, SYSTEM_FILE, TRAINING_FILE, "README.md")
TEMPLATE_FILE = "template.xyz"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def check_name(name: str) -> str:
    """A model name: lower-case letters, digits, ``.``, ``_`` and ``-`` (a valid Hub repo name)."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".", "-")):
        raise ConfigError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-', e.g. pt-islands-emt")
    return name


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; anything but MAJOR.MINOR.PATCH is a :class:`ConfigError`.

    Example:
        >>> parse_version("1.10.0") > parse_version("1.9.3")
        True
    """
    m = _SEMVER.match(str(text).strip().removeprefix("v"))
    if m is None:
        raise ConfigError(f"version {text!r}: expected a semantic version MAJOR.MINOR.PATCH, e.g. 1.0.0")
    return tuple(int(g) for g in m.groups())


def write_manifest(folder) -> dict:
    """Write ``manifest.json`` listing the digest and size of every other file in ``folder``."""
    folder = Path(folder)
    files = {
        p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {"format_version": FORMAT_VERSION, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_json(path: Path) -> dict:
    """A JSON object of a model folder, read strictly (:func:`godiff.digests.read_json`)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def check_format_version(data: dict, path: Path) -> None:
    """Refuse a document without an integer ``format_version`` or with a newer one."""
    _check_model_format(data, str(path))


def read_metadata(folder) -> ModelManifest:
    """The typed metadata of a model folder (:class:`godiff.manifest.ModelManifest`); its
    ``sampling`` is None for a folder without ``sampler.json``. Digests are not checked here."""
    folder = Path(folder)

    def document(cls):
        path = folder / cls.FILE
        return cls.from_dict(read_json(path), where=str(path))

    sampling = document(ModelSampling) if (folder / SAMPLER_FILE).exists() else None
    return ModelManifest(document(ModelConfig), document(ModelSystem), document(ModelTraining), sampling)


def link_root(folder) -> Path:
    """Where the links of a model folder's files may lead: the folder itself, or for a Hugging
    Face cache snapshot (``models--ORG--NAME/snapshots/REV``) its repository's cache folder,
    whose ``blobs/`` the snapshot's files link to."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return folder


def verify_folder(folder, *, root=None) -> dict:
    """Check every digest of ``folder``'s manifest; return the manifest.

    Files the manifest does not list (e.g. a Hub repo's ``.gitattributes``) are ignored; every
    file of :data:`FILES` must be listed, and every listed name must be a file inside the
    folder (:func:`godiff.digests.confined`; links may lead only within ``root``, default the
    folder). Raises :class:`CheckpointError` for a missing or unreadable manifest or file, or a
    name that leaves the folder, :class:`DigestMismatchError` for a changed file and
    :class:`FormatVersionError` for a format this godiff does not know.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a model folder")
    root = link_root(folder) if root is None else root
    manifest = read_json(folder / MANIFEST)
    check_format_version(manifest, folder / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{folder / MANIFEST}: no 'files' table")
    missing = [name for name in FILES if name not in files]
    if missing:
        raise CheckpointError(f"{folder / MANIFEST}: does not list {', '.join(missing)}")
    for name, entry in sorted(files.items()):
        path = confined(folder, name, what=MANIFEST, root=root)
        if not isinstance(entry, dict):
            raise CheckpointError(f"{folder / MANIFEST}: entry {name!r} is not a table")
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise CheckpointError(f"{folder / MANIFEST}: entry {name!r} has no size in bytes (got {size!r})")
        if path.stat().st_size != size:
            raise DigestMismatchError(f"{path}: {path.stat().st_size} bytes, the manifest says {size}")
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise DigestMismatchError(
                f"{path}: SHA-256 {digest[:12]}... differs from the manifest's {str(entry.get('sha256'))[:12]}..."
            )
    return manifest


def content_digest(folder) -> str:
    """One SHA-256 over the manifest's file table: equal for two folders with the same content."""
    files = read_json(Path(folder) / MANIFEST).get("files", {})
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_folder(
    folder, *, tensors: dict, metadata: ModelManifest, card: str, extra: dict[str, bytes] | None = None
) -> Path:
    """Write a complete model folder atomically (temporary sibling, then rename) and return it.

    ``folder`` must not exist. ``tensors`` are saved with safetensors; the JSON documents are
    written with sorted keys so that equal content gives equal bytes; ``extra`` files (such as
    :data:`TEMPLATE_FILE`) are written as given, and all are covered by the manifest.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder}: already exists")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir()
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, data in metadata.documents().items():
            (tmp / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(card)
        for name, data in (extra or {}).items():
            confined(tmp, name, what="extra").write_bytes(data)
        write_manifest(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
