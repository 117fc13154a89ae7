"""What a run is: the typed, versioned description a run directory keeps in ``run.json``.

Every module that reads a run's metadata (resume, the zoo's registration, the report) reads it
by attribute from :class:`RunManifest`; its keys live here and nowhere else. ``format`` is the
layout version of the whole run directory (:data:`RUN_FORMAT`); a newer one is refused.

A benchmark's classical methods (random search, RSS, basin hopping, AGOX) describe their runs
with the same class: ``method``, ``seed`` and ``budget`` set, the search fields empty.

Example:
    >>> m = RunManifest(system={"name": "lj13"}, command="godiff run lj13", parent="lj13-lj@1.0.0")
    >>> RunManifest.from_dict(m.to_dict()) == m, m.to_dict()["format"]
    (True, 1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from godiff.errors import CheckpointError

__all__ = ["RUN_FORMAT", "RunManifest"]

RUN_FORMAT = 1


@dataclass(frozen=True)
class RunManifest:
    """The contents of ``run.json``.

    Attributes:
        system: the system definition (:meth:`godiff.system.System.to_dict`).
        format: the run directory's layout version.
        godiff_version: the godiff that made the run.
        created: when, ISO 8601 with the zone.
        command: the exact command line.
        energy: the energy spec the run evaluated with (``{"calculator": "python", "class": ...}``
            for a calculator object, which a resume must be given again).
        search: the search settings (:meth:`godiff.search.SearchConfig.to_dict`).
        sde: the SDE the run sampled with (:meth:`godiff.sde.VESDE.to_dict`).
        pretrained: whether the search started from a pretrained model.
        parent: the zoo model it started from (lineage), or None.
        start_model_sha256: the digest of ``start_model.safetensors`` (pretrained runs).
        method, seed, budget: a benchmark method's run (classical methods).
    """

    system: dict
    format: int = RUN_FORMAT
    godiff_version: str | None = None
    created: str | None = None
    command: str | None = None
    energy: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    sde: dict | None = None
    pretrained: bool = False
    parent: str | None = None
    start_model_sha256: str | None = None
    method: str | None = None
    seed: int | None = None
    budget: int | None = None

    @property
    def uses_calculator_object(self) -> bool:
        """Whether the run evaluated with a Python calculator object (not a spec in the file)."""
        return self.energy.get("calculator") == "python"

    def to_dict(self) -> dict:
        """The JSON form; fields left unset (None) are omitted."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "run.json") -> "RunManifest":
        """Read the JSON form; refuse another format, and unknown keys (a file this godiff does not read)."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a JSON object")
        if data.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{where}: run format {data.get('format')!r} is not supported (this godiff reads {RUN_FORMAT})")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise CheckpointError(f"{where}: unknown field(s) {', '.join(unknown)} (written by a newer godiff?)")
        if not isinstance(data.get("system"), dict):
            raise CheckpointError(f"{where}: no system definition")
        return cls(**data)
