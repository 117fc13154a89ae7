"""The typed, versioned metadata of a run directory and of a model folder: every key in one file.

A run keeps ``run.json`` (:class:`RunManifest`); a model folder keeps ``config.json``,
``system.json``, ``training.json`` and ``sampler.json`` (:class:`ModelManifest`, one class per
file). Every module that reads them (resume, the zoo's registration, the cards, the report, the
CLI) reads them by attribute from these classes; their keys live here and nowhere else. Each
carries a layout version (:data:`RUN_FORMAT`, :data:`MODEL_FORMAT`); a newer one is refused,
and so is a key this godiff does not know.

A benchmark's classical methods (random search, RSS, basin hopping, AGOX) describe their runs
with the same class: ``method``, ``seed`` and ``budget`` set, the search fields empty.

Example:
    >>> m = RunManifest(system={"name": "lj13"}, command="godiff run lj13", parent="lj13-lj@1.0.0")
    >>> RunManifest.from_dict(m.to_dict()) == m, m.to_dict()["format"]
    (True, 1)
    >>> t = ModelTraining(name="lj13-lj", version="1.0.0", iterations=20, evaluations=2560, best_energy=-44.3,
    ...                   lineage={"parent": None, "pretrained_start": False})
    >>> ModelTraining.from_dict(t.to_dict()) == t, t.ref, t.parent
    (True, 'lj13-lj@1.0.0', None)
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from godiff.errors import CheckpointError, FormatVersionError

__all__ = [
    "RUN_FORMAT",
    "MODEL_FORMAT",
    "STATE_FORMAT",
    "RunManifest",
    "CheckpointState",
    "ModelConfig",
    "ModelSystem",
    "ModelTraining",
    "ModelSampling",
    "ModelManifest",
]

RUN_FORMAT = 1
MODEL_FORMAT = 1
STATE_FORMAT = 1

CONFIG_FILE = "config.json"
SYSTEM_FILE = "system.json"
TRAINING_FILE = "training.json"
SAMPLER_FILE = "sampler.json"


def _typed(cls, data, where: str):
    """An instance of the dataclass ``cls`` from its JSON form; a missing or unknown key is a
    :class:`CheckpointError` naming it (an unknown key: a file written by a newer godiff)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {', '.join(unknown)} (written by a newer godiff?)")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise CheckpointError(f"{where}: missing field(s) {', '.join(missing)}")
    return cls(**data)


def _json(obj) -> dict:
    """The JSON form of a metadata dataclass; fields left unset (None) are omitted."""
    return {k: v for k, v in asdict(obj).items() if v is not None}


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
        trust_energy: whether ``--trust-energy`` was given when the run started (a record only:
            ``godiff resume`` asks for it again, :mod:`godiff.trust`).
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
    trust_energy: bool = False
    method: str | None = None
    seed: int | None = None
    budget: int | None = None

    @property
    def uses_calculator_object(self) -> bool:
        """Whether the run evaluated with a Python calculator object (not a spec in the file)."""
        return self.energy.get("calculator") == "python"

    def to_dict(self) -> dict:
        """The JSON form; fields left unset (None) are omitted."""
        return _json(self)

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "run.json") -> "RunManifest":
        """Read the JSON form; refuse another format, and unknown keys (a file this godiff does not read)."""
        if isinstance(data, dict) and data.get("format") != RUN_FORMAT:
            raise CheckpointError(
                f"{where}: run format {data.get('format')!r} is not supported (this godiff reads {RUN_FORMAT})"
            )
        if isinstance(data, dict) and not isinstance(data.get("system"), dict):
            raise CheckpointError(f"{where}: no system definition")
        return _typed(cls, data, where)


@dataclass(frozen=True)
class CheckpointState:
    """The contents of a checkpoint's ``state.json``: what a search holds besides its weights,
    optimizer moments and buffer (those are safetensors beside it), so a resume continues exactly.

    Attributes:
        iteration: the iteration this checkpoint ends.
        n_evaluations: evaluations spent by then (the database must hold at least these).
        best_energy: the lowest evaluated energy by then.
        force_scale_set: whether the force head's output scale was set from the first data.
        energy_shift_anchored: whether a pretrained model's energy shift was moved onto this
            energy function.
        temperature: the temperature the iteration trained at.
        head_rms: the energy head's error on its batch, before training on it.
        polish_step: the polish's trust step, Å (``None``: the search's first).
        polished_id, polish_failures: the evaluation the polish moved last, and its polishes in a
            row that found nothing lower.
        relaxed_at: the evaluations made when ``relax_stalled`` last relaxed (``None``:
            never).
        optimizer: the optimizer's state beside its tensors (:func:`godiff.rundir.flatten_optimizer`).
        rng: how the run's random streams are derived (a record; they are recomputed, not stored).
        cost: the run's measured costs (:class:`godiff.cost.CostMeter`), from which the next
            iteration's candidates per evaluation are chosen; empty before it was kept.
        log: the iteration's ``log.jsonl`` record, to repair a log cut off after the checkpoint.
        format: the layout version (:data:`STATE_FORMAT`); a newer one is refused.

    A checkpoint written before a field existed reads with what that field meant then
    (:meth:`from_dict`): the scales set and the shift anchored, the temperature and head error of
    its log record, no polish state.

    Example:
        >>> s = CheckpointState(iteration=3, n_evaluations=96, best_energy=-44.3, temperature=0.1)
        >>> CheckpointState.from_dict(s.to_dict()) == s
        True
        >>> CheckpointState.from_dict({"iteration": 2, "n_evaluations": 64, "best_energy": -40.0,
        ...                            "log": {"temperature": 0.5}}).temperature   # written before the field
        0.5
    """

    iteration: int
    n_evaluations: int = 0
    best_energy: float = float("inf")
    force_scale_set: bool = True
    energy_shift_anchored: bool = True
    temperature: float | None = None
    head_rms: float | None = None
    polish_step: float | None = None
    polished_id: int | None = None
    polish_failures: int = 0
    relaxed_at: int | None = None
    optimizer: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    log: dict = field(default_factory=dict)
    format: int = STATE_FORMAT

    def to_dict(self) -> dict:
        """The JSON form (every field, ``None`` included)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data, *, where: str = "state.json") -> "CheckpointState":
        """Read the JSON form; refuse a newer format and unknown keys; fill what older ones lack."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a JSON object")
        if not isinstance(data.get("format", STATE_FORMAT), int) or data.get("format", STATE_FORMAT) > STATE_FORMAT:
            raise FormatVersionError(
                f"{where}: checkpoint format {data.get('format')!r} is not one this godiff reads ({STATE_FORMAT}); upgrade godiff"
            )
        log = data.get("log") or {}
        older = {"temperature": log.get("temperature"), "head_rms": log.get("energy_head_rms")}
        return _typed(cls, {**older, **data}, where)


def _check_model_format(data, where: str) -> None:
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int):
        raise CheckpointError(f"{where}: no integer 'format_version'")
    if version > MODEL_FORMAT:
        raise FormatVersionError(
            f"{where}: model format {version} is newer than this godiff reads ({MODEL_FORMAT}); upgrade godiff"
        )


class _Document:
    """A model folder's JSON file: read with :meth:`from_dict`, written with :meth:`to_dict`."""

    FILE: str = ""

    def to_dict(self) -> dict:
        return _json(self)

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        return _typed(cls, data, where or cls.FILE)


@dataclass(frozen=True)
class ModelConfig(_Document):
    """``config.json``: the network. ``score`` is a :class:`godiff.score.ScoreConfig` as a dict."""

    FILE = CONFIG_FILE
    score: dict
    format_version: int = MODEL_FORMAT
    architecture: str = "ScoreModel"
    godiff_version: str | None = None
    n_parameters: int | None = None

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None) -> "ModelConfig":
        _check_model_format(data, where or cls.FILE)
        return _typed(cls, data, where or cls.FILE)


@dataclass(frozen=True)
class ModelSystem(_Document):
    """``system.json``: the system definition (a template file named relative to the folder),
    its fingerprint (:func:`godiff.zoo.similarity.fingerprint`) and the SHA-256 of the definition."""

    FILE = SYSTEM_FILE
    system: dict
    fingerprint: dict = field(default_factory=dict)
    digest: str | None = None

    @property
    def energy(self) -> dict:
        return self.system.get("energy") or {}


@dataclass(frozen=True)
class ModelTraining(_Document):
    """``training.json``: who the model is and how it was trained.

    Attributes:
        name, version: the model's registry name and semantic version.
        iterations, iterations_planned, evaluations, best_energy: what the run did (the best
            energy as sampled, in the system's unit).
        temperature: ``{"schedule", "start", "end", "last"}``.
        command, seed, energy, search: the run's command line, seed, energy spec and search
            settings (:meth:`godiff.search.SearchConfig.to_dict`).
        lineage: ``{"parent": "name@version" or None, "pretrained_start": bool}``.
        godiff_version, run_godiff_version, run_created: the godiff that wrote the folder, the
            one that ran the search and when it started.
    """

    FILE = TRAINING_FILE
    name: str
    version: str
    iterations: int
    evaluations: int
    best_energy: float
    iterations_planned: int | None = None
    temperature: dict = field(default_factory=dict)
    command: str | None = None
    seed: int | None = None
    energy: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    godiff_version: str | None = None
    run_godiff_version: str | None = None
    run_created: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def parent(self) -> str | None:
        return self.lineage.get("parent")


@dataclass(frozen=True)
class ModelSampling(_Document):
    """``sampler.json``: the SDE (:meth:`godiff.sde.VESDE.to_dict`) and the sampler settings
    (:meth:`godiff.sampler.SamplerConfig.to_dict`, lengths scaled to the model's system) it
    samples with, so that a newer godiff whose defaults changed samples it as published."""

    FILE = SAMPLER_FILE
    sde: dict
    sampler: dict
    format_version: int = MODEL_FORMAT

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None) -> "ModelSampling":
        _check_model_format(data, where or cls.FILE)
        return _typed(cls, data, where or cls.FILE)


@dataclass(frozen=True)
class ModelManifest:
    """A model folder's metadata, one attribute per file (``sampling`` is None in folders written
    before models carried ``sampler.json``)."""

    config: ModelConfig
    system: ModelSystem
    training: ModelTraining
    sampling: ModelSampling | None = None

    def documents(self) -> dict[str, dict]:
        """``{file name: JSON form}`` of each file it describes."""
        parts = [self.config, self.system, self.training] + ([] if self.sampling is None else [self.sampling])
        return {part.FILE: part.to_dict() for part in parts}
