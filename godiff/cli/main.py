"""``godiff``: the root command and its subcommands (run, resume, report, systems).

Errors: every command runs inside :meth:`GodiffGroup.invoke`, which turns a
:class:`godiff.errors.GodiffError` into ``godiff: error: <message>`` on stderr and the error's
``exit_code``, and any other exception into a one-line internal error (exit 1); ``--traceback``
re-raises instead, so Python prints the stack. click's usage errors keep click's exit code 2.
Ctrl-C exits with 130 (a search says how to resume it).

Heavy imports (torch through :mod:`godiff.search`, matplotlib) happen inside the commands, so
``godiff --help`` and ``godiff systems`` stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import click

from godiff import __version__
from godiff.cli.progress import LogHandler, Progress, choose_mode, format_energy
from godiff.errors import ConfigError, DiskFullError, GodiffError, one_line

__all__ = ["cli", "main"]

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process ended by it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as for `yes | head`
MAX_THREADS = 1024  # --threads: torch crashes (exit 139) far above any machine's cores


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``kill``) arrived: stopped like Ctrl-C, exit 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM unwinds it like Ctrl-C, so the same clean-up runs (a search
    prints how to resume it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type when it has none)."""
    return one_line(exc) or type(exc).__name__


def _show_traceback(wanted: bool) -> None:
    """``--traceback``: the stack of the error being handled on stderr; the exit code is unchanged."""
    if wanted:
        import traceback

        traceback.print_exc(file=sys.stderr)


def _fail(message: str, code: int):
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


class OneLineError(click.ClickException):
    """A click usage error (a bad option or argument) shown as one line, not click's three."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


def _usage_line(root: str, exc: click.UsageError) -> OneLineError:
    where = exc.ctx.command_path if exc.ctx is not None else root
    return OneLineError(f"{root}: error: {_one_line(exc.format_message())} (see '{where} --help')", exc.exit_code)


def _chain(ctx: click.Context):
    """``ctx`` and its parents (``godiff --traceback zoo ...`` sets the root's flag)."""
    while ctx is not None:
        yield ctx
        ctx = ctx.parent


class GodiffGroup(click.Group):
    """The root group: records the command line and maps exceptions to one line + exit code."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            name = f"{parent.command_path} {info_name}" if parent is not None else info_name or self.name
            raise _usage_line(name, exc) from None

    def main(self, args=None, prog_name=None, **extra):
        argv = list(args) if args is not None else sys.argv[1:]
        obj = extra.pop("obj", None) or {}
        obj.setdefault("argv", argv)
        return super().main(args=argv, prog_name=prog_name or self.name, obj=obj, **extra)

    def invoke(self, ctx: click.Context):
        show_traceback = any(c.params.get("traceback") for c in _chain(ctx))
        logger = logging.getLogger("godiff")
        saved = (logger.level, list(logger.handlers))
        # in-process callers (tests, notebooks) get their logging configuration back afterwards
        ctx.call_on_close(lambda: (logger.setLevel(saved[0]), setattr(logger, "handlers", saved[1])))
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except click.UsageError as exc:
            raise _usage_line(ctx.command_path, exc) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except GodiffError as exc:
            _show_traceback(show_traceback)
            _fail(f"{ctx.command_path}: error: {_one_line(exc)}", exc.exit_code)
        except Terminated:
            _fail(f"\n{ctx.command_path}: terminated (SIGTERM)", EXIT_TERMINATED)
        except KeyboardInterrupt:
            _fail(f"\n{ctx.command_path}: interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:  # the reader went away (godiff systems | head): no error of the user's
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:
            _show_traceback(show_traceback)
            _fail(
                f"{ctx.command_path}: internal error: {type(exc).__name__}: {_one_line(exc)}"
                + ("" if show_traceback else " (run with --traceback for details)"),
                1,
            )


def _setup_logging(verbose: int) -> None:
    """One handler on the ``godiff`` logger, writing to stderr (set up by the CLI only)."""
    logger = logging.getLogger("godiff")
    for handler in list(logger.handlers):
        if isinstance(handler, LogHandler):
            logger.removeHandler(handler)
    handler = LogHandler()
    if verbose >= 2:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(logging.Formatter("godiff: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))


def _quiet_logging(ctx: click.Context, quiet: bool) -> None:
    """``--quiet`` without ``-v``: only errors are logged."""
    if quiet and not ctx.find_root().params.get("verbose"):
        logging.getLogger("godiff").setLevel(logging.ERROR)


class _Root(GodiffGroup):
    """``godiff``: its own commands, and ``godiff zoo`` (:mod:`godiff.cli.zoo`), imported only when
    asked for so that ``godiff --help`` stays fast."""

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), "zoo"])

    def get_command(self, ctx, name):
        if name == "zoo":
            from godiff.cli.zoo import cli as zoo

            return zoo
        return super().get_command(ctx, name)


@click.group(
    cls=_Root,
    name="godiff",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--traceback", is_flag=True, help="Show the full Python traceback of an error.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.version_option(__version__, "--version", prog_name="godiff")
@click.pass_context
def cli(ctx: click.Context, traceback: bool, verbose: int) -> None:
    """Global structure optimization with a self-trained diffusion model (GO-Diff).

    \b
    Examples:
      godiff systems
      godiff run pt7-pt111                        # today's defaults: the adaptive search, 1,000 evaluations at most
      godiff run my-system.yaml --out runs/mine --budget 500 --set max_samples=16
      godiff run my-system.yaml --from pt-islands-emt@1.0.0 --dask local:4
      godiff resume runs/mine
      godiff report runs/mine

    \b
    Exit codes:
      0    success
      1    a failed run or an internal error
      2    bad input: a system file, an option, a run directory in the way
      3    not found: a run directory, a system, a model
      4    integrity: a corrupt checkpoint or database, a digest mismatch, a format too new
      5    the Hugging Face Hub: unreachable, or it refused the request
      130  interrupted (Ctrl-C); a run can be resumed with 'godiff resume DIR'
      143  terminated (SIGTERM, e.g. a scheduler's time limit); resume it the same way
    """
    ctx.ensure_object(dict)
    _setup_logging(verbose)


# -- run / resume ------------------------------------------------------------------------------
def _command_line(ctx: click.Context) -> str:
    argv = (ctx.find_root().obj or {}).get("argv")
    if argv is None:
        argv = sys.argv[1:]
    return f"{ctx.find_root().info_name} " + shlex.join(str(a) for a in argv)


def _drive(search, *, quiet: bool, resumed: bool):
    """Run a search with a progress display, handle Ctrl-C, print the summary; returns the result."""
    run_dir = search.run_dir.path
    config = search.config
    mode = choose_mode(quiet=quiet)
    done = search.next_iteration
    if not quiet:
        if not resumed:
            click.echo(f"godiff: run directory {run_dir}", err=True)
        elif search.spent() is None:
            click.echo(
                f"godiff: resuming {run_dir} at iteration {done + 1} ({search.n_evaluations} evaluations done)",
                err=True,
            )
        else:
            click.echo(
                f"godiff: nothing to run in {run_dir}: {search.stop_message(search.spent())}; "
                f"extend it with --budget, --patience or --iterations",
                err=True,
            )
    progress = Progress(
        total_iterations=config.iterations,
        samples=config.samples,
        mode=mode,
        budget=config.budget,
        n_evaluations=search.n_evaluations,
        best_energy=search.best_energy,
        n_failed=sum(int(r.get("n_failed") or 0) for r in search.run_dir.read_log()) if resumed else 0,
        unit=search.system.energy_unit(),
    )
    try:
        with progress:
            result = search.run(progress=progress)
    except Exception as exc:
        if not disk_full(exc):
            raise
        raise DiskFullError(
            f"no space left on the device of {run_dir} ({_one_line(exc)}); every evaluation "
            f"written before is kept: free some space, then continue with: "
            f"godiff resume {shlex.quote(str(run_dir))}"
        ) from exc
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        click.echo(
            f"\ngodiff: {what}; every finished evaluation is saved in {run_dir}\n"
            f"continue with: godiff resume {shlex.quote(str(run_dir))}",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    _print_summary(search, result)
    return result


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or quota, however the writer reported it
    (an ``OSError``, SQLite's "database or disk is full", safetensors' "os error 28")."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "database or disk is full" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _print_summary(search, result) -> None:
    n_failed = sum(int(r.get("n_failed") or 0) for r in result.history)
    unit = search.system.energy_unit()
    line = format_energy(result.best_energy, unit)
    ref = search.system.reference
    if ref and ref.get("energy") is not None and math.isfinite(result.best_energy):
        line += f"  (reference {ref['energy']:.6f} {unit}, gap {result.best_energy - ref['energy']:+.6f} {unit})"
    best_xyz = Path(result.run_dir) / "best.xyz"
    lines = [
        f"best energy     {line}",
        f"evaluations     {result.n_evaluations}" + (f" ({n_failed} failed)" if n_failed else ""),
        f"iterations      {len(result.history)}"
        + (f" of {search.config.iterations}" if len(result.history) <= search.config.iterations else ""),
        f"stopped         {search.stop_message()}",
        f"run directory   {result.run_dir}",
        f"best structure  {best_xyz if best_xyz.exists() else '- (no successful evaluation)'}",
    ]
    click.echo("\n".join(lines))


#: The search settings ``run`` and ``godiff zoo finetune`` share: (option, type, help). Each is a
#: field of godiff.SearchConfig or godiff.SamplerConfig (``sampling-steps``: ``steps``).
SEARCH_OPTIONS = (
    ("--budget", int, "Energy evaluations in all; the run stops there (default 1000)."),
    ("--patience", int, "Stop once the best energy has not improved (by more than --improvement) for N evaluations."),
    (
        "--improvement",
        float,
        "The fall of the best energy that counts as an improvement for --patience and --reheat "
        "(the system's energy unit; default: --temperature-end; 0: any new best).",
    ),
    ("--iterations", int, "Most self-sampling iterations (the paper's fixed schedule: exactly these)."),
    ("--samples", int, "A fixed batch of N structures per iteration (default: adaptive, 16 to 32 by ESS)."),
    ("--first-samples", int, "Structures of the first iteration (default: --samples or 16; from a zoo model: 32)."),
    ("--min-samples", int, "The adaptive batch's round and smallest size (default 16)."),
    ("--max-samples", int, "The adaptive batch's largest size (default 32)."),
    ("--target-ess", float, "The ESS at which an adaptive batch stops (default 8)."),
    (
        "--polish",
        int,
        "Evaluations after each adaptive round on the best structure moved along its forces (default 3; 0: off).",
    ),
    ("--schedule", click.Choice(["adaptive", "exponential"]), "Temperature schedule (default adaptive)."),
    ("--train-steps", int, "Most optimizer steps per iteration (stopped earlier once gradients stop agreeing)."),
    ("--sampling-steps", int, "Reverse-diffusion steps per sample."),
    ("--batch-size", int, "Buffer structures per training step."),
    ("--buffer-size", int, "Replay-buffer capacity."),
    ("--seed", int, "Seed of every random stream of the run."),
    ("--workers", int, "Parallel energy-evaluation processes."),
    ("--guidance", float, "Force-field guidance strength (Å²/eV at the Pt bond, scaled to the system's; 0: off)."),
    ("--relax-steps", int, "Steps of relaxation in the learned force field."),
    (
        "--network-share",
        float,
        "Candidates per evaluation sized so the network's seconds per evaluation stay within this multiple "
        "of the calculator's (default 1; between 8 and 32 candidates; --set min_oversample=32: always 32).",
    ),
    ("--temperature-start", float, "First temperature (eV; default: the first batch's spread; from a zoo model: 3)."),
    ("--temperature-end", float, "Last temperature (eV)."),
    ("--reheat", int, "Heat again when stalled this many evaluations at the last temperature (default 150; 0: never)."),
)


def search_options(command):
    """The :data:`SEARCH_OPTIONS`, each passed to the command under its Python name (``None``: unset)."""
    for flag, kind, text in reversed(SEARCH_OPTIONS):
        metavar = "EV" if flag.startswith(("--temperature", "--improvement")) else None
        command = click.option(flag, type=kind, default=None, metavar=metavar, help=text)(command)
    return command


def _checked_option(flag: str, metavar: str, check: str, text: str):
    """An option whose value ``check`` (``"module:function"``, imported only when the option is
    given) validates as the command line is read, so a bad value fails before anything starts."""

    def callback(ctx, param, value):
        if value is not None:
            import importlib

            module, _, function = check.partition(":")
            getattr(importlib.import_module(module), function)(value)
        return value

    return click.option(flag, metavar=metavar, default=None, callback=callback, help=text)


#: ``--dask ADDRESS``: evaluate on a Dask cluster (:mod:`godiff.cluster`).
dask_option = _checked_option(
    "--dask",
    "ADDRESS",
    "godiff.cluster:parse_address",
    "Evaluate energies on Dask: local:N (N worker processes here) or a scheduler address such as "
    "tcp://head:8786 (pip install 'godiff[dask]').",
)

#: ``--device cpu|cuda|auto``: where the network samples and trains (:mod:`godiff.device`).
device_option = _checked_option(
    "--device",
    "cpu|cuda|auto",
    "godiff.device:resolve_device",
    "Where the network samples and trains (default cpu; auto: a GPU when there is one). "
    "Evaluations run wherever --workers or --dask send them.",
)


def set_option(command):
    """``--set KEY=VALUE``: any search setting, named as in ``godiff.SearchConfig`` (the one way to set
    anything; the named flags are shorthands for the common ones)."""
    return click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="KEY=VALUE",
        help="Any search setting, named as in godiff.SearchConfig and godiff.SamplerConfig, e.g. --set max_samples=16 "
        "--set schedule=exponential (repeatable; a flag given too must agree).",
    )(command)


def with_settings(options: dict, settings) -> dict:
    """The named flags of a command merged with its ``--set`` settings; one given both ways must agree."""
    merged = dict(_parse_settings(settings)) if settings else {}
    for key, value in options.items():
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise ConfigError(f"--set {key}={merged[key]} and --{key.replace('_', '-')} {value}: give one")
        merged[key] = value
    return merged


def search_inputs(system: str, trust_energy: bool, options: dict, settings) -> tuple:
    """The system and settings of a command that searches (``run``, ``godiff zoo finetune``), checked
    before torch is imported, so a bad or untrusted file fails fast (the Evaluator checks trust again:
    it is the one gate every evaluation passes)."""
    from godiff.system import load_system
    from godiff.trust import check_trusted

    system_obj = load_system(system)
    check_trusted(system_obj.energy, trust_energy=trust_energy)
    return system_obj, with_settings(options, settings)


def trust_option(command):
    """``--trust-energy``: what a shared file's energy spec may not do without it (:mod:`godiff.trust`)."""
    return click.option(
        "--trust-energy",
        "trust_energy",
        is_flag=True,
        help="Trust the energy spec of the system file (or run.json): load a pickled model (a MACE model file) and "
        "honour a program, a path or a directory it names (command, profile, directory, label ...). Without it "
        "programs come from ASE's own configuration and every file stays in the run's scratch/. Never read "
        "from a file; resume asks for it again.",
    )(command)


def threads_option(command):
    """``--threads N``: torch and BLAS threads of this process (:func:`godiff.threads.limit_threads`)."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1, max=MAX_THREADS),
        default=None,
        help="torch and BLAS threads (default: one per core; give each of several processes on one machine its share).",
    )(command)


@cli.command()
@click.argument("system")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (new or empty). Default: runs/<system>-<YYYYmmdd-HHMMSS>.",
)
@search_options
@click.option(
    "--preset",
    type=click.Choice(["paper"]),
    default=None,
    help="Named settings under the options: paper = the published schedule, 20 iterations x 128 "
    "samples, exponential from 5 eV.",
)
@click.option(
    "--from",
    "start_from",
    metavar="MODEL",
    default=None,
    help="Start from a zoo model: NAME@VERSION, ORG/NAME@VERSION on the Hub, or a model folder "
    "(the search of a scratch run with a first batch of 32 and candidates ranked by predicted energy, "
    "as godiff zoo finetune; options given here override it).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@set_option
@trust_option
@threads_option
@dask_option
@device_option
@click.pass_context
def run(ctx, system, out, preset, start_from, quiet, settings, trust_energy, threads, dask, device, **options):
    """Search the global minimum of SYSTEM (a shipped system's name or a YAML file).

    Unset options keep their defaults (see 'godiff.SearchConfig'). Everything is written to the
    run directory as it happens; an interrupted run continues with 'godiff resume DIR'.
    """
    _quiet_logging(ctx, quiet)
    system_obj, options = search_inputs(system, trust_energy, options, settings)
    from godiff.cluster import dask_executor
    from godiff.search import Search
    from godiff.threads import limit_threads

    limit_threads(threads)
    with dask_executor(dask) as executor:
        if start_from is not None and preset is not None:
            raise ConfigError(
                "--preset and --from: a search from a zoo model has its own settings (the transfer preset)"
            )
        if start_from is not None:  # the one search from a zoo model: the transfer preset, options on top
            from godiff.zoo.transfer import start_search

            search = start_search(
                system_obj,
                start=start_from,
                out=out,
                command=_command_line(ctx),
                executor=executor,
                device=device,
                trust_energy=trust_energy,
                **options,
            )
        else:
            from godiff.search import SearchConfig

            config = SearchConfig.preset(preset) if preset else None
            search = Search(
                system_obj,
                config=config,
                out=out,
                command=_command_line(ctx),
                executor=executor,
                device=device,
                trust_energy=trust_energy,
                **options,
            )
        _drive(search, quiet=quiet, resumed=False)


@cli.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--workers", type=int, default=None, help="Parallel energy-evaluation processes.")
@click.option("--iterations", type=int, default=None, help="Extend the run to this many iterations in all.")
@click.option("--budget", type=int, default=None, help="Extend the run to this many evaluations in all.")
@click.option(
    "--patience",
    type=int,
    default=None,
    help="Stop once the best energy has not improved (by more than the run's end temperature) for N evaluations.",
)
@click.option(
    "--from-checkpoint",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Restore checkpoints/iter-N instead of the last one, e.g. when the "
    "last is corrupt; evaluations made after it are reused, not paid again.",
)
@click.option(
    "--rebuild-database",
    is_flag=True,
    help="Accept a lost or short evaluations.db: evaluate the saved structures (samples/) of the "
    "finished iterations again.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@trust_option
@threads_option
@dask_option
@device_option
@click.pass_context
def resume(
    ctx,
    run_dir,
    workers,
    iterations,
    budget,
    patience,
    from_checkpoint,
    rebuild_database,
    quiet,
    trust_energy,
    threads,
    dask,
    device,
):
    """Continue the run in DIR from its last checkpoint.

    The evaluations of an unfinished iteration are kept; only the missing ones are computed.
    Nothing is written until the run's lock, the checkpoint's digests and the database have
    been checked.
    """
    from godiff.cluster import dask_executor
    from godiff.search import Search
    from godiff.threads import limit_threads

    _quiet_logging(ctx, quiet)
    limit_threads(threads)
    with dask_executor(dask) as executor:
        search = Search.resume(
            run_dir,
            workers=workers,
            iterations=iterations,
            budget=budget,
            patience=patience,
            executor=executor,
            device=device,
            trust_energy=trust_energy,
            from_checkpoint=from_checkpoint,
            rebuild_database=rebuild_database,
        )
        _drive(search, quiet=quiet, resumed=True)


# -- report --------------------------------------------------------------------------------------
@cli.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR_FOR_PNGS",
    help="Where to write the figures. Default: DIR/report.",
)
def report(run_dir, out):
    """Summarize the run in DIR (finished or still running) and plot it.

    Writes best_vs_evaluations.png and energy_histogram.png.
    """
    from godiff.report import plot, summarize

    click.echo(summarize(run_dir))
    if out is None and not os.access(run_dir, os.W_OK):  # a run read from a read-only place is still reported
        click.echo(f"godiff: figures not written: {run_dir} is read-only; give --out DIR for them", err=True)
        return
    for path in plot(run_dir, out if out is not None else Path(run_dir) / "report"):
        click.echo(f"wrote {path}")


# -- bench ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("system")
@click.option(
    "--methods",
    default="godiff,godiff-ffg",
    show_default=True,
    help="Comma-separated methods (see godiff.bench.methods).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=8, show_default=True, help="Seeds 0..N-1.")
@click.option(
    "--budget", type=click.IntRange(min=1), default=2560, show_default=True, help="Energy evaluations per run."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Benchmark directory (re-run to resume).")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=1024),
    default=1,
    show_default=True,
    help="Runs in parallel (cores are split between them).",
)
@click.option(
    "--from",
    "start",
    metavar="MODEL",
    default=None,
    help="Zoo model that godiff-transfer starts from (default: the closest related registered one).",
)
@click.option(
    "--stop-at-success",
    is_flag=True,
    help="End each godiff run once it has both succeeded and evaluated an energy within tolerance of the "
    "reference (both figures unchanged, the rest of the budget saved; best energies are then those "
    "of the shortened runs).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A search setting for every godiff method, e.g. --set temperature_start=3 (repeatable; "
    "names as in godiff.SearchConfig and godiff.SamplerConfig).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=MAX_THREADS),
    default=None,
    help="torch and BLAS threads of each run (default: cores // jobs; lower it when other work shares the machine).",
)
@trust_option
@click.option(
    "--beside",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Show the methods of another benchmark directory of this system in the table and plot too, "
    "at their own budget (repeatable), e.g. GOFEE's shorter runs.",
)
@dask_option
def bench(
    system, methods, seeds, budget, out, jobs, start, stop_at_success, settings, threads, trust_energy, beside, dask
):
    """Run METHODS x SEEDS on SYSTEM with one budget; write results.json, table.md and a plot.

    Every method spends its evaluations through the same counting evaluator; success is an
    evaluated structure that relaxes (BFGS, fmax 0.05, not counted) to within the system's
    reference tolerance. Re-running the same command skips finished (method, seed) runs.
    """
    from godiff.bench.harness import run_benchmark
    from godiff.system import load_system

    sys_obj = load_system(system)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise ConfigError("--methods: no method given (e.g. --methods godiff-ffg,rss)")
    overrides = _parse_settings(settings)

    def progress(record):
        hit = record["evaluations_to_success"]
        click.echo(
            f"{record['method']} seed {record['seed']}: "
            f"{'success after ' + str(hit) + ' evaluations' if hit else 'no success'}, "
            f"best {record['best_energy']:.4f} {sys_obj.energy_unit()}, {record['wall_seconds']:.0f} s",
            err=True,
        )

    run_benchmark(
        sys_obj,
        methods=names,
        seeds=seeds,
        budget=budget,
        out=out,
        jobs=jobs,
        progress=progress,
        start=start,
        stop_at_success=stop_at_success,
        overrides=overrides or None,
        threads=threads,
        dask=dask,
        beside=beside,
        trust_energy=trust_energy,
    )
    click.echo((Path(out) / "table.md").read_text())


def _parse_settings(settings) -> dict:
    """``("temperature_start=3", ...)`` -> ``{"temperature_start": 3}``, checked against SearchConfig."""
    import json

    from godiff.search import SearchConfig

    overrides = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set temperature_start=3")
        try:
            overrides[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:  # a word: schedule=exponential
            overrides[key.strip().replace("-", "_")] = value.strip()
    try:
        SearchConfig().with_overrides(**overrides)  # an unknown or invalid setting fails here, in one line
    except TypeError as exc:
        raise ConfigError(f"--set: {exc}") from None
    return overrides


@cli.command("bench-speed")
@click.argument("target", metavar="SYSTEM_OR_RUN")
@click.option(
    "--samples",
    type=click.IntRange(min=1, max=100000),
    default=128,
    show_default=True,
    help="Structures per forward pass and per draw.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1, max=1000),
    default=5,
    show_default=True,
    help="Repeats per figure (the median is shown).",
)
@threads_option
@trust_option
@click.option(
    "--sampling-steps", type=click.IntRange(min=1), default=None, help="Measure with this many sampling steps."
)
@click.option(
    "--evaluations",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Single points timed with the system's energy function (0: skip).",
)
@click.option(
    "--steps-sweep",
    default=None,
    metavar="N,N,...",
    help="Also measure sample energies against sampling steps (needs a run directory).",
)
@click.option(
    "--draws",
    type=click.IntRange(min=1, max=1000),
    default=None,
    help="Also evaluate N draws of 16 made as the run's iterations make them, under --set (needs a run directory).",
)
@set_option
def bench_speed(
    target, samples, repeats, threads, trust_energy, sampling_steps, steps_sweep, draws, evaluations, settings
):
    """Print the cost of the network, of sampling and of training for SYSTEM (untrained model) or
    for the last checkpoint of a run directory, and for a run directory the network's seconds per
    evaluation of that run; medians of several repeats. Writes nothing.

    With --set (or --sampling-steps) it times the same model under other settings, e.g. a run's
    network per evaluation as godiff before 0.3.0 drew its candidates:
    godiff bench-speed RUN_DIR --set sampling_steps=40 --set relax_keep=1"""
    import tempfile

    import torch

    from godiff.bench.speed import (
        draw_quality,
        evaluation_costs,
        forward_costs,
        iteration_costs,
        network_per_evaluation,
        spent_per_evaluation,
        time_with_settings,
    )
    from godiff.bench.speed import (
        steps_sweep as sweep,
    )
    from godiff.search import Search
    from godiff.threads import limit_threads

    limit_threads(threads)
    chosen = with_settings({"sampling_steps": sampling_steps}, settings)
    if (Path(target) / "run.json").exists():
        if any(key.startswith("score.") for key in chosen):
            raise click.UsageError("--set score.*: a run's network is its own; time another architecture on a system")
        search = Search.resume(target, read_only=True, trust_energy=trust_energy)
        tmp = None
    else:  # a system: its untrained network built with the settings (an architecture included)
        tmp = tempfile.TemporaryDirectory()
        search = Search(target, out=Path(tmp.name) / "run", trust_energy=trust_energy, **chosen)
    time_with_settings(search, chosen)
    click.echo(f"{search.system.name}: {search.model!r}; torch threads {torch.get_num_threads()}")
    f = forward_costs(search, samples=samples, repeats=repeats)
    click.echo(
        f"forward pass, {samples} samples: template cached {f['forward_cached_s'] * 1e3:.1f} ms, "
        f"recomputed {f['forward_plain_s'] * 1e3:.1f} ms (template context alone {f['template_context_s'] * 1e3:.1f} ms)"
    )
    it = iteration_costs(search, samples=samples, repeats=max(1, repeats // 2))
    cfg = search.config
    click.echo(
        f"sampling {samples} structures ({cfg.sampler.steps} steps, {cfg.sampler.relax_steps} relaxation steps, "
        f"{cfg.sampler.oversample:g}x oversampled): {it['sampling_s']:.2f} s"
    )
    click.echo(
        f"training: {it['train_step_s'] * 1e3:.1f} ms per step, {it['training_s']:.1f} s for {cfg.train_steps} steps"
    )
    spent = (
        spent_per_evaluation(search.run_dir.read_log(), train_steps=cfg.train_steps, cost=search.cost)
        if tmp is None
        else None
    )
    if spent is not None:
        net = network_per_evaluation(it, samples=samples, spent=spent)
        drawn = (
            f"{spent['candidates']:.1f} candidates"
            if spent.get("candidates") is not None
            else f"{spent['draws']:.2f} draws"
        )
        click.echo(
            f"network per evaluation of this run: {net['network_s']:.3f} s (sampling {net['sampling_s']:.3f} s at "
            f"its {drawn} per evaluation, training {net['training_s']:.3f} s at its "
            f"{spent['train_steps']:.2f} steps per evaluation, over {spent['evaluations']} evaluations)"
        )
    if evaluations:
        ev = evaluation_costs(search, evaluations=evaluations)
        click.echo(
            f"energy evaluation ({search.system.energy['calculator']}): {ev['evaluation_s']:.3f} s per single point "
            f"(median of {ev['evaluations']}, the first call excluded)"
        )
    if steps_sweep:
        if tmp is not None:
            raise click.UsageError("--steps-sweep needs a run directory with a trained model")
        for row in sweep(search, [int(v) for v in steps_sweep.split(",")], samples=samples):
            unit = search.system.energy_unit()
            click.echo(
                f"steps {row['steps']:4d}: sampling {row['seconds']:.2f} s, median energy {row['median_energy']:.3f} {unit}, "
                f"lowest {row['lowest_energy']:.3f} {unit} ({row['n']} evaluated)"
            )
    if draws:
        if tmp is not None:
            raise click.UsageError("--draws needs a run directory with a trained model")
        q = draw_quality(search, draws)
        unit = search.system.energy_unit()
        click.echo(
            f"{draws} draws of 16 at {search.oversample:g} candidates each: median energy {q['median_energy']:.3f} "
            f"{unit}, each draw's lowest {q['mean_round_lowest']:.3f} on average, lowest {q['lowest_energy']:.3f} "
            f"{unit}, {q['draw_s']:.2f} s a draw ({q['n']} evaluated)"
        )
    if tmp is not None:
        tmp.cleanup()


# -- systems -------------------------------------------------------------------------------------
def _template_phrase(system) -> str:
    t = system.template
    if t is None:
        return f"none, {system.box.kind} box"
    if "file" in t:
        what = f"file {Path(t['file']).name}"
    elif t.get("builder") == "surface":
        what = f"surface {t['symbol']}({''.join(str(i) for i in t['indices'])}) {t['layers']} layers"
    else:
        what = f"{t['builder']} {t['symbol']} {'x'.join(str(n) for n in t['size'])}"
    return f"{what}, {system.n_template} atoms"


@cli.command()
def systems():
    """List the shipped systems (use a name as 'godiff run NAME')."""
    from godiff.system import load_system, shipped

    header = ("NAME", "MOBILE", "TEMPLATE", "ENERGY", "REFERENCE", "DESCRIPTION")
    rows = []
    for name in shipped.list_systems():
        try:
            description = shipped.system_description(name)
            s = load_system(name)
        except GodiffError as exc:
            rows.append((name, "-", "-", "-", "-", f"cannot load: {_one_line(exc)}"))
            continue
        mobile = "".join(f"{el}{n if n != 1 else ''}" for el, n in s.mobile.items())
        ref = s.reference
        rows.append(
            (
                name,
                f"{s.n_mobile} {mobile}",
                _template_phrase(s),
                s.energy["calculator"],
                f"{ref['energy']:.6f} {s.energy_unit()}" if ref else "-",
                description,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def main(args=None) -> int:
    """Entry point of the ``godiff`` console script."""
    return cli.main(args=args)


if __name__ == "__main__":  # pragma: no cover
    main()
