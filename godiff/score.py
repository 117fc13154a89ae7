"""The score network: an e3nn equivariant message-passing network with a score head and a force head.

Design (each choice measured on the 2-core CPU this project targets; see ``godiff bench`` and the
docs/benchmarks/index.md for the figures):

* **Nodes** carry ``scalars x 0e + vectors x 1o`` features. Species embeddings cover the whole
  periodic table (Z = 0..118), so a model trained on Pt runs on Au unchanged; a second embedding
  marks template and mobile atoms.
* **Template atoms are frozen context.** Their features are updated only by messages from other
  template atoms, never from mobile atoms, and do not depend on the noise level. They are
  therefore a function of the template and the weights alone: :meth:`ScoreModel.template_context`
  computes them once per sampling run (or once per training step, as the weights change), and
  each forward pass only updates the mobile atoms. Passing ``context=None`` recomputes them
  inside the forward pass, which is the plain reference the cached path is tested against.
* **Mobile atoms** receive messages from template atoms within ``cutoff`` and from the other
  mobile atoms of their sample within ``mobile_cutoff`` (a longer range: mobile atoms are few,
  and atoms must feel each other from afar to gather into an island).
* **Messages** are depthwise (``uvu``) tensor products of sender features with the spherical
  harmonics of the edge direction (l <= ``lmax``), weighted per edge by an MLP of a Bessel basis
  with a smooth polynomial envelope, so energies of the learned field are continuous at the
  cutoff. A gated nonlinearity (e3nn ``Gate``) follows each update, with a residual connection.
* **The noise level enters only the heads**, as Gaussian features of log(sigma) on a fixed grid
  that spans 1e-3 to 150 Å (any box). The backbone is therefore noise-independent, so one forward
  pass yields both the score (for the reverse diffusion) and the forces (for force-field
  guidance), and the force head sees the same features at every step.
* **Score head:** epsilon-prediction. Invariant gates ``g(scalars, log sigma)`` mix the vector
  channels: ``eps_i = sum_c g_ic v_ic``; the score is ``-eps / sigma``.
* **Force head:** an equivariant linear map of the final features to one 1o vector per mobile
  atom, times ``force_scale`` (eV/Å, a buffer set from the data and saved with the weights).
* **Energy head:** an MLP of each mobile atom's final scalars gives a per-atom energy; their sum
  times ``energy_scale`` plus ``energy_shift`` (eV, buffers set from the data) predicts the
  total energy. It lets the sampler rank candidates before any real evaluation. A sum of local
  terms is what makes it transfer: an island of another size is a different sum of the same terms.

Nothing depends on the number of mobile atoms or the size of the template.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from godiff._e3nn import nn as e3nn_nn  # e3nn through the shim, which loads its constants safely
from godiff._e3nn import o3
from godiff.geometry import (
    Edges,
    TemplateImages,
    mobile_mobile_edges,
    template_images,
    template_mobile_edges,
    template_self_edges,
    wrap,
)

__all__ = ["ScoreConfig", "ScoreModel", "ScoreOutput", "SystemGraph", "TemplateContext"]

N_SPECIES = 119
LOG_SIGMA_RANGE = (math.log(1e-3), math.log(150.0))
GATHER_ATOMS = 20  # the largest system whose mobile atoms all see each other (see for_length_scale)


@dataclass(frozen=True)
class ScoreConfig:
    """Architecture of a :class:`ScoreModel`; round-trips through JSON.

    Defaults measured on Pt7/Pt(111), 2-core CPU, one thread per run (``godiff bench-speed``):
    lmax = 1 halves the training step against lmax = 2 (120 vs 264 ms for 48 structures) with no
    loss of search quality seen; 16 vector channels cost little more than 8 at lmax = 1.

    Narrower is not cheaper where it counts: 16 scalars and 8 vectors (``--set score.scalars=16
    --set score.vectors=8``) cost 0.6 times the training step and 0.7 times the forward pass, but
    on Pt7/Pt(111), EMT, seeds 0..7, budget 1,280, the heptamer came as evaluated at 470, 128, 245,
    528, 586, 147, 521, 281 (median 376) in a median of 104 s, against 150, 226, 109, 359, 377,
    244, 261, 225 (median 235) in 89 s with these defaults run beside it (``pt7-width16`` in
    ``benchmarks/archive.json``). Two layers instead of three took 205 evaluations on seed 0
    against 150 (not run further).

    Attributes:
        scalars: number of 0e channels per node.
        vectors: number of 1o channels per node.
        lmax: highest degree of the edge spherical harmonics.
        layers: number of interaction blocks.
        cutoff: template -> mobile and template -> template range, in Å.
        mobile_cutoff: mobile -> mobile range, in Å.
        n_radial: number of Bessel functions of the radial basis.
        radial_hidden: width of the radial MLP.
        sigma_features: number of Gaussian features of log(sigma) fed to the score head.
        head_hidden: width of the score head's MLP.
        avg_neighbors: messages are summed and divided by sqrt(avg_neighbors).
    """

    scalars: int = 32
    vectors: int = 16
    lmax: int = 1
    layers: int = 3
    cutoff: float = 5.0
    mobile_cutoff: float = 10.0
    n_radial: int = 8
    radial_hidden: int = 32
    sigma_features: int = 16
    head_hidden: int = 64
    avg_neighbors: float = 12.0

    def __post_init__(self):
        from godiff.checks import number

        for name in (
            "scalars",
            "vectors",
            "lmax",
            "layers",
            "n_radial",
            "radial_hidden",
            "sigma_features",
            "head_hidden",
        ):
            number(f"score.{name}", getattr(self, name), minimum=1, integer=True)
        for name in ("cutoff", "mobile_cutoff", "avg_neighbors"):
            number(f"score.{name}", getattr(self, name), above=0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ScoreConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            from godiff.errors import CheckpointError

            raise CheckpointError(f"score config: unknown field(s) {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def for_length_scale(cls, bond_length: float, n_mobile: int | None = None, **overrides) -> "ScoreConfig":
        """Defaults scaled to a system whose typical bond is ``bond_length`` Å (Pt: 2.77).

        Up to :data:`GATHER_ATOMS` mobile atoms the mobile -> mobile range is long (3.6 bonds), so
        scattered atoms feel each other; that is the range every search of the paper's sizes was
        measured with. A compact cluster of more atoms fits inside that range, so every atom would
        see every other and the network's cost would grow as the square of the size
        (``benchmarks/cost_table.py``: sampling 0.37 s per atom on LJ13, 1.14 s on LJ55). Beyond
        it the mobile range is the template range (1.8 bonds): a bounded number of neighbours
        (8 per atom on LJ55) and a cost linear in the size (0.18 to 0.21 s per atom, LJ13 to LJ55).

        Example:
            >>> ScoreConfig.for_length_scale(2.77).mobile_cutoff, ScoreConfig.for_length_scale(1.0, 38).mobile_cutoff
            (10.0, 1.805)
        """
        scale = bond_length / 2.77
        cutoff = round(5.0 * scale, 3)
        gather = n_mobile is None or n_mobile <= GATHER_ATOMS
        base = dict(cutoff=cutoff, mobile_cutoff=round(10.0 * scale, 3) if gather else cutoff)
        base.update(overrides)
        return cls(**base)


def _plain(values):
    """A torch tensor or an ase ``Cell`` as a NumPy array (numpy 2.4 warns when converting either
    through its ``__array__``, which takes no ``copy`` argument); anything else as it is."""
    if torch.is_tensor(values):
        return values.detach().cpu().numpy()
    return getattr(values, "array", values)


@dataclass(frozen=True)
class SystemGraph:
    """Everything about a system's geometry that the network needs and that never changes.

    Built once per system, weights-free. Attributes are tensors on one device.

    Attributes:
        mobile_numbers: (n_mobile,) atomic numbers of the mobile atoms.
        template_numbers: (n_template,) atomic numbers of the template atoms.
        template_positions: (n_template, 3) in Å.
        template_edges: template -> template edges within the cutoff.
        images: template images a wrapped mobile atom can reach.
        cell: (3, 3) in Å.
        periodic: three booleans.
        cutoff: the template cutoff it was built for, Å; a model with a longer one would miss
            template neighbours, so :class:`godiff.sampler.Sampler` refuses that pairing.
    """

    mobile_numbers: torch.Tensor
    template_numbers: torch.Tensor
    template_positions: torch.Tensor
    template_edges: Edges
    images: TemplateImages
    cell: torch.Tensor
    periodic: tuple
    cutoff: float = math.inf

    @classmethod
    def build(
        cls,
        *,
        mobile_numbers,
        template_numbers,
        template_positions,
        cell,
        periodic,
        cutoff: float,
    ) -> "SystemGraph":
        """Build from plain arrays (positions in Å)."""
        tpos = np.array(_plain(template_positions), dtype=float).reshape(-1, 3)
        cell = np.array(_plain(cell), dtype=float)
        periodic = tuple(bool(p) for p in periodic)
        return cls(
            mobile_numbers=torch.as_tensor(np.asarray(mobile_numbers), dtype=torch.long),
            template_numbers=torch.as_tensor(np.asarray(template_numbers), dtype=torch.long).reshape(-1),
            template_positions=torch.as_tensor(tpos, dtype=torch.float32),
            template_edges=template_self_edges(tpos, cell, periodic, cutoff),
            images=template_images(tpos, cell, periodic, cutoff),
            cell=torch.as_tensor(cell, dtype=torch.float32),
            periodic=periodic,
            cutoff=float(cutoff),
        )

    @classmethod
    def from_system(cls, system, cutoff: float) -> "SystemGraph":
        """Build from a :class:`godiff.system.System`."""
        template = system.template_atoms()
        geometry = system.geometry()
        if template is None:
            tnum, tpos = np.zeros(0, dtype=int), np.zeros((0, 3))
        else:
            tnum, tpos = template.numbers, template.positions
        return cls.build(
            mobile_numbers=system.mobile_numbers,
            template_numbers=tnum,
            template_positions=tpos,
            cell=geometry.cell,
            periodic=geometry.periodic,
            cutoff=cutoff,
        )

    def to(self, device) -> "SystemGraph":
        """The same graph with every tensor on ``device`` (itself when they are there already)."""
        device = torch.device(device)
        if self.cell.device == device:
            return self
        return _moved(self, device)

    @property
    def n_mobile(self) -> int:
        return int(self.mobile_numbers.shape[0])

    @property
    def n_template(self) -> int:
        return int(self.template_numbers.shape[0])


def _moved(obj, device):
    """A frozen dataclass of tensors (and of such dataclasses) with every tensor on ``device``."""
    import dataclasses

    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if torch.is_tensor(value):
            changes[f.name] = value.to(device)
        elif dataclasses.is_dataclass(value):
            changes[f.name] = _moved(value, device)
    return dataclasses.replace(obj, **changes)


@dataclass(frozen=True)
class TemplateContext:
    """Template node features per layer (input features of layer l at index l)."""

    features: tuple


@dataclass(frozen=True)
class ScoreOutput:
    """What one forward pass returns.

    Attributes:
        eps: (n_samples, n_mobile, 3) predicted noise; the score is ``-eps / sigma``.
        forces: (n_samples, n_mobile, 3) predicted forces on the mobile atoms, eV/Å.
        energy: (n_samples,) predicted total energy, eV.
    """

    eps: torch.Tensor
    forces: torch.Tensor
    energy: torch.Tensor


class RadialBasis(nn.Module):
    """Bessel functions sin(n pi r / rc) / r times a smooth polynomial envelope (p = 6)."""

    def __init__(self, n: int, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, n + 1, dtype=torch.float32) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1).clamp_min(1e-6)
        x = (r / self.cutoff).clamp(max=1.0)
        p = 6.0
        env = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq * r) / r * env

    def __repr__(self) -> str:
        return f"RadialBasis(n={self.freq.numel()}, cutoff={self.cutoff})"


class Convolution(nn.Module):
    """Messages along one family of edges: ``TP_uvu(h_sender, Y(edge), R(|edge|))`` summed per receiver."""

    def __init__(
        self, irreps_node, irreps_sh, *, n_radial: int, radial_hidden: int, cutoff: float, avg_neighbors: float
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_node)
        self.irreps_sh = o3.Irreps(irreps_sh)
        wanted = {o3.Irrep("0e"), o3.Irrep("1o")}
        outs, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in wanted:
                        instructions.append((i, j, len(outs), "uvu", True))
                        outs.append((mul, ir_out))
        self.irreps_out = o3.Irreps(outs)
        self.tp = o3.TensorProduct(
            self.irreps_in,
            self.irreps_sh,
            self.irreps_out,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.basis = RadialBasis(n_radial, cutoff)
        self.radial = nn.Sequential(
            nn.Linear(n_radial, radial_hidden), nn.SiLU(), nn.Linear(radial_hidden, self.tp.weight_numel)
        )
        self.norm = 1.0 / math.sqrt(avg_neighbors)
        self.lmax = self.irreps_sh.lmax

    def forward(self, sender_features: torch.Tensor, edges: Edges, n_receivers: int) -> torch.Tensor:
        out = sender_features.new_zeros(n_receivers, self.irreps_out.dim)
        if len(edges) == 0:
            return out
        length = edges.vectors.norm(dim=-1)
        unit = edges.vectors / length.clamp_min(1e-6).unsqueeze(-1)
        sh = o3.spherical_harmonics(self.irreps_sh, unit, normalize=False, normalization="component")
        weights = self.radial(self.basis(length))
        messages = self.tp(sender_features[edges.sender], sh, weights)
        return out.index_add_(0, edges.receiver, messages) * self.norm

    def __repr__(self) -> str:
        return f"Convolution({self.irreps_in} x {self.irreps_sh} -> {self.irreps_out}, cutoff={self.basis.cutoff})"


class Update(nn.Module):
    """Residual gated update of node features from the summed messages of one or more families."""

    def __init__(self, irreps_node, irreps_messages: list):
        super().__init__()
        self.irreps_node = o3.Irreps(irreps_node)
        n_scalars = self.irreps_node.count("0e")
        n_vectors = self.irreps_node.count("1o")
        self.gate = e3nn_nn.Gate(
            f"{n_scalars}x0e",
            [nn.functional.silu],
            f"{n_vectors}x0e",
            [torch.sigmoid],
            f"{n_vectors}x1o",
        )
        self.self_linear = o3.Linear(self.irreps_node, self.gate.irreps_in)
        self.message_linears = nn.ModuleList(o3.Linear(ir, self.gate.irreps_in) for ir in irreps_messages)

    def forward(self, features: torch.Tensor, messages: list) -> torch.Tensor:
        x = self.self_linear(features)
        for linear, m in zip(self.message_linears, messages):
            x = x + linear(m)
        return features + self.gate(x)

    def __repr__(self) -> str:
        return f"Update({self.irreps_node}, families={len(self.message_linears)})"


class ScoreModel(nn.Module):
    """Equivariant score network with a force head; see the module docstring for the design.

    Example:
        >>> import torch
        >>> from godiff.score import ScoreConfig, ScoreModel, SystemGraph
        >>> graph = SystemGraph.build(mobile_numbers=[18] * 3, template_numbers=[],
        ...     template_positions=[], cell=torch.eye(3) * 10, periodic=(False,) * 3, cutoff=3.0)
        >>> model = ScoreModel(ScoreConfig(scalars=8, vectors=4, layers=1, cutoff=3.0, mobile_cutoff=4.0))
        >>> out = model(torch.randn(2, 3, 3), torch.ones(2), graph)
        >>> tuple(out.eps.shape), tuple(out.forces.shape)
        ((2, 3, 3), (2, 3, 3))
    """

    def __init__(self, config: ScoreConfig = ScoreConfig()):
        super().__init__()
        self.config = config
        c = config
        self.irreps_node = o3.Irreps(f"{c.scalars}x0e + {c.vectors}x1o")
        self.irreps_sh = o3.Irreps.spherical_harmonics(c.lmax)
        self.species = nn.Embedding(N_SPECIES, c.scalars)
        self.role = nn.Embedding(2, c.scalars)  # 0: template, 1: mobile

        def conv(cutoff):
            return Convolution(
                self.irreps_node,
                self.irreps_sh,
                n_radial=c.n_radial,
                radial_hidden=c.radial_hidden,
                cutoff=cutoff,
                avg_neighbors=c.avg_neighbors,
            )

        self.tt = nn.ModuleList(conv(c.cutoff) for _ in range(c.layers - 1))
        self.tt_update = nn.ModuleList(
            Update(self.irreps_node, [m.irreps_out for m in self.tt[i : i + 1]]) for i in range(c.layers - 1)
        )
        self.tm = nn.ModuleList(conv(c.cutoff) for _ in range(c.layers))
        self.mm = nn.ModuleList(conv(c.mobile_cutoff) for _ in range(c.layers))
        self.mobile_update = nn.ModuleList(
            Update(self.irreps_node, [self.tm[i].irreps_out, self.mm[i].irreps_out]) for i in range(c.layers)
        )
        self.register_buffer("sigma_centres", torch.linspace(*LOG_SIGMA_RANGE, c.sigma_features))
        self.sigma_width = (LOG_SIGMA_RANGE[1] - LOG_SIGMA_RANGE[0]) / (c.sigma_features - 1)
        self.score_gates = nn.Sequential(
            nn.Linear(c.scalars + c.sigma_features, c.head_hidden),
            nn.SiLU(),
            nn.Linear(c.head_hidden, c.head_hidden),
            nn.SiLU(),
            nn.Linear(c.head_hidden, c.vectors),
        )
        self.force_head = o3.Linear(self.irreps_node, "1x1o")
        self.register_buffer("force_scale", torch.tensor(1.0))
        self.energy_head = nn.Sequential(nn.Linear(c.scalars, c.head_hidden), nn.SiLU(), nn.Linear(c.head_hidden, 1))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.register_buffer("energy_shift", torch.tensor(0.0))

    # ----------------------------------------------------------------------------------------
    def _initial(self, numbers: torch.Tensor, role: int) -> torch.Tensor:
        s = self.species(numbers) + self.role.weight[role]
        v = s.new_zeros(s.shape[0], self.config.vectors * 3)
        return torch.cat([s, v], dim=-1)

    def template_context(self, graph: SystemGraph) -> TemplateContext:
        """Template features for every layer; depends on the template and the weights only."""
        h = self._initial(graph.template_numbers, 0)
        features = [h]
        for conv, update in zip(self.tt, self.tt_update):
            h = update(h, [conv(h, graph.template_edges, graph.n_template)])
            features.append(h)
        return TemplateContext(tuple(features))

    def _sigma_features(self, sigma: torch.Tensor) -> torch.Tensor:
        x = torch.log(sigma).unsqueeze(-1)
        return torch.exp(-0.5 * ((x - self.sigma_centres) / self.sigma_width) ** 2)

    def backbone(
        self, positions: torch.Tensor, graph: SystemGraph, context: TemplateContext | None = None
    ) -> torch.Tensor:
        """Final mobile-node features, shape (n_samples * n_mobile, irreps_node.dim)."""
        if context is None:
            context = self.template_context(graph)
        b, n, _ = positions.shape
        cell = graph.cell.to(positions)
        pos = wrap(positions, cell, graph.periodic)
        flat = pos.reshape(b * n, 3)
        tm_edges = template_mobile_edges(flat, graph.images, self.config.cutoff)
        mm_edges = mobile_mobile_edges(pos, cell, graph.periodic, self.config.mobile_cutoff)
        h = self._initial(graph.mobile_numbers.repeat(b), 1)
        for layer in range(self.config.layers):
            m_tm = self.tm[layer](context.features[layer], tm_edges, b * n)
            m_mm = self.mm[layer](h, mm_edges, b * n)
            h = self.mobile_update[layer](h, [m_tm, m_mm])
        return h

    def forward(
        self,
        positions: torch.Tensor,
        sigma: torch.Tensor,
        graph: SystemGraph,
        context: TemplateContext | None = None,
    ) -> ScoreOutput:
        """Predict the noise and the forces.

        Args:
            positions: (n_samples, n_mobile, 3) mobile positions in Å.
            sigma: (n_samples,) noise level of each sample, in Å.
            graph: the system's :class:`SystemGraph`.
            context: cached :meth:`template_context`; ``None`` recomputes it.
        """
        b, n, _ = positions.shape
        h = self.backbone(positions, graph, context)
        c = self.config
        scalars = h[:, : c.scalars]
        vectors = h[:, c.scalars :].reshape(b * n, c.vectors, 3)
        sig = self._sigma_features(sigma).repeat_interleave(n, dim=0)
        gates = self.score_gates(torch.cat([scalars, sig], dim=-1))
        eps = torch.einsum("nc,ncx->nx", gates, vectors) / math.sqrt(c.vectors)
        forces = self.force_head(h) * self.force_scale
        energy = self.energy_head(scalars).reshape(b, n).sum(-1) * self.energy_scale + self.energy_shift
        return ScoreOutput(eps=eps.reshape(b, n, 3), forces=forces.reshape(b, n, 3), energy=energy)

    def state_tensors(self) -> dict:
        """The state dict as contiguous CPU copies, ready for ``safetensors`` (e3nn keeps some
        constants as non-contiguous views, which safetensors refuses)."""
        return {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"ScoreModel({self.irreps_node}, lmax={c.lmax}, layers={c.layers}, "
            f"cutoff={c.cutoff}, mobile_cutoff={c.mobile_cutoff}, params={sum(p.numel() for p in self.parameters())})"
        )
