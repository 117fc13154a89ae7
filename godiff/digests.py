"""SHA-256 digests of files, and the one rule for names that a digest table may hold.

Checkpoints of a run (:mod:`godiff.rundir`) and model folders (:mod:`godiff.zoo.format`) both
list their files with a digest and are read only after every digest has been checked. A name in
such a table comes from a file on disk that someone else may have written, so before it is
joined to a folder it must be a plain name inside that folder (:func:`confined`): no absolute
path, no ``..``, no symbolic link that leads out. Their JSON documents are read by
:func:`read_json`, which refuses what Python's reader would take silently (a key given twice).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from godiff.errors import CheckpointError, shown

__all__ = ["sha256_file", "leaves", "confined", "read_json", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 64 << 20
"""The largest JSON document of a run or a model folder read (64 MiB; the largest written is a
checkpoint's state, a few hundred KiB)."""


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"key {shown(twice)} is given twice")
    return dict(pairs)


def read_json(path: Path) -> object:
    """A JSON document that someone else may have written, parsed strictly: a
    :class:`CheckpointError` (exit 4) naming the file for a missing, unreadable, too large
    (:data:`MAX_JSON_BYTES`) or too deeply nested document and for a key given twice, which
    Python's reader would resolve silently to its last value.

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "m.json"; _ = p.write_text('{"a": 1, "a": 2}')
        >>> read_json(p)
        Traceback (most recent call last):
        ...
        godiff.errors.CheckpointError: .../m.json: unreadable JSON (key 'a' is given twice)
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{path}: {path.stat().st_size:,} bytes is larger than godiff writes ({MAX_JSON_BYTES:,})"
            )
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing") from exc
    except RecursionError:
        raise CheckpointError(f"{path}: unreadable JSON (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from exc


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def leaves(folder: Path, name: object, *, root: Path | None = None) -> str | None:
    """Why ``name`` is not a path inside ``folder``, or None when it is: the one rule for names
    that a file on disk (a manifest, a system file) asks godiff to open.

    Refused: a name that is not a non-empty string, holds a backslash or NUL, is absolute or
    starts with ``~``, holds ``..``, or resolves (through symbolic links) outside ``root``
    (default ``folder``).

    Example:
        >>> leaves(Path("/models/m"), "config.json") is None, leaves(Path("/models/m"), "/etc/passwd")
        (True, 'is absolute')
    """
    text = name if isinstance(name, str) else None
    if not text or "\\" in text or "\x00" in text:
        return "is not a file name"
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("~"):
        return "is absolute"
    if ".." in pure.parts:
        return "leaves the folder"
    path = Path(folder) / pure
    if path.exists() or path.is_symlink():
        base = Path(root if root is not None else folder).resolve()
        target = path.resolve()
        if target != base and base not in target.parents:
            return f"leaves the folder (a link to {target})"
    return None


def confined(folder: Path, name: object, *, what: str = "manifest", root: Path | None = None) -> Path:
    """``folder / name``, refused unless it is a file path that stays inside ``folder``.

    Raises :class:`CheckpointError` (exit 4) for a name that is not a string, is empty,
    absolute, holds ``..`` or a backslash, or resolves (through symbolic links) outside
    ``root`` (default ``folder``; a Hugging Face cache snapshot links into its repository's
    ``blobs/``, so there ``root`` is the repository's cache folder).

    Example:
        >>> confined(Path("/models/m"), "config.json").as_posix()
        '/models/m/config.json'
        >>> confined(Path("/models/m"), "../../etc/passwd")
        Traceback (most recent call last):
        ...
        godiff.errors.CheckpointError: /models/m: manifest entry '../../etc/passwd' leaves the folder
    """
    reason = leaves(folder, name, root=root)
    if reason is not None:
        raise CheckpointError(f"{folder}: {what} entry {shown(name)} {reason}")
    return Path(folder) / PurePosixPath(name)
