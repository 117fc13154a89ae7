"""``godiff-zoo``: the model-zoo command line (a placeholder until :mod:`godiff.zoo` exists).

Every invocation, with or without a subcommand, says that the zoo is not built yet and exits
with 1; ``--help`` and ``--version`` work, so the entry point is installed and discoverable.
"""

from __future__ import annotations

import click

from godiff import __version__

__all__ = ["cli", "main"]

_MESSAGE = "godiff-zoo: error: the model zoo is not built yet in this version of godiff"


def _not_built(**_ignored) -> None:
    click.echo(_MESSAGE, err=True)
    raise click.exceptions.Exit(1)


class _StubGroup(click.Group):
    """Any subcommand name resolves to a command that reports the zoo as not built."""

    def get_command(self, ctx, cmd_name):
        return click.Command(
            cmd_name,
            callback=_not_built,
            params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
            context_settings={"ignore_unknown_options": True},
            help="Not built yet.",
        )

    def list_commands(self, ctx):
        return []


@click.group(
    cls=_StubGroup,
    name="godiff-zoo",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="godiff-zoo")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage the model zoo (register, list, push, pull, match). Not built yet."""
    if ctx.invoked_subcommand is None:
        _not_built()


def main(args=None) -> int:
    """Entry point of the ``godiff-zoo`` console script."""
    return cli.main(args=args, prog_name="godiff-zoo")
