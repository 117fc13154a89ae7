"""Tests of godiff.sampler: reverse diffusion with guidance and relaxation, and the de-clash."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cuboid_system, slab_system

from godiff.errors import ConfigError
from godiff.sampler import Sampler, SamplerConfig, declash
from godiff.score import ScoreConfig, ScoreModel, SystemGraph
from godiff.sde import VESDE
from godiff.system import System

CONFIG = ScoreConfig(
    scalars=8, vectors=4, lmax=1, layers=2, cutoff=4.0, mobile_cutoff=6.0, radial_hidden=8, head_hidden=16
)


class Setup:
    """A system with everything the sampler needs, built as the search builds it."""

    def __init__(self, system: System):
        self.system = system
        self.domain = system.geometry()
        self.sde = VESDE.for_box(self.domain)
        self.graph = SystemGraph.from_system(system, CONFIG.cutoff)
        sym = system.mobile_symbols
        self.min_distance = torch.tensor([[system.pair_min_distance(a, b) for b in sym] for a in sym])
        template = system.template_atoms()
        self.template = None if template is None else template
        self.template_min_distance = (
            None
            if template is None
            else torch.tensor(
                [min(system.pair_min_distance(m, t) for t in set(template.get_chemical_symbols())) for m in sym]
            )
        )

    def sampler(self, model, **config):
        return Sampler(
            model,
            self.sde,
            self.domain,
            self.graph,
            SamplerConfig(**config),
            min_distance=self.min_distance,
            template_min_distance=self.template_min_distance,
        )

    def in_plane_frac(self, x):
        return x[..., :2] @ torch.linalg.inv(torch.as_tensor(np.array(self.domain.cell[:2, :2]), dtype=x.dtype))

    def mobile_distances(self, x):
        """(b, n, n) true minimum-image mobile-mobile distances (brute force over images), inf on the diagonal."""
        cell = torch.as_tensor(np.array(self.domain.cell), dtype=x.dtype)
        if self.domain.kind == "slab":
            shifts = [i * cell[0] + j * cell[1] for i in (-1, 0, 1) for j in (-1, 0, 1)]
        else:
            shifts = [torch.zeros(3, dtype=x.dtype)]
        d = torch.stack([(x[:, :, None] - x[:, None, :] + s).norm(dim=-1) for s in shifts]).min(0).values
        n = x.shape[1]
        d[:, torch.arange(n), torch.arange(n)] = float("inf")
        return d

    def template_distances(self, x):
        """(b, n) distance of each mobile atom to the nearest template atom or periodic image."""
        cell = torch.as_tensor(np.array(self.domain.cell), dtype=x.dtype)
        tpos = torch.as_tensor(self.template.positions, dtype=x.dtype)
        shifts = torch.stack([i * cell[0] + j * cell[1] for i in (-2, -1, 0, 1, 2) for j in (-2, -1, 0, 1, 2)])
        images = (tpos[None] + shifts[:, None]).reshape(-1, 3)
        return torch.cdist(x.reshape(-1, 3), images).min(-1).values.reshape(x.shape[:2])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ScoreModel(CONFIG)


@pytest.fixture(scope="module")
def slab():
    return Setup(slab_system())


@pytest.fixture(scope="module")
def cuboid():
    return Setup(cuboid_system())


SAMPLING = dict(steps=5, corrector_steps=1, guidance=0.5, relax_steps=3, relax_rate=0.05, batch_size=4)


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("kind", ["slab", "cuboid"])
def test_samples_have_the_right_shape_and_lie_in_the_box(kind, model, slab, cuboid):
    setup = {"slab": slab, "cuboid": cuboid}[kind]
    x = setup.sampler(model, **SAMPLING).sample(10, generator=torch.Generator().manual_seed(0))
    n_mobile = setup.system.n_mobile
    assert x.shape == (10, n_mobile, 3)  # 10 samples in chunks of 4
    assert bool(torch.isfinite(x).all())
    assert bool(setup.domain.contains(x, tol=1e-5).all())
    lo = torch.as_tensor(np.array(setup.domain.lower), dtype=x.dtype)
    hi = torch.as_tensor(np.array(setup.domain.upper), dtype=x.dtype)
    if kind == "slab":
        assert bool(((x[..., 2] >= lo[2] - 1e-5) & (x[..., 2] <= hi[2] + 1e-5)).all())
        frac = setup.in_plane_frac(x)
        assert float(frac.min()) >= -1e-5 and float(frac.max()) <= 1 + 1e-5  # wrapped into the cell
    else:
        assert bool(((x >= lo - 1e-5) & (x <= hi + 1e-5)).all())
    # the final de-clash ran
    assert float(setup.mobile_distances(x).min()) >= float(setup.min_distance.min()) - 1e-3


def test_same_generator_seed_gives_identical_samples(model, slab):
    sampler = slab.sampler(model, **SAMPLING)
    a = sampler.sample(6, generator=torch.Generator().manual_seed(11))
    b = sampler.sample(6, generator=torch.Generator().manual_seed(11))
    c = sampler.sample(6, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sampling_restores_training_mode(model, cuboid):
    model.train()
    cuboid.sampler(model, steps=2, batch_size=4).sample(2, generator=torch.Generator().manual_seed(0))
    assert model.training


def test_pruned_candidates_are_the_lowest_of_each_batch_relaxed_as_without_pruning(model, slab):
    """relax_keep: each batch keeps its share, the lowest by the energy head after the reverse
    diffusion, and relaxes exactly as it would have unpruned (the relaxation draws no noise)."""
    settings = dict(steps=4, guidance=0.5, relax_rate=0.05, batch_size=4)

    def draw(relax_steps, relaxed=None):
        sampler = Sampler(model, slab.sde, slab.domain, slab.graph, SamplerConfig(relax_steps=relax_steps, **settings))
        return sampler.candidates(8, generator=torch.Generator().manual_seed(5), relaxed=relaxed)

    diffused, energy = draw(0)  # no de-clash: finish only folds, so these are the relaxation's inputs
    relaxed_all, _ = draw(3)
    relaxed_some, predicted = draw(3, relaxed=4)
    lowest = torch.cat([torch.sort(energy[i : i + 4], stable=True).indices[:2] + i for i in (0, 4)])
    assert relaxed_some.shape == (4, slab.system.n_mobile, 3) and predicted.shape == (4,)
    torch.testing.assert_close(relaxed_some, relaxed_all[lowest], rtol=0, atol=1e-5)
    assert not torch.allclose(relaxed_all[lowest], diffused[lowest])  # the survivors were relaxed
    assert torch.equal(draw(3, relaxed=8)[0], relaxed_all)  # keeping all changes nothing


def test_candidates_pruned_inside_the_diffusion_are_the_lowest_by_that_steps_energy_and_finish_as_unpruned(model, slab):
    """prune_at/prune_keep: at the diffusion step prune_step() each batch keeps the prune_keep
    share lowest by that forward pass's energy head, and only those take the later passes. Pruned
    at the last step (no noise after it), the survivors finish exactly as in an unpruned draw; off
    (prune_at 1 or prune_keep 1), the draw is the default's."""
    settings = dict(steps=4, guidance=0.5, relax_steps=3, relax_rate=0.05, batch_size=4)

    def draw(relaxed=None, **prune):
        sampler = Sampler(model, slab.sde, slab.domain, slab.graph, SamplerConfig(**settings, **prune))
        energies, sizes = [], []

        def record(module, inputs, out):
            energies.append(out.energy.clone())
            sizes.append(len(inputs[0]))

        hook = model.register_forward_hook(record)
        try:
            x, _ = sampler.candidates(8, generator=torch.Generator().manual_seed(5), relaxed=relaxed)
        finally:
            hook.remove()
        return x, energies, sizes

    unpruned, energies, _ = draw()  # every candidate diffused and relaxed
    pruned, _, sizes = draw(relaxed=4, prune_at=0.75, prune_keep=0.5)
    assert SamplerConfig(steps=4, prune_at=0.75).prune_step() == 3
    assert sizes == [4, 4, 4, 4, 2, 2, 2] * 2 + [4]  # the last pass ranks what came back
    passes = 4 + 3  # a batch's diffusion and relaxation passes
    survivors = torch.cat([torch.sort(energies[c * passes + 3], stable=True).indices[:2] + 4 * c for c in (0, 1)])
    torch.testing.assert_close(pruned, unpruned[survivors], rtol=0, atol=1e-5)
    default, _, _ = draw(relaxed=4)
    assert torch.equal(draw(relaxed=4, prune_at=1.0, prune_keep=0.5)[0], default)
    assert torch.equal(draw(relaxed=4, prune_at=0.5, prune_keep=1.0)[0], default)


def test_relaxed_count_keeps_at_least_the_draw_and_an_old_file_relaxes_every_candidate():
    assert SamplerConfig(relax_keep=0.25).relaxed_count(4, 128) == 32
    assert SamplerConfig(relax_keep=0.25).relaxed_count(4, 8) == 4  # never fewer than the draw
    assert SamplerConfig(relax_keep=0.25, relax_steps=0).relaxed_count(4, 128) == 128  # no relaxation to prune
    assert SamplerConfig.from_dict({"steps": 40}).relax_keep == 1.0  # written before relax_keep: all relaxed
    with pytest.raises(ConfigError, match="relax-keep"):
        SamplerConfig(relax_keep=0.0)


# ------------------------------------------------------------------ de-clash


@pytest.mark.parametrize("kind", ["slab", "cuboid"])
def test_declash_leaves_no_pair_closer_than_the_minimum(kind):
    # slab box starting 1.0 Å above the template: mobile-template clashes (min 1.90 Å) are common
    setup = Setup(slab_system(z_min=1.0, z_max=4.0) if kind == "slab" else cuboid_system())
    x = setup.domain.sample_uniform((300, setup.system.n_mobile), torch.Generator().manual_seed(1))
    assert float(setup.mobile_distances(x).min()) < 0.5  # there is something to fix
    y = declash(x, setup.graph, setup.min_distance, setup.domain, template_min_distance=setup.template_min_distance)
    assert y.shape == x.shape
    assert bool(setup.domain.contains(y, tol=1e-5).all())
    assert float(setup.mobile_distances(y).min()) >= float(setup.min_distance.min()) - 1e-3
    if kind == "slab":
        assert float(setup.template_distances(x).min()) < 1.9
        assert float(setup.template_distances(y).min()) >= float(setup.template_min_distance.min()) - 1e-3


def test_declash_moves_only_clashing_atoms(slab):
    z = float(slab.domain.lower[2]) + 2.0  # 3.5 Å above the template: no template contact
    x = torch.tensor(
        [
            [[3.0, 2.0, z], [3.5, 2.0, z], [8.0, 5.0, z]],  # atoms 0 and 1 clash (0.5 < 1.90 Å)
            [[3.0, 2.0, z], [6.0, 2.0, z], [8.0, 5.0, z]],  # nothing clashes
        ]
    )
    y = declash(x, slab.graph, slab.min_distance, slab.domain, template_min_distance=slab.template_min_distance)
    d = slab.mobile_distances(y)
    assert float(d[0, 0, 1]) >= float(slab.min_distance[0, 1]) - 1e-3
    torch.testing.assert_close(y[0, 2], x[0, 2], rtol=0, atol=1e-5)  # the bystander stays
    torch.testing.assert_close(y[1], x[1], rtol=0, atol=1e-5)  # a clean sample stays
    # the pair was pushed apart symmetrically, along the line joining it
    torch.testing.assert_close(y[0, 0] + y[0, 1], x[0, 0] + x[0, 1], rtol=0, atol=1e-4)
    torch.testing.assert_close(y[0, :2, 1:], x[0, :2, 1:], rtol=0, atol=1e-5)


def test_declash_uses_the_minimum_image_across_the_cell_edge(slab):
    z = float(slab.domain.lower[2]) + 2.0
    cell = torch.as_tensor(np.array(slab.domain.cell), dtype=torch.float32)
    a = cell[0]
    # 0.4 Å apart through the periodic boundary along a, 7.9 Å apart in plain Cartesian terms
    x = torch.stack([torch.tensor([0.2, 1.0, z]), torch.tensor([0.0, 1.0, z]) + a - torch.tensor([0.2, 0.0, 0.0])])[
        None
    ]
    assert float(slab.mobile_distances(x)[0, 0, 1]) == pytest.approx(0.4, abs=1e-4)
    y = declash(x, slab.graph, slab.min_distance[:2, :2], slab.domain)
    assert float(slab.mobile_distances(y)[0, 0, 1]) >= float(slab.min_distance[0, 1]) - 1e-3
    # pushed apart through the boundary (about 0.75 Å each), not across the whole cell
    assert float(slab.domain.displacement(y, x).norm(dim=-1).max()) < 1.0


def test_for_system_scales_the_step_lengths_to_the_bond_and_keeps_pt_as_measured():
    from godiff.system import load_system

    model = ScoreModel(ScoreConfig(scalars=4, vectors=2, layers=1, cutoff=3.0, mobile_cutoff=4.0))
    given = SamplerConfig(guidance=0.05, guidance_cap=0.1, relax_rate=0.05)
    pt = Sampler.for_system(model, load_system("pt7-pt111"), given).config
    assert (pt.guidance, pt.guidance_cap, pt.relax_rate) == (0.05, 0.1, 0.05)
    lj = Sampler.for_system(model, load_system("lj13"), given).config
    scale = 1.0 / 2.72  # LJ bond 1 sigma against Pt's 2.72 A
    assert lj.guidance_cap == pytest.approx(0.1 * scale)
    assert lj.relax_rate == pytest.approx(0.05 * scale**2) and lj.guidance == pytest.approx(0.05 * scale**2)
    assert (lj.steps, lj.relax_steps, lj.oversample) == (given.steps, given.relax_steps, given.oversample)


def test_a_graph_built_for_a_shorter_cutoff_than_the_model_is_refused(model):
    """A graph built for a shorter template cutoff silently drops template neighbours the model
    would see; the sampler refuses the pairing when it is built."""
    from godiff.errors import ConfigError

    system = slab_system()
    domain = system.geometry()
    short = SystemGraph.from_system(system, model.config.cutoff - 1.0)
    with pytest.raises(ConfigError, match="shorter than the model's"):
        Sampler(model, VESDE.for_box(domain), domain, short)
    Sampler(model, VESDE.for_box(domain), domain, SystemGraph.from_system(system, model.config.cutoff))


# ------------------------------------------------------------------ variations of known structures


def _in_plane_displacement(setup, x, start):
    """Largest minimum-image displacement of an atom from ``start``, Å."""
    cell = torch.as_tensor(np.array(setup.domain.cell), dtype=x.dtype)
    d = x - start
    frac = setup.in_plane_frac(d)
    d[..., :2] = (frac - torch.round(frac)) @ cell[:2, :2]
    return d.norm(dim=-1).amax(dim=-1)


def test_variations_start_from_their_structures_at_the_given_noise(model, slab):
    sampler = slab.sampler(model, **{**SAMPLING, "corrector_steps": 0, "guidance": 0.0, "relax_steps": 0})
    start = sampler.sample(1, generator=torch.Generator().manual_seed(5))  # de-clashed, inside the box
    sigma_min = float(slab.sde.sigma_min)

    # below every noise level: no denoising step, only sigma_min's noise on the start
    x, energy = sampler.candidates(
        3, generator=torch.Generator().manual_seed(6), starts=start.repeat(2, 1, 1), start_sigma=sigma_min / 2
    )
    assert x.shape == (3, slab.system.n_mobile, 3) and energy.shape == (3,)
    moved = _in_plane_displacement(slab, x[1:], start)
    assert bool((moved > 0).all()) and float(moved.max()) < 5 * sigma_min
    assert float(_in_plane_displacement(slab, x[:1], start)[0]) > 10 * sigma_min  # the first is a fresh draw

    # from a small noise the variations stay near the start; fresh draws do not
    near, _ = sampler.candidates(
        8, generator=torch.Generator().manual_seed(7), starts=start.repeat(8, 1, 1), start_sigma=0.3
    )
    fresh, _ = sampler.candidates(8, generator=torch.Generator().manual_seed(7))
    assert float(_in_plane_displacement(slab, near, start).median()) < 0.5 * float(
        _in_plane_displacement(slab, fresh, start).median()
    )


def test_more_starts_than_candidates_or_no_noise_is_refused(model, slab):
    from godiff.errors import ConfigError

    sampler = slab.sampler(model, **SAMPLING)
    start = torch.zeros(3, slab.system.n_mobile, 3)
    with pytest.raises(ConfigError, match="3 starts for 2 candidates"):
        sampler.candidates(2, starts=start, start_sigma=0.1)
    with pytest.raises(ConfigError, match="start_sigma"):
        sampler.candidates(4, starts=start)
