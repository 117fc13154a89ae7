"""``godiff zoo``: register, list, show, push, pull, match and fine-tune zoo models.

``godiff-zoo`` is the same group under its 0.1 name, kept as a console script (deprecated) for
the scripts that call it and the published model cards that name it.

Errors follow ``godiff``'s rules (:class:`godiff.cli.main.GodiffGroup`): one line on stderr and
the error's exit code (2 bad input, 3 not found, 4 integrity, 5 the Hub).
"""

from __future__ import annotations

from pathlib import Path

import click

from godiff import __version__
from godiff.cli.main import (
    GodiffGroup,
    dask_option,
    device_option,
    search_options,
    set_option,
    threads_option,
    trust_option,
)

__all__ = ["cli", "main"]


@click.group(
    cls=GodiffGroup,
    name="zoo",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--traceback", is_flag=True, help="Show the full Python traceback of an error.")
@click.version_option(__version__, "--version", prog_name="godiff zoo")
@click.pass_context
def cli(ctx: click.Context, traceback: bool) -> None:
    """Versioned godiff models: a local registry, the shipped zoo/ and the Hugging Face Hub.

    \b
    Examples:
      godiff zoo register runs/pt7 --name pt-islands-emt --version 1.0.0
      godiff zoo list
      godiff zoo show pt-islands-emt@1.0.0
      godiff zoo push pt-islands-emt@1.0.0 --repo myorg/pt-islands-emt
      godiff zoo push --all --org myorg
      godiff zoo pull myorg/pt-islands-emt@1.0.0
      godiff zoo versions myorg/pt-islands-emt

    The local registry lives in $GODIFF_ZOO (default ~/.cache/godiff/zoo). Hub commands use the
    standard Hugging Face login or HF_TOKEN, and HF_ENDPOINT if set.

    \b
    Exit codes: 0 success, 1 internal error, 2 bad input, 3 not found,
    4 integrity (corrupt file, digest mismatch, newer format), 5 Hub unreachable or refused
    """
    ctx.ensure_object(dict)


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name (lower-case letters, digits, '.', '_', '-').")
@click.option("--version", "version", required=True, help="Semantic version MAJOR.MINOR.PATCH.")
@click.option("--force", is_flag=True, help="Replace an existing version with different content.")
def register(run_dir, name, version, force):
    """Register the model of a godiff run directory as NAME@VERSION in the local registry."""
    from godiff.zoo.registry import Registry

    entry = Registry().add_run(run_dir, name=name, version=version, force=force)
    click.echo(f"registered {entry.ref} at {entry.path}")


@cli.command("list")
def list_models():
    """Local and shipped models: name, version, system, evaluations, best energy."""
    from godiff.zoo.registry import Registry

    entries = Registry().entries()
    if not entries:
        click.echo("no models registered (godiff zoo register RUN --name NAME --version 1.0.0)")
        return
    rows = [("model", "source", "system", "mobile", "energy", "evals", "best energy")]
    for e in entries:
        meta = e.metadata()
        training, system = meta.training, meta.system.system
        rows.append(
            (
                e.ref,
                e.source,
                str(system.get("name")),
                str(system.get("mobile")),
                str((training.energy or meta.system.energy).get("calculator")),
                str(training.evaluations),
                f"{training.best_energy:.4f}",
            )
        )
    _table(rows)


@cli.command()
@click.argument("ref", metavar="MODEL")
@click.option("--card", "with_card", is_flag=True, help="Print the whole model card too.")
def show(ref, with_card):
    """Metadata, lineage, files and digests of MODEL (NAME@VERSION, ORG/NAME@VERSION or a folder)."""
    from godiff.zoo import resolve
    from godiff.zoo.model import describe_files, read_folder

    folder = resolve(ref)
    meta = read_folder(folder).metadata  # every digest, the format version and the weights checked
    training, config, system = meta.training, meta.config, meta.system.system
    lines = [
        f"{training.ref}   ({folder})",
        f"system        {system.get('name')}: {system.get('mobile')} on {_template(system)}",
        f"energy        {(training.energy or meta.system.energy).get('calculator')}",
        f"system digest {meta.system.digest}",
        f"trained       {training.iterations} iterations, {training.evaluations} evaluations, "
        f"best energy {training.best_energy:.4f}",
        f"command       {training.command}",
        f"lineage       {training.parent or '-'} -> {training.ref}",
        f"format        {config.format_version} ({config.architecture}, {config.n_parameters} parameters)",
        "files (all digests verified, weights loaded):",
    ]
    lines += [f"  {name:<18} {size:>9} B  sha256 {digest}" for name, size, digest in describe_files(folder)]
    click.echo("\n".join(lines))
    if with_card:
        click.echo("\n" + (folder / "README.md").read_text())


@cli.command()
@click.argument("ref", metavar="[MODEL]", required=False)
@click.option("--repo", default=None, help="Hub repository id of MODEL, e.g. myorg/pt-islands-emt.")
@click.option("--all", "every", is_flag=True, help="Push every shipped model, each to ORG/NAME (needs --org).")
@click.option("--org", default=None, help="With --all: the Hub organization (or user) the models go under.")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--force", is_flag=True, help="Replace a version already on the Hub with different content.")
def push(ref, repo, every, org, private, force):
    """Upload MODEL to the Hub repo in one commit and tag it v<version>; with --all --org ORG,
    every shipped model, each version its own commit and tag, oldest first."""
    from godiff.errors import ConfigError
    from godiff.zoo import hub, resolve
    from godiff.zoo.format import verify_folder
    from godiff.zoo.model import folder_version

    if every:
        if ref is not None or repo is not None or org is None or force:
            raise ConfigError("push --all takes --org ORG and neither MODEL, --repo nor --force")
        from godiff.zoo.registry import Registry

        shipped = [(e.name, e.version, e.path) for e in Registry().shipped_entries()]
        for pushed, url in hub.push_all(shipped, org, private=private):
            click.echo(f"pushed {pushed}: {url}")
        return
    if ref is None or repo is None or org is not None:
        raise ConfigError("push: give MODEL and --repo ORG/NAME, or --all --org ORG")
    folder = resolve(ref)
    verify_folder(folder)
    version = folder_version(folder)
    url = hub.push(folder, repo, version, private=private, force=force)
    click.echo(f"pushed {repo}@{version} (tag v{version}): {url}")


@cli.command()
@click.argument("ref", metavar="ORG/NAME@VERSION")
def pull(ref):
    """Download a version from the Hub into the Hugging Face cache and verify every digest."""
    from godiff.zoo import is_hub_ref, resolve

    if not is_hub_ref(ref):
        from godiff.errors import ConfigError

        raise ConfigError(f"{ref!r}: expected a Hub reference ORG/NAME@VERSION")
    folder = resolve(ref)
    click.echo(f"pulled {ref} into {folder} (digests verified)")


@cli.command()
@click.argument("repo", metavar="ORG/NAME")
def versions(repo):
    """The versions (tags v<version>) of a Hub repo, oldest first."""
    from godiff.zoo import hub

    found = hub.versions(repo)
    click.echo("\n".join(found) if found else f"{repo} has no tagged versions")


@cli.command()
@click.argument("system")
@click.option("--top", type=int, default=10, show_default=True, help="How many models to show.")
def match(system, top):
    """Registered models ranked by closeness to SYSTEM, with each term of the distance."""
    from godiff.system import load_system
    from godiff.zoo.registry import match as rank
    from godiff.zoo.similarity import WEIGHTS

    matches = rank(load_system(system))
    if not matches:
        click.echo("no models registered: run a search from scratch ('godiff run SYSTEM')")
        return
    terms = list(WEIGHTS)
    rows = [("rank", "model", "distance", *terms, "related")]
    for i, m in enumerate(matches[:top], start=1):
        rows.append(
            (
                str(i),
                m.entry.ref,
                f"{m.distance.total:.3f}",
                *(f"{m.distance.terms[t]:.2f}" for t in terms),
                "yes" if m.related else "no",
            )
        )
    _table(rows)


@cli.command()
@click.argument("system")
@click.option(
    "--from",
    "start",
    metavar="MODEL",
    default=None,
    help="Start from this model (NAME@VERSION, ORG/NAME@VERSION or a folder); default: the closest related one.",
)
@click.option("--name", default=None, help="Register the result under this name (default: <system>-from-<parent>).")
@click.option("--version", "version", default="1.0.0", show_default=True, help="Version to register the result as.")
@click.option("--force", is_flag=True, help="Replace an existing version with different content.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory.")
@search_options
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@set_option
@trust_option
@threads_option
@dask_option
@device_option
@click.pass_context
def finetune(
    ctx, system, start, name, version, force, out, quiet, settings, trust_energy, threads, dask, device, **options
):
    """Search SYSTEM starting from the closest registered model (or --from), then register the result.

    The same search as 'godiff run SYSTEM --from MODEL', with the same live progress.
    """
    from godiff.cli.main import _command_line, _drive, _quiet_logging, search_inputs
    from godiff.cluster import dask_executor
    from godiff.threads import limit_threads
    from godiff.zoo.transfer import register_result, start_search

    _quiet_logging(ctx, quiet)
    system_obj, options = search_inputs(system, trust_energy, options, settings)
    limit_threads(threads)

    with dask_executor(dask) as executor:
        search = start_search(
            system_obj,
            start=start,
            out=out,
            command=_command_line(ctx),
            executor=executor,
            device=device,
            trust_energy=trust_energy,
            **options,
        )
        result = _drive(search, quiet=quiet, resumed=False)
    entry = register_result(result, search.system, search.parent, name=name, version=version, force=force)
    click.echo(f"registered      {entry.ref} (parent {entry.metadata().training.parent})")


@cli.command()
@click.argument("refs", metavar="[MODEL]...", nargs=-1)
@click.option(
    "--write",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write cards/<name>-<version>.md into this folder instead of printing.",
)
def card(refs, out_dir):
    """Generate the model card of each MODEL (default: every shipped model) from its metadata."""
    from godiff.zoo import resolve
    from godiff.zoo.card import card_of_folder
    from godiff.zoo.registry import Registry

    folders = [resolve(r) for r in refs] or [e.path for e in Registry().shipped_entries()]
    for folder in folders:
        name, text = card_of_folder(folder)
        if out_dir is None:
            click.echo(text, nl=False)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{name}.md").write_text(text)
            click.echo(f"wrote {out_dir / (name + '.md')}")


def _template(system: dict) -> str:
    t = system.get("template")
    if not t:
        return "no template (cluster)"
    return f"structure file {t['file']}" if "file" in t else f"{t.get('builder')} {t.get('symbol', '')}".strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _table(rows: list[tuple]) -> None:
    """Print ``rows`` (the first is the header) as a rich table on stdout; never wrapped or cut
    when stdout is not a terminal (a pipe keeps every column)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, name in enumerate(rows[0]):
        table.add_column(name, justify="right" if all(_is_number(r[i]) for r in rows[1:]) else "left")
    for row in rows[1:]:
        table.add_row(*row)
    stream = click.get_text_stream("stdout")
    console = Console(file=stream, highlight=False, width=None if stream.isatty() else 10_000)
    console.print(table)


def main(args=None) -> int:
    """Entry point of the ``godiff-zoo`` console script: ``godiff zoo`` under its 0.1 name
    (deprecated)."""
    return cli.main(args=args, prog_name="godiff-zoo")
