"""The model zoo: versioned score models with their system metadata, local and on the Hugging Face Hub.

Modules: :mod:`~godiff.zoo.format` (the folder layout and its digests), :mod:`~godiff.zoo.model`
(a loaded model), :mod:`~godiff.zoo.card` (model cards), :mod:`~godiff.zoo.registry` (names and
versions on this machine), :mod:`~godiff.zoo.hub` (push, pull and versions on the Hub).

Example:
    >>> from godiff.zoo import load
    >>> zm = load("pt-islands-emt@latest")          # doctest: +SKIP
    >>> zm.ref, zm.system.name                      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["load", "resolve", "is_hub_ref"]


def is_hub_ref(ref: str) -> bool:
    """``org/name[@version]`` (a Hub repo id) rather than a registry name or a folder."""
    return "/" in str(ref).partition("@")[0] and not Path(str(ref)).exists()


def resolve(ref, *, registry=None) -> Path:
    """The verified local folder of ``ref`` (a folder, ``name@version``, or ``org/name@version``
    on the Hub, pulled into the Hugging Face cache if it is not there yet)."""
    from godiff.zoo.registry import Registry, split_ref

    if isinstance(ref, Path) or Path(str(ref)).is_dir():
        return Path(ref)
    if is_hub_ref(ref):
        from godiff.zoo import hub

        repo_id, version = split_ref(ref)
        if version is None:
            available = hub.versions(repo_id)
            if not available:
                from godiff.errors import ModelNotFoundError

                raise ModelNotFoundError(f"{repo_id} has no tagged versions on the Hub")
            version = available[-1]
        return hub.pull(repo_id, version)
    return (registry or Registry()).resolve(ref).path


def load(ref, *, registry=None):
    """Load a zoo model, digests verified: a model folder, ``name@version`` / ``name@latest`` from the
    registry, or ``org/name@version`` from the Hub (pulled into the Hugging Face cache once, then
    read from there, also with ``HF_HUB_OFFLINE=1``).

    Returns a :class:`godiff.zoo.model.ZooModel`.
    """
    from godiff.zoo.model import read_folder

    return read_folder(resolve(ref, registry=registry))
