"""The model zoo: folder format, registry, cards, loading and the ``godiff zoo`` command line."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_first_bfgs_step_from, lj_cut_at

from godiff.errors import (
    CheckpointError,
    DigestMismatchError,
    FormatVersionError,
    ModelNotFoundError,
    VersionExistsError,
)
from godiff.search import Search, SearchConfig
from godiff.zoo import load
from godiff.zoo.card import card_of_folder
from godiff.zoo.format import FILES, MANIFEST, SAMPLER_FILE, verify_folder, write_manifest
from godiff.zoo.registry import Registry, shipped_root
from godiff.zoo.similarity import fingerprint
from godiff.zoo.transfer import TRANSFER

TINY = dict(iterations=2, samples=4, train_steps=3, steps=5, relax_steps=2, oversample=1, batch_size=4, force_batch=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "run"
    Search("lj13", out=out, command="godiff run lj13 (tiny)", **TINY).run()
    return out


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("GODIFF_ZOO", str(tmp_path / "registry"))
    return Registry(shipped=tmp_path / "no-shipped")


def _cli(*args):
    """``godiff zoo ARGS`` in this process."""
    from godiff.cli.main import cli

    return CliRunner().invoke(cli, ["zoo", *(str(a) for a in args)])


def test_registered_model_samples_like_the_run(run_dir, registry):
    entry = registry.add_run(run_dir, name="lj13-tiny", version="1.0.0")
    assert sorted(p.name for p in entry.path.iterdir()) == sorted([*FILES, SAMPLER_FILE, MANIFEST])
    training = json.loads((entry.path / "training.json").read_text())
    assert training["command"] == "godiff run lj13 (tiny)"
    assert training["evaluations"] == 8 and training["lineage"]["parent"] is None
    search = Search.resume(run_dir, read_only=True)
    expected = search.sampler.sample(3, generator=torch.Generator().manual_seed(5)).double().numpy()
    zoo_model = load("lj13-tiny@latest", registry=registry)
    assert zoo_model.ref == "lj13-tiny@1.0.0"
    assert np.array_equal(zoo_model.sample(3, seed=5), expected)


def test_same_version_is_immutable(run_dir, registry, tmp_path):
    entry = registry.add_run(run_dir, name="lj13-tiny", version="1.0.0")
    assert registry.add_run(run_dir, name="lj13-tiny", version="1.0.0") == entry  # same content: no-op
    other = tmp_path / "other"
    shutil.copytree(entry.path, other)
    training = json.loads((other / "training.json").read_text())
    training["best_energy"] = -1.0
    (other / "training.json").write_text(json.dumps(training))
    write_manifest(other)
    with pytest.raises(VersionExistsError):
        registry.add(other)
    assert registry.add(other, force=True).path == entry.path
    assert json.loads((entry.path / "training.json").read_text())["best_energy"] == -1.0
    assert [p.name for p in entry.path.parent.iterdir()] == ["1.0.0"]  # no temporary folder left


def test_tampered_truncated_and_newer_folders_are_refused(run_dir, tmp_path):
    from godiff.zoo.model import from_run

    folder = from_run(run_dir, name="lj13-tiny", version="1.0.0").save_pretrained(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(DigestMismatchError):
        load(folder)
    write_manifest(folder)  # a consistent manifest over a truncated file: safetensors must refuse it
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load(folder)
    weights.write_bytes(data)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    write_manifest(folder)
    with pytest.raises(FormatVersionError, match="upgrade godiff"):
        load(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(FormatVersionError):
        verify_folder(folder)


def test_failed_registration_leaves_nothing(run_dir, registry, tmp_path):
    from godiff.zoo.model import from_run

    folder = from_run(run_dir, name="lj13-tiny", version="2.0.0").save_pretrained(tmp_path / "m")
    (folder / "README.md").write_text("edited by hand")
    with pytest.raises(DigestMismatchError):
        registry.add(folder)
    assert registry.entries() == []
    assert not registry.local.exists() or not any(registry.local.rglob("*"))


def test_unknown_names_and_versions_list_what_exists(run_dir, registry):
    registry.add_run(run_dir, name="lj13-tiny", version="1.2.0")
    with pytest.raises(ModelNotFoundError, match=r"available: 1\.2\.0"):
        registry.resolve("lj13-tiny@1.3.0")
    with pytest.raises(ModelNotFoundError, match="known: lj13-tiny"):
        registry.resolve("pt-islands@1.0.0")


def test_cli_register_list_show_and_errors(run_dir, registry):
    result = _cli("register", run_dir, "--name", "lj13-tiny", "--version", "1.0.0")
    assert result.exit_code == 0, result.output
    listing = _cli("list")
    assert "lj13-tiny@1.0.0" in listing.output and "lj13" in listing.output
    shown = _cli("show", "lj13-tiny@1.0.0")
    digest = json.loads((registry.local / "lj13-tiny" / "1.0.0" / MANIFEST).read_text())["files"]["model.safetensors"][
        "sha256"
    ]
    assert digest in shown.output and "godiff run lj13 (tiny)" in shown.output
    for args, code in [
        (("show", "lj13-tiny@9.9.9"), 3),
        (("show", "lj13-tiny@1.0"), 2),
        (("register", run_dir, "--name", "Bad Name", "--version", "1.0.0"), 2),
        (("register", run_dir.parent / "missing", "--name", "x", "--version", "1.0.0"), 3),
        (("pull", "lj13-tiny@1.0.0"), 2),
    ]:
        result = _cli(*args)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("godiff zoo: error: ")


def test_run_from_a_zoo_model_records_its_parent(run_dir, registry, tmp_path):
    from godiff.cli.main import cli

    registry.add_run(run_dir, name="lj13-tiny", version="1.0.0")
    out = tmp_path / "child"
    args = [
        "run",
        "lj13",
        "--from",
        "lj13-tiny@1.0.0",
        "--out",
        str(out),
        "--iterations",
        "1",
        "--samples",
        "4",
        "--train-steps",
        "2",
        "--sampling-steps",
        "5",
        "-q",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.stderr)
    assert json.loads((out / "run.json").read_text())["parent"] == "lj13-tiny@1.0.0"
    assert (out / "start_model.safetensors").exists()
    child = registry.add_run(out, name="lj13-child", version="1.0.0")
    assert json.loads((child.path / "training.json").read_text())["lineage"]["parent"] == "lj13-tiny@1.0.0"


def test_the_docs_table_of_the_zoo_is_generated_from_every_shipped_model():
    from godiff.zoo.table import TABLE_BEGIN, TABLE_END, TABLE_PAGE, with_table, zoo_table

    if not shipped_root().is_dir():
        pytest.skip("no zoo/ folder beside the package (installed without the repository)")
    entries = Registry().shipped_entries()
    page = (shipped_root().parent / TABLE_PAGE).read_text()
    table = zoo_table([e.path for e in entries])
    assert with_table(page, table) == page, "the zoo table is stale: run 'python -m godiff.zoo.table'"
    assert page.count(TABLE_BEGIN) == page.count(TABLE_END) == 1
    assert all(f"| `{e.ref}` |" in table for e in entries) and len(table.splitlines()) == 2 + len(entries)


def test_shipped_models_load_and_their_cards_match():
    entries = Registry().shipped_entries()
    if not shipped_root().is_dir():
        pytest.skip("no zoo/ folder beside the package (installed without the repository)")
    assert entries, "the repository ships at least one model in zoo/"
    cards = shipped_root().parent / "cards"
    newest = {e.name: e.ref for e in entries}  # entries go by name, then version
    for entry in entries:
        name, text = card_of_folder(entry.path)
        assert (entry.path / "README.md").read_text() == text, f"{entry.ref}: README.md is not the generated card"
        assert (cards / f"{name}.md").read_text() == text, f"cards/{name}.md differs: run 'python -m godiff.zoo.table'"
        unit = "ε" if entry.metadata().system.energy["calculator"] == "lj" else "eV"
        assert f"energy_unit: {unit}" in text and (unit == "eV") == (" eV" in text), (
            f"{entry.ref}: energies not in {unit}"
        )
        zoo_model = load(entry.path)  # digests verified, weights loaded
        if entry.ref == newest[entry.name]:  # sampling is one code path: once per model keeps the suite short
            assert zoo_model.sample(2, seed=0).shape == (2, zoo_model.system.n_mobile, 3)


def _variant(preset: str, **changes):
    from godiff.system import System, load_system

    data = load_system(preset).to_dict()
    template = changes.pop("template_symbol", None)
    if template:
        data["template"] = {**data["template"], "symbol": template}
    return System.from_dict({**data, **changes})


def test_match_ranks_identical_first_and_explains_each_term(run_dir, registry):
    from godiff.zoo.registry import match
    from godiff.zoo.similarity import distance, related

    registry.add_run(run_dir, name="lj13-tiny", version="1.0.0")
    lj13 = _variant("lj13")
    ranked = match(lj13, registry)
    assert ranked[0].entry.ref == "lj13-tiny@1.0.0" and ranked[0].distance.total == 0.0
    pt7 = fingerprint(_variant("pt7-pt111"))
    pt5, au7 = (
        fingerprint(_variant("pt7-pt111", mobile="Pt5")),
        fingerprint(_variant("pt7-pt111", mobile="Au7", template_symbol="Au")),
    )
    assert 0 < distance(pt7, pt5).total < distance(pt7, au7).total < distance(pt7, fingerprint(lj13)).total
    assert distance(pt7, au7).terms["mobile"] == 0.5 and distance(pt7, pt5).terms["size"] > 0
    assert related(pt7, au7) and not related(pt7, fingerprint(lj13))
    result = _cli("match", "pt7-pt111", "--top", "50")  # every model, the unrelated one last
    assert result.exit_code == 0 and "lj13-tiny@1.0.0" in result.output and " no" in result.output


def test_unseen_elements_start_from_their_nearest_seen_element(run_dir, registry):
    from ase.data import atomic_numbers

    from godiff.zoo.transfer import adapt

    zoo_model = load(registry.add_run(run_dir, name="lj13-tiny", version="1.0.0").path)
    kr13 = _variant("lj13", mobile="Kr13")
    model, mapping = adapt(zoo_model, kr13)
    assert mapping == {"Kr": "Ar"}
    weights = model.species.weight
    assert torch.equal(weights[atomic_numbers["Kr"]], weights[atomic_numbers["Ar"]])
    assert not torch.equal(zoo_model.model.species.weight[atomic_numbers["Kr"]], weights[atomic_numbers["Ar"]])


def test_finetune_starts_from_the_closest_model_and_registers_its_child(run_dir, registry, tmp_path):
    from godiff.errors import ConfigError
    from godiff.zoo.transfer import finetune

    registry.add_run(run_dir, name="lj13-tiny", version="1.0.0")
    result, entry = finetune(
        _variant("lj13", name="lj12", mobile="Ar12"),
        registry=registry,
        out=tmp_path / "ft",
        iterations=1,
        first_samples=3,
        polish=0,
        relax_first=0,
        train_steps=1,
        steps=4,
        relax_steps=1,
        oversample=1,
    )
    assert result.n_evaluations == 3  # the first batch of a transfer is its own size
    training = entry.metadata().training
    assert entry.ref == "lj12-from-lj13-tiny@1.0.0" and training.parent == "lj13-tiny@1.0.0"
    assert training.search["schedule"] == SearchConfig().schedule  # the scratch search's algorithm
    with pytest.raises(ConfigError, match="no registered model is related"):
        finetune("pt1-step", registry=registry, out=tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_cli_refuses_a_corrupt_or_newer_folder_in_one_line(run_dir, tmp_path):
    from godiff.cli.main import cli as godiff_cli
    from godiff.zoo.model import from_run

    folder = from_run(run_dir, name="lj13-tiny", version="1.0.0").save_pretrained(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:100])

    def one_line(result, code, text, prog="godiff zoo"):
        assert result.exit_code == code and text in result.stderr, (result.exit_code, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(f"{prog}: error: ")

    one_line(_cli("show", folder), 4, "100 bytes, the manifest says")  # caught by its size, before hashing
    write_manifest(folder)  # consistent digests over a truncated file: safetensors itself must refuse it
    one_line(
        CliRunner().invoke(godiff_cli, ["run", "lj13", "--from", str(folder), "--out", str(tmp_path / "r")]),
        4,
        "unreadable",
        prog="godiff",
    )
    assert not (tmp_path / "r").exists()
    weights.write_bytes(data)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    write_manifest(folder)
    one_line(_cli("show", folder), 4, "upgrade godiff")


def test_a_model_samples_as_published_after_the_defaults_change_and_older_folders_still_load(
    run_dir, registry, monkeypatch, caplog
):
    """sampler.json keeps the SDE and the (scaled) sampler settings with the weights: a newer godiff
    whose derivation changed (here the prior factor that sets sigma_max) samples the model as it
    was published; a folder without the file loads with today's derivation and says so."""
    import logging

    import godiff.sde
    from godiff.zoo.format import SAMPLER_FILE

    entry = registry.add_run(run_dir, name="lj13-sampler", version="1.0.0")
    meta = json.loads((entry.path / SAMPLER_FILE).read_text())
    run = json.loads((run_dir / "run.json").read_text())
    assert meta["sde"] == run["sde"] and meta["sampler"]["steps"] == TINY["steps"]
    assert SAMPLER_FILE in json.loads((entry.path / MANIFEST).read_text())["files"]  # digested like the rest
    published = load(entry.path).sample(3, seed=5)

    monkeypatch.setattr(godiff.sde, "PRIOR_FACTOR", 0.45)  # a newer godiff's default
    assert np.array_equal(load(entry.path).sample(3, seed=5), published)

    old = registry.local / "old-style"
    shutil.copytree(entry.path, old)
    (old / SAMPLER_FILE).unlink()
    write_manifest(old)
    with caplog.at_level(logging.INFO, logger="godiff"):
        derived = load(old)
    assert any("no sampler.json" in r.getMessage() for r in caplog.records)
    assert derived.sampler().sde.sigma_max != meta["sde"]["sigma_max"]  # today's derivation, as said


def test_run_from_finetune_and_the_harness_transfer_are_one_search(run_dir, registry, tmp_path):
    """godiff run --from, godiff zoo finetune and the harness's godiff-transfer start the same search
    (the transfer preset under the same overrides): the same settings, the same evaluations."""
    from godiff.bench.methods import get_method
    from godiff.cli.main import cli
    from godiff.system import load_system

    registry.add_run(run_dir, name="lj13-start", version="1.0.0")
    options = [
        "--iterations",
        "2",
        "--samples",
        "4",
        "--first-samples",
        "4",
        "--train-steps",
        "3",
        "--sampling-steps",
        "5",
        "--relax-steps",
        "2",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--set",
        "relax_first=2",
    ]
    ran = CliRunner().invoke(
        cli, ["run", "lj13", "--from", "lj13-start@1.0.0", *options, "--out", str(tmp_path / "run")]
    )
    assert ran.exit_code == 0, ran.stderr
    tuned = _cli(
        "finetune",
        "lj13",
        "--from",
        "lj13-start@1.0.0",
        *options,
        "--out",
        tmp_path / "finetune",
        "--name",
        "lj13-child",
    )
    assert tuned.exit_code == 0, tuned.stderr
    assert f"run directory {tmp_path / 'finetune'}" in tuned.stderr  # the live display of run, then its summary
    assert "best energy" in tuned.output and "registered      lj13-child@1.0.0" in tuned.output
    get_method("godiff-transfer").run(
        load_system("lj13"),
        seed=0,
        budget=8,
        out=tmp_path / "bench",
        start="lj13-start@1.0.0",
        samples=4,
        first_samples=4,
        train_steps=3,
        steps=5,
        relax_steps=2,
        batch_size=4,
        relax_first=2,
    )

    manifests = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("run", "finetune", "bench")]
    assert manifests[0]["search"]["first_samples"] == 4  # the preset under the options
    for m in manifests[1:]:
        assert m["search"] == manifests[0]["search"] and m["parent"] == "lj13-start@1.0.0"
    energies = [
        [r.energy for r in sorted(ase_db(tmp_path / d).select(), key=lambda r: r.id)]
        for d in ("run", "finetune", "bench")
    ]
    assert len(energies[0]) == 4 + 2 + 4  # the first batch, its best relaxed, the second batch
    assert energies[1] == energies[0] and energies[2] == energies[0]


def ase_db(run):
    import ase.db

    return ase.db.connect(str(run / "evaluations.db"), type="db")


def test_model_metadata_reads_by_attribute_round_trips_and_refuses_keys_it_does_not_know(tmp_path):
    """The four metadata files of a model folder are one typed description (godiff.manifest):
    read back they write the same JSON; a missing or unknown key is refused, naming it."""
    from godiff.zoo.format import read_metadata

    folder = tmp_path / "m"
    shutil.copytree(Registry().resolve("pt-islands-emt@1.0.0").path, folder)
    meta = read_metadata(folder)
    assert (meta.training.ref, meta.training.parent, meta.config.architecture) == (
        "pt-islands-emt@1.0.0",
        "pt5-pt111-emt@1.0.0",
        "ScoreModel",
    )
    assert meta.system.fingerprint["n_mobile"] == load(folder).system.n_mobile
    for name, data in meta.documents().items():
        assert data == json.loads((folder / name).read_text()), name
    training = json.loads((folder / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps({**training, "learning_curve": []}))
    with pytest.raises(CheckpointError, match="unknown field.*learning_curve"):
        read_metadata(folder)
    del training["best_energy"]
    (folder / "training.json").write_text(json.dumps(training))
    with pytest.raises(CheckpointError, match="missing field.*best_energy"):
        read_metadata(folder)


def test_a_search_from_a_zoo_model_is_the_scratch_search_but_for_the_transfer_settings():
    """One algorithm: the transfer preset changes only the settings it names."""
    from godiff.zoo.transfer import transfer_config

    scratch, transfer = SearchConfig().to_dict(), transfer_config().to_dict()
    assert {key for key in scratch if scratch[key] != transfer[key]} == set(TRANSFER)
    assert transfer["schedule"] == "adaptive" and transfer["network_share"] == scratch["network_share"]


def test_the_zoo_modules_import_each_other_in_one_direction():
    """No circle among godiff.zoo's modules (format <- similarity <- model <- registry ...), lazy imports included."""
    import ast
    from pathlib import Path

    import godiff

    root = Path(godiff.__file__).parent / "zoo"
    deps = {}
    for path in root.glob("*.py"):
        name = f"godiff.zoo.{path.stem}"
        deps[name] = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("godiff.zoo.")
        }

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in deps.get(start, ()))

    assert not [name for name in deps if reaches(name, name)]


def test_the_zoo_is_a_group_of_godiff_and_the_roots_traceback_flag_reaches_it(tmp_path, monkeypatch):
    from godiff.cli.main import cli

    monkeypatch.setenv("GODIFF_ZOO", str(tmp_path / "registry"))
    assert "zoo" in cli.list_commands(None)
    plain = CliRunner().invoke(cli, ["zoo", "show", "no-such-model"])
    assert plain.exit_code == 3 and plain.stderr.startswith("godiff zoo: error: no model 'no-such-model'")
    assert "Traceback" not in plain.stderr
    traced = CliRunner().invoke(cli, ["--traceback", "zoo", "show", "no-such-model"])
    assert traced.exit_code == 3 and "Traceback (most recent call last)" in traced.stderr


def test_a_transfer_relaxes_its_first_batchs_best_and_a_cut_relaxation_resumes_exactly(run_dir, registry, tmp_path):
    """relax_first: after the first batch of a search from a zoo model, its best structure is
    relaxed with the real calculator, each call a counted evaluation (polish=True), at most
    relax_first of them, going downhill; a run cut inside the relaxation and resumed evaluates
    exactly what the uninterrupted run did."""
    from godiff.energy import make_calculator
    from godiff.rundir import RunDir
    from godiff.zoo.transfer import start_search

    registry.add_run(run_dir, name="lj13-start", version="1.0.0")
    settings = dict(TINY, first_samples=4, samples=None, min_samples=4, max_samples=4, relax_first=6, budget=14)
    whole = tmp_path / "whole"
    start_search(
        "lj13", start="lj13-start@1.0.0", out=whole, calculator=make_calculator({"calculator": "lj"}), **settings
    ).run()
    rows = RunDir(whole).rows()
    first = [r for r in rows if r.iteration == 0 and not r.get("polish")]
    relaxed = [r for r in rows if r.iteration == 0 and r.get("polish")]
    assert len(first) == 4 and 1 <= len(relaxed) <= 6 and len(rows) == 14
    assert min(r.energy for r in relaxed) < min(r.energy for r in first)  # downhill from the batch's best
    assert_first_bfgs_step_from(min(first, key=lambda r: r.energy), relaxed[0])  # the best, not paid again

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        start_search("lj13", start="lj13-start@1.0.0", out=cut, calculator=lj_cut_at(7), **settings).run()
    assert len(RunDir(cut).rows()) == 6  # the batch of 4 and two relaxation steps
    Search.resume(cut, calculator=make_calculator({"calculator": "lj"})).run()
    again = RunDir(cut).rows()
    assert [(r.iteration, r.sample, r.energy) for r in again] == [(r.iteration, r.sample, r.energy) for r in rows]


def test_shipped_entries_are_the_zoo_folder_whatever_the_local_registry_holds(run_dir, tmp_path):
    """A local copy of a shipped version hides it from resolve and match, not from the cards, the
    docs' table and push --all, which are made of zoo/ itself."""
    import shutil

    registry = Registry(local=tmp_path / "local", shipped=tmp_path / "shipped")
    entry = registry.add_run(run_dir, name="lj13-both", version="1.0.0")
    shutil.copytree(entry.path, tmp_path / "shipped" / "lj13-both" / "1.0.0")
    assert [(e.ref, e.source) for e in registry.entries()] == [("lj13-both@1.0.0", "local")]
    assert [(e.ref, e.source) for e in registry.shipped_entries()] == [("lj13-both@1.0.0", "shipped")]
