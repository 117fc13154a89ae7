"""Reverse diffusion with a predictor-corrector scheme and force-field guidance.

One step from noise level sigma_k down to sigma_{k+1} (k = 0 .. steps-1, log-evenly spaced):

1. **Predictor** (reverse-diffusion discretisation of the VE-SDE, Song et al. 2021):
   ``x <- x + (sigma_k^2 - sigma_{k+1}^2) s(x, sigma_k) + sqrt(sigma_k^2 - sigma_{k+1}^2) z``
   (no noise on the last step), then folded into the box.
2. **Corrector** (optional, ``corrector_steps`` Langevin steps at sigma_{k+1} with signal-to-noise
   ratio ``snr``); each costs one more forward pass.
3. **Force-field guidance** (FFG): ``x <- x + alpha (1 - t_k)^p F_theta(x)``, each atom's
   displacement capped at ``guidance_cap`` Å. The forces come from the force head of the same
   forward pass as the score (the backbone is noise-independent), so guidance costs nothing
   extra. It grows as t -> 0, when the structure is nearly formed and the force field is
   meaningful.

After the last step, ``relax_steps`` steps of capped steepest descent in the learned force field
(FFG at t = 0, one forward pass each) settle atoms into the nearest learned minimum. A geometric
de-clash then pushes apart atoms closer than the system's minimum distance, so no evaluation is
spent on a structure that is certainly unphysical.

**Ranking.** With ``oversample`` > 1 the sampler draws ``oversample x n`` candidates and returns
the ``n`` with the lowest energy predicted by the energy head. Candidates are relaxed and ranked
in the learned model before any real evaluation, the lesson of surrogate searches such as GOFEE:
a rare good structure among many ordinary ones is evaluated rather than left to chance.

Every intermediate and final position is folded into the box.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from godiff.box import Box
from godiff.errors import ConfigError
from godiff.geometry import template_mobile_edges, wrap
from godiff.score import ScoreModel, ScoreOutput, SystemGraph
from godiff.sde import VESDE

__all__ = ["SamplerConfig", "Sampler", "declash"]


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of :class:`Sampler`; round-trips through JSON.

    Defaults are the settings measured best on Pt7/Pt(111) under EMT (docs/benchmarks/index.md):
    guidance with relaxation in the learned field (first success at evaluation 1795 against none
    in 2,560 without), candidates oversampled and ranked by the energy head (below), and 20 steps
    with only the lowest quarter of the candidates relaxed (``steps``, ``relax_keep``).

    **What a candidate costs.** One forward pass per diffusion step and per relaxation step: at 40
    steps, 30 relaxation steps and every candidate relaxed, 64 passes per candidate on average
    (variations of the lowest structures start 14 steps in), 0.31 ms each on Pt7/Pt(111) (128
    candidates per pass, one thread), so 32 candidates per evaluation cost the network 0.84 s per
    evaluation of a run (``benchmarks/pt7-defaults``, sampling and training over evaluations,
    median of seeds 0..7). Measured per pass (``godiff bench-speed``, a profile of one forward
    pass): the e3nn tensor products of the three layers' two edge families take most of it, and a
    hand-written tensor product was no faster than e3nn's generated one. Fewer passes, then: with
    20 steps and the relaxation (and the final ranking pass) only for the lowest quarter of each
    batch by the energy head after the diffusion, 25 passes per candidate; on Pt7/Pt(111), seeds
    0..7, budget 1,280 (``godiff bench pt7-pt111 --methods godiff-ffg --seeds 8 --budget 1280
    --stop-at-success --jobs 2 --threads 1 --set sampling_steps=20 --set relax_keep=0.25``,
    ``benchmarks/pt7-steps20-keep025``): as evaluated 75, 128, 110, 472, 340, 109, 186, 185
    (median 156, worst 472, 8/8) in a median of 88 s, the network 0.47 s per evaluation, against
    147, 204, 451, 546, 91, 147, 147, 90 (median 147, worst 546) in 133 s and 0.84 s at 40 steps
    with every candidate relaxed (``benchmarks/pt7-defaults``). Offline, on the candidates a
    trained Pt7 model draws for one round (16 evaluations, 512 candidates, EMT energies of the
    16 the acquisition picks, 4 rounds): 10 steps raise their median energy by 0.3 eV where 20
    steps and a quarter relaxed move it by 0.1 eV or less; 10 or 15 relaxation steps for every
    candidate cost more passes than the quarter at 30.

    Attributes:
        steps: predictor steps from sigma_max to sigma_min.
        corrector_steps: Langevin corrector steps after each predictor step.
        snr: signal-to-noise ratio of the Langevin corrector.
        guidance: FFG strength alpha in Å^2/eV (0 switches guidance off).
        guidance_power: exponent p of the (1 - t)^p guidance weight.
        guidance_cap: largest guidance displacement of an atom per step, in Å.
        relax_steps: steps of steepest descent in the learned force field after sampling.
        relax_rate: step of that descent in Å^2/eV (displacement = rate x force, capped).
        relax_keep: the share of each batch of candidates relaxed: the lowest by the energy head
            after the reverse diffusion (at least as many as the draw returns); the rest are
            dropped. 0.25; 1 relaxes every candidate (godiff before 0.3.0).

    The three lengths (``guidance``, ``guidance_cap``, ``relax_rate``) are given for Pt's bond;
    :meth:`Sampler.for_system` scales them to the system (:meth:`for_length_scale`).
        oversample: candidates drawn per returned sample; the lowest predicted energies are kept
            (with the search's ``lcb`` acquisition, the lowest bounds). 32 (the default; 16 before,
            4 before that). Measured on seeds 0..7, budget 1,280 (``godiff bench SYSTEM --methods
            godiff-ffg --seeds 8 --budget 1280 --stop-at-success --jobs 2 --threads 1 --set
            oversample=N``), evaluations with the relaxation counted:

            - Pt7/Pt(111), EMT, at 32 (``benchmarks/pt7-oversample32``): 91, 236, 72, 241, 240,
              67, 100, 81 (median 96, worst 241), against 81, 213, 113, 392, 159, 139, 185, 171
              at 16 (``benchmarks/pt7-max32``: median 165, worst 392); as evaluated median 186
              (188); network 0.67 s per evaluation (0.50).
            - Au7/Au(111) at 32 (``benchmarks/au7-oversample32``): 152, 159, 148, 956, 188, 185,
              96, 127 (median 156, worst 956: seed 3 cools to the end temperature by evaluation
              168 one eV above the minimum), against median 168, worst 355 at 16
              (``benchmarks/au7-max32``); as evaluated median 206 (168).
            - LJ19 at 32 (``benchmarks/lj19-oversample32``): 135, 162, 161, 146, 208, 226, 112,
              145 (median 154, against 205 at 16, ``benchmarks/lj19-max32``); below the next
              minimum as evaluated 8/8 at a median of 198 (426), worst 875 (603).
            - Pt7 under CHGNet at 32, seeds 0..2 (``benchmarks/pt7-chgnet-oversample32``): 101,
              66, 98 (median 98, against 130 at 16, ``benchmarks/pt7-chgnet-max32``).
            - 16 against 4 on Pt7 (that record was not kept): 104, 166, 69, 422, 192, 101, 161,
              125 (median 143, against 243 for 4 run again on this machine and 239 over 16
              seeds); run again as the default (``benchmarks/pt7-scratch``): median 185, worst 564.

            More candidates cost network time (sampling), not evaluations. The paper preset keeps
            the 4 it was measured with.
        prune_at: the share of the reverse diffusion done when each batch of candidates is first
            pruned by the energy head of that step's forward pass (successive halving: draw many,
            finish the promising); 1 (the default) prunes only at the relaxation (``relax_keep``).
            Measured on what draws hand the calculator (``godiff bench-speed RUN --samples 16
            --repeats 1 --evaluations 0 --threads 1 --draws 8 --set oversample=32 [--set
            prune_at=0.5 --set prune_keep=K]``, RUN a Pt7/Pt(111) run of ``godiff run pt7-pt111
            --budget 320 --seed 0 --threads 1``; 128 EMT evaluations each): without, median
            25.955 eV, each draw's lowest 25.481 on average, 11.6 s a draw; halved at the middle
            step, 25.961 eV, 25.365, 9.1 s; quartered there, 26.027 eV, 25.458, 7.7 s. In passes
            per fresh candidate (20 steps, 30 relaxation steps, a quarter relaxed): 27.5 without,
            22.5 halved at the middle, 20 quartered. In the search it costs evaluations: Pt7/Pt(111),
            EMT (8 candidates per evaluation, so 4 finish), seeds 0..2, budget 1,280 (``godiff
            bench pt7-pt111 --methods godiff-ffg --seeds 8 --budget 1280 --stop-at-success
            --set prune_at=0.5 --set prune_keep=0.5``, ``pt7-prune05`` in the archive): as
            evaluated 181, 245, 376 against 150, 226, 109 without; it stays off. Untried: a costly
            calculator's 32 candidates, where the draw measured above was taken.
        prune_keep: the share of each batch that goes on from ``prune_at`` (never fewer than the
            relaxation keeps; with every candidate relaxed, ``relax_keep: 1``, none is pruned).
        batch_size: samples per forward pass.
    """

    steps: int = 20
    corrector_steps: int = 0
    snr: float = 0.16
    guidance: float = 0.05
    guidance_power: float = 3.0
    guidance_cap: float = 0.1
    relax_steps: int = 30
    relax_rate: float = 0.05
    relax_keep: float = 0.25
    oversample: float = 32.0
    prune_at: float = 1.0
    prune_keep: float = 0.5
    batch_size: int = 128

    def __post_init__(self):
        from godiff.checks import number

        number("sampling_steps", self.steps, minimum=1, integer=True)
        number("corrector_steps", self.corrector_steps, minimum=0, integer=True)
        number("relax_steps", self.relax_steps, minimum=0, integer=True)
        number("sampling_batch_size", self.batch_size, minimum=1, integer=True)
        for name in ("snr", "guidance", "guidance_power", "relax_rate"):
            number(name, getattr(self, name), minimum=0)
        number("guidance_cap", self.guidance_cap, above=0)
        number("oversample", self.oversample, minimum=1)
        number("relax_keep", self.relax_keep, above=0, maximum=1)
        number("prune_at", self.prune_at, above=0, maximum=1)
        number("prune_keep", self.prune_keep, above=0, maximum=1)

    def to_dict(self) -> dict:
        return asdict(self)

    def candidate_count(self, n: int, oversample: float | None = None) -> int:
        """How many candidates a draw of ``n`` structures makes: ``oversample x n``, at least ``n``
        (``oversample`` given: that instead of these settings', as :mod:`godiff.cost` chooses).

        Example:
            >>> SamplerConfig(oversample=16).candidate_count(3), SamplerConfig(oversample=1.5).candidate_count(3)
            (48, 5)
        """
        return max(n, int(math.ceil(n * (self.oversample if oversample is None else oversample))))

    def for_length_scale(self, scale: float) -> "SamplerConfig":
        """These settings for a system whose bonds are ``scale`` times Pt's
        (:meth:`godiff.system.System.length_scale`): the cap scales with length, the two rates
        (length over force) with its square.

        A descent step of rate x force is stable while rate x stiffness < 2, and stiffness goes
        as energy over length squared: in Lennard-Jones reduced units (bond 0.37 of Pt's, energies
        alike) the unscaled rate overshoots about threefold and 0.1 is a tenth of a bond, so
        sampled clusters sat several epsilon above their minima.

        Example:
            >>> c = SamplerConfig().for_length_scale(0.5)
            >>> c.guidance_cap, c.relax_rate, c.guidance
            (0.05, 0.0125, 0.0125)
        """
        return replace(
            self,
            guidance=self.guidance * scale**2,
            relax_rate=self.relax_rate * scale**2,
            guidance_cap=self.guidance_cap * scale,
        )

    def prune_step(self) -> int:
        """The diffusion step whose forward pass prunes the candidates (``steps``: none does).

        Example:
            >>> SamplerConfig(steps=20, prune_at=0.5).prune_step(), SamplerConfig(steps=20).prune_step()
            (10, 20)
        """
        return min(self.steps, int(round(self.prune_at * self.steps)))

    def relaxed_count(self, n: int, total: int) -> int:
        """How many of ``total`` candidates drawn for ``n`` structures go on to the relaxation:
        ``relax_keep x total``, at least ``n`` (all of them without a relaxation to prune before).

        Example:
            >>> SamplerConfig(relax_keep=0.25).relaxed_count(3, 96), SamplerConfig(relax_keep=0.25).relaxed_count(3, 8)
            (24, 3)
        """
        if self.relax_steps == 0:
            return total
        return min(total, max(n, int(math.ceil(total * self.relax_keep))))

    @classmethod
    def from_dict(cls, data: dict) -> "SamplerConfig":
        """Settings from a dict; one written before a setting existed means what it did then
        (``relax_keep`` absent: every candidate relaxed)."""
        return cls(**{**LEGACY_SAMPLER, **data})


#: What a sampler.json or run.json written before a setting existed meant by it.
LEGACY_SAMPLER = {"relax_keep": 1.0}


def _cap(step: torch.Tensor, cap: float) -> torch.Tensor:
    norm = step.norm(dim=-1, keepdim=True)
    return step * torch.clamp(cap / norm.clamp_min(1e-12), max=1.0)


def declash(
    positions: torch.Tensor,
    graph: SystemGraph,
    min_distance: torch.Tensor,
    domain: Box,
    *,
    template_min_distance: torch.Tensor | None = None,
    iterations: int = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Push apart atoms closer than their minimum distance, keeping every atom in the box.

    Args:
        positions: (n_samples, n_mobile, 3) in Å.
        graph: the system graph (template images for mobile-template contacts).
        min_distance: (n_mobile, n_mobile) minimum mobile-mobile distances, Å.
        domain: the box.
        template_min_distance: (n_mobile,) minimum distance of each mobile atom to any template
            atom, Å; ``None`` skips template contacts.
        iterations: the most passes; stops earlier when nothing clashes.
        generator: random directions for exactly coincident atoms.

    Returns:
        Positions of the same shape. Mobile atoms move; the template never does.
    """
    x = positions.clone()
    b, n, _ = x.shape
    cell = graph.cell.to(x)
    dmin = min_distance.to(x)
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(iterations):
        moved = False
        if n > 1:
            vec = domain.displacement(x[:, :, None, :], x[:, None, :, :])  # x_i - x_j
            dist = vec.norm(dim=-1).masked_fill(eye, float("inf"))
            deficit = (dmin - dist).clamp_min(0.0).masked_fill(eye, 0.0)
            if bool((deficit > 1e-4).any()):
                moved = True
                direction = vec / dist.clamp_min(1e-6).unsqueeze(-1)
                # random direction for exactly coincident atoms
                direction = torch.where(
                    dist.unsqueeze(-1) < 1e-6, torch.randn(direction.shape, generator=generator), direction
                )
                x = x + 0.5 * (deficit.unsqueeze(-1) * direction).sum(dim=2) * 0.55
        if template_min_distance is not None and graph.images.positions.shape[0]:
            flat = wrap(x, cell, graph.periodic).reshape(b * n, 3)
            reach = float(template_min_distance.max())
            edges = template_mobile_edges(flat, graph.images, reach)
            if len(edges):
                dist = edges.vectors.norm(dim=-1)
                need = template_min_distance.to(x).repeat(b)[edges.receiver]
                deficit = (need - dist).clamp_min(0.0)
                if bool((deficit > 1e-4).any()):
                    moved = True
                    push = -edges.vectors / dist.clamp_min(1e-6).unsqueeze(-1) * deficit.unsqueeze(-1)
                    step = torch.zeros_like(flat).index_add_(0, edges.receiver, push)
                    x = x + step.reshape(b, n, 3) * 0.55
        x = domain.fold(x)
        if not moved:
            break
    return x


def _min_distance_matrix(system) -> torch.Tensor:
    """(n_mobile, n_mobile) least distances, Å: one per pair of species, spread over the atoms
    (a loop over every pair of atoms took seconds at a thousand atoms)."""
    species, kind = np.unique(np.asarray(system.mobile_symbols), return_inverse=True)
    table = torch.tensor([[system.pair_min_distance(a, b) for b in species] for a in species], dtype=torch.float32)
    kind = torch.as_tensor(kind.reshape(-1))
    return table[kind[:, None], kind[None, :]]


def _template_min_distance(system) -> torch.Tensor | None:
    template = system.template_atoms()
    if template is None:
        return None
    tsym = sorted(set(template.get_chemical_symbols()))
    return torch.tensor(
        [min(system.pair_min_distance(m, t) for t in tsym) for m in system.mobile_symbols], dtype=torch.float32
    )


class Sampler:
    """Draws structures from a score model inside a system's box.

    Args:
        model: the score network.
        sde: the noise schedule.
        domain: the box.
        graph: the system graph.
        config: sampler settings.
        min_distance: (n_mobile, n_mobile) Å for the final de-clash (``None``: no de-clash).
        template_min_distance: (n_mobile,) Å, mobile-template minimum distances.
        device: where the network's passes run (:mod:`godiff.device`; the model must be there).
            Random numbers are drawn on the CPU and moved; positions are returned on the CPU.
    """

    def __init__(
        self,
        model: ScoreModel,
        sde: VESDE,
        domain: Box,
        graph: SystemGraph,
        config: SamplerConfig = SamplerConfig(),
        *,
        min_distance: torch.Tensor | None = None,
        template_min_distance: torch.Tensor | None = None,
        device=None,
    ):
        if graph.cutoff < model.config.cutoff - 1e-9:
            raise ConfigError(
                f"the system graph was built for a {graph.cutoff:g} Å cutoff, shorter than the model's "
                f"{model.config.cutoff:g} Å: the model would miss template neighbours; build it with "
                "SystemGraph.from_system(system, model.config.cutoff)"
            )
        self.model = model
        self.sde = sde
        self.domain = domain
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.host_graph = graph  # the de-clash runs on the CPU
        self.graph = graph.to(self.device)
        self.config = config
        self.min_distance = min_distance
        self.template_min_distance = template_min_distance

    @classmethod
    def for_system(
        cls,
        model: ScoreModel,
        system,
        config: SamplerConfig = SamplerConfig(),
        *,
        sde: VESDE | None = None,
        scaled: bool = False,
        device=None,
    ) -> "Sampler":
        """The sampler of ``model`` over ``system``'s box: its SDE, graph and de-clash distances.

        The one way a search and a zoo model build their sampler, so the same model, system,
        settings and generator draw the same structures wherever they run. The lengths of
        ``config`` are scaled to the system's bonds (:meth:`SamplerConfig.for_length_scale`)
        unless ``scaled`` says they already are, and the SDE is derived from the box
        (:meth:`VESDE.for_box`) unless given: a published model passes the ones it was
        trained with (its folder's ``sampler.json``), so a newer godiff samples it as published.
        """
        domain = system.geometry()
        graph = SystemGraph.from_system(system, model.config.cutoff)
        config = config if scaled else config.for_length_scale(system.length_scale())
        return cls(
            model,
            sde if sde is not None else VESDE.for_box(domain),
            domain,
            graph,
            config,
            min_distance=_min_distance_matrix(system),
            template_min_distance=_template_min_distance(system),
            device=device,
        )

    def sigmas(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps + 1,) noise levels from sigma_max down to sigma_min, and their times."""
        t = torch.linspace(1.0, 0.0, self.config.steps + 1)
        return self.sde.sigma(t), t

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` structures; returns (n, n_mobile, 3) positions in Å, inside the box:
        the lowest predicted energies of ``oversample x n`` candidates."""
        total = self.config.candidate_count(n)
        relaxed = self.config.relaxed_count(n, total)
        x, energy = self.candidates(total, generator=generator, predict=total > n, relaxed=relaxed)
        return x if total == n else x[torch.sort(energy, stable=True).indices[:n]]

    @torch.no_grad()
    def candidates(
        self,
        total: int,
        *,
        generator: torch.Generator | None = None,
        predict: bool = True,
        starts: torch.Tensor | None = None,
        start_sigma: float | None = None,
        relaxed: int | None = None,
    ):
        """``total`` finished structures (de-clashed, in the box) and, with ``predict``, the
        (total,) energies the energy head predicts for them (else None).

        With ``starts`` ((m, n_mobile, 3) in Å, m <= total) the last m candidates are variations
        of those structures: each is noised to the first level at or below ``start_sigma`` Å
        and denoised from there (a partial reverse diffusion, as SDEdit edits an image), so it
        keeps the structure's layout at scales above that noise and resamples it below.

        With ``relaxed`` < ``total`` only about that many come back: each batch of candidates
        keeps its share of them, the lowest by the energy head after the reverse diffusion, and
        only those are relaxed (:attr:`SamplerConfig.relax_keep`).
        """
        n_starts = 0 if starts is None else len(starts)
        if n_starts > total or (n_starts and not start_sigma):
            raise ConfigError(f"candidates: {n_starts} starts for {total} candidates (start_sigma {start_sigma})")
        was_training = self.model.training
        self.model.eval()
        try:
            context = self.model.template_context(self.graph)
            chunks = []
            fresh = total - n_starts

            def share(m: int) -> int | None:
                return None if relaxed is None or relaxed >= total else int(math.ceil(relaxed * m / total))

            for start in range(0, fresh, self.config.batch_size):
                m = min(self.config.batch_size, fresh - start)
                chunks.append(self._sample_chunk(m, context, generator, keep=share(m)))
            for start in range(0, n_starts, self.config.batch_size):
                chunk = starts[start : start + self.config.batch_size]
                chunks.append(
                    self._sample_chunk(
                        len(chunk), context, generator, start=chunk, start_sigma=start_sigma, keep=share(len(chunk))
                    )
                )
            x = torch.cat(chunks).cpu() if chunks else torch.zeros(0, self.graph.n_mobile, 3)
            x = self.finish(x, generator=generator)
            energy = self.predicted_energy(x, context) if predict else None
        finally:
            self.model.train(was_training)
        return x, energy

    def predicted_energy(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """(n,) energies the model predicts for structures ``x``, eV (on the CPU)."""
        if context is None:
            context = self.model.template_context(self.graph)
        out = []
        for start in range(0, x.shape[0], self.config.batch_size):
            chunk = x[start : start + self.config.batch_size].to(self.device)
            out.append(self._forward(chunk, self.sde.sigma_min, context).energy.cpu())
        return torch.cat(out)

    def rank(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """Indices of ``x`` from the lowest predicted energy up (ties by index)."""
        energy = self.predicted_energy(x, context)
        return torch.sort(energy, stable=True).indices

    def finish(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """De-clash and fold final positions (also applied to prior samples)."""
        if self.min_distance is not None:
            x = declash(
                x,
                self.host_graph,
                self.min_distance,
                self.domain,
                template_min_distance=self.template_min_distance,
                generator=generator,
            )
        return self.domain.fold(x)

    def _forward(self, x, sigma, context):
        s = torch.full((x.shape[0],), float(sigma), device=x.device)
        return self.model(x, s, self.graph, context)

    def _noise(self, shape, generator) -> torch.Tensor:
        """Standard normal noise from the CPU generator, on the device."""
        return torch.randn(shape, generator=generator).to(self.device)

    def _sample_chunk(self, m: int, context, generator, *, start=None, start_sigma=None, keep=None) -> torch.Tensor:
        """``m`` candidates through the reverse diffusion and the relaxation; with ``keep`` < m only
        the ``keep`` lowest by the energy head at the relaxation's first pass go on (and come back),
        and from the diffusion step :meth:`SamplerConfig.prune_step` only the ``prune_keep`` share
        (at least ``keep``; without ``keep`` none is pruned there)."""
        cfg = self.config
        sigmas, times = self.sigmas()
        first = 0
        if start is None:
            x = self.domain.sample_uniform((m, self.graph.n_mobile), generator).to(self.device)
        else:
            first = min(int((sigmas > start_sigma).sum()), cfg.steps)  # the first level at or below it
            noise = float(sigmas[first]) * self._noise((m, self.graph.n_mobile, 3), generator)
            x = self.domain.fold(start.to(self.device, torch.float32) + noise)
        prune_at = cfg.prune_step()
        for k in range(first, cfg.steps):
            s_now, s_next = float(sigmas[k]), float(sigmas[k + 1])
            out = self._forward(x, s_now, context)
            if k == prune_at and cfg.prune_keep < 1:
                x, out = self._lowest(x, out, max(int(math.ceil(cfg.prune_keep * m)), m if keep is None else keep))
            score = -out.eps / s_now
            var = s_now**2 - s_next**2
            x = x + var * score
            if k < cfg.steps - 1:
                x = x + math.sqrt(var) * self._noise(x.shape, generator)
            if cfg.guidance > 0:
                weight = cfg.guidance * (1.0 - float(times[k])) ** cfg.guidance_power
                x = x + _cap(weight * out.forces, cfg.guidance_cap)
            x = self.domain.fold(x)
            for _ in range(cfg.corrector_steps if k < cfg.steps - 1 else 0):
                x = self._langevin(x, s_next, context, generator)
        for j in range(cfg.relax_steps):
            out = self._forward(x, self.sde.sigma_min, context)
            if j == 0 and keep is not None and keep < len(x):
                x, out = self._lowest(x, out, keep)
            x = self.domain.fold(x + _cap(cfg.relax_rate * out.forces, cfg.guidance_cap))
        return x

    @staticmethod
    def _lowest(x, out, keep: int):
        """The ``keep`` candidates of ``x`` lowest by the energy head of ``out`` (ties by index),
        and their outputs."""
        if keep >= len(x):
            return x, out
        lowest = torch.sort(out.energy, stable=True).indices[:keep]
        return x[lowest], ScoreOutput(eps=out.eps[lowest], forces=out.forces[lowest], energy=out.energy[lowest])

    def _langevin(self, x, sigma, context, generator):
        out = self._forward(x, sigma, context)
        score = -out.eps / sigma
        z = self._noise(x.shape, generator)
        step = 2 * (self.config.snr * z.norm() / score.norm().clamp_min(1e-12)) ** 2
        return self.domain.fold(x + step * score + torch.sqrt(2 * step) * z)
