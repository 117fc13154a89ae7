"""AGOX's searches as external reference methods, spending their evaluations through godiff's evaluator.

`AGOX <https://agox.gitlab.io/agox/>`_ (Aarhus University's atomistic global optimisation
package) builds its searches from modules: an environment (template, composition, confinement
box), generators, samplers, a surrogate model, an acquisitor, an evaluator. Here its own algorithm
classes (``agox.algorithms``: the ones its documentation examples run) are built for a godiff
:class:`~godiff.system.System` with AGOX's default settings, and its calculator is godiff's
counting :class:`~godiff.bench.classical.RecordingCalculator`: every single point AGOX asks for,
each step of each local relaxation included, is one counted evaluation of the shared
:class:`godiff.energy.Evaluator` and one row of the run's ``evaluations.db``, and the run stops
when the budget is spent, so the harness judges these methods exactly as it judges godiff.

Methods (AGOX 3.11 defaults throughout; none of their settings is tuned here):

* ``agox-random``: AGOX's random structure search (``RandomSearchConfig``): each iteration one
  candidate from ``RandomGenerator`` (``contiguous=True``: every atom after the first placed at a
  bond length from an already placed one, so the mobile atoms start as one cluster), relaxed with
  ASE BFGS to fmax 0.05 eV/Å, at most 100 steps, inside AGOX's box constraint.
* ``agox-basin-hopping``: AGOX's basin hopping (``BasinHoppingConfig``): ``RattleGenerator``
  (each mobile atom moved with probability ``int(0.25 n) / n``, at least one of them, by up to
  3 Å) applied to the current structure of a Metropolis sampler at T = 0.25 eV on relaxed
  energies, then the same relaxation as ``agox-random``; the first candidate comes from
  ``RandomGenerator``.
* ``agox-gofee``: GOFEE (``GOFEEConfig``; Bisbo and Hammer, PRL 124, 086102): each iteration 10
  candidates (in the first four iterations all from ``RandomGenerator``, then 20 % of them, and
  80 % rattled copies of the lowest member of one of the 10 k-means clusters of the structures
  within 5 eV of the best), relaxed from the second iteration on in the lower-confidence-bound
  landscape (kappa 2) of a global Gaussian process on AGOX's fingerprint descriptor with a
  repulsive prior (BFGS, fmax 0.05 eV/Å, at most 100 steps); the candidate lowest in that
  landscape is evaluated with the true energy and given one BFGS step (two evaluations per
  iteration). AGOX generates and relaxes the candidates on Ray actors: here 1, 2, 5 or 10 of them,
  the most that the run's torch threads allow (the harness gives each run cores // jobs), so
  that AGOX keeps its default of 10 candidates (it rounds that up to a multiple of the actors).
  Each run starts its own Ray instance and shuts it down at the end.

Rows: every local relaxation (AGOX's evaluation of one candidate: the whole BFGS descent for the
random search and basin hopping, the point and its one step for GOFEE) is one ``iteration`` of
the run's rows, so all three are ``trajectories`` methods (:func:`godiff.bench.success.first_success`).
Structures are recorded in godiff's atom order (template first, then the mobile atoms in
:attr:`~godiff.system.System.mobile_symbols` order) with the frozen template atoms fixed.

Confinement: for a slab, AGOX's box is the template's periodic in-plane cell times the z range of
godiff's box (``z_min`` to ``z_max`` above the top template atom, :meth:`System.geometry`); for a
cuboid, the cuboid; for a sphere, the cube around it (AGOX confines to parallelepipeds only). A
template whose atoms are all frozen is fixed the AGOX way (``fix_template``); otherwise only the
frozen ones are fixed. AGOX's own files (its database, ``agox.log`` with everything it prints)
are kept in ``agox/`` inside the run directory; a restarted run starts AGOX anew there, its
earlier rows still counting against the budget. AGOX draws from numpy's global random state,
seeded here with the run's seed (and restored afterwards); a run is reproducible. numpy's BLAS
runs on as many threads as the run's torch threads.

AGOX's generators keep every new distance between 0.75 and 1.25 times the sum of ASE's covalent
radii. On the shipped Lennard-Jones systems (reduced units, ``Ar`` only a label) that is 1.6 to 2.7 sigma,
where the pair minimum lies at 1.12 sigma, and ``RandomGenerator`` often fails to fit 13 atoms in
the 4 sigma box: AGOX's numbers there say little about AGOX.

Why a separate environment: agox 3.11 imports only with ``ase < 3.27`` (it needs
``ase.constraints.IndexedConstraint``, gone in 3.27) and ``numpy < 2.4``, while mace-torch's
dependency ``matscipy 1.3`` requires ``ase >= 3.27``; a second virtual environment with
``matscipy < 1.3`` holds both godiff and agox (docs/benchmarks/index.md, "AGOX (GOFEE, its random search and basin
hopping) beside godiff"). This module imports agox only inside its functions, so importing it
never fails; a method run where agox cannot be imported raises :class:`~godiff.errors.ConfigError`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from godiff.bench.classical import BudgetExhausted, _setup
from godiff.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["run_agox_random", "run_agox_basin_hopping", "run_agox_gofee"]

README_SECTION = "AGOX (GOFEE, its random search and basin hopping) beside godiff"
AGOX_DIR = "agox"
# AGOX iterations allowed per evaluation of budget: an iteration normally spends at least one
# evaluation; this only stops a search whose generators keep failing from running for ever.
MAX_ITERATIONS_PER_EVALUATION = 10


class _BudgetSpent(BaseException):
    """Raised through AGOX when the budget is spent. AGOX's evaluator catches every
    ``Exception`` of a calculation and goes on to the next candidate, so this is not one."""


class _Escape(BaseException):
    """Carries an error of godiff's own evaluation or recording (not a failed calculation,
    which AGOX may skip) out through AGOX, to be raised again outside it."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _require_agox(method: str):
    try:
        import agox  # noqa: F401
        from agox import algorithms
    except Exception as exc:  # ImportError, or agox failing on an ase or numpy too new for it
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(
            f"method {method}: the agox package is not importable here ({detail}); "
            f"see docs/benchmarks/index.md, section '{README_SECTION}'"
        ) from None
    return algorithms


class _CountingCalculator(Calculator):
    """The calculator AGOX sees: each call is one evaluation through godiff's
    :class:`RecordingCalculator`, the structure recorded in godiff's atom order."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, recorder, system):
        super().__init__()
        self.recorder = recorder
        self.system = system
        mobile = system.mobile_numbers
        self._rank = {int(z): int(np.flatnonzero(mobile == z)[0]) for z in np.unique(mobile)}
        self._mobile = mobile

    def godiff_atoms(self, atoms):
        """``(atoms in godiff's order, permutation)``: ``godiff_atoms[i] = atoms[perm[i]]``."""
        n_template = self.system.n_template
        numbers = atoms.numbers[n_template:]
        if len(atoms) != n_template + len(self._mobile) or not set(numbers.tolist()) <= set(self._rank):
            raise RuntimeError(
                f"AGOX built a structure of {len(atoms)} atoms ({atoms.get_chemical_formula()}) "
                f"that is not the system's composition"
            )
        order = np.argsort([self._rank[int(z)] for z in numbers], kind="stable")
        if not np.array_equal(numbers[order], self._mobile):
            raise RuntimeError(
                f"AGOX built a structure ({atoms.get_chemical_formula()}) that is not the system's composition"
            )
        perm = np.r_[np.arange(n_template), n_template + order]
        positions = atoms.positions[perm]
        out = self.system.atoms(positions[n_template:])
        if n_template and not self._same_template(out, positions[:n_template]):
            out.positions[:n_template] = positions[:n_template]  # recorded as AGOX moved them
        return out, perm

    @staticmethod
    def _same_template(atoms, positions) -> bool:
        """Whether AGOX's template ``positions`` are the system's (``atoms``'), up to lattice
        vectors in-plane: AGOX wraps every atom into the cell, and moves a template atom that
        sits on the cell's edge (fractional coordinate -1e-18, say) by a whole lattice vector."""
        cell = np.asarray(atoms.cell[:], dtype=float)
        frac = (positions - atoms.positions[: len(positions)]) @ np.linalg.inv(cell)
        frac[:, :2] -= np.round(frac[:, :2])
        return bool(np.abs(frac @ cell).max() < 1e-6)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        try:
            ordered, perm = self.godiff_atoms(self.atoms)
            evaluation = self.recorder.evaluate(ordered)
        except BudgetExhausted:
            raise _BudgetSpent() from None
        except Exception as exc:
            raise _Escape(exc) from None
        if not evaluation.ok:
            raise CalculationFailed(evaluation.error)
        forces = np.empty_like(np.asarray(evaluation.forces, dtype=float))
        forces[perm] = evaluation.forces
        self.results = {"energy": float(evaluation.energy), "forces": forces}


def _problem(algorithms, system, calculator):
    """AGOX's ``ProblemConfig`` for ``system``, and the FixAtoms to add when only part of the
    template is frozen (AGOX's ``fix_template`` fixes all of it)."""
    from ase import Atoms
    from ase.constraints import FixAtoms

    geometry = system.geometry()
    template = system.template_atoms()
    extra = None
    if template is None:
        template = Atoms(cell=np.array(geometry.cell), pbc=False)
        confinement_cell = np.diag(np.asarray(geometry.upper) - np.asarray(geometry.lower))
        corner = np.asarray(geometry.lower, dtype=float)
        fix_template = True
    else:
        cell = np.array(template.cell[:], dtype=float)
        z_lo, z_hi = float(geometry.lower[2]), float(geometry.upper[2])
        confinement_cell = np.array([cell[0], cell[1], [0.0, 0.0, z_hi - z_lo]])
        corner = np.array([0.0, 0.0, z_lo])
        frozen = system.frozen_mask()
        fix_template = bool(frozen.all())
        if frozen.any() and not fix_template:
            extra = FixAtoms(indices=np.flatnonzero(frozen))
    problem = algorithms.ProblemConfig(
        template=template,
        numbers=[int(z) for z in system.mobile_numbers],
        calculator=calculator,
        confinement_cell=confinement_cell,
        confinement_corner=corner,
        fix_template=fix_template,
    )
    return problem, extra


@contextlib.contextmanager
def _inside(directory: Path, logfile: Path):
    """Work in ``directory`` with stdout and stderr appended to ``logfile``; numpy's global
    random state restored afterwards."""
    cwd = os.getcwd()
    state = np.random.get_state()
    with open(logfile, "a") as fh:
        os.chdir(directory)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield
        finally:
            os.chdir(cwd)
            np.random.set_state(state)


def _run(
    method: str,
    system,
    *,
    seed: int,
    budget: int,
    out: Path,
    config: str,
    parallel: bool = False,
    executor=None,
    trust_energy: bool = False,
) -> None:
    """Build AGOX's ``config`` algorithm (its defaults) for ``system`` and run it until the budget is spent."""
    algorithms = _require_agox(method)
    out = Path(out).absolute()  # AGOX works inside out/agox
    run, evaluator, recorder, _ = _setup(system, seed, budget, out, method, executor, trust_energy)
    if recorder.count >= budget:
        run.release()
        return
    algorithm_config = getattr(algorithms, config)()
    # the Metropolis temperature of basin hopping, recorded with its rows as godiff's basin hopping does
    recorder.temperature = float(getattr(getattr(algorithm_config, "sampler", None), "temperature", 0.0))
    work = out / AGOX_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    calculator = _CountingCalculator(recorder, system)
    search = None
    ray_dir = tempfile.mkdtemp(prefix="agox-ray-") if parallel else None
    run_kwargs = {"cpu_count": _ray_cpus(), "ray_tmp_dir": ray_dir} if parallel else {}
    with run, evaluator, _inside(work, work / "agox.log"), _blas_threads():
        try:
            problem, extra = _problem(algorithms, system, calculator)
            run_config = algorithms.RunConfig(seed=int(seed), path=str(work.resolve()), **run_kwargs)
            algorithm = algorithms.create_search(algorithm=algorithm_config, problem=problem, run=run_config)
            if extra is not None:
                algorithm.get_environment().add_constraint(extra, mode=None)
            _count_relaxations(algorithm, recorder)
            search = algorithm._make_agox()  # what Algorithm.run does, without its chdir and banner
            search.run(N_iterations=MAX_ITERATIONS_PER_EVALUATION * budget + 10)
            log.warning(
                "%s: AGOX stopped after %d of %d evaluations (its generators kept failing)",
                method,
                recorder.count,
                budget,
            )
        except _BudgetSpent:
            pass
        except _Escape as escape:
            raise escape.error from None
        finally:
            if search is not None:
                atexit.unregister(search.on_failure)
            if ray_dir is not None:
                _stop_ray(ray_dir)


@contextlib.contextmanager
def _blas_threads():
    """numpy's BLAS on as many threads as the run's torch threads (the harness gives each run
    cores // jobs). With OpenBLAS's default (all cores) and torch loaded, BFGS's eigh of a 237 x 237
    Hessian (Pt7 on a 6x6x2 slab) took 0.6 s instead of 0.01-0.03 s on a busy 2-core machine.
    Ray's actors get one thread from Ray."""
    try:
        import torch
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn, which agox requires
        yield
        return
    with threadpool_limits(limits=max(1, torch.get_num_threads()), user_api="blas"):
        yield


def _count_relaxations(algorithm, recorder) -> None:
    """Start a new ``iteration`` of rows at each candidate AGOX's evaluator takes on (one local
    relaxation each), by wrapping the evaluator the algorithm builds."""
    make = algorithm._make_evaluator

    def make_evaluator(*args, **kwargs):
        evaluator = make(*args, **kwargs)
        evaluate_candidate = evaluator.evaluate_candidate

        def counted(candidate):
            if recorder.sample:
                recorder.next_iteration()
            return evaluate_candidate(candidate)

        evaluator.evaluate_candidate = counted
        return evaluator

    algorithm._make_evaluator = make_evaluator


def _stop_ray(ray_dir: str) -> None:
    """Shut down the Ray instance GOFEE started, and forget AGOX's pool of actors on it, so that
    the next GOFEE run in this process (a benchmark worker runs several) starts both anew."""
    try:
        import ray
        from agox.utils.ray import pool_startup

        ray.shutdown()
        pool_startup.ray_pool_instance = None
    except Exception as exc:  # never mask the run's own outcome
        log.warning("stopping Ray failed: %s", exc)
    shutil.rmtree(ray_dir, ignore_errors=True)


def _ray_cpus() -> int:
    """The Ray actors GOFEE gets: the largest of 1, 2, 5, 10 within the run's torch threads (the
    harness gives each run cores // jobs), so that AGOX's 10 candidates per iteration stay 10."""
    import torch

    threads = max(1, torch.get_num_threads())
    return max(n for n in (1, 2, 5, 10) if n <= threads)


def run_agox_random(system, *, seed: int, budget: int, out: Path, executor=None, trust_energy: bool = False) -> None:
    """AGOX's random structure search (``RandomSearchConfig`` defaults) until the budget is spent."""
    _run(
        "agox-random",
        system,
        seed=seed,
        budget=budget,
        out=out,
        config="RandomSearchConfig",
        executor=executor,
        trust_energy=trust_energy,
    )


def run_agox_basin_hopping(
    system, *, seed: int, budget: int, out: Path, executor=None, trust_energy: bool = False
) -> None:
    """AGOX's basin hopping (``BasinHoppingConfig`` defaults) until the budget is spent."""
    _run(
        "agox-basin-hopping",
        system,
        seed=seed,
        budget=budget,
        out=out,
        config="BasinHoppingConfig",
        executor=executor,
        trust_energy=trust_energy,
    )


def run_agox_gofee(system, *, seed: int, budget: int, out: Path, executor=None, trust_energy: bool = False) -> None:
    """AGOX's GOFEE (``GOFEEConfig`` defaults, on Ray actors) until the budget is spent."""
    _run(
        "agox-gofee",
        system,
        seed=seed,
        budget=budget,
        out=out,
        config="GOFEEConfig",
        parallel=True,
        executor=executor,
        trust_energy=trust_energy,
    )
