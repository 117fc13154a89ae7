"""Tests of godiff.score (the equivariant score network) and godiff.testing.

The network is tiny and untrained: every property tested here (symmetry, periodicity, the cached
template path, serialisation) must hold for any weights.
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch
from ase.build import fcc111
from safetensors.torch import load_file, save_file

import godiff.testing
from godiff.score import ScoreConfig, ScoreModel, SystemGraph
from godiff.testing import assert_equivariant, system_graph_builder

CONFIG = ScoreConfig(
    scalars=8, vectors=4, lmax=2, layers=2, cutoff=4.0, mobile_cutoff=6.0, radial_hidden=8, head_hidden=16
)
SLAB_PBC = (True, True, False)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ScoreModel(CONFIG)
    m.eval()
    return m


def slab_graph(symbol="Pt", size=(3, 3), n_mobile=3):
    """A slab template of ``symbol`` with ``n_mobile`` mobile atoms of the same element."""
    slab = fcc111(symbol, (*size, 2), vacuum=6.0)
    z = int(slab[0].number)
    graph = SystemGraph.build(
        mobile_numbers=[z] * n_mobile,
        template_numbers=slab.numbers,
        template_positions=slab.positions,
        cell=slab.cell[:],
        periodic=SLAB_PBC,
        cutoff=CONFIG.cutoff,
    )
    return slab, graph


def slab_positions(slab, n_samples, n_mobile, seed=0, z_range=(1.0, 4.0)):
    """Mobile positions above the slab, in-plane anywhere in the cell (float32, Å)."""
    g = torch.Generator().manual_seed(seed)
    cell = torch.tensor(slab.cell[:], dtype=torch.float32)
    frac = torch.rand(n_samples, n_mobile, 2, generator=g)
    xy = frac @ cell[:2, :2]
    top = float(slab.positions[:, 2].max())
    z = top + z_range[0] + (z_range[1] - z_range[0]) * torch.rand(n_samples, n_mobile, 1, generator=g)
    return torch.cat([xy, z], dim=-1)


# ------------------------------------------------------------------ equivariance


def test_equivariance_periodic_slab(model):
    slab = fcc111("Pt", (3, 3, 2), vacuum=6.0)
    build = system_graph_builder(
        mobile_numbers=[78] * 3, template_numbers=slab.numbers, periodic=SLAB_PBC, cutoff=CONFIG.cutoff
    )
    x = slab_positions(slab, 2, 3)
    errors = assert_equivariant(
        model,
        build,
        x,
        torch.tensor([0.05, 2.0]),
        cell=torch.tensor(slab.cell[:], dtype=torch.float32),
        template_positions=torch.tensor(slab.positions, dtype=torch.float32),
        n_trials=2,
        generator=1,
    )
    assert set(errors) == {"rotation", "inversion", "translation", "permutation"}
    assert max(errors.values()) < 1e-4


def test_equivariance_gas_phase_cluster(model):
    species = [18, 18, 18, 36, 36]  # Ar3Kr2: permutations only within a species
    build = system_graph_builder(mobile_numbers=species, cutoff=CONFIG.cutoff)
    g = torch.Generator().manual_seed(2)
    x = 2.0 * torch.randn(3, 5, 3, generator=g)
    errors = assert_equivariant(
        model,
        build,
        x,
        torch.tensor([0.01, 0.5, 8.0]),
        cell=torch.eye(3) * 20.0,
        species=species,
        n_trials=2,
        generator=3,
    )
    assert max(errors.values()) < 1e-4


def test_assert_equivariant_catches_a_broken_model(model):
    """The helper is not vacuous: a model that adds a fixed Cartesian vector fails rotation."""

    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, sigma, graph):
            out = self.inner(x, sigma, graph)
            return {"eps": out.eps + torch.tensor([0.0, 0.0, 0.1]), "forces": out.forces, "energy": out.energy}

    build = system_graph_builder(mobile_numbers=[18] * 3, cutoff=CONFIG.cutoff)
    x = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(4))
    with pytest.raises(AssertionError, match=r"rotation: max error .* in 'eps'"):
        assert_equivariant(Broken(model), build, x, torch.tensor([1.0]), cell=torch.eye(3) * 20.0, n_trials=1)


def test_assert_equivariant_checks_that_the_energy_head_is_invariant(model):
    """The energy head ranks the sampler's candidates, so it must not change when the whole system
    is rotated, inverted, translated or its equal atoms permuted: a head that reads a Cartesian
    coordinate fails."""

    class Tilted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, sigma, graph):
            out = self.inner(x, sigma, graph)
            return {"eps": out.eps, "forces": out.forces, "energy": out.energy + x[..., 2].sum(-1)}

    build = system_graph_builder(mobile_numbers=[18] * 3, cutoff=CONFIG.cutoff)
    x = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(4))
    errors = assert_equivariant(model, build, x, torch.tensor([0.1, 1.0]), cell=torch.eye(3) * 20.0, n_trials=2)
    assert max(errors.values()) < 1e-4  # godiff's own energy head passes
    with pytest.raises(AssertionError, match=r"(rotation|translation): max error .* in 'energy'"):
        assert_equivariant(Tilted(model), build, x, torch.tensor([0.1, 1.0]), cell=torch.eye(3) * 20.0, n_trials=1)


def test_testing_module_doctest():
    result = doctest.testmod(godiff.testing, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ fast path, sizes, files


def test_cached_template_context_equals_plain_path(model):
    slab, graph = slab_graph()
    x = slab_positions(slab, 3, 3, seed=5)
    sigma = torch.tensor([0.02, 0.7, 6.0])
    with torch.no_grad():
        plain = model(x, sigma, graph, None)
        cached = model(x, sigma, graph, model.template_context(graph))
    torch.testing.assert_close(cached.eps, plain.eps, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached.forces, plain.forces, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "symbol, size, n_mobile",
    [("Pt", (3, 3), 3), ("Pt", (3, 3), 7), ("Pt", (4, 4), 3), ("Au", (3, 3), 3)],
)
def test_one_model_runs_on_any_size_and_species(model, symbol, size, n_mobile):
    slab, graph = slab_graph(symbol, size, n_mobile)
    assert graph.n_template == 2 * size[0] * size[1]
    x = slab_positions(slab, 2, n_mobile, seed=6)
    with torch.no_grad():
        out = model(x, torch.tensor([0.1, 1.0]), graph)
    assert out.eps.shape == (2, n_mobile, 3)
    assert out.forces.shape == (2, n_mobile, 3)
    assert torch.isfinite(out.eps).all() and torch.isfinite(out.forces).all()
    assert float(out.eps.abs().max()) > 0  # the mobile atoms see something


def test_state_dict_round_trips_through_safetensors_and_json_config(model, tmp_path):
    model.force_scale.fill_(2.5)  # a buffer, not a parameter: it must travel too
    try:
        # contiguous(): see test_plain_state_dict_saves_with_safetensors (as godiff.rundir does)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
        (tmp_path / "config.json").write_text(model.config.to_json())
        config = ScoreConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
        assert config == model.config
        torch.manual_seed(123)  # different initial weights from the fixture
        fresh = ScoreModel(config)
        fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
        fresh.eval()
        assert float(fresh.force_scale) == 2.5
        slab, graph = slab_graph()
        x = slab_positions(slab, 2, 3, seed=7)
        sigma = torch.tensor([0.3, 3.0])
        with torch.no_grad():
            a, b = model(x, sigma, graph), fresh(x, sigma, graph)
        assert torch.equal(a.eps, b.eps) and torch.equal(a.forces, b.forces)
    finally:
        model.force_scale.fill_(1.0)


def test_state_tensors_save_with_safetensors(model, tmp_path):
    # e3nn keeps some Wigner-3j constants as non-contiguous views, which safetensors refuses;
    # ScoreModel.state_tensors() is the one way godiff hands weights to safetensors.
    save_file(model.state_tensors(), str(tmp_path / "model.safetensors"))
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert set(loaded) == set(model.state_dict())


def test_lattice_translation_of_one_mobile_atom_changes_nothing(model):
    slab, graph = slab_graph()
    cell = torch.tensor(slab.cell[:], dtype=torch.float32)
    x = slab_positions(slab, 2, 3, seed=8)
    sigma = torch.tensor([0.1, 1.5])
    with torch.no_grad():
        ref = model(x, sigma, graph)
        for shift in (cell[0], cell[1], cell[0] + cell[1], -cell[0], 2 * cell[1] - cell[0]):
            y = x.clone()
            y[:, 1] += shift
            out = model(y, sigma, graph)
            torch.testing.assert_close(out.eps, ref.eps, rtol=0, atol=1e-5)
            torch.testing.assert_close(out.forces, ref.forces, rtol=0, atol=1e-5)


def test_score_is_continuous_across_half_a_lattice_vector(model):
    # Two mobile atoms separated by f * a along the a lattice vector (|a| = 8.3 Å). At f = 0.5 the
    # images at +a/2 and -a/2 are equally near (4.16 Å, inside mobile_cutoff = 6 Å): a periodic
    # network must be continuous through f = 0.5; the minimum-image graph switches images there.
    slab, graph = slab_graph(n_mobile=2)
    cell = torch.tensor(slab.cell[:], dtype=torch.float32)
    base = torch.tensor([1.0, 1.0, float(slab.positions[:, 2].max()) + 2.0])
    with torch.no_grad():
        outs = [
            model(torch.stack([base, base + f * cell[0]])[None], torch.tensor([0.5]), graph)
            for f in (0.5 - 1e-4, 0.5 + 1e-4)
        ]
    torch.testing.assert_close(outs[0].eps, outs[1].eps, rtol=0, atol=1e-3)
    torch.testing.assert_close(outs[0].forces, outs[1].forces, rtol=0, atol=1e-3)


def _fcc_ball(n_shells: int) -> np.ndarray:
    """Atoms of an fcc lattice with nearest neighbours at the LJ pair minimum, ``n_shells`` around one."""
    from ase.cluster import Octahedron

    x = Octahedron("Ar", 2 * n_shells + 1, cutoff=n_shells).positions
    x -= x.mean(axis=0)
    return x * 2 ** (1 / 6) / np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, 1].min()


def test_mobile_neighbours_stay_bounded_beyond_the_gathering_size():
    from godiff.geometry import mobile_mobile_edges
    from godiff.score import GATHER_ATOMS

    cell, periodic = torch.eye(3) * 20.0, (False,) * 3
    per_atom = {}
    for shells in (1, 2, 3):
        x = torch.as_tensor(_fcc_ball(shells), dtype=torch.float32)
        config = ScoreConfig.for_length_scale(1.0, len(x))
        edges = mobile_mobile_edges(x[None], cell, periodic, config.mobile_cutoff)
        per_atom[len(x)] = np.bincount(edges.receiver.numpy(), minlength=len(x))
    small, *large = sorted(per_atom)
    assert small <= GATHER_ATOMS < large[0]
    assert (per_atom[small] == small - 1).all()  # every atom sees every other
    for n in large:  # first shell (12) and second (6) at most, whatever the size
        assert per_atom[n].max() == 18 and per_atom[n].min() >= 3
    long = ScoreConfig.for_length_scale(1.0).mobile_cutoff
    x = torch.as_tensor(_fcc_ball(3), dtype=torch.float32)
    assert len(mobile_mobile_edges(x[None], cell, periodic, long)) / len(x) > 3 * 18  # the long range's growth


def test_mobile_edges_are_every_image_pair_within_the_cutoff():
    from godiff.geometry import lattice_shifts, mobile_mobile_edges

    slab = fcc111("Pt", size=(3, 3, 2), vacuum=6.0)
    cell = torch.as_tensor(slab.cell.array, dtype=torch.float32)
    periodic = (True, True, False)
    x = torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(3)) @ cell
    edges = mobile_mobile_edges(x, cell, periodic, 6.0)
    shifts = torch.as_tensor(lattice_shifts(slab.cell.array, periodic, 6.0), dtype=torch.float32) @ cell
    expected = sorted(
        (b * 4 + j, b * 4 + i, round(float(d), 4))
        for b in range(2)
        for s in shifts
        for i in range(4)
        for j in range(4)
        if 1e-6 < (d := torch.linalg.norm(x[b, j] + s - x[b, i])) < 6.0
    )
    got = sorted(
        zip(edges.sender.tolist(), edges.receiver.tolist(), [round(float(d), 4) for d in edges.vectors.norm(dim=-1)])
    )
    assert got == expected and len(got) > 8


@pytest.mark.parametrize("chunk", [1, 50, 3 * 6 * 6, 3 * 6 * 6 * 5])
def test_pair_search_in_blocks_finds_the_same_pairs_in_the_same_order(chunk):
    """Blocks of rows, of shifts or of samples (bounded memory for thousands of atoms) change
    neither which pairs are found nor their order (the network's sums stay bit-identical)."""
    from godiff.geometry import _pairs_within

    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 6, 3, generator=g) * 6
    shifts = torch.cat([torch.zeros(1, 3), torch.randn(4, 3, generator=g) * 3])
    whole = _pairs_within(x, shifts, 4.0, chunk_elements=1 << 24)
    blocks = _pairs_within(x, shifts, 4.0, chunk_elements=chunk)
    assert len(whole[0]) > 20 and all(torch.equal(a, b) for a, b in zip(whole, blocks))


def test_a_network_built_from_compiled_graphs_computes_what_e3nns_own_compilation_does(monkeypatch):
    from e3nn.util.codegen import _mixin

    from godiff import _e3nn

    slab, graph = slab_graph()
    x = slab_positions(slab, 4, 3, seed=2)
    sigma = torch.tensor([0.01, 0.3, 2.0, 20.0])

    def outputs(model):
        out = model(x, sigma, graph)
        loss = out.eps.pow(2).sum() + out.forces.pow(2).sum() + out.energy.sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return [out.eps, out.forces, out.energy, *grads]

    torch.manual_seed(3)
    cached = ScoreModel(CONFIG)
    torch.manual_seed(3)
    again = ScoreModel(CONFIG)  # every graph of it found compiled
    with monkeypatch.context() as patch:
        patch.setattr(_mixin.CodeGenMixin, "_codegen_register", _e3nn._E3NN_REGISTER)
        torch.manual_seed(3)
        compiled_by_e3nn = ScoreModel(CONFIG)
    assert len(_e3nn._COMPILED) > 0
    # each network owns its compiled modules: the cache hands out copies
    assert cached.tm[0].tp._compiled_main_left_right is not again.tm[0].tp._compiled_main_left_right
    reference = outputs(compiled_by_e3nn)
    for model in (cached, again):
        for mine, theirs in zip(outputs(model), reference, strict=True):
            assert torch.equal(mine, theirs)
