"""Tests of godiff.search and godiff.rundir: the self-sampling loop, its run directory, kill and resume.

Everything runs on LJ13 with a tiny network, a few samples and a few steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.lj import LennardJones
from conftest import assert_first_bfgs_step_from, lj_cut_at
from safetensors.torch import load_file

import godiff
from godiff.errors import ConfigError, EvaluationFailureError, NotARunError, RunExistsError
from godiff.score import ScoreConfig, ScoreModel
from godiff.search import Search, SearchConfig
from godiff.system import load_system

TINY = ScoreConfig(
    scalars=8, vectors=4, lmax=1, layers=2, cutoff=2.5, mobile_cutoff=3.5, radial_hidden=8, head_hidden=16
)
SAMPLES = 6


def tiny_config(**overrides) -> SearchConfig:
    """Candidates not sized to the timings (``network_share=None``), so runs compare bit for bit."""
    base = SearchConfig(
        score=TINY, batch_size=8, force_batch=4, samples=SAMPLES, train_steps=3, seed=7, network_share=None
    )
    return base.with_overrides(steps=4, **overrides)


def lj() -> LennardJones:
    """The LJ13 preset's energy function as a calculator object (same numbers as its spec)."""
    return LennardJones(epsilon=1.0, sigma=1.0, rc=1000.0, smooth=False)


def db_rows(run_dir: Path) -> list:
    path = run_dir / "evaluations.db"
    if not path.exists():
        return []
    return sorted(ase.db.connect(str(path), type="db").select(), key=lambda r: r.id)


def energies_by_key(run_dir: Path) -> dict:
    return {(r.iteration, r.sample): r.get("energy") for r in db_rows(run_dir)}


# ------------------------------------------------------------------ one run, end to end


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "r"
    events = []
    result = godiff.Search("lj13", config=tiny_config(), iterations=3, out=out).run(progress=events.append)
    return out, result, events


def test_run_database_holds_one_row_per_evaluation(finished_run):
    out, result, _ = finished_run
    rows = db_rows(out)
    assert len(rows) == 3 * SAMPLES == result.n_evaluations
    keys = [(r.iteration, r.sample) for r in rows]
    assert sorted(keys) == [(k, i) for k in range(3) for i in range(SAMPLES)]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for r in rows:
        assert set(r.key_value_pairs) == {"iteration", "sample", "temperature", "ok"}
        assert r.ok is True
        # the adaptive schedule: the temperature of the model that drew them (0: the prior)
        assert r.temperature == pytest.approx(log[r.iteration]["temperature_sampled"] or 0.0)
        assert r.natoms == 13
        assert np.isfinite(r.energy) and r.forces.shape == (13, 3)


def test_run_log_best_and_result_agree(finished_run):
    out, result, events = finished_run
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 1, 2]
    assert [line["n_evaluations"] for line in lines] == [6, 12, 18]
    assert result.history == lines
    assert [e["iteration"] for e in events if e["event"] == "iteration"] == [0, 1, 2]
    assert sum(e["event"] == "evaluated" for e in events) == 18

    energies = [r.energy for r in db_rows(out)]
    best = ase.io.read(out / "best.xyz")
    assert best.get_potential_energy() == pytest.approx(min(energies), abs=1e-8)
    assert result.best_energy == pytest.approx(min(energies), abs=1e-12)
    assert lines[-1]["best_energy"] == pytest.approx(min(energies), abs=1e-12)
    # best.xyz is the evaluated structure (extxyz keeps 8 decimals), and LJ gives it that energy
    np.testing.assert_allclose(best.positions, result.best_atoms.positions, atol=1e-7)
    best.calc = lj()
    assert best.get_potential_energy() == pytest.approx(min(energies), rel=1e-6)


def test_run_directory_holds_no_pickles(finished_run):
    out, _, _ = finished_run
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["search"]["score"] == TINY.to_dict()
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["iter-0001", "iter-0002"]  # the last two are kept
    for ckpt in checkpoints:
        names = sorted(p.name for p in ckpt.iterdir())
        assert names == [
            "buffer.safetensors",
            "digests.json",
            "model.safetensors",
            "optimizer.safetensors",
            "state.json",
        ]
        json.loads((ckpt / "state.json").read_text())
        digests = json.loads((ckpt / "digests.json").read_text())
        assert sorted(digests) == [n for n in names if n != "digests.json"]
        assert digests["model.safetensors"] == hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    # the model loads from safetensors + the JSON config alone
    model = ScoreModel(ScoreConfig.from_dict(manifest["search"]["score"]))
    model.load_state_dict(load_file(str(out / "checkpoints" / "iter-0002" / "model.safetensors")), strict=True)
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        head = path.read_bytes()[:4]
        if path.suffix == ".safetensors":
            load_file(str(path))  # parses: a safetensors file, whatever its first byte
            continue
        assert not head.startswith(b"\x80"), f"{path} looks like a pickle"
        assert not head.startswith(b"PK\x03\x04"), f"{path} looks like a torch.save zip"
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)


def test_a_pretrained_model_moves_its_energy_shift_onto_the_new_energies_once(finished_run, tmp_path):
    """A model trained under one energy function is offset from another's (EMT puts a Pt7 island
    at +25 eV, CHGNet at -446 eV). Fine-tuning moves the shift onto the new energies from the first
    data, before any training step, and a resumed run keeps it rather than moving it again."""
    out, _, _ = finished_run
    model = Search.resume(out, read_only=True).model
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    model.energy_shift += 500.0  # as if trained where every energy is 500 higher
    child = tmp_path / "child"
    Search("lj13", config=tiny_config(), iterations=1, model=model, out=child).run()
    # the shift lands where the trained model's median residual on the first data is zero
    moved = load_file(str(child / "checkpoints" / "iter-0000" / "model.safetensors"))["energy_shift"]
    first_data = Search.resume(child, read_only=True)
    first_data.model.load_state_dict(trained)
    with torch.no_grad():
        predicted = first_data.sampler.predicted_energy(
            torch.as_tensor(first_data.memory.positions, dtype=torch.float32)
        )
    residual = np.median(first_data.memory.energies - predicted.double().numpy())
    assert float(moved) == pytest.approx(float(trained["energy_shift"]) + residual, rel=1e-5)
    resumed = Search.resume(child, iterations=2)
    assert resumed.energy_shift_anchored
    resumed.run()
    again = load_file(str(child / "checkpoints" / "iter-0001" / "model.safetensors"))["energy_shift"]
    assert float(again) == float(moved)


def test_running_again_into_the_same_directory_is_refused(finished_run):
    out, _, _ = finished_run
    with pytest.raises(RunExistsError, match="already holds a run"):
        godiff.Search("lj13", config=tiny_config(), iterations=3, out=out)
    assert len(db_rows(out)) == 3 * SAMPLES  # untouched


def test_resume_of_a_finished_run_does_nothing(finished_run):
    out, result, _ = finished_run
    again = Search.resume(out).run()
    assert again.n_evaluations == result.n_evaluations
    assert again.best_energy == result.best_energy
    assert len(db_rows(out)) == 3 * SAMPLES


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARunError, match="run.json"):
        Search.resume(tmp_path / "empty")
    with pytest.raises(NotARunError):
        Search.resume(tmp_path / "missing")


# ------------------------------------------------------------------ failing calculators


class FlakyLJ(LennardJones):
    """LJ that raises on every ``every``-th calculation (every one when ``every == 1``)."""

    def __init__(self, every: int, **kwargs):
        super().__init__(epsilon=1.0, sigma=1.0, rc=1000.0, smooth=False, **kwargs)
        self.every = every
        self.calls = 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls % self.every == 0:
            raise RuntimeError(f"SCF did not converge\n(call {self.calls})")
        super().calculate(*args, **kwargs)


def test_failed_evaluations_are_recorded_and_kept_out_of_the_buffer(tmp_path):
    search = godiff.Search("lj13", config=tiny_config(), iterations=2, out=tmp_path / "r", calculator=FlakyLJ(3))
    result = search.run()
    rows = db_rows(tmp_path / "r")
    assert len(rows) == 2 * SAMPLES == result.n_evaluations
    failed = [r for r in rows if not r.ok]
    assert len(failed) == 4  # calls 3, 6, 9, 12
    for r in failed:
        assert r.get("energy") is None
        assert "SCF did not converge" in r.data["error"] and "\n" not in r.data["error"]
    ok_ids = {r.id for r in rows if r.ok}
    assert set(search.buffer.ids.tolist()) <= ok_ids
    assert not set(search.buffer.ids.tolist()) & {r.id for r in failed}
    assert len(search.buffer) == len(ok_ids)  # capacity 64 holds every success
    assert len(search.memory) == len(ok_ids)
    assert [line["n_failed"] for line in result.history] == [2, 2]
    assert result.best_energy == pytest.approx(min(r.energy for r in rows if r.ok))


def test_a_calculator_that_always_fails_stops_the_run_with_one_line(tmp_path):
    search = godiff.Search("lj13", config=tiny_config(), iterations=2, out=tmp_path / "r", calculator=FlakyLJ(1))
    with pytest.raises(EvaluationFailureError) as info:
        search.run()
    message = str(info.value)
    assert "\n" not in message
    assert "6 of 6" in message and "SCF did not converge" in message
    assert info.value.exit_code == 1
    assert len(db_rows(tmp_path / "r")) == SAMPLES  # every failure was still recorded


# ------------------------------------------------------------------ kill -9 and resume

KILLED_RUN = textwrap.dedent(
    """
    import json, pathlib, sys, time
    import torch
    torch.set_num_threads(1)
    from ase.calculators.lj import LennardJones
    import godiff
    from godiff.search import SearchConfig

    out, ready, block_at, config = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    class BlockingLJ(LennardJones):
        # LJ whose calculation number `block_at` never returns: the process is then killed in
        # the middle of an evaluation, at a point fixed by the count, not by timing.
        calls = 0

        def calculate(self, *args, **kwargs):
            BlockingLJ.calls += 1
            if BlockingLJ.calls == block_at:
                ready.write_text("blocked")
                time.sleep(600)
            super().calculate(*args, **kwargs)

    calc = BlockingLJ(epsilon=1.0, sigma=1.0, rc=1000.0, smooth=False)
    config = SearchConfig.from_dict(json.loads(config))
    godiff.Search("lj13", config=config, out=out, calculator=calc).run()
    """
)


def kill_9_when_blocked(tmp_path: Path, config: SearchConfig, block_at: int, on_disk) -> Path:
    """Run ``config`` on LJ13 in a child whose evaluation number ``block_at`` never returns, check
    ``on_disk(run_dir)`` (what is on disk is then final) and kill the child with SIGKILL."""
    out, ready = tmp_path / "killed", tmp_path / "ready"
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, str(out), str(ready), str(block_at), json.dumps(config.to_dict())],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            deadline = time.monotonic() + 180
            while not ready.exists():
                assert child.poll() is None, f"the run ended before the kill:\n{(tmp_path / 'child.log').read_text()}"
                assert time.monotonic() < deadline, "the run never reached the blocking evaluation"
                time.sleep(0.05)
            assert on_disk(out)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == -signal.SIGKILL
    return out


KILL_ITERATIONS = 3


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The same run as the killed ones, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference") / "r"
    result = godiff.Search("lj13", config=tiny_config(iterations=KILL_ITERATIONS), out=out, calculator=lj()).run()
    return out, result


@pytest.mark.parametrize(
    "block_at, rows_before",
    [
        (4, {0: 3}),  # killed in iteration 0: no checkpoint yet
        (SAMPLES + 3, {0: SAMPLES, 1: 2}),  # killed in iteration 1, after checkpoint 0
    ],
    ids=["iteration-0", "iteration-1"],
)
def test_kill_9_mid_iteration_then_resume_equals_an_uninterrupted_run(tmp_path, reference_run, block_at, rows_before):
    iterations = KILL_ITERATIONS
    config = tiny_config(iterations=iterations)
    out = kill_9_when_blocked(
        tmp_path, config, block_at, lambda out: dict(Counter(r.iteration for r in db_rows(out))) == rows_before
    )

    with pytest.raises(ConfigError, match="Python calculator"):
        Search.resume(out)  # the run used a calculator object: it must be given again
    resumed = Search.resume(out, calculator=lj())
    assert resumed.next_iteration == max(rows_before)  # the iteration it was killed in
    result = resumed.run()

    rows = db_rows(out)
    assert len(rows) == iterations * SAMPLES == result.n_evaluations
    keys = Counter((r.iteration, r.sample) for r in rows)
    assert set(keys) == {(k, i) for k in range(iterations) for i in range(SAMPLES)}
    assert max(keys.values()) == 1  # no gap, no duplicate
    log_lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in log_lines] == list(range(iterations))

    # The loop draws its random numbers from (seed, iteration, phase) and the checkpoint restores
    # the weights, the optimizer and the buffer exactly, so the interrupted run is the same run.
    reference_dir, reference = reference_run
    assert energies_by_key(out) == energies_by_key(reference_dir)
    assert result.best_energy == reference.best_energy
    for a, b in zip(log_lines, reference.history):
        for key in ("loss_dsm", "loss_force", "best_energy", "iteration_min", "buffer_max", "n_evaluations"):
            assert a[key] == b[key], key
    last = f"iter-{iterations - 1:04d}"
    for name in ("model", "optimizer", "buffer"):
        got = load_file(str(out / "checkpoints" / last / f"{name}.safetensors"))
        want = load_file(str(reference_dir / "checkpoints" / last / f"{name}.safetensors"))
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), f"{name}.{key}"


def test_score_settings_set_the_architecture_over_the_systems_own_and_a_resume_keeps_it(tmp_path):
    """``--set score.layers=1`` changes one field of the network the system would get (its cutoffs
    stay scaled to the bond); run.json keeps the result, a resume builds the same network, and a
    field the network does not have, or a zoo model's architecture, is refused in one line."""
    config = SearchConfig().with_settings({"score.layers": 1, "score.scalars": 8, "budget": 8, "samples": 8})
    search = Search("lj13", config=replace(config, train_steps=2, batch_size=4, force_batch=4), out=tmp_path / "r")
    expected = replace(ScoreConfig.for_length_scale(load_system("lj13").bond_length(), 13), layers=1, scalars=8)
    assert search.model.config == expected and search.config.score == expected
    search.run()
    assert Search.resume(tmp_path / "r", read_only=True).model.config == expected
    with pytest.raises(ConfigError, match="unknown search setting 'score.width'"):
        SearchConfig().with_settings({"score.width": 8})
    with pytest.raises(ConfigError, match="score.layers: must be at least 1"):
        SearchConfig().with_settings({"score.layers": 0})
    model = ScoreModel(TINY)
    with pytest.raises(ConfigError, match="keeps the model's architecture"):
        Search("lj13", config=config, model=model, out=tmp_path / "z")


def test_a_stalled_search_relaxes_its_lowest_unrelaxed_structures_in_turn_and_a_cut_relaxation_resumes_exactly(
    tmp_path,
):
    """relax_stalled: once neither a new best nor a relaxation has come for relax_after evaluations,
    the lowest evaluated structure no relaxation started from, and not near where a finished one
    ended, is relaxed
    with the real calculator, each call a counted evaluation (polish=True, relaxation=True), at
    most relax_stalled of them, going downhill: first the best, then the lowest structure away
    from those places (here nothing counts as an improvement). A relaxation cut short by its calls
    is no minimum: its lowest point stays a candidate, and with 5 calls on LJ13 a later stall
    carries one on from there. A run cut inside a relaxation and resumed evaluates what the whole
    run did."""
    from godiff.acquisition import Descriptor
    from godiff.candidates import RELAX_FMAX
    from godiff.energy import make_calculator
    from godiff.minima import distance_for
    from godiff.rundir import RunDir

    settings = dict(
        samples=None, min_samples=4, max_samples=4, polish=0, relax_stalled=5, relax_after=8, improvement=1e6
    )
    config = replace(tiny_config(budget=40, iterations=20), **settings)
    whole = tmp_path / "whole"
    Search("lj13", config=config, out=whole, calculator=make_calculator({"calculator": "lj"})).run()
    rows = RunDir(whole).rows()
    relaxations = [
        [r for r in rows if r.get("relaxation") and r.iteration == k] for k in sorted({r.iteration for r in rows})
    ]
    relaxations = [group for group in relaxations if group]
    assert len(rows) == 40 and len(relaxations) >= 2
    describe = Descriptor.for_system(load_system("lj13"))

    def finished(row):  # LJ13 has no template: every atom is mobile
        return np.linalg.norm(row.forces, axis=1).max() <= RELAX_FMAX

    carried_on = 0
    for i, group in enumerate(relaxations):
        done = [r for r in rows if r.id < group[0].id]
        assert 2 <= len(group) <= 5 and min(r.energy for r in group) < group[0].energy  # downhill
        began = sum(1 for r in rows if r.iteration < group[0].iteration)  # evaluations as its iteration began
        since = sum(1 for r in rows if r.iteration < relaxations[i - 1][0].iteration) if i else 1  # the first improved
        assert began - since >= 8  # relax_after since the last relaxation
        assert all(r.relaxed_from == group[0].relaxed_from for r in group)  # each step names its start
        ends = [
            next((r for r in reversed(g) if finished(r)), None) or min(g, key=lambda r: r.energy)
            for g in relaxations[:i]
        ]
        started = {g[0].relaxed_from for g in relaxations[:i]}
        unrelaxed = [r for r in done if not r.get("relaxation")]
        done_ends = [end for end in ends if finished(end)] + [r for r in unrelaxed if finished(r)]
        unfinished = [end for end in ends if not finished(end)]
        fresh = sorted(unrelaxed + unfinished, key=lambda r: r.energy)
        fresh = [r for r in fresh if r.id not in started]
        if done_ends:
            d = describe(np.stack([r.positions for r in fresh]))[:, None] - describe(
                np.stack([r.positions for r in done_ends])
            )
            far = np.sqrt((d**2).mean(-1)).min(1) >= distance_for(13)
            fresh = [r for r, f in zip(fresh, far) if f]
        assert group[0].relaxed_from == fresh[0].id
        assert_first_bfgs_step_from(fresh[0], group[0])  # the lowest unmoved structure, not paid again
        carried_on += fresh[0].get("relaxation", False)
    assert carried_on >= 1  # a relaxation cut at 5 calls was carried on from its lowest point
    assert_first_bfgs_step_from(
        min((r for r in rows if r.id < relaxations[0][0].id), key=lambda r: r.energy), relaxations[0][0]
    )

    cut = tmp_path / "cut"
    at = relaxations[1][0].id + 2  # the third call of the second relaxation
    with pytest.raises(KeyboardInterrupt):
        Search("lj13", config=config, out=cut, calculator=lj_cut_at(at)).run()
    Search.resume(cut, calculator=make_calculator({"calculator": "lj"})).run()
    again = RunDir(cut).rows()
    assert [(r.iteration, r.sample, r.energy) for r in again] == [(r.iteration, r.sample, r.energy) for r in rows]


def test_the_polishs_creep_does_not_hold_a_stalled_relaxation_off(tmp_path):
    """relax_after counts from the last new best that a drawn structure or a relaxation brought
    (or the last stalled relaxation), not from the polish's steps: the polish lowers the best a
    little at a time, and as improvements those steps kept a stall from ever coming. Here a
    relaxation comes within 8 evaluations of a polish step that lowered the best."""
    from godiff.energy import make_calculator
    from godiff.rundir import RunDir

    settings = dict(samples=None, min_samples=4, max_samples=4, polish=3, relax_stalled=5, relax_after=8)
    config = replace(tiny_config(budget=60, iterations=30, seed=0), improvement=0.0, **settings)
    Search("lj13", config=config, out=tmp_path / "r", calculator=make_calculator({"calculator": "lj"})).run()
    rows = RunDir(tmp_path / "r").rows()
    best, found, crept = math.inf, [], []  # evaluation numbers that lowered the best, by who
    for n, row in enumerate(rows, start=1):
        if row.energy < best:
            (crept if row.get("polish") and not row.get("relaxation") else found).append(n)
            best = row.energy
    starts = [n for n, row in enumerate(rows, start=1) if row.get("relaxation") and not rows[n - 2].get("relaxation")]
    assert len(starts) >= 2
    held_off_before = 0
    for i, start in enumerate(starts):
        began = sum(1 for row in rows if row.iteration < rows[start - 1].iteration)  # as its iteration began
        previous = sum(1 for row in rows if row.iteration < rows[starts[i - 1] - 1].iteration) if i else 0
        assert began - max([n for n in found if n <= began] + [previous]) >= 8
        held_off_before += any(began - 8 < n <= began for n in crept)
    assert held_off_before >= 1


def test_a_scratch_search_relaxes_the_best_of_its_prior_batch_when_asked(tmp_path):
    """relax_first on a search from scratch: the best of the first batch (placed from the prior)
    is relaxed with the real calculator, every call counted, at most relax_first of them."""
    from godiff.candidates import RELAX_MAXSTEP
    from godiff.energy import make_calculator
    from godiff.rundir import RunDir

    config = replace(tiny_config(budget=12, iterations=3), samples=None, min_samples=4, max_samples=4, relax_first=5)
    Search("lj13", config=config, out=tmp_path / "r", calculator=make_calculator({"calculator": "lj"})).run()
    rows = RunDir(tmp_path / "r").rows()
    first = [r for r in rows if r.iteration == 0 and not r.get("polish")]
    relaxed = [r for r in rows if r.iteration == 0 and r.get("polish")]
    assert len(first) == 4 and 2 <= len(relaxed) <= 5
    start = min(first, key=lambda r: r.energy)
    assert_first_bfgs_step_from(start, relaxed[0])
    assert min(r.energy for r in relaxed) < min(r.energy for r in first)
    # the step is scaled to the bond: 0.2 Å for Pt's is 0.074 σ, where an unscaled 0.2 σ climbs the r^-12 wall
    step = np.linalg.norm(np.asarray(relaxed[0].positions) - np.asarray(start.positions), axis=1).max()
    assert step <= RELAX_MAXSTEP * load_system("lj13").length_scale() + 1e-9


def test_building_a_search_writes_nothing_until_it_runs(tmp_path):
    """The constructor checks (the system, the settings, the energy function, that --out is free)
    and writes nothing; run() creates the directory."""
    out = tmp_path / "r"
    search = Search("lj13", config=tiny_config(iterations=1), out=out)
    assert not out.exists()
    search.run()
    assert (out / "run.json").is_file() and len(db_rows(out)) == SAMPLES
    with pytest.raises(RunExistsError):
        Search("lj13", config=tiny_config(iterations=1), out=out)


def test_the_device_option_runs_the_same_search_on_the_cpu_and_refuses_a_missing_gpu(tmp_path):
    """--device moves the network only; every random number is drawn on the CPU, so the CPU
    path through the device code is the run it always was."""
    import ase.db

    def run(out, **device):
        result = Search("lj13", config=tiny_config(iterations=2), out=tmp_path / out, **device).run()
        rows = ase.db.connect(str(result.run_dir / "evaluations.db"), type="db").select()
        return [(r.iteration, r.sample, r.energy) for r in rows], [h["loss_dsm"] for h in result.history]

    auto = "auto" if not torch.cuda.is_available() else "cpu"
    assert run("default") == run("device", device=auto)
    with pytest.raises(ConfigError, match="no such GPU"):
        Search("lj13", config=tiny_config(), out=tmp_path / "gpu", device="cuda:7")
    assert not (tmp_path / "gpu").exists()


# -- the adaptive search: batches by ESS, budget, patience ------------------------------------------
def adaptive_config(**overrides) -> SearchConfig:
    """The adaptive defaults on the tiny network: rounds of 3 up to 9, ESS target 2.5."""
    base = SearchConfig(
        score=TINY,
        batch_size=8,
        force_batch=4,
        train_steps=3,
        seed=7,
        samples=None,
        min_samples=3,
        max_samples=9,
        target_ess=2.5,
        iterations=50,
    )
    return base.with_overrides(steps=4, oversample=2.0, **overrides)


def _rounds(run_dir: Path, k: int) -> list[int]:
    sizes, r = [], 0
    while (path := run_dir / "samples" / (f"iter-{k:04d}" + (f"-r{r:02d}" if r else "") + ".npy")).exists():
        sizes.append(len(np.load(path)))
        r += 1
    return sizes


def _round_groups(run_dir: Path, rows, k: int) -> list:
    """Iteration ``k``'s evaluated rows, one list per round in the order the rounds came."""
    mine = sorted((r for r in rows if r.iteration == k), key=lambda r: r.sample)
    sizes = _rounds(run_dir, k)
    return [mine[start : start + size] for size, start in zip(sizes, np.cumsum([0] + sizes[:-1]))]


def test_an_adaptive_run_sizes_each_batch_by_its_ess_and_stops_at_its_budget(tmp_path):
    from godiff.schedule import effective_sample_size

    out = tmp_path / "r"
    result = Search("lj13", config=adaptive_config(budget=20), out=out, calculator=lj()).run()
    rows = db_rows(out)
    assert len(rows) == result.n_evaluations == 20
    assert result.stop_reason == "budget" and json.loads((out / "stopped.json").read_text())["reason"] == "budget"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert _rounds(out, 0) == [3]  # the first batch: one round from the prior
    for record in log[1:]:
        k, t = record["iteration"], record["temperature_sampled"]
        sizes = _rounds(out, k)
        mine = sorted((r for r in rows if r.iteration == k), key=lambda r: r.sample)
        assert sum(sizes) == len(mine) == record["samples"]
        starts = np.cumsum([0] + sizes[:-1])
        sampled = [n for n, start in zip(sizes, starts) if n and not mine[start].get("polish")]
        assert sum(sampled) == record["samples"] - record["polished"]
        sizes, energies = sampled, [r.energy for r in mine if not r.get("polish")]  # the ESS is of the sampled ones
        for end in np.cumsum(sizes)[:-1]:  # every sampled round but the last left the batch short of its target
            assert end < 9 and effective_sample_size(energies[:end], t) < 2.5
        full = len(energies) >= 9 or effective_sample_size(energies, t) >= 2.5
        budget_hit = record["n_evaluations"] == 20
        assert full or budget_hit or sizes[-1] < 3, (k, sizes)
    # the temperature read the energies: the first from the first batch's spread, then by the rule
    from godiff.schedule import AdaptiveSchedule, energy_spread

    first = sorted((r for r in rows if r.iteration == 0), key=lambda r: r.sample)
    assert log[0]["temperature"] == pytest.approx(max(0.02, energy_spread([r.energy for r in first])))
    schedule = AdaptiveSchedule()
    for before, record in zip(log, log[1:]):
        energies = [r.energy for r in rows if r.iteration == record["iteration"] and not r.get("polish")]
        assert record["temperature"] == pytest.approx(schedule.next(before["temperature"], energies))


def test_after_each_sampled_round_the_polish_moves_the_best_structure_along_its_forces(tmp_path):
    from godiff.polish import Polish

    out = tmp_path / "r"
    Search("lj13", config=adaptive_config(budget=40), out=out, calculator=lj()).run()
    rows = sorted(db_rows(out), key=lambda r: (r.iteration, r.sample))
    assert [r.id for r in rows] == sorted(r.id for r in rows)  # evaluated in the order of the rounds
    log = {record["iteration"]: record for record in map(json.loads, (out / "log.jsonl").read_text().splitlines())}
    assert log[0]["polished"] == 0 and sum(record["polished"] for record in log.values()) >= 6
    step, polished_id, failures, checked, steps = 0.1 * load_system("lj13").bond_length(), None, 0, 0, {}
    i = 0
    while i < len(rows):  # walk the rows as the rounds came: a polish round follows a sampled one
        if not rows[i].get("polish"):
            i += 1
            continue
        k, group = rows[i].iteration, []
        while i < len(rows) and rows[i].get("polish") and rows[i].iteration == k and len(group) < 3:
            group.append(rows[i])
            i += 1
        best = min((r for r in rows if r.id < group[0].id), key=lambda r: r.energy)
        f = best.forces
        expected = (
            best.positions
            + (step * np.array([0.5, 1.0, 2.0])[: len(group), None, None]) * f / np.linalg.norm(f, axis=1).max()
        )
        expected = load_system("lj13").geometry().fold(torch.as_tensor(expected)).numpy()  # kept in the box
        assert np.allclose(np.stack([r.positions for r in group]), expected, atol=1e-9)
        assert best.id != polished_id or failures < 2  # never a third polish of a structure that gained nothing twice
        failures = failures if best.id == polished_id else 0
        improved = min(r.energy for r in group) < best.energy
        step = Polish().next_step(step, best=best.energy, energies=[r.energy for r in group])
        polished_id, failures, checked = best.id, 0 if improved else failures + 1, checked + 1
        steps[k] = step
    assert checked >= 2
    assert {k: log[k]["polish_step"] for k in steps} == pytest.approx(steps)
    from godiff.report import summarize

    assert "adaptive 3 to 9 (ESS 2.5, polish 3 after each round)" in summarize(out)
    for record in log.values():  # the batch's ESS and temperature read only the sampled structures
        mine = [r for r in rows if r.iteration == record["iteration"]]
        assert record["polished"] == sum(bool(r.get("polish")) for r in mine)
        assert record["iteration_min"] == min(r.energy for r in mine if not r.get("polish"))


class ForcelessLJ(LennardJones):
    """LJ energies with every force zero: each structure looks like a minimum."""

    def __init__(self):
        super().__init__(epsilon=1.0, sigma=1.0, rc=1000.0, smooth=False)

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = np.zeros_like(self.results["forces"])


def test_a_best_structure_that_feels_no_force_is_not_polished_and_the_batch_goes_on(tmp_path):
    from godiff.schedule import effective_sample_size

    out = tmp_path / "r"
    Search("lj13", config=adaptive_config(budget=40), out=out, calculator=ForcelessLJ()).run()
    rows = db_rows(out)
    assert not any(r.get("polish") for r in rows)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for record in log[1:]:
        sizes = _rounds(out, record["iteration"])
        assert 0 not in sizes, sizes  # an empty round on disk ends the batch when the next round loads it
        energies = [r.energy for r in rows if r.iteration == record["iteration"]]
        ended = len(energies) >= 9 or effective_sample_size(energies, record["temperature_sampled"]) >= 2.5
        assert ended or record["n_evaluations"] == 40, (record["iteration"], sizes)


def _improved_at(energies, tolerance: float) -> int:
    """Evaluations spent when the best of ``energies`` (in evaluation order) last fell by more than
    ``tolerance`` below the energy of the improvement before it."""
    at, level = 0, math.inf
    for n, e in enumerate(energies, start=1):
        if e < level - tolerance:
            at, level = n, e
    return at


def test_patience_stops_the_run_and_a_resume_with_more_patience_goes_on(tmp_path):
    out = tmp_path / "r"
    result = Search("lj13", config=adaptive_config(patience=6, budget=200), out=out, calculator=lj()).run()
    assert result.stop_reason == "patience"
    rows = sorted(db_rows(out), key=lambda r: r.id)
    energies = [r.energy for r in rows]
    best_at = 1 + int(np.argmin(energies))
    improved_at = _improved_at(energies, 0.02)
    assert len(rows) - improved_at >= 6
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 or log[-2]["n_evaluations"] - improved_at < 6  # it stopped at the first iteration past it
    assert log[-1]["stalled"] == len(rows) - improved_at
    stopped = json.loads((out / "stopped.json").read_text())
    assert (stopped["best_at"], stopped["improved_at"]) == (best_at, improved_at)

    again = Search.resume(out, calculator=lj())
    assert again.stalled() == len(rows) - improved_at  # recounted from the database
    assert again.spent() == "patience" and again.run().n_evaluations == len(rows)  # nothing more to do
    more = Search.resume(out, calculator=lj(), patience=len(rows) - improved_at + 4)
    assert more.spent() is None
    assert more.run().n_evaluations > len(rows)


def test_a_search_stalled_at_its_end_temperature_heats_again_to_its_last_batchs_spread(tmp_path):
    from godiff.schedule import energy_spread

    out = tmp_path / "r"
    config = adaptive_config(
        reheat=3, cooling_fast=0.1, cooling_slow=0.1, temperature_end=0.05, temperature_factor=2.0, budget=150
    )
    Search("lj13", config=config, out=out, calculator=lj()).run()
    rows = sorted(db_rows(out), key=lambda r: r.id)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    reheated = []
    for record in log[1:]:
        k, before = record["iteration"], record["temperature_sampled"]
        sampled = [r.energy for r in rows if r.iteration == k and not r.get("polish")]
        done = sum(1 for r in rows if r.iteration <= k)
        assert record["stalled"] == done - _improved_at([r.energy for r in rows][:done], 0.05)
        if before <= 0.05 and record["stalled"] >= 3:
            assert record["temperature"] == pytest.approx(max(0.05, 2.0 * energy_spread(sampled)))
            reheated.append(record["temperature"])
        else:
            assert record["temperature"] == pytest.approx(max(0.05, 0.1 * before))
    assert max(reheated, default=0.0) > 0.05  # heated, not held at the end

    again = tmp_path / "again"  # stopped just before the first reheat, resumed: the resumed run decides it alike
    first = next(r["iteration"] for r in log[1:] if r["temperature_sampled"] <= 0.05 and r["stalled"] >= 3)
    Search("lj13", config=config, out=again, calculator=lj()).run(stop=lambda s: s.next_iteration >= first)
    Search.resume(again, calculator=lj()).run()
    assert [r.energy for r in sorted(db_rows(again), key=lambda r: r.id)] == [r.energy for r in rows]
    resumed = [json.loads(line) for line in (again / "log.jsonl").read_text().splitlines()]
    assert [(r["temperature"], r["stalled"]) for r in resumed] == [(r["temperature"], r["stalled"]) for r in log]


def test_a_model_that_proposes_nothing_new_is_heated_once_before_the_run_calls_it_converged(tmp_path):
    from godiff.schedule import energy_spread

    # every candidate after the first batch lies within the duplicate distance of it: nothing new
    config = adaptive_config(duplicate_distance=1e6, temperature_factor=2.0, temperature_start=0.05, budget=100)
    out = tmp_path / "r"
    result = Search("lj13", config=config, out=out, calculator=lj()).run()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert result.stop_reason == "converged"
    assert [r["samples"] for r in log[-2:]] == [0, 0] and all(r["samples"] > 0 for r in log[:-2])
    rows = db_rows(out)
    last = log[-3]["iteration"]
    sampled = [r.energy for r in rows if r.iteration == last and not r.get("polish")]
    heated = max(config.temperature_end, 2.0 * energy_spread(sampled))
    assert log[-2]["temperature"] == pytest.approx(heated) and heated > log[-3]["temperature"]

    once = tmp_path / "once"  # stopped after the first empty iteration, resumed: one more, as uninterrupted
    Search("lj13", config=config, out=once, calculator=lj()).run(stop=lambda s: s.empty_iterations == 1)
    again = Search.resume(once, calculator=lj()).run()
    assert again.stop_reason == "converged" and again.n_evaluations == result.n_evaluations
    assert len((once / "log.jsonl").read_text().splitlines()) == len(log)

    relaxing = tmp_path / "relaxing"  # with relax_stalled, a draw of nothing new relaxes instead
    short = replace(config, relax_stalled=3, relax_after=1000, budget=len(rows) + 3)  # the first batch, one relaxation
    Search("lj13", config=short, out=relaxing, calculator=lj()).run()
    record = json.loads((relaxing / "log.jsonl").read_text().splitlines()[log[-3]["iteration"] + 1])
    assert record["samples"] == record["polished"] == 3
    relaxed = [r for r in db_rows(relaxing) if r.iteration == record["iteration"]]
    assert_first_bfgs_step_from(
        min((r for r in rows if r.iteration <= log[-3]["iteration"]), key=lambda r: r.energy), relaxed[0]
    )

    cold = tmp_path / "cold"  # a schedule that never heats stops at the first empty iteration
    Search("lj13", config=replace(config, reheat=0), out=cold, calculator=lj()).run()
    assert json.loads((cold / "log.jsonl").read_text().splitlines()[-1])["samples"] == 0
    assert len((cold / "log.jsonl").read_text().splitlines()) == len(log) - 1


def test_kill_9_in_an_adaptive_round_then_resume_equals_the_uninterrupted_run_and_its_budget(tmp_path):
    config = adaptive_config(budget=16)
    reference_dir = tmp_path / "reference"
    reference = Search("lj13", config=config, out=reference_dir, calculator=lj()).run()
    block_at = 8  # inside iteration 1 or 2, in a later round: past the first batch of 3
    out = kill_9_when_blocked(tmp_path, config, block_at, lambda out: len(db_rows(out)) == block_at - 1)
    result = Search.resume(out, calculator=lj()).run()
    assert result.n_evaluations == reference.n_evaluations == 16 and result.stop_reason == "budget"
    assert energies_by_key(out) == energies_by_key(reference_dir)
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(
        p.name for p in (reference_dir / "samples").iterdir()
    )


def test_the_paper_preset_is_the_fixed_schedule_and_reproduces_bit_for_bit(tmp_path):
    from dataclasses import replace

    paper = SearchConfig.preset("paper")
    assert (paper.iterations, paper.samples, paper.schedule, paper.temperature_start, paper.budget) == (
        20,
        128,
        "exponential",
        5.0,
        None,
    )
    assert paper.sampler.oversample == 4.0 != SearchConfig().sampler.oversample  # a sampler setting of the preset
    config = replace(
        paper,
        score=TINY,
        batch_size=8,
        force_batch=4,
        samples=SAMPLES,
        train_steps=3,
        seed=7,
        iterations=2,
        sampler=tiny_config().sampler,
    )
    runs = [Search("lj13", config=config, out=tmp_path / name, calculator=lj()).run() for name in ("a", "b")]
    assert energies_by_key(tmp_path / "a") == energies_by_key(tmp_path / "b")
    for name in ("model", "optimizer", "buffer"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "iter-0001" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "iter-0001" / f"{name}.safetensors"))
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert [h["temperature"] for h in runs[0].history] == [5.0, 0.02]
    assert all(h["train_steps"] == 3 for h in runs[0].history)
    with pytest.raises(ConfigError, match="unknown preset 'papers'"):
        SearchConfig.preset("papers")


def test_a_run_json_written_before_the_adaptive_search_keeps_its_fixed_schedule():
    old = {
        k: v
        for k, v in SearchConfig.preset("paper").to_dict().items()
        if k not in ("schedule", "train_stop", "acquisition", "budget", "patience", "reheat", "improvement")
    }
    config = SearchConfig.from_dict(old)
    assert (config.schedule, config.train_stop, config.acquisition, config.budget) == (
        "exponential",
        "fixed",
        "energy",
        None,
    )
    assert (config.reheat, config.improvement_threshold()) == (0, 0.0)  # no reheat; patience counts any new best


def test_refine_draws_variations_of_the_lowest_evaluated_structures(tmp_path):
    config = adaptive_config(
        iterations=1, refine=1.0, refine_from=2, refine_noise=0.05, relax_steps=0, guidance=0.0, duplicate_distance=0.0
    ).with_overrides(oversample=1.0)  # every candidate is returned
    search = Search("lj13", config=config, out=tmp_path / "r", calculator=lj())
    search.run()
    lowest = search.buffer.positions[:2]
    drawn = search.draw(1, 0, 4)
    sigma = 0.05 * search.system.bond_length()
    # each drawn structure is one of the two lowest, moved by about sigma per atom (the nearest of
    # the rest lies many sigma away)
    gaps = np.linalg.norm(drawn[:, None] - search.buffer.positions[None], axis=-1).max(axis=-1)  # (4, buffer)
    assert len(drawn) == 4 and (gaps[:, :2].min(axis=1) < 6 * sigma).all() and (gaps[:, 2:].min() > 10 * sigma)
    assert {int(i) for i in gaps.argmin(axis=1)} == {0, 1}  # both starts, in turn
    assert np.allclose(lowest, search.buffer.positions[:2])


def test_a_run_json_naming_a_retired_setting_resumes_with_one_log_line(tmp_path, caplog):
    import logging

    out = tmp_path / "r"
    Search("lj13", config=adaptive_config(budget=8), out=out, calculator=lj()).run()
    manifest = json.loads((out / "run.json").read_text())
    manifest["search"].update(polish_chain=3, cooling_ess=0.0, refine_hop=0.0)  # as written before 0.2.0
    (out / "run.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="godiff"):
        search = Search.resume(out, calculator=lj(), budget=12)
    retired = [r for r in caplog.records if "removed in godiff 0.2.0" in r.getMessage()]
    assert len(retired) == 1 and retired[0].levelno == logging.WARNING and "polish_chain=3" in retired[0].getMessage()
    assert search.run().n_evaluations == 12
