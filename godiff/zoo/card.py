"""Model cards, generated from a model's metadata (never edited by hand).

A card is a Hugging Face model card: YAML front matter (``library_name: godiff``, license,
tags, the system and the results) followed by what the model was trained on, how, what it is
for, its limits and how to use it. The same text is the model folder's ``README.md`` and the
shipped ``cards/<name>-<version>.md``; ``godiff-zoo card --write`` regenerates the latter and a
test checks that each matches its model.
"""

from __future__ import annotations

import yaml

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


def _energy(training: dict, system: dict) -> str:
    e = training.get("energy") or system.get("energy") or {}
    rest = ", ".join(f"{k}={v}" for k, v in sorted(e.items()) if k != "calculator")
    return e.get("calculator", "?") + (f" ({rest})" if rest else "")


def _front_matter(config: dict, meta: dict, training: dict) -> dict:
    system = meta["system"]
    fp = meta.get("fingerprint", {})
    ref = system.get("reference") or {}
    elements = sorted(set(fp.get("mobile_species", [])) | set(fp.get("template_species", [])))
    results = {
        "best_energy_eV": round(float(training["best_energy"]), 6),
        "evaluations": training["evaluations"],
        "iterations": training["iterations"],
    }
    if "energy" in ref:
        results["reference_energy_eV"] = ref["energy"]
        results["gap_to_reference_eV"] = round(float(training["best_energy"]) - float(ref["energy"]), 6)
    return {
        "library_name": "godiff",
        "license": LICENSE,
        "tags": ["godiff", "diffusion", "global-optimization", "atomistic-simulation",
                 fp.get("energy_calculator", "energy"), fp.get("template_kind", "system"), *elements],
        "godiff": {
            "name": training["name"],
            "version": training["version"],
            "format_version": config["format_version"],
            "parent": (training.get("lineage") or {}).get("parent"),
            "system": {
                "name": system.get("name"),
                "mobile": _composition(system),
                "template_kind": fp.get("template_kind"),
                "energy": _energy(training, system),
                "digest": meta.get("digest"),
            },
            "results": results,
        },
    }


def render_card(config: dict, meta: dict, training: dict) -> str:
    """The model card of a model folder's ``config.json``, ``system.json`` and ``training.json``.

    Depends only on their content, not on the order of their keys: a card rendered from a model in
    memory equals the one rendered from its saved folder."""
    system = meta["system"]
    ref = system.get("reference") or {}
    front = yaml.safe_dump(_front_matter(config, meta, training), sort_keys=False, allow_unicode=True)
    name, version = training["name"], training["version"]
    t = training.get("temperature", {})
    parent = (training.get("lineage") or {}).get("parent")
    score = config.get("score", {})
    box = system.get("box", {})
    lines = [
        "---",
        front.rstrip(),
        "---",
        "",
        f"# {name} {version}",
        "",
        f"A godiff score model (GO-Diff: a diffusion model trained on its own samples, with no training data) "
        f"for {_composition(system)} on {system.get('name')}.",
        "",
        "## Trained on",
        "",
        f"- System: `{system.get('name')}`, mobile atoms {_composition(system)}",
        f"- Template: {_template(system)}",
        f"- Box: {', '.join(f'{k}={v}' for k, v in sorted(box.items(), key=lambda kv: (kv[0] != 'kind', kv[0])))}",
        f"- Energy function: {_energy(training, system)}",
        f"- System digest: `{meta.get('digest')}`",
        "",
        "## How",
        "",
        f"- Command: `{training.get('command')}`",
        f"- {training['iterations']} iterations ({training.get('iterations_planned', training['iterations'])} planned), "
        f"{training['evaluations']} energy evaluations, seed {training.get('seed')}",
        f"- Temperature: {t.get('schedule', 'exponential')} from {t.get('start')} to {t.get('end')} eV",
        f"- Started from: {parent or 'scratch (random weights)'}",
        f"- Architecture: e3nn ScoreModel, {score.get('scalars')}x0e + {score.get('vectors')}x1o, lmax {score.get('lmax')}, "
        f"{score.get('layers')} layers, cutoff {score.get('cutoff')} Å, {config.get('n_parameters')} parameters",
        f"- godiff {training.get('godiff_version')}",
        "",
        "## Results",
        "",
        f"- Lowest energy evaluated during training (as sampled, not relaxed): {float(training['best_energy']):.4f} eV"
        + (f" (reference global minimum {ref['energy']} eV)" if "energy" in ref else ""),
        "",
        "## What it is for",
        "",
        "A starting point for searches of this system and of related ones (other sizes, surfaces or "
        "elements): `godiff-zoo match` ranks it by closeness and `godiff-zoo finetune` starts from it. "
        "Its samples are candidates to evaluate, not minima: judge them with the energy function.",
        "",
        "## Limits",
        "",
        f"- It learned one energy function ({_energy(training, system)}); its force and energy heads are "
        "that function's surrogate near low-energy structures, and are unreliable elsewhere.",
        "- The score is trained at low temperature: it concentrates on the structures this search found, "
        "which need not include the global minimum of a related system.",
        "",
        "## How to use",
        "",
        "```python",
        "from godiff.zoo import load",
        f'zm = load("{name}@{version}")      # or a folder, or "org/repo@{version}" on the Hub',
        "positions = zm.sample(16, seed=0)   # (16, n_mobile, 3) Å",
        "```",
        "",
        "```",
        f"godiff run my_system.yaml --from {name}@{version}",
        "```",
        "",
    ]
    return "\n".join(lines)


def card_of_folder(folder) -> tuple[str, str]:
    """``("<name>-<version>", card text)`` generated from a model folder's metadata."""
    from pathlib import Path

    from godiff.zoo.format import read_json

    folder = Path(folder)
    config, meta, training = (read_json(folder / n) for n in ("config.json", "system.json", "training.json"))
    return f"{training['name']}-{training['version']}", render_card(config, meta, training)
