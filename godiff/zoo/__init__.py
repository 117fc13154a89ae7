"""The model zoo: versioned score models with their system metadata, local and on the Hugging Face Hub.

Modules: :mod:`~godiff.zoo.format` (the folder layout and its digests), :mod:`~godiff.zoo.model`
(a loaded model), :mod:`~godiff.zoo.card` (model cards), :mod:`~godiff.zoo.table` (the docs' table of the
shipped zoo), :mod:`~godiff.zoo.registry` (names and
versions on this machine), :mod:`~godiff.zoo.hub` (push, pull and versions on the Hub).

Example:
    >>> from godiff.zoo import load
    >>> zm = load("pt-islands-emt@latest")          # doctest: +SKIP
    >>> zm.ref, zm.system.name                      # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["load", "resolve", "is_hub_ref"]


_HUB_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[^/@]*)?$")


def is_hub_ref(ref: str) -> bool:
    """``org/name[@version]`` (a Hub repo id) rather than a registry name or a folder.

    Example:
        >>> is_hub_ref("myorg/pt-islands-emt@1.0.0"), is_hub_ref("../../etc@1.0.0"), is_hub_ref("pt-islands-emt")
        (True, False, False)
    """
    return bool(_HUB_REF.match(str(ref))) and not Path(str(ref)).exists()


def _looks_like_folder(ref: str) -> bool:
    text = str(ref)
    return text.startswith((".", "/", "~")) or os.sep in text.partition("@")[0]


def resolve(
    ref,
    *,
    registry=None,
    revision: str | None = None,
    token: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
) -> Path:
    """The verified local folder of ``ref`` (a folder, ``name@version``, or ``org/name@version``
    on the Hub, pulled into the Hugging Face cache if it is not there yet).

    Raises :class:`~godiff.errors.ModelNotFoundError` (exit 3) for a folder that does not exist
    and a name or version that is not registered, :class:`~godiff.errors.ConfigError` (exit 2)
    for a reference that is none of the three forms. ``revision`` (a version, for a reference
    without one), ``token``, ``cache_dir`` and ``local_files_only`` go to the Hub as
    ``huggingface_hub`` names them (:func:`godiff.zoo.hub.pull`).
    """
    from godiff.errors import ModelNotFoundError
    from godiff.zoo.registry import Registry, split_ref

    if isinstance(ref, Path) or Path(str(ref)).is_dir():
        if not Path(ref).is_dir():
            raise ModelNotFoundError(f"{ref}: no such model folder")
        return Path(ref)
    if not is_hub_ref(ref) and _looks_like_folder(ref):
        raise ModelNotFoundError(f"{ref}: no such model folder, and not a NAME@VERSION or ORG/NAME@VERSION reference")
    if is_hub_ref(ref):
        from godiff.zoo import hub

        repo_id, version = split_ref(ref)
        hub_options = {"token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
        version = version or revision
        if version is None:
            available = hub.versions(repo_id, **hub_options)
            if not available:
                raise ModelNotFoundError(f"{repo_id} has no tagged versions on the Hub")
            version = available[-1]
        return hub.pull(repo_id, version, **hub_options)
    return (registry or Registry()).resolve(ref).path


def load(
    ref,
    *,
    registry=None,
    revision: str | None = None,
    token: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
):
    """Load a zoo model, digests verified: a model folder, ``name@version`` / ``name@latest`` from the
    registry, or ``org/name@version`` from the Hub (pulled into the Hugging Face cache once, then
    read from there, also with ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``). The Hub
    options are named as ``huggingface_hub`` names them (see :func:`resolve`).

    Returns a :class:`godiff.zoo.model.ZooModel`.
    """
    from godiff.zoo.model import read_folder

    return read_folder(
        resolve(
            ref,
            registry=registry,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
    )
