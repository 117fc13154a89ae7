"""Model cards, generated from a model's metadata (never edited by hand).

A card is a Hugging Face model card: YAML front matter (``library_name: godiff``, license,
tags, the system and the results) followed by what the model was trained on, how, what it is
for, its limits and how to use it. The same text is the model folder's ``README.md`` and the
shipped ``cards/<name>-<version>.md``; ``godiff zoo card --write`` regenerates the latter and a
test checks that each matches its model (``python -m godiff.zoo.table`` rewrites them, with the
docs' table of the shipped zoo).
"""

from __future__ import annotations

import yaml

from godiff.energy import energy_unit
from godiff.manifest import ModelManifest

__all__ = ["render_card", "card_of_folder", "LICENSE"]

LICENSE = "mit"


def _composition(system: dict) -> str:
    return str(system.get("mobile"))


def _template(system: dict) -> str:
    t = system.get("template")
    if not t:
        return "none (gas-phase cluster)"
    if "file" in t:
        return f"structure file {t['file']}"
    args = ", ".join(f"{k}={v}" for k, v in sorted(t.items()) if k not in ("builder", "frozen"))
    return f"{t['builder']}({args}), frozen: {t.get('frozen', 'all')}"


def _energy(metadata: ModelManifest) -> str:
    e = metadata.training.energy or metadata.system.energy
    rest = ", ".join(f"{k}={v}" for k, v in sorted(e.items()) if k != "calculator")
    return e.get("calculator", "?") + (f" ({rest})" if rest else "")


def _unit(metadata: ModelManifest) -> str:
    return energy_unit(metadata.training.energy or metadata.system.energy)


def _front_matter(metadata: ModelManifest) -> dict:
    training, system, fp = metadata.training, metadata.system.system, metadata.system.fingerprint
    ref = system.get("reference") or {}
    elements = sorted(set(fp.get("mobile_species", [])) | set(fp.get("template_species", [])))
    results = {
        "energy_unit": _unit(metadata),
        "best_energy": round(float(training.best_energy), 6),
        "evaluations": training.evaluations,
        "iterations": training.iterations,
    }
    if "energy" in ref:
        results["reference_energy"] = ref["energy"]
        results["gap_to_reference"] = round(float(training.best_energy) - float(ref["energy"]), 6)
    return {
        "library_name": "godiff",
        "license": LICENSE,
        "tags": [
            "godiff",
            "diffusion",
            "global-optimization",
            "atomistic-simulation",
            fp.get("energy_calculator", "energy"),
            fp.get("template_kind", "system"),
            *elements,
        ],
        "godiff": {
            "name": training.name,
            "version": training.version,
            "format_version": metadata.config.format_version,
            "parent": training.parent,
            "system": {
                "name": system.get("name"),
                "mobile": _composition(system),
                "template_kind": fp.get("template_kind"),
                "energy": _energy(metadata),
                "digest": metadata.system.digest,
            },
            "results": results,
        },
    }


def render_card(metadata: ModelManifest) -> str:
    """The model card of a model folder's metadata (:class:`godiff.manifest.ModelManifest`).

    Depends only on their content, not on the order of their keys: a card rendered from a model in
    memory equals the one rendered from its saved folder."""
    front = yaml.safe_dump(_front_matter(metadata), sort_keys=False, allow_unicode=True)
    lines = ["---", front.rstrip(), "---", ""]
    lines += _trained_on(metadata) + _how(metadata) + _results(metadata) + _purpose_and_limits(metadata)
    lines += _how_to_use(metadata.training.ref)
    return "\n".join(lines)


def _trained_on(metadata: ModelManifest) -> list[str]:
    training, system = metadata.training, metadata.system.system
    box = system.get("box", {})
    return [
        f"# {training.name} {training.version}",
        "",
        f"A godiff score model (GO-Diff: a diffusion model trained on its own samples, with no training data) "
        f"for {_composition(system)} on {system.get('name')}.",
        "",
        "## Trained on",
        "",
        f"- System: `{system.get('name')}`, mobile atoms {_composition(system)}",
        f"- Template: {_template(system)}",
        f"- Box: {', '.join(f'{k}={v}' for k, v in sorted(box.items(), key=lambda kv: (kv[0] != 'kind', kv[0])))}",
        f"- Energy function: {_energy(metadata)}",
        f"- System digest: `{metadata.system.digest}`",
        "",
    ]


def _how(metadata: ModelManifest) -> list[str]:
    training, config = metadata.training, metadata.config
    t, score = training.temperature, config.score
    return [
        "## How",
        "",
        f"- Command: `{training.command}`",
        f"- {training.iterations} iterations ({training.iterations_planned or training.iterations} planned), "
        f"{training.evaluations} energy evaluations, seed {training.seed}",
        f"- Temperature: {t.get('schedule', 'exponential')} from {t.get('start')} to {t.get('end')} {_unit(metadata)}",
        f"- Started from: {training.parent or 'scratch (random weights)'}",
        f"- Architecture: e3nn ScoreModel, {score.get('scalars')}x0e + {score.get('vectors')}x1o, lmax {score.get('lmax')}, "
        f"{score.get('layers')} layers, cutoff {score.get('cutoff')} Å, {config.n_parameters} parameters",
        f"- godiff {training.godiff_version}",
        "",
    ]


def _results(metadata: ModelManifest) -> list[str]:
    ref, unit = metadata.system.system.get("reference") or {}, _unit(metadata)
    return [
        "## Results",
        "",
        f"- Lowest energy evaluated during training (as sampled, not relaxed): {float(metadata.training.best_energy):.4f} {unit}"
        + (f" (reference global minimum {ref['energy']} {unit})" if "energy" in ref else ""),
        "",
    ]


def _purpose_and_limits(metadata: ModelManifest) -> list[str]:
    return [
        "## What it is for",
        "",
        "A starting point for searches of this system and of related ones (other sizes, surfaces or "
        # the published models' cards (digest-checked, immutable) say godiff-zoo, which still works
        "elements): `godiff-zoo match` ranks it by closeness and `godiff-zoo finetune` starts from it. "
        "Its samples are candidates to evaluate, not minima: judge them with the energy function.",
        "",
        "## Limits",
        "",
        f"- It learned one energy function ({_energy(metadata)}); its force and energy heads are "
        "that function's surrogate near low-energy structures, and are unreliable elsewhere.",
        "- The score is trained at low temperature: it concentrates on the structures this search found, "
        "which need not include the global minimum of a related system.",
        "",
    ]


def _how_to_use(ref: str) -> list[str]:
    version = ref.partition("@")[2]
    return [
        "## How to use",
        "",
        "```python",
        "from godiff.zoo import load",
        f'zm = load("{ref}")      # or a folder, or "org/repo@{version}" on the Hub',
        "positions = zm.sample(16, seed=0)   # (16, n_mobile, 3) Å",
        "```",
        "",
        "```",
        f"godiff run my_system.yaml --from {ref}",
        "```",
        "",
    ]


def card_of_folder(folder) -> tuple[str, str]:
    """``("<name>-<version>", card text)`` generated from a model folder's metadata."""
    from godiff.zoo.format import read_metadata

    metadata = read_metadata(folder)
    return f"{metadata.training.name}-{metadata.training.version}", render_card(metadata)
