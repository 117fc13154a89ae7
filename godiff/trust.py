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
* **an option that names a program, a profile, a path or a directory**, at any depth of an
  ``ase`` spec's ``options`` (:func:`refused_option`), found by reading ASE's calculator classes:
  every ``command`` and ``*_command``, ``profile``, ``directory``, ``label``, ``prefix``,
  ``restart``, ``txt``, log and output files, scratch and temporary directories, sockets, ports
  and MPI or PBS launchers, Gaussian's link-0 files (``chk``, ``rwf``, ``subst``, ``ssh`` ...),
  and options whose value is another program's input script (LAMMPS's ``lmpcmds``,
  ``lammps_header``, ``amendments``; CP2K's ``inp``; ORCA's ``orcablocks``; Turbomole's
  ``define_str``), since LAMMPS's ``shell`` or ORCA's ``%base`` start programs or write anywhere;
* **a string value that could escape** (:func:`refused_value`): several lines, an absolute or
  home path, a ``..`` component, or a shell metacharacter (``; | & $ ` < >``), whatever the
  option's name, so an option missed above still cannot inject a command or a path;
* **a calculator class that starts a process or a server whatever its options**
  (``ase.calculators.socketio``, ``ase.calculators.subprocesscalculator``).

A calculator that must start a program takes its command from the user's own machine, as ASE
documents it: a ``[gaussian]``-style section of ``~/.config/ase/config.ini`` (``command = ...``,
and for the ``Espresso``-style calculators ``pseudo_dir``) or an ``ASE_GAUSSIAN_COMMAND``
variable. And whatever the class, the :class:`~godiff.energy.Evaluator` builds and runs such a
calculator inside the run's ``scratch/`` (see :func:`godiff.energy.runs_a_program`).

The rules are a list found by reading the classes, so they err on the side of refusing: an
option refused here that is harmless for its calculator is given with ``--trust-energy``.

Example:
    >>> check_trusted({"calculator": "ase", "class": "ase.calculators.gaussian.Gaussian",
    ...                "options": {"method": "PBE", "basis": "def2-SVP"}}, trust_energy=False)
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

#: Option names refused as they are (lower case), by what they let a file do.
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
        "usessh",
        "ssh",
        "lindaworkers",
        "calc_input",
    }
)
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
        "keep_alive",
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
        "socket",
        "unixsocket",
        "port",
        "host",
        "clean",
        "print_log",
        "dumpjson",
        "out",
        "output",
    }
)
#: Parts of an option name that mark it as a program, a script, a path or a directory.
_STEMS = (
    "command",
    "cmd",
    "dir",
    "path",
    "file",
    "exe",
    "socket",
    "script",
    "blocks",
    "profile",
    "label",
    "prefix",
    "tmp",
    "scratch",
    "shell",
    "log",
    "launch",
)
#: Whole calculator modules that start a process or a server whatever their options.
_PROCESS_MODULES = ("ase.calculators.socketio", "ase.calculators.subprocesscalculator")

_ESCAPE = re.compile(r"[;|&`$<>\n\r\x00\\]")
_WHAT = {
    "program": "names a program to start",
    "script": "is another program's input script",
    "path": "names a path or a directory",
}


def refused_option(name: str) -> str | None:
    """Why an option of that name may not come from a shared file (``"program"``, ``"script"``
    or ``"path"``), or ``None``.

    Example:
        >>> refused_option("castep_command"), refused_option("lmpcmds"), refused_option("tmp_dir")
        ('program', 'script', 'path')
        >>> refused_option("ecutwfc") is None and refused_option("electronic_temperature") is None
        True
    """
    key = str(name).strip().lower()
    if key in _PROGRAM_KEYS or key.endswith("_command"):
        return "program"
    if key in _SCRIPT_KEYS:
        return "script"
    if key in _PATH_KEYS or any(stem in key for stem in _STEMS):
        return "path"
    return None


def refused_value(value: str) -> str | None:
    """Why a string value may not come from a shared file, or ``None``: several lines, an
    absolute or home path, a ``..`` component, or a shell metacharacter.

    Example:
        >>> refused_value("Pt.pbe-n-kjpaw_psl.1.0.0.UPF") is None, refused_value("def2/J") is None
        (True, True)
        >>> refused_value("/elsewhere/x"), refused_value("touch X; false")
        ('is an absolute or home path', "holds ';', a line break or a shell character")
    """
    text = str(value)
    found = _ESCAPE.search(text)
    if found:
        return (
            f"holds {found.group()!r}, a line break or a shell character"
            if found.group().isprintable()
            else "holds a line break or a control character"
        )
    if text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        return "is an absolute or home path"
    if ".." in re.split(r"[/\\]", text):
        return "leaves its directory ('..')"
    return None


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
    if name == "chgnet" and isinstance(spec.get("model"), str) and refused_value(spec["model"]):
        found.append(("energy.model", f"{refused_value(spec['model'])}: CHGNet models are named by version"))
    if name == "ase":
        module = str(spec.get("class", "")).rpartition(".")[0]
        if module in _PROCESS_MODULES:
            found.append(("energy.class", "starts a process or a server whatever its options"))
        found.extend(_scan(spec.get("options") or {}, "energy.options"))
    return found


def _scan(value: object, where: str) -> list[tuple[str, str]]:
    """The refused options and values at any depth of ``value``."""
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            here = f"{where}.{key}"
            why = refused_option(key)
            found.extend([(here, _WHAT[why])] if why else _scan(item, here))
        return found
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [pair for i, item in enumerate(value) for pair in _scan(item, f"{where}[{i}]")]
    if isinstance(value, (str, bytes)):
        why = refused_value(value.decode(errors="replace") if isinstance(value, bytes) else value)
        return [(where, f"{shown(value)} {why}")] if why else []
    return []


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
            f"{where}: {why}, which a shared file may not do{more}: godiff keeps every "
            f"evaluation's files in the run's scratch/; give {TRUST_FLAG} to honour it"
        )
    raise EnergyFunctionError(f"{where}: {why}{more}; give {TRUST_FLAG} if you trust it")


def _section(spec: Mapping[str, Any]) -> str:
    """The ASE configuration section of an ``ase`` spec's calculator: its class's name in lower
    case, as ASE's ``FileIOCalculator.name`` spells it (``[gaussian]``, ``[espresso]``)."""
    return str(spec.get("class", "")).rpartition(".")[2].lower() or "name"


_MACE_MP_0_SIZES = ("small", "medium", "large")
