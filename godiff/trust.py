"""What a shared file may make godiff do: the trust boundary of energy specs.

System files, ``run.json`` and model folders are data that people mail, commit and download. An
energy spec read from one of them may choose *which* calculator computes energies and its
physical settings; it may not start a program, load a pickle, or send files outside the run
directory. Those need ``--trust-energy`` on the command line (``trust_energy=True`` in Python),
which is never read from a file: a run records that it was given, and ``godiff resume`` asks for
it again.

Without it, :func:`check_trusted` refuses, in one line naming the option and the flag:

* **a pickled model**: ``calculator: mace`` with a model file, ``mace-mp-0`` with a file rather
  than a named size (MACE model files are full pickles: loading one runs whatever it holds);
* **an option that names a program or holds another program's input script**, whatever its
  value, at any depth of an ``ase`` spec's ``options`` (:func:`refused_option`): every
  ``command`` and ``*_command``, ``profile``, launchers (MPI, PBS, ssh), sockets and ports,
  Gaussian's ``subst`` and ``external``, and options whose value is an input script (LAMMPS's
  ``lmpcmds``, ``lammps_header``, ``amendments``; CP2K's ``inp``; ORCA's ``orcablocks``;
  Turbomole's ``define_str``), since LAMMPS's ``shell`` or an input's own file directives start
  programs or write anywhere;
* **an option that names a path or a directory** (``directory``, ``label``, ``prefix``,
  ``restart``, ``txt``, ``tmp_dir``, ``outdir``, ``pseudo_dir``, Gaussian's ``chk`` ...) unless
  its value is a bare file name, which lands in the run's ``scratch/``, or not text at all
  (``lkpoint_dir: true``, ``edir: 1``);
* **a string value that could escape**, whatever the option's name (:func:`refused_value`): a
  line break or a control character, a quote (which closes the string an input file puts it in),
  a shell character (``; | & $ ` < >``, a backslash), a word that is an absolute or home path or
  holds a ``..`` component, or the word ``shell`` or ``python`` (NWChem's ``task shell`` and
  ``python`` directives run commands), so an option missed above still cannot inject a command
  or a path;
* **a value that is not plain data** (a YAML set, a date, bytes), which the checks above could
  not see into;
* **a calculator class that starts a process or a server whatever its options**
  (``ase.calculators.socketio``, ``ase.calculators.subprocesscalculator``).

A calculator that must start a program takes its command from the user's own machine, as ASE
documents it: a ``[gaussian]``-style section of ``~/.config/ase/config.ini`` (``command = ...``,
and for the ``Espresso``-style calculators ``pseudo_dir``) or an ``ASE_GAUSSIAN_COMMAND``
variable. And whatever the class, the :class:`~godiff.energy.Evaluator` builds and runs such a
calculator inside the run's ``scratch/`` (see :func:`godiff.energy.runs_a_program`).

The rules come from reading ASE's calculator classes, so they err on the side of refusing: an
option refused here that is harmless for its calculator is given with ``--trust-energy``.

Example:
    >>> check_trusted({"calculator": "ase", "class": "ase.calculators.gaussian.Gaussian",
    ...                "options": {"method": "PBE", "basis": "def2-SVP", "chk": "pt.chk"}}, trust_energy=False)
    >>> check_trusted({"calculator": "ase", "class": "ase.calculators.gaussian.Gaussian",
    ...                "options": {"command": "g16 < Gaussian.com > Gaussian.log"}}, trust_energy=False)
    Traceback (most recent call last):
    ...
    godiff.errors.EnergyFunctionError: energy.options.command: names a program to start, which a shared file may not do; configure it in ASE's configuration ([gaussian] command = ... in ~/.config/ase/config.ini, or ASE_GAUSSIAN_COMMAND), or give --trust-energy to honour it
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from godiff.errors import EnergyFunctionError, shown

__all__ = ["TRUST_FLAG", "check_trusted", "untrusted", "refused_option", "refused_value"]

TRUST_FLAG = "--trust-energy"
"""The command-line flag that lets an energy spec do what data may not (``trust_energy=True``)."""

#: Options that name a program to start (lower case), refused whatever their value.
_PROGRAM_KEYS = frozenset(
    {
        "command",
        "profile",
        "runner",
        "executable",
        "exe",
        "binary",
        "launcher",
        "launch_client",
        "mpi",
        "pbs",
        "mpi_command",
        "process",
        "initializer",
        "lammps_name",
        "extra_cmd_args",
        "lammps_options",
        "amber_exe",
        "kjob",
        "subst",
        "external",
        "usessh",
        "ssh",
        "lindaworkers",
        "calc_input",
        "socket",
        "unixsocket",
        "port",
        "host",
        "python",
    }
)
#: Options whose value is another program's input script, refused whatever their value.
_SCRIPT_KEYS = frozenset(
    {
        "lmpcmds",
        "lammps_header",
        "amendments",
        "post_changebox_cmds",
        "model_init",
        "model_post",
        "inp",
        "orcablocks",
        "define_str",
        "control_kdg",
        "control_input",
        "addsec",
        "input",
        "parameters_file",
    }
)
#: Options that name a path or a directory: a bare file name (or a value that is not text) passes.
_PATH_KEYS = frozenset(
    {
        "directory",
        "label",
        "prefix",
        "restart",
        "txt",
        "log",
        "db",
        "top",
        "crd",
        "files",
        "save",
        "nosave",
        "errorsave",
        "keep_tmp_files",
        "trajectory_out",
        "binary_dump",
        "chk",
        "oldchk",
        "schk",
        "rwf",
        "oldmatrix",
        "oldrawmatrix",
        "int",
        "d2e",
        "scratch",
        "userscr",
        "outdir",
        "wfcdir",
        "pseudo_dir",
        "castep_pp_path",
        "castep_keywords",
        "find_pspots",
        "species_path",
        "slako_dir",
        "clean",
        "print_log",
        "dumpjson",
        "out",
        "output",
    }
)
#: Parts of an option name that mark it as naming a path or a directory.
_PATH_STEMS = ("dir", "path", "file", "prefix", "label", "tmp", "scratch", "log")
#: Parts of an option name that mark it as naming a program or a script.
_PROGRAM_STEMS = ("command", "cmd", "exe", "socket", "script", "blocks", "profile", "shell", "launch")
#: Whole calculator modules that start a process or a server whatever their options.
_PROCESS_MODULES = ("ase.calculators.socketio", "ase.calculators.subprocesscalculator")

_ESCAPE = re.compile(r"[;|&`$<>'\"\\\x00-\x1f\x7f]")
_WORDS = re.compile(r"[\s=,()\[\]{}:]+")
_COMMAND_WORDS = frozenset({"shell", "python"})
_WHAT = {
    "program": "names a program to start",
    "script": "is another program's input script",
    "path": "names a path or a directory",
}


def refused_option(name: str) -> str | None:
    """What an option of that name names, as far as a shared file goes: ``"program"`` or
    ``"script"`` (refused whatever its value), ``"path"`` (refused unless its value is a bare file
    name or not text), or ``None``.

    Example:
        >>> refused_option("castep_command"), refused_option("lmpcmds"), refused_option("tmp_dir")
        ('program', 'script', 'path')
        >>> refused_option("ecutwfc") is None and refused_option("electronic_temperature") is None
        True
    """
    key = str(name).strip().lower()
    if key in _SCRIPT_KEYS:
        return "script"
    if key in _PROGRAM_KEYS or key.endswith("_command") or any(stem in key for stem in _PROGRAM_STEMS):
        return "program"
    if key in _PATH_KEYS or any(stem in key for stem in _PATH_STEMS):
        return "path"
    return None


def refused_value(value: str) -> str | None:
    """Why a string value may not come from a shared file, or ``None``: a line break or a control
    character, a quote, a shell character, a word that is an absolute or home path or holds a
    ``..`` component, or the word ``shell`` or ``python``.

    Example:
        >>> refused_value("Pt.pbe-n-kjpaw_psl.1.0.0.UPF") is None, refused_value("B3LYP def2-SVP def2/J") is None
        (True, True)
        >>> refused_value("x /etc/passwd"), refused_value("touch X; false")
        ("holds '/etc/passwd', an absolute or home path", "holds ';', a quote, a line break or a shell character")
    """
    text = str(value)
    found = _ESCAPE.search(text)
    if found:
        shown_char = repr(found.group()) if found.group().isprintable() else "a control character"
        return f"holds {shown_char}, a quote, a line break or a shell character"
    for word in _WORDS.split(text):
        if word.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[/\\]", word):
            return f"holds {word!r}, an absolute or home path"
        if ".." in word.split("/"):
            return f"holds {word!r}, which leaves its directory"
        if word.lower() in _COMMAND_WORDS:
            return f"holds {word!r}, which input files use to run a command"
    return None


def _bare_name(value: object) -> bool:
    """Whether a path option's value stays inside the directory it is read in: not text, or a file
    name without a directory."""
    if isinstance(value, str):
        return bool(value) and value not in (".", "..") and "/" not in value and not value.startswith("~")
    return isinstance(value, (bool, int, float)) or value is None


def untrusted(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What in a normalized energy spec only ``--trust-energy`` allows: ``(where, why)`` pairs,
    ``where`` spelled as in the system file (``energy.options.command``).

    Example:
        >>> untrusted({"calculator": "mace", "model": "evil.model"})
        [('energy.model', 'is a MACE model file, a pickle that runs code when it is loaded')]
    """
    name = spec.get("calculator")
    found: list[tuple[str, str]] = []
    if name == "mace" or (name == "mace-mp-0" and spec.get("model") not in _MACE_MP_0_SIZES):
        found.append(("energy.model", "is a MACE model file, a pickle that runs code when it is loaded"))
    if name == "chgnet" and spec.get("model") is not None and not _bare_name(spec["model"]):
        found.append(("energy.model", f"{shown(spec['model'])} is a path: CHGNet models are named by version"))
    if name == "ase":
        module = str(spec.get("class", "")).rpartition(".")[0]
        if module in _PROCESS_MODULES:
            found.append(("energy.class", "starts a process or a server whatever its options"))
        found.extend(_scan(spec.get("options") or {}, "energy.options"))
    return found


def _scan(value: object, where: str, path: bool = False) -> list[tuple[str, str]]:
    """The refused options and values at any depth of ``value`` (``path``: under a path option)."""
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            here = f"{where}.{key}"
            why = refused_option(key)
            if why in ("program", "script"):
                found.append((here, _WHAT[why]))
            else:
                found.extend(_scan(item, here, path or why == "path"))
        return found
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [pair for i, item in enumerate(value) for pair in _scan(item, f"{where}[{i}]", path)]
    if path and not _bare_name(value):
        return [(where, _WHAT["path"])]
    if isinstance(value, str):
        why = refused_value(value)
        return [(where, f"{shown(value)} {why}")] if why else []
    if value is None or isinstance(value, (bool, int, float)):
        return []
    return [(where, f"is a {type(value).__name__}, not plain data (text, numbers, lists and mappings)")]


def check_trusted(spec: Mapping[str, Any], *, trust_energy: bool) -> None:
    """Refuse (:class:`~godiff.errors.EnergyFunctionError`, exit 2) an energy spec that does what
    a shared file may not, unless ``trust_energy``; one line naming the first such option and
    :data:`TRUST_FLAG`."""
    if trust_energy:
        return
    found = untrusted(spec)
    if not found:
        return
    where, why = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    if why == _WHAT["program"]:
        section = _section(spec)
        hint = (
            f"configure it in ASE's configuration ([{section}] command = ... in ~/.config/ase/config.ini, "
            f"or ASE_{section.upper()}_COMMAND), or give {TRUST_FLAG} to honour it"
        )
        raise EnergyFunctionError(f"{where}: {why}, which a shared file may not do{more}; {hint}")
    if why == _WHAT["path"]:
        raise EnergyFunctionError(
            f"{where}: {why}, which a shared file may not do{more}: godiff keeps every evaluation's files "
            f"in the run's scratch/ (a bare file name is kept there); give {TRUST_FLAG} to honour it"
        )
    raise EnergyFunctionError(f"{where}: {why}{more}; give {TRUST_FLAG} if you trust it")


def _section(spec: Mapping[str, Any]) -> str:
    """The ASE configuration section of an ``ase`` spec's calculator: its class's name in lower
    case, as ASE's ``FileIOCalculator.name`` spells it (``[gaussian]``, ``[espresso]``)."""
    return str(spec.get("class", "")).rpartition(".")[2].lower() or "name"


_MACE_MP_0_SIZES = ("small", "medium", "large")
