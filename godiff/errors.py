"""The one exception tree of godiff.

Every error a user can cause is a :class:`GodiffError`. Each class also subclasses the
builtin that matches its meaning (so ``except FileNotFoundError`` keeps working), and
carries the exit code that the command line returns for it:

====  ==============================================================
code  meaning
====  ==============================================================
1     anything else (a failed run, an internal error)
2     bad input: a system file, an option, a run directory in the way
3     not found: a run directory, a model, a version
4     integrity: a corrupt checkpoint, a digest mismatch, a format too new
5     the Hub: unreachable, or it refused the request (e.g. no or a bad token)
====  ==============================================================
"""

from __future__ import annotations

import reprlib

__all__ = [
    "one_line",
    "GodiffError",
    "SystemFileError",
    "SystemNotFoundError",
    "ConfigError",
    "EnergyFunctionError",
    "RunExistsError",
    "RunLockedError",
    "NotARunError",
    "CheckpointError",
    "EvaluationFailureError",
    "BenchmarkInterruptedError",
    "ModelNotFoundError",
    "DigestMismatchError",
    "FormatVersionError",
    "VersionExistsError",
    "HubError",
    "DiskFullError",
    "shown",
]

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 4, 60, 60


def shown(value: object) -> str:
    """A value as an error message shows it: its ``repr``, bounded in depth and length.

    Messages name the value a user gave; a value read from a file can be huge, so neither the
    work nor the line may grow with it.

    Example:
        >>> shown(list(range(1000)))
        '[0, 1, 2, 3, ...]'
    """
    return _REPR.repr(value)


def one_line(text: object, limit: int = 2000) -> str:
    """``text`` (a message, or an exception's) on one line: whitespace collapsed, at most
    ``limit`` characters, so that a third party's long or multi-line message fits an error line.

    Example:
        >>> one_line("cannot read\\n   line 3:  bad", limit=16)
        'cannot read l...'
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GodiffError(Exception):
    """Base class of every error godiff raises on purpose."""

    exit_code = 1


class SystemFileError(GodiffError, ValueError):
    """A system definition (YAML file or dict) is invalid; the message names the field."""

    exit_code = 2


class SystemNotFoundError(GodiffError, FileNotFoundError):
    """A system file that does not exist, or a name that is neither a file nor a shipped system."""

    exit_code = 3


class ConfigError(GodiffError, ValueError):
    """An option or configuration value is invalid; the message names it."""

    exit_code = 2


class EnergyFunctionError(GodiffError, ValueError):
    """An energy function cannot be built (unknown name, missing model file, missing extra)."""

    exit_code = 2


class RunExistsError(GodiffError, FileExistsError):
    """``godiff run`` was pointed at a directory that already holds a run."""

    exit_code = 2


class RunLockedError(GodiffError, RuntimeError):
    """Another live process holds the run directory's lock (``godiff run``/``resume`` on it)."""

    exit_code = 2


class NotARunError(GodiffError, FileNotFoundError):
    """A directory given as a run directory is not one."""

    exit_code = 3


class ModelNotFoundError(GodiffError, FileNotFoundError):
    """A model, or a version of it, is not in the registry or on the Hub."""

    exit_code = 3


class CheckpointError(GodiffError, ValueError):
    """A checkpoint or run state is corrupt, truncated or inconsistent."""

    exit_code = 4


class DigestMismatchError(CheckpointError):
    """A file's SHA-256 digest differs from the one recorded in its manifest."""


class FormatVersionError(CheckpointError):
    """A checkpoint was written by a newer, incompatible format version."""


class EvaluationFailureError(GodiffError, RuntimeError):
    """Most evaluations of an iteration failed: the energy function is broken for this system."""

    exit_code = 1


class BenchmarkInterruptedError(GodiffError, RuntimeError):
    """A benchmark's worker process ended abruptly (killed, out of memory); finished runs are kept."""

    exit_code = 1


class VersionExistsError(GodiffError, FileExistsError):
    """A released model version exists with different content (versions are immutable)."""

    exit_code = 2


class HubError(GodiffError, ConnectionError):
    """The Hugging Face Hub is unreachable, or refused the request (missing or bad token)."""

    exit_code = 5


class DiskFullError(GodiffError, OSError):
    """The disk (or quota) of a run directory filled up during a run; what was written is kept and
    ``godiff resume`` continues once there is space."""

    exit_code = 1
