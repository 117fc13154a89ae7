"""The command line: ``godiff`` (search, resume, report, systems) and ``godiff zoo``.

Only this package writes to the terminal. It holds no logic the library lacks: each command
parses options, calls the library, renders its progress events (:mod:`godiff.cli.progress`)
and turns a :class:`godiff.errors.GodiffError` into one line and the error's exit code.
"""

__all__ = ["main"]


def main(*args, **kwargs):
    """Entry point of ``godiff`` (see :mod:`godiff.cli.main`)."""
    from godiff.cli.main import main as _main

    return _main(*args, **kwargs)
