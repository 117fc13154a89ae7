"""A zoo model: a trained score network with the system it learned and how it was trained.

Example:
    >>> from godiff.zoo import load
    >>> zm = load("lj13-emt@latest")                           # doctest: +SKIP
    >>> zm.sample(4, seed=0).shape                             # doctest: +SKIP
    (4, 13, 3)
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from godiff import __version__
from godiff.digests import confined
from godiff.errors import CheckpointError, NotARunError
from godiff.manifest import (
    SAMPLER_FILE,
    TRAINING_FILE,
    ModelConfig,
    ModelManifest,
    ModelSampling,
    ModelSystem,
    ModelTraining,
)
from godiff.zoo.format import (
    MANIFEST,
    TEMPLATE_FILE,
    check_name,
    link_root,
    parse_version,
    read_json,
    read_metadata,
    verify_folder,
    write_folder,
)

__all__ = ["ZooModel", "from_run", "read_folder", "check_name", "portable_system"]

log = logging.getLogger(__name__)

ARCHITECTURE = "ScoreModel"


@dataclass
class ZooModel:
    """A loaded zoo model.

    Attributes:
        model: the :class:`godiff.score.ScoreModel`, weights loaded, in eval mode.
        system: the :class:`godiff.system.System` it was trained on.
        metadata: its folder's metadata (:class:`godiff.manifest.ModelManifest`: config, system,
            training and sampling, read by attribute).
        path: the folder it was read from (``None`` if built in memory and not saved).
    """

    model: object
    system: object
    metadata: ModelManifest
    path: Path | None = None

    @property
    def training(self) -> ModelTraining:
        return self.metadata.training

    @property
    def name(self) -> str:
        return self.training.name

    @property
    def version(self) -> str:
        return self.training.version

    @property
    def ref(self) -> str:
        return self.training.ref

    @property
    def parent(self) -> str | None:
        return self.training.parent

    def sampler_config(self):
        """The sampler settings the model was trained with."""
        from godiff.sampler import SamplerConfig

        return SamplerConfig.from_dict(self.training.search.get("sampler", {}))

    def sampler(self, system=None, config=None):
        """A :class:`godiff.sampler.Sampler` of this model over ``system`` (default: its own).

        Over its own system with its own settings it samples exactly as published: the SDE and
        the sampler settings of its ``sampler.json``, not today's derivation of them.
        """
        from godiff.sampler import Sampler, SamplerConfig
        from godiff.sde import VESDE
        from godiff.system import load_system

        sampling = self.metadata.sampling
        if system is None and config is None and sampling is not None:
            return Sampler.for_system(
                self.model,
                self.system,
                SamplerConfig.from_dict(sampling.sampler),
                sde=VESDE.from_dict(sampling.sde),
                scaled=True,
            )
        system = self.system if system is None else load_system(system)
        return Sampler.for_system(self.model, system, config or self.sampler_config())

    def sample(self, n: int, *, seed: int = 0, system=None) -> np.ndarray:
        """``n`` structures (mobile positions in Å, shape (n, n_mobile, 3)); equal seeds give equal bits."""
        generator = torch.Generator().manual_seed(int(seed))
        return self.sampler(system).sample(n, generator=generator).double().numpy()

    def save_pretrained(self, folder) -> Path:
        """Write this model as a model folder (see :mod:`godiff.zoo.format`); ``folder`` must not exist."""
        from godiff.zoo.card import render_card

        _, template = portable_system(self.system)
        return write_folder(
            folder,
            tensors=self.model.state_tensors(),
            metadata=self.metadata,
            card=render_card(self.metadata),
            extra=None if template is None else {TEMPLATE_FILE: template},
        )

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool = False, force: bool = False) -> str:
        """Push this version to the Hub repo ``repo_id`` and tag it ``v<version>``; returns the commit URL.

        What is pushed is this model as it is in memory, written afresh (:meth:`save_pretrained`),
        not the folder it was loaded from: a model changed since is never pushed stale.
        """
        from godiff.zoo.hub import push

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / self.name)
            return push(folder, repo_id, self.version, token=token, private=private, force=force)

    @classmethod
    def from_pretrained(cls, ref, **hub_options) -> "ZooModel":
        """Same as :func:`godiff.zoo.load`: a folder, ``name@version`` or ``org/name@version``, with
        ``revision``, ``token``, ``cache_dir`` and ``local_files_only`` as ``huggingface_hub`` has them."""
        from godiff.zoo import load

        return load(ref, **hub_options)


def read_folder(folder, *, verify: bool = True) -> ZooModel:
    """Load a model folder; every digest is checked first (``verify=False`` skips that)."""
    from safetensors.torch import load_file

    from godiff.score import ScoreConfig, ScoreModel

    folder = Path(folder)
    if verify:
        verify_folder(folder)
    metadata = read_metadata(folder)
    if metadata.config.architecture != ARCHITECTURE:
        raise CheckpointError(f"{folder}: architecture {metadata.config.architecture!r} is not {ARCHITECTURE!r}")
    _check_sampling(folder, metadata.sampling)
    try:
        tensors = load_file(str(folder / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types on a corrupt file
        raise CheckpointError(f"{folder / 'model.safetensors'}: unreadable ({type(exc).__name__}: {exc})") from exc
    model = ScoreModel(ScoreConfig.from_dict(metadata.config.score))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{folder}: weights do not fit the architecture in config.json ({first})") from exc
    model.eval()
    return ZooModel(model, _system_of_folder(folder, metadata.system.system), metadata, folder)


def _system_of_folder(folder: Path, system_data: dict):
    """The system of a model folder, its template file (if any) read from the folder itself."""
    from godiff.system import System

    template_file = (system_data.get("template") or {}).get("file")
    if template_file is not None and Path(template_file).is_absolute():
        # a folder written before models carried their template: it names a file of the machine
        # that trained it, and loads only where that file still is
        log.info("%s: written before model folders carried their template; reading %s", folder, template_file)
        return System.from_dict(system_data)
    if template_file is not None:  # the folder's own template.xyz, listed and digested in its manifest
        own = confined(folder, template_file, what="system.json template", root=link_root(folder))
        return System.from_dict({**system_data, "template": {**system_data["template"], "file": str(own)}})
    return System.from_dict(system_data)


def _check_sampling(folder: Path, sampling: ModelSampling | None) -> None:
    """Check that ``sampler.json`` rebuilds its SDE and settings; say in one log line when a
    folder written before models carried it has none."""
    from godiff.sampler import SamplerConfig
    from godiff.sde import VESDE

    path = folder / SAMPLER_FILE
    if sampling is None:
        log.info(
            "%s: no %s (written before models carried their sampling settings); "
            "its SDE and sampler settings are derived by this godiff",
            folder,
            SAMPLER_FILE,
        )
        return
    try:
        VESDE.from_dict(sampling.sde)
        SamplerConfig.from_dict(sampling.sampler)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a sampler description ({exc})") from exc


def portable_system(system) -> tuple[dict, bytes | None]:
    """The system definition as a model folder stores it, and the template file to store with it.

    A template read from a file is named by an absolute path of this machine; in a model folder
    it becomes the folder's own :data:`~godiff.zoo.format.TEMPLATE_FILE` (its atoms in extxyz),
    so the model loads after a move or a pull on another machine. Other systems are unchanged.
    """
    import io

    import ase.io

    data = system.to_dict()
    template = data.get("template")
    if not template or "file" not in template:
        return data, None
    text = io.StringIO()
    ase.io.write(text, system.template_atoms(), format="extxyz")
    data["template"] = {"file": TEMPLATE_FILE, "index": 0, "format": "extxyz", "frozen": template["frozen"]}
    return data, text.getvalue().encode()


def from_run(run, *, name: str, version: str, iteration: int | None = None) -> ZooModel:
    """The model of a run directory's last (or given) checkpoint, with its metadata, in memory."""
    from godiff.rundir import RunDir
    from godiff.score import ScoreConfig, ScoreModel
    from godiff.system import System
    from godiff.zoo.similarity import fingerprint

    check_name(name)
    parse_version(version)
    run_dir = RunDir.open(run, lock=False)  # reading a model out of a run, live or not
    done = run_dir.checkpoints()
    if not done:
        raise NotARunError(f"{run_dir.path}: no finished iteration to take a model from")
    k = done[-1] if iteration is None else iteration
    if k not in done:
        raise CheckpointError(f"{run_dir.path}: no checkpoint of iteration {k} (have {done})")
    tensors, state = run_dir.load_checkpoint(k)
    manifest = run_dir.manifest
    search = manifest.search
    model = ScoreModel(ScoreConfig.from_dict(search["score"]))
    model.load_state_dict(tensors["model"], strict=True)
    model.eval()
    system = System.from_dict(manifest.system)
    first = next(iter(run_dir.read_log()), {})
    training = ModelTraining(
        name=name,
        version=version,
        godiff_version=__version__,
        run_created=manifest.created,
        command=manifest.command,
        run_godiff_version=manifest.godiff_version,
        iterations=k + 1,
        iterations_planned=search["iterations"],
        evaluations=int(state["n_evaluations"]),
        best_energy=float(state["best_energy"]),
        temperature={
            "schedule": search.get("schedule", "exponential"),
            "start": first.get("temperature", search["temperature_start"]),
            "end": search["temperature_end"],
            "last": state["log"]["temperature"],
        },
        seed=search.get("seed"),
        energy=manifest.energy,
        search=search,
        lineage={"parent": manifest.parent, "pretrained_start": bool(manifest.pretrained)},
    )
    config = ModelConfig(
        score=search["score"],
        architecture=ARCHITECTURE,
        godiff_version=__version__,
        n_parameters=sum(p.numel() for p in model.parameters()),
    )
    system_data, _ = portable_system(system)
    digest = hashlib.sha256(json.dumps(system_data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    metadata = ModelManifest(
        config, ModelSystem(system_data, fingerprint(system), digest), training, _sampling_of_run(manifest, system)
    )
    return ZooModel(model, system, metadata)


def _sampling_of_run(manifest, system) -> ModelSampling:
    """``sampler.json`` of a run's model: the SDE the run recorded and its sampler settings as
    the run applied them to its system (lengths scaled)."""
    from godiff.sampler import SamplerConfig
    from godiff.sde import VESDE

    sde = VESDE.from_dict(manifest.sde) if manifest.sde else VESDE.for_box(system.geometry())
    sampler = SamplerConfig.from_dict(manifest.search["sampler"]).for_length_scale(system.length_scale())
    return ModelSampling(sde=sde.to_dict(), sampler=sampler.to_dict())


def describe_files(folder) -> list[tuple[str, int, str]]:
    """(name, size, sha256) of each file in a model folder's manifest."""
    files = read_json(Path(folder) / MANIFEST).get("files", {})
    return [(n, e.get("size", 0), e.get("sha256", "")) for n, e in sorted(files.items())]


def folder_version(folder) -> str:
    """The version a model folder's ``training.json`` declares (checked to be semantic)."""
    path = Path(folder) / TRAINING_FILE
    version = ModelTraining.from_dict(read_json(path), where=str(path)).version
    parse_version(version)
    return version
