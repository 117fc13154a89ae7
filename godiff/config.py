"""The settings of a search: :class:`SearchConfig`, its named presets, and how a ``run.json``
written by an older godiff reads (:data:`LEGACY`, :data:`RETIRED`). Every setting of ``godiff run``
(``--set KEY=VALUE``) is a field here or of :class:`godiff.sampler.SamplerConfig`; each field's
docstring says what was measured to choose its default.

Example:
    >>> SearchConfig().with_overrides(budget=500, sampling_steps=20).sampler.steps
    20
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace

from godiff.errors import ConfigError
from godiff.sampler import SamplerConfig
from godiff.score import ScoreConfig

log = logging.getLogger(__name__)

__all__ = [
    "SearchConfig",
    "PRESETS",
    "LEGACY",
    "FIXED_SCHEDULE",
    "FIXED_SCHEDULE_SAMPLER",
    "RETIRED",
    "SCHEDULES",
    "TRAIN_STOPS",
    "ACQUISITIONS",
    "SAMPLER_ALIASES",
]

SAMPLER_ALIASES = {"sampling_steps": "steps", "sampling_batch_size": "batch_size"}


#: The fixed-schedule algorithm of the paper and of godiff before the adaptive search: exponential
#: cooling, a fixed number of training steps, ranking by predicted energy alone, no budget, patience
#: or polish, and always the sampler's ``oversample`` candidates per evaluation. The paper preset
#: and old ``run.json`` files (a fine-tune's included) start from it.
FIXED_SCHEDULE = {
    "schedule": "exponential",
    "train_stop": "fixed",
    "acquisition": "energy",
    "budget": None,
    "patience": None,
    "polish": 0,
    "network_share": None,
}

#: The candidates the fixed schedule was measured with (godiff's defaults before 0.3.0): 40
#: reverse-diffusion steps and every candidate relaxed in the learned field.
FIXED_SCHEDULE_SAMPLER = {"steps": 40, "relax_keep": 1.0}

#: ``godiff run --preset NAME``: named settings. ``paper`` is the published GO-Diff schedule
#: (20 iterations of 128 samples, exponential annealing from 5 eV to 0.02 eV, a fixed number of
#: training steps, candidates ranked by predicted energy alone, 4 candidates per sample):
#: godiff's defaults before the adaptive search, kept so the comparison with the paper stays
#: one command.
PRESETS = {
    "paper": {
        **FIXED_SCHEDULE,
        **FIXED_SCHEDULE_SAMPLER,
        "iterations": 20,
        "samples": 128,
        "temperature_start": 5.0,
        "refine": 0.0,
        "oversample": 4.0,
    },
}

#: What a ``run.json`` written before the adaptive search meant by the settings it lacks.
LEGACY = {
    **FIXED_SCHEDULE,
    "refine": 0.0,
    "reheat": 0,
    "improvement": 0.0,
}

#: Settings removed in godiff 0.2.0, each off by default and measured not to help (the figures are in
#: ``SearchConfig``'s docstring at commit ea5481f), with the value that meant "off".
RETIRED = {"cooling_ess": 0.0, "refine_distinct": 0.0, "refine_hop": 0.0, "polish_chain": 1, "polish_fmax": 0.0}


def _without_retired(data: dict) -> dict:
    """``data`` without the :data:`RETIRED` settings a ``run.json`` written before 0.2.0 names, in
    one log line: a warning where one was on (the run goes on without it), else a note."""
    named = {key: data[key] for key in RETIRED if key in data}
    if not named:
        return data
    on = {key: value for key, value in named.items() if value != RETIRED[key]}
    if on:
        log.warning(
            "settings removed in godiff 0.2.0 are ignored: %s (measured not to help)",
            ", ".join(f"{k}={v}" for k, v in on.items()),
        )
    else:
        log.info("run.json names settings removed in godiff 0.2.0, all off: %s", ", ".join(named))
    return {key: value for key, value in data.items() if key not in RETIRED}


def _check_score_settings(settings: dict) -> None:
    """``score_settings`` name fields of :class:`ScoreConfig` with values it accepts (one-line error)."""
    if not isinstance(settings, dict):
        raise ConfigError(f"score_settings: expected a mapping of architecture fields, got {type(settings).__name__}")
    known = {f.name for f in fields(ScoreConfig)}
    for key in settings:
        if key not in known:
            raise ConfigError(
                f"unknown search setting 'score.{key}' (the network's fields: {', '.join(sorted(known))})"
            )
    ScoreConfig(**settings)


SCHEDULES = ("adaptive", "exponential")
TRAIN_STOPS = ("agreement", "fixed")
ACQUISITIONS = ("lcb", "energy")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a search; round-trips through JSON (``to_dict`` / ``from_dict``).

    The defaults are the adaptive search (batches sized by their ESS, a temperature that reads
    the energies, candidates acquired by a lower confidence bound, training until gradients
    stop agreeing, a budget in evaluations); :data:`PRESETS` ``["paper"]`` is the fixed
    schedule of the paper.

    Attributes:
        iterations: self-sampling iterations (the adaptive search: at most this many).
        samples: structures evaluated per iteration, a fixed batch; ``None`` (the default): the
            adaptive batch of :class:`godiff.schedule.BatchSize` (``min_samples``,
            ``max_samples``, ``target_ess``).
        first_samples: structures of the first iteration (``None``: ``samples``, or
            ``min_samples`` for the adaptive batch); a search from a pretrained model needs fewer
            to start (see :data:`godiff.zoo.transfer.TRANSFER`).
        min_samples: the adaptive batch's round, and its smallest size.
        max_samples: the adaptive batch's largest size. 32 (64 until the measurements below): a search
            that cools slowly (Pt7 seed 3: batches full from iteration 7, the ESS at 0.02 to
            0.08 eV never reaching 8) trains twice as often on what it evaluates. Measured
            against 64, seeds 0..7, budget 1,280 (``--set max_samples=32``): on Pt7/Pt(111)
            (``benchmarks/pt7-max32``) counted 81, 213, 113, 392, 159, 139, 185, 171 (median 165,
            worst 392, against 185 and 564), as evaluated median 188 (290); on Au7/Au(111)
            (``benchmarks/au7-max32``) counted 108, 169, 256, 355, 120, 210, 112, 166 (median 168
            as at 64, worst 355 against 476), as evaluated median 168 (as at 64; seed 3 926
            against 548); on LJ19 (``benchmarks/lj19-max32``) below the next minimum as evaluated
            148, 283, 570, 595, 245, 603, 169, 568 (median 426, worst 603, against 501 and
            1,100), within 1e-3 ε on 8/8 (6/8), counted median 205 as at 64.
        target_ess: the adaptive batch's effective sample size at which it stops.
        budget: total evaluations; the run stops there (``None``: no limit).
        patience: stop once the best energy has not improved for this many evaluations (an
            improvement: a fall of more than ``improvement`` below the energy of the last one).
        improvement: the fall of the best energy that counts as an improvement for ``patience``
            and ``reheat`` (``None``: ``temperature_end``, so the polish's micro-eV steps on one
            minimum do not count; 0: any new best, the rule of runs made before the setting).
        schedule: ``adaptive`` (:class:`godiff.schedule.AdaptiveSchedule`) or ``exponential``.
        temperature_start: first temperature (``None``: the adaptive schedule's, from the first
            batch's spread; the exponential schedule's 5 eV).
        temperature_end: last (and lowest) temperature.
        temperature_factor: the adaptive first temperature in units of the first batch's spread.
            At 0.25 on Pt7 (``--set temperature_factor=0.25``, ``benchmarks/pt7-temperature-
            factor025``): counted 308, 261, 104, 557, 116, 410, 549, 278 (median 293, against 204
            at 1): the hot first iterations are not wasted.
        cooling_fast: the adaptive schedule's factor where the heat capacity is below 1. At 0.7
            on Pt7/Pt(111) (``--set cooling_fast=0.7``, ``benchmarks/pt7-cooling07`` and
            ``pt7-cooling07-seeds16``): counted 126, 195, 161, 178, 158, 128, 188, 146 on seeds
            0..7 (median 160, worst 195), median 158 and worst 236 over seeds 0..15 against 166
            and 392 at 0.5: halving, the slow seeds cool below their batch's energy scale in a
            higher island and their ESS falls to 1. On Au7/Au(111) (``benchmarks/au7-cooling07``)
            worse: counted median 197, worst 677 (168 and 355), so 0.5 stays.
        cooling_slow: its factor above 1.
        reheat: evaluations without an improvement (as for ``patience``) after which the
            adaptive schedule, once at ``temperature_end``, heats again to the spread of the last
            batch (:class:`godiff.schedule.AdaptiveSchedule`; 0: never). A reheat does not reset
            the count: while the best stays where it is, the search heats again each time it has
            cooled back to its end. Measured on LJ19, seeds
            0..7, budget 1,280 (``godiff bench lj19 --methods godiff-ffg --seeds 8 --budget 1280
            --stop-at-success --jobs 2 --threads 1 --set reheat=150``, ``benchmarks/lj19-reheat``):
            the first energy below the next minimum as evaluated on 8/8 (148, 359, 940, 643, 245,
            1100, 169, 872; median 501) against 7/8 without (``benchmarks/lj19-scratch``): seed 5,
            in a funnel at -52.66 ε with T at its end from evaluation 586, was heated to 0.47 ε
            at evaluation 662 and ended at -72.53 where it had ended at -69.61; the other seeds'
            figures are unchanged (each reheat came after them). On Pt7/Pt(111), seeds 0..7
            (``benchmarks/pt7-reheat``), it fires only on seed 3, after its success: every figure
            as without it. No seed of ``benchmarks/au7-scratch`` or ``pt7-chgnet-scratch`` sat at
            T_end for 150 stalled evaluations before it stopped, so theirs stand.
        train_steps: optimizer steps per iteration (with ``train_stop: agreement``, at most).
        train_stop: ``agreement`` (:class:`godiff.train.AgreementStop`) or ``fixed``.
        train_min_steps: the agreement stop's fewest steps.
        train_patience: steps of disagreement before the agreement stop ends training.
        acquisition: ``lcb`` (:mod:`godiff.acquisition`) or ``energy`` (the lowest predicted).
        kappa: the lower confidence bound's multiple of the uncertainty.
        duplicate_distance: fingerprint distance (bond lengths) below which a candidate
            duplicates an evaluated structure and is skipped.
        uncertainty_length: the uncertainty's length scale (bond lengths).
        refine: fraction of each draw's candidates that are variations of the lowest evaluated
            structures rather than draws from the prior (:meth:`godiff.sampler.Sampler.candidates`
            with ``starts``; 0: none); they are ranked with the others by the acquisition.
            Measured on Pt7/Pt(111), EMT, seeds 0..7, budget 1,280 (``godiff bench pt7-pt111
            --methods godiff-ffg --seeds 8 --budget 1280 --stop-at-success --jobs 2 --threads 1
            --set refine=R``): evaluations with the relaxation counted, per seed, 252, 303, 234,
            511, 328, 313, 141, 154 (median 278) at 0 (with max_samples 32; 291 at 64, another
            machine) and 96, 367, 252, 514, 190, 185, 218, 172 (median 204) at 0.5; the first
            energy within 0.05 eV as evaluated, median 377 and 261 (``benchmarks/pt7-refine``).
            Run again on seeds 0..15 (``benchmarks/pt7-default-again``): median 239 counted and
            376 as evaluated; an 8-seed median moves by about 40 between two runs.
        refine_from: how many of the lowest evaluated structures the variations start from.
        refine_noise: the noise they start from, bond lengths. At 0.6 (``--set refine_noise=0.6``,
            ``benchmarks/pt7-refine-noise06``): counted 261, 246, 244, 622, 385, 146, 169, 217
            (median 245), as evaluated median 252; 0.3 stays.
        polish: evaluations after each round of the adaptive batch on the best structure moved
            along its forces (:mod:`godiff.polish`; 0: none; a fixed batch has none).
        polish_step: the polish's first trust step, Å (``None``: 0.1 bond lengths).
        relax_first: the best structure of the first batch relaxed with the real calculator, at
            most this many evaluations, in place of that batch's polish
            (:meth:`godiff.candidates.Candidates._relax_round`; 0: none; the transfer preset
            :data:`godiff.zoo.transfer.TRANSFER` sets 60; a scratch search's first batch is
            placed from the prior; godiff 0.2.0 applied it to a zoo model's search only).
        relax_stalled: once neither a new best from a draw or a relaxation nor a relaxation has
            come for ``relax_after`` evaluations (the polish's steps do not count), and whenever
            an iteration draws nothing new, the lowest evaluated structure that no relaxation
            started from and that is not in a finished relaxation's minimum (within the distinct
            minima's distance, :mod:`godiff.minima`) is relaxed with the real calculator as
            ``relax_first`` relaxes, at most this many evaluations, in place of the next round's
            polish: a stalled search carries on a relaxation cut short by its calls, or relaxes
            another low structure (:meth:`godiff.candidates.Candidates._unrelaxed_lowest`); 0: never.
        relax_after: the evaluations without a new best from a draw or a relaxation, or a
            relaxation, before ``relax_stalled`` relaxes.
        network_share: candidates sized to the calculator (:mod:`godiff.cost`): each iteration
            draws as many candidates per evaluation as keep the network's seconds per evaluation
            within this multiple of the calculator's, between ``min_oversample`` and the sampler's
            ``oversample``; ``None`` (or, on the command line, ``--set min_oversample=32``): always
            ``oversample``, and runs that repeat bit for bit. Chosen, as the trade it is, by wall
            time to the minimum under EMT (Pt7/Pt(111), seeds 0..7,
            ``benchmarks/pt7-share1-timed`` against ``pt7-keep025-timed``): at 1 the search draws
            the floor of 8 candidates and needs 150, 226, 109, 359, 377, 244, 261, 225 evaluations
            (median 235; 156 at 32) but waits 43, 60, 33, 103, 99, 68, 69, 61 s (median 64.5, worst
            103; at 32: median 71, worst 233). A calculator of a second or more (DFT) keeps 32 and
            its evaluations; CHGNet (0.4 s) gets about 22. Measured since on Au7/Au(111), the same
            way: at the floor of 8, as evaluated 380, 495, 573, 530, 396, 521 (seeds 0..5, median
            508, ``benchmarks/au7-share1``) against 283, 283, 204, 529, 93, 170, 169, 150 at 32
            (``au7-steps20-keep025``), with no shorter wait seen; a floor of 16 (``--set
            min_oversample=16``) gave Au7 432, 416, 226, 397, 377 and Pt7 median 233 (``pt7-floor16``
            and ``au7-floor16`` in the archive). Which floor serves EMT islands best is open.
        min_oversample: the fewest candidates per evaluation ``network_share`` may choose.
        batch_size: buffer structures per denoising step.
        force_batch: evaluated structures per force-loss step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip.
        buffer_size: replay-buffer capacity.
        force_weight: weight of the force loss.
        energy_weight: weight of the energy-head loss.
        force_clip: per-atom force norm above which targets are clipped, eV/Å.
        max_failed_fraction: an iteration with more failed evaluations than this stops the run.
        seed: seeds every random stream of the run.
        workers: parallel evaluation processes.
        sampler: reverse-diffusion settings.
        score: network architecture (``None``: scaled to the system's bond length).
        score_settings: fields of :class:`godiff.score.ScoreConfig` set over that architecture
            (``--set score.layers=2``); a zoo model keeps its own.
    """

    iterations: int = 100
    samples: int | None = None
    first_samples: int | None = None
    min_samples: int = 16
    max_samples: int = 32
    target_ess: float = 8.0
    budget: int | None = 1000
    patience: int | None = None
    improvement: float | None = None
    schedule: str = "adaptive"
    temperature_start: float | None = None
    temperature_end: float = 0.02
    temperature_factor: float = 1.0
    cooling_fast: float = 0.5
    cooling_slow: float = 0.9
    reheat: int = 150
    train_steps: int = 200
    train_stop: str = "agreement"
    train_min_steps: int = 50
    train_patience: int = 20
    acquisition: str = "lcb"
    kappa: float = 2.0
    duplicate_distance: float = 0.02
    uncertainty_length: float = 0.1
    refine: float = 0.5
    refine_from: int = 4
    refine_noise: float = 0.3
    polish: int = 3
    polish_step: float | None = None
    relax_first: int = 0
    relax_stalled: int = 0
    relax_after: int = 64
    network_share: float | None = 1.0
    min_oversample: float = 8.0
    batch_size: int = 32
    force_batch: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    buffer_size: int = 64
    force_weight: float = 1.0
    energy_weight: float = 1.0
    force_clip: float = 10.0
    max_failed_fraction: float = 0.5
    seed: int = 0
    workers: int = 1
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    score: ScoreConfig | None = None
    score_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        from godiff.checks import choice, number

        _check_score_settings(self.score_settings)

        for name in (
            "iterations",
            "batch_size",
            "force_batch",
            "buffer_size",
            "workers",
            "min_samples",
            "max_samples",
            "refine_from",
            "relax_after",
        ):
            number(name, getattr(self, name), minimum=1, integer=True)
        for name in ("samples", "first_samples", "budget", "patience"):
            if getattr(self, name) is not None:
                number(name, getattr(self, name), minimum=1, integer=True)
        if self.max_samples < self.min_samples:
            raise ConfigError(f"max_samples ({self.max_samples}) is below min_samples ({self.min_samples})")
        for name in (
            "train_steps",
            "train_min_steps",
            "train_patience",
            "polish",
            "reheat",
            "relax_first",
            "relax_stalled",
        ):
            number(name, getattr(self, name), minimum=0, integer=True)
        number("seed", self.seed, minimum=0, maximum=2**63 - 1, integer=True)  # torch takes a signed 64-bit seed
        for name in (
            "learning_rate",
            "grad_clip",
            "force_clip",
            "temperature_end",
            "temperature_factor",
            "target_ess",
            "uncertainty_length",
            "refine_noise",
        ):
            number(name, getattr(self, name), above=0)
        number("min_oversample", self.min_oversample, minimum=1)
        for name in ("temperature_start", "polish_step", "network_share"):
            if getattr(self, name) is not None:
                number(name, getattr(self, name), above=0)
        if self.improvement is not None:
            number("improvement", self.improvement, minimum=0)
        for name in ("cooling_fast", "cooling_slow"):
            number(name, getattr(self, name), above=0, maximum=1)
        for name in (
            "weight_decay",
            "force_weight",
            "energy_weight",
            "kappa",
            "duplicate_distance",
        ):
            number(name, getattr(self, name), minimum=0)
        number("max_failed_fraction", self.max_failed_fraction, minimum=0, maximum=1)
        number("refine", self.refine, minimum=0, maximum=1)
        choice("schedule", self.schedule, SCHEDULES)
        choice("train_stop", self.train_stop, TRAIN_STOPS)
        choice("acquisition", self.acquisition, ACQUISITIONS)

    @property
    def adaptive_batch(self) -> bool:
        """Whether iterations are sized by their ESS (no fixed ``samples``)."""
        return self.samples is None

    def improvement_threshold(self) -> float:
        """The fall of the best energy that counts as an improvement (``improvement``, or
        ``temperature_end`` when it is ``None``).

        Example:
            >>> SearchConfig().improvement_threshold(), SearchConfig(improvement=0.0).improvement_threshold()
            (0.02, 0.0)
        """
        return self.temperature_end if self.improvement is None else float(self.improvement)

    def first_batch(self) -> int:
        """Structures of the first iteration."""
        return self.first_samples or self.samples or self.min_samples

    @classmethod
    def preset(cls, name: str) -> "SearchConfig":
        """The settings of :data:`PRESETS` ``[name]`` (a one-line ConfigError names the known ones).

        Example:
            >>> SearchConfig.preset("paper").samples
            128
        """
        if name not in PRESETS:
            raise ConfigError(f"preset: unknown preset '{name}' (known: {', '.join(PRESETS)})")
        return cls().with_settings(PRESETS[name])

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["sampler"] = self.sampler.to_dict()
        d["score"] = None if self.score is None else self.score.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        data = {**LEGACY, **_without_retired(data)}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"search config: unknown field(s) {sorted(unknown)}")
        data["sampler"] = SamplerConfig.from_dict(data.get("sampler") or {})
        data["score"] = None if data.get("score") is None else ScoreConfig.from_dict(data["score"])
        return cls(**data)

    def with_overrides(self, **overrides) -> "SearchConfig":
        """A copy with top-level or sampler fields replaced (``None`` values are ignored, as an
        option not given on the command line is).

        Sampler fields may also be named as on the command line (``sampling_steps``).
        """
        return self.with_settings({key: value for key, value in overrides.items() if value is not None})

    def with_settings(self, settings: dict) -> "SearchConfig":
        """A copy with the top-level or sampler fields of ``settings`` replaced, ``None`` values
        included (``budget: None`` is no budget): how a preset applies.

        Example:
            >>> c = SearchConfig().with_settings({"budget": None, "oversample": 4.0})
            >>> c.budget, c.sampler.oversample
            (None, 4.0)
        """
        top = {f.name for f in fields(self)}
        samp = {f.name for f in fields(SamplerConfig)}
        main, sampler, score = {}, {}, {}
        for key, value in settings.items():
            key = SAMPLER_ALIASES.get(key, key)
            if key.startswith("score."):
                score[key.removeprefix("score.")] = value
            elif key in top:
                main[key] = value
            elif key in samp:
                sampler[key] = value
            else:
                raise ConfigError(f"unknown search setting '{key}'")
        new = replace(self, **main)
        if score:
            new = replace(new, score_settings={**new.score_settings, **score})
        if sampler:
            new = replace(new, sampler=replace(new.sampler, **sampler))
        return new
