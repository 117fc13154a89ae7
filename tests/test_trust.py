"""A shared file never runs code: every hostile input is the real command, run in a temporary HOME and
working directory, and must exit with its documented code, in one line, leaving no marker file and
nothing outside the run directory; the legitimate paths (a program from ASE's configuration, a MACE
model with --trust-energy, the resume of such a run) keep working."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import console_script

TINY = ["--samples", "2", "--train-steps", "2", "--sampling-steps", "3", "--threads", "1"]


_MPL = Path(__import__("tempfile").gettempdir()) / "godiff-test-matplotlib"


class Sandbox:
    """A temporary HOME, a working directory and a marker that no hostile input may create."""

    def __init__(self, root: Path):
        self.root = root
        self.home, self.work = root / "home", root / "work"
        self.home.mkdir()
        self.work.mkdir()
        self.marker = root / "PWNED"
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "GODIFF_ZOO": str(self.home / "zoo"),
            "ASE_CONFIG_PATH": str(self.home / "ase.ini"),
            "PYTHONWARNINGS": "ignore",
            "MPLCONFIGDIR": str(_MPL),
        }  # matplotlib's cache is the user's

    def system(self, energy: str, name: str = "s", mobile: str = "Pt3") -> Path:
        path = self.work / f"{name}.yaml"
        path.write_text(f"name: {name}\nmobile: {mobile}\nbox: {{kind: sphere, radius: 4}}\nenergy: {energy}\n")
        return path

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file()}

    def godiff(self, *args, env=None, timeout=300, script="godiff") -> subprocess.CompletedProcess:
        return subprocess.run(
            [console_script(script), *map(str, args)],
            cwd=self.work,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(tmp_path)


def refused(proc, code: int, *words) -> str:
    """The one line of a refusal with exit ``code`` that names every one of ``words``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


HOSTILE_ENERGY = {  # energy spec -> what the refusal must name
    "gaussian-command": (
        "{calculator: ase, class: ase.calculators.gaussian.Gaussian, options: {command: 'touch {M}; false'}}",
        "energy.options.command",
    ),
    "cp2k-command": "{calculator: ase, class: ase.calculators.cp2k.CP2K, options: {command: 'touch {M}'}}",
    "castep-command": (
        "{calculator: ase, class: ase.calculators.castep.Castep, options: {castep_command: 'touch {M}'}}",
        "castep_command",
    ),
    "lammps-command": "{calculator: ase, class: ase.calculators.lammpsrun.LAMMPS, options: {command: 'touch {M}'}}",
    "dftd3-label": (
        "{calculator: ase, class: ase.calculators.dftd3.DFTD3, options: {label: '{R}/elsewhere/x'}}",
        "energy.options.label",
    ),
    "lammps-tmp-dir": (
        "{calculator: ase, class: ase.calculators.lammpsrun.LAMMPS, "
        "options: {tmp_dir: '{R}/elsewhere', keep_tmp_files: true}}",
        "tmp_dir",
    ),
    "vasp-directory": (
        "{calculator: ase, class: ase.calculators.vasp.Vasp, options: {directory: '{R}/elsewhere'}}",
        "energy.options.directory",
    ),
    "espresso-outdir": (
        "{calculator: ase, class: ase.calculators.espresso.Espresso, "
        "options: {input_data: {control: {outdir: '{R}/elsewhere'}}}}",
        "energy.options.input_data.control.outdir",
    ),
    "lammpslib-script": (
        "{calculator: ase, class: ase.calculators.lammpslib.LAMMPSlib, options: {lmpcmds: ['shell touch {M}']}}",
        "lmpcmds",
    ),
    "gaussian-link0": (
        "{calculator: ase, class: ase.calculators.gaussian.Gaussian, options: {subst: 'l1 {R}'}}",
        "subst",
    ),
    "injected-line": (
        '{calculator: ase, class: ase.calculators.gaussian.Gaussian, options: {method: "B3LYP\\n%subst l1 {R}"}}',
        "energy.options.method",
    ),
    "socket-server": "{calculator: ase, class: ase.calculators.socketio.SocketIOCalculator}",
    "nwchem-task-shell": (
        "{calculator: ase, class: ase.calculators.nwchem.NWChem, options: {theory: shell, task: touch}}",
        "energy.options.theory",
    ),
    "gaussian-external": (
        "{calculator: ase, class: ase.calculators.gaussian.Gaussian, options: {method: PBEPBE, external: touch}}",
        "energy.options.external",
    ),
    "espresso-quote": (
        "{calculator: ase, class: ase.calculators.espresso.Espresso, "
        "options: {input_data: {control: {title: \"x', outdir='{R}/elsewhere' !\"}}}}",
        "energy.options.input_data.control.title",
    ),
    "lammps-path-in-a-line": (
        "{calculator: ase, class: ase.calculators.lammpsrun.LAMMPS, "
        "options: {fix: ['p all print 1 x append {R}/elsewhere']}}",
        "energy.options.fix[0]",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ENERGY))
def test_a_system_file_cannot_start_a_program_or_write_outside_the_run(sandbox, case):
    energy, *named = HOSTILE_ENERGY[case] if isinstance(HOSTILE_ENERGY[case], tuple) else (HOSTILE_ENERGY[case],)
    system = sandbox.system(energy.replace("{M}", str(sandbox.marker)).replace("{R}", str(sandbox.root)))
    before = sandbox.files()
    proc = sandbox.godiff("run", system, "--out", "run", "--budget", "2", *TINY)
    refused(proc, 2, "--trust-energy", *named)
    assert not sandbox.marker.exists() and not (sandbox.root / "elsewhere").exists()
    assert sandbox.files() == before and not (sandbox.work / "run").exists()  # nothing built, nothing written


def _evil_pickle(path: Path, marker: Path) -> None:
    """A 'MACE model' that is a torch.save'd object whose unpickling creates ``marker``."""
    code = f"""
        import os, torch
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save(Evil(), {str(path)!r})
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=120)


def test_a_pickled_model_is_not_loaded_without_trust_energy(sandbox):
    _evil_pickle(sandbox.work / "evil.model", sandbox.marker)
    system = sandbox.system("{calculator: mace, model: evil.model}", mobile="Ar3")
    refused(sandbox.godiff("run", system, "--out", "run", "--budget", "2", *TINY), 2, "energy.model", "--trust-energy")
    assert not sandbox.marker.exists() and not (sandbox.work / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    sandbox = Sandbox(tmp_path_factory.mktemp("finished"))
    ok = sandbox.godiff("run", "lj13", "--out", "run", "--budget", "4", *TINY, "--quiet")
    assert ok.returncode == 0, ok.stderr
    return sandbox.work / "run"


def test_a_mace_mp_0_size_is_never_a_file_of_that_name_here(sandbox):
    _evil_pickle(sandbox.work / "medium", sandbox.marker)
    system = sandbox.system("{calculator: mace-mp-0, model: medium}")
    proc = sandbox.godiff("run", system, "--out", "run", "--budget", "2", *TINY)
    refused(proc, 2, "MACE-MP-0 weights")  # not in mace's (empty) cache, and no network here
    assert not sandbox.marker.exists() and not (sandbox.work / "run").exists()


def test_the_options_of_common_codes_that_name_no_program_or_outside_path_pass():
    from godiff.trust import untrusted

    def spec(cls, **options):
        return {"calculator": "ase", "class": f"ase.calculators.{cls}", "options": options}

    assert not untrusted(
        spec(
            "espresso.Espresso",
            input_data={"control": {"prefix": "pt7", "lkpoint_dir": False, "edir": 1, "tprnfor": True}},
            pseudopotentials={"Pt": "Pt.pbe-n-rrkjus.UPF"},
            kpts=[4, 4, 1],
        )
    )
    assert not untrusted(
        spec("cp2k.CP2K", basis_set_file="BASIS_MOLOPT", potential_file="POTENTIAL", set_pos_file=True)
    )
    assert not untrusted(spec("gaussian.Gaussian", method="B3LYP", basis="6-31G(d,p)", chk="pt.chk", save=True))
    assert not untrusted(spec("orca.ORCA", orcasimpleinput="B3LYP def2-SVP def2/J RIJCOSX"))
    assert not untrusted(spec("vasp.Vasp", xc="PBE", encut=400, setups={"Pt": "_pv"}, lwave=False, txt="vasp.out"))


@pytest.mark.parametrize("plant", ["run.lock", "samples", "report"])
def test_a_link_inside_a_shared_run_directory_is_refused_and_nothing_is_written_through_it(
    sandbox, finished_run, plant
):
    shutil.copytree(finished_run, sandbox.work / "run")
    victim = sandbox.root / "victim"
    victim.mkdir() if plant != "run.lock" else victim.write_text("mine")
    target = sandbox.work / "run" / plant
    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    target.symlink_to(victim)
    before = sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()
    command = ("report", "run") if plant == "report" else ("resume", "run", "--budget", "8")
    refused(sandbox.godiff(*command), 4, "symbolic link", plant)
    assert (sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()) == before


def test_editing_run_json_then_resume_is_refused_like_a_system_file(sandbox, finished_run):
    shutil.copytree(finished_run, sandbox.work / "run")
    manifest = json.loads((sandbox.work / "run" / "run.json").read_text())
    assert manifest["trust_energy"] is False
    manifest["system"]["energy"] = {
        "calculator": "ase",
        "class": "ase.calculators.gaussian.Gaussian",
        "options": {"command": f"touch {sandbox.marker}; false"},
    }
    (sandbox.work / "run" / "run.json").write_text(json.dumps(manifest))
    before = {p: p.read_bytes() for p in (sandbox.work / "run").rglob("*") if p.is_file() and p.name != "run.lock"}
    refused(sandbox.godiff("resume", "run", "--budget", "8"), 2, "energy.options.command", "--trust-energy")
    assert not sandbox.marker.exists()
    after = {p: p.read_bytes() for p in (sandbox.work / "run").rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before


# -- the legitimate paths ------------------------------------------------------------------------------
FAKE_DFTB = '''
"""A stand-in for the dftb+ program: reads the geometry ASE wrote, writes EMT's energy and forces the
way dftb+ does (detailed.out, results.tag) into its working directory, and notes where it ran."""
import os
from ase.calculators.emt import EMT
from ase.io import read
from ase.units import Bohr, Hartree

atoms = read("geo_end.gen")
atoms.calc = EMT()
energy, forces = atoms.get_potential_energy(), atoms.get_forces()
with open("detailed.out", "w") as fd:
    fd.write(f"Total energy: {energy / Hartree:.12f} H {energy:.8f} eV\\n")
with open("results.tag", "w") as fd:
    fd.write(f"forces              :real:2:3,{len(atoms)}\\n")
    for f in forces * Bohr / Hartree:
        fd.write(" ".join(f"{x:.12e}" for x in f) + "\\n")
with open(os.environ["FAKE_DFTB_LOG"], "a") as fd:
    fd.write(os.getcwd() + "\\n")
'''


def test_a_program_from_ases_configuration_runs_inside_the_runs_scratch(sandbox):
    program = sandbox.home / "fake_dftb.py"
    program.write_text(FAKE_DFTB)
    (sandbox.home / "ase.ini").write_text(f"[dftb]\ncommand = {sys.executable} {program}\n")
    log = sandbox.home / "where.log"
    system = sandbox.system(
        "{calculator: ase, class: ase.calculators.dftb.Dftb, "
        "options: {Hamiltonian_MaxAngularMomentum_: '', Hamiltonian_MaxAngularMomentum_Pt: d}}"
    )
    before = sandbox.files()
    proc = sandbox.godiff(
        "run", system, "--out", "run", "--budget", "4", *TINY, "--quiet", env={"FAKE_DFTB_LOG": str(log)}
    )
    assert proc.returncode == 0, proc.stderr
    places = log.read_text().split()
    assert len(places) == 4  # one program run per evaluation (forces and energy of one run)
    scratch = (sandbox.work / "run" / "scratch").resolve()
    assert all(Path(p).parent == scratch for p in places)
    assert list(scratch.iterdir()) == []  # each success's directory removed
    new = sandbox.files() - before
    assert all(p.is_relative_to(sandbox.work / "run") or p == log for p in new), sorted(new)
    rows = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ase.db, sys; print(len(list(ase.db.connect(sys.argv[1]).select())))",
            str(sandbox.work / "run" / "evaluations.db"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert rows.stdout.strip() == "4"


def test_a_mace_model_runs_with_trust_energy_and_its_resume_asks_for_it_again(sandbox, tiny_mace_model):
    shutil.copy(tiny_mace_model, sandbox.work / "pt.model")
    system = sandbox.system("{calculator: mace, model: pt.model, device: cpu}")
    ok = sandbox.godiff("run", system, "--out", "run", "--budget", "4", *TINY, "--quiet", "--trust-energy")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((sandbox.work / "run" / "run.json").read_text())["trust_energy"] is True
    refused(sandbox.godiff("resume", "run", "--budget", "6"), 2, "energy.model", "--trust-energy")
    resumed = sandbox.godiff("resume", "run", "--budget", "6", "--quiet", "--trust-energy")
    assert resumed.returncode == 0, resumed.stderr
    assert "evaluations     6" in resumed.stdout


# -- the other holes -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, code, words",
    [
        ("name: a\nmobile: Pt3\nmobile: Au3\nbox: {kind: sphere, radius: 6}\n", 2, ["'mobile' is given twice"]),
        (
            "name: a\nmobile: Pt3\nbox: {kind: sphere, radius: 6}\ndescription: " + "[" * 20000 + "]" * 20000 + "\n",
            2,
            ["nested more than"],
        ),
        ("name: a\nmobile: Pt3\nbox: {kind: sphere, radius: " + "9" * 400 + "}\n", 2, ["box.radius", "finite"]),
        ("name: a\nmobile: Pt10000\nbox: {kind: sphere, radius: 60}\n", 2, ["mobile", "GODIFF_MAX_ATOMS"]),
        (
            "name: a\nmobile: Pt3\nbox: {kind: sphere, radius: 6}\nenergy: {calculator: ase, class: ase.calculators.lammpsrun.LAMMPS, "
            "options: {fix: !!set {'shell touch PWNED': null}}}\n",
            2,
            ["set values are not allowed"],
        ),
        ("name: a\nmobile: Pt3\nbox: {kind: sphere, radius: 6}\n[1]: 2\n", 2, ["a key must be a name"]),
        (
            "name: a\nmobile: Pt3\ntemplate: {builder: fcc111, symbol: Pt, size: [400, 400, 4]}\nbox: {kind: slab, z_min: 1, z_max: 4}\n",
            2,
            ["template.size", "GODIFF_MAX_ATOMS"],
        ),
    ],
)
def test_a_hostile_system_file_is_refused_in_one_line_before_anything_is_built(sandbox, text, code, words):
    (sandbox.work / "a.yaml").write_text(text)
    start = time.perf_counter()
    refused(sandbox.godiff("run", "a.yaml", "--out", "run", timeout=60), code, *words)
    assert time.perf_counter() - start < 30 and not (sandbox.work / "run").exists()


def test_a_huge_system_file_is_refused_unread(sandbox):
    with open(sandbox.work / "a.yaml", "w") as fh:
        fh.write("name: a\nmobile: Pt3\nbox: {kind: sphere, radius: 6}\ndescription: '")
        fh.write("x" * (50 << 20))
        fh.write("'\n")
    refused(sandbox.godiff("run", "a.yaml", "--out", "run", timeout=60), 2, "larger than a system file")


def test_the_atom_limit_is_raised_by_the_environment_and_ctrl_c_stops_a_large_build(sandbox):
    (sandbox.work / "a.yaml").write_text("name: a\nmobile: Pt3000\nbox: {kind: sphere, radius: 60}\n")
    proc = subprocess.Popen(
        [console_script("godiff"), "run", "a.yaml", "--out", "run", "--budget", "2"],
        cwd=sandbox.work,
        env={**sandbox.env, "GODIFF_MAX_ATOMS": "5000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as a terminal gives it, even where the suite runs in the background (`cmd &`
        # passes its children SIGINT ignored, and the run would go on)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Ctrl-C while the large search is being built (its samplers, descriptors and first batch),
    # not at a fixed time: on a loaded machine 4 s could land anywhere from the imports to the
    # first training step of 3000 atoms (gigabytes of activations, a backward pass Python cannot
    # interrupt until it returns)
    first = proc.stderr.readline()
    assert "run directory" in first, first
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
        err = first + err
    finally:
        proc.kill()  # never left running past the test
    assert proc.returncode == 130, err
    assert "interrupted" in err and "GODIFF_MAX_ATOMS" not in err


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "lj13", "--threads", "100000000"], ["--threads"]),
        (["run", "lj13", "--seed", str(2**70)], ["seed", "at most"]),
        (["bench", "lj13", "--jobs", "0", "--out", "b"], ["--jobs"]),
        (["bench", "lj13", "--seeds", "0", "--out", "b"], ["--seeds"]),
        (["bench", "lj13", "--methods", "", "--out", "b"], ["--methods"]),
        (["bench-speed", "lj13", "--samples", "0"], ["--samples"]),
        (["bench-speed", "lj13", "--repeats", "-1"], ["--repeats"]),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(sandbox, args, words):
    refused(sandbox.godiff(*args, timeout=120), 2, *words)
    assert not (sandbox.work / "b").exists() and not (sandbox.work / "runs").exists()


def test_report_to_an_unwritable_place_is_one_line_and_exit_2(sandbox, finished_run):
    refused(sandbox.godiff("report", finished_run, "--out", "/proc/nowhere"), 2, "/proc/nowhere")


def _read_only(source: Path, target: Path) -> list[str] | None:
    """A command prefix under which ``target`` shows ``source`` read-only (a bind mount in a user
    namespace), or None where this machine allows none."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    target.mkdir()
    probe = subprocess.run(
        [
            unshare,
            "--mount",
            "--map-root-user",
            "sh",
            "-c",
            f"mount --bind -o ro {source} {target} && ! touch {target}/x 2>/dev/null",
        ],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return None
    return [
        unshare,
        "--mount",
        "--map-root-user",
        "sh",
        "-c",
        f'mount --bind -o ro {source} {target} && exec "$@"',
        "sh",
    ]


def test_report_reads_a_read_only_run_directory(sandbox, finished_run):
    run = finished_run
    prefix = _read_only(run, sandbox.root / "ro")
    if prefix is None:
        pytest.skip("no read-only bind mount on this machine")
    proc = subprocess.run(
        [*prefix, console_script("godiff"), "report", str(sandbox.root / "ro")],
        cwd=sandbox.work,
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best energy" in proc.stdout and "read-only" in proc.stderr and not (run / "report").exists()


def test_a_full_disk_during_a_run_is_one_line_that_says_how_to_resume(sandbox):
    small = sandbox.root / "small"
    small.mkdir()
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run(
        [unshare, "--mount", "--map-root-user", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
        capture_output=True,
        timeout=30,
    )
    if not probe or probe.returncode != 0:
        pytest.skip("no tmpfs mount on this machine")
    script = (
        f'mount -t tmpfs -o size=450k tmpfs {small} && "$@"; code=$?; '
        f"cp -r {small}/run {sandbox.root}/saved; exit $code"
    )
    proc = subprocess.run(
        [
            unshare,
            "--mount",
            "--map-root-user",
            "sh",
            "-c",
            script,
            "sh",
            console_script("godiff"),
            "run",
            "lj13",
            "--out",
            str(small / "run"),
            "--budget",
            "400",
            "--samples",
            "8",
            "--train-steps",
            "2",
            "--sampling-steps",
            "3",
            "--threads",
            "1",
            "--quiet",
        ],
        cwd=sandbox.work,
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = refused(proc, 1, "no space left", "godiff resume")
    assert "internal error" not in line
    saved = sandbox.root / "saved"
    import ase.db

    kept = len(list(ase.db.connect(str(saved / "evaluations.db")).select()))
    assert kept > 0
    resumed = sandbox.godiff("resume", saved, "--budget", str(kept + 8), "--quiet")  # once there is space
    assert resumed.returncode == 0, resumed.stderr
    assert f"evaluations     {kept + 8}" in resumed.stdout


def test_a_model_manifest_with_a_wrong_size_or_a_key_twice_is_refused(sandbox):
    import godiff
    from godiff.zoo.format import MANIFEST

    shipped = Path(godiff.__file__).resolve().parents[1] / "zoo" / "lj13-lj" / "1.0.0"
    for size in (10**30, -1, "12"):
        folder = sandbox.work / f"size-{size}"
        shutil.copytree(shipped, folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["files"]["config.json"]["size"] = size
        (folder / MANIFEST).write_text(json.dumps(manifest))
        refused(_zoo("show", folder), 4, "config.json")
    folder = sandbox.work / "twice"
    shutil.copytree(shipped, folder)
    text = (folder / MANIFEST).read_text()
    entry = json.dumps({"sha256": "0" * 64, "size": 1})
    (folder / MANIFEST).write_text(text.replace('"files": {', f'"files": {{"config.json": {entry},', 1))
    refused(_zoo("show", folder), 4, "given twice")


def _zoo(*args) -> subprocess.CompletedProcess:
    """``godiff zoo ARGS`` in this process (the command's own code, without a new interpreter)."""
    from click.testing import CliRunner

    from godiff.cli.main import cli

    result = CliRunner().invoke(cli, ["zoo", *(str(a) for a in args)])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_the_trust_page_matches_the_rules():
    import re

    from godiff.system.fields import MAX_ATOMS
    from godiff.system.specs import MAX_DEPTH, MAX_FILE_BYTES
    from godiff.trust import refused_option, refused_value

    section = (Path(__file__).resolve().parents[1] / "docs" / "concepts" / "trust.md").read_text()
    refused = section[section.index("**Options that name") : section.index("**Every evaluation's files")]
    names = [n for n in re.findall(r"`([a-z_*]+)`", refused) if n != "options"]
    assert len(names) >= 15
    for name in names:
        assert refused_option(name.replace("*", "castep")), name
    for value in ("two\nlines", "/etc/passwd", "~/x", "../x", "a; b", "$(x)"):
        assert refused_value(value), value
    assert refused_value("Pt.pbe-n-rrkjus.UPF") is None and refused_option("input_data") is None
    assert f"at most {MAX_ATOMS:,} atoms" in section and f"{MAX_DEPTH} deep" in section
    assert f"at most {MAX_FILE_BYTES >> 20} MiB" in section


@pytest.mark.parametrize("command", [("bench", "--out", "b", "--seeds", "1"), ("finetune",), ("bench-speed",)])
def test_every_command_that_evaluates_refuses_an_untrusted_spec_before_writing(sandbox, command):
    spec = "{calculator: ase, class: ase.calculators.gaussian.Gaussian, options: {command: 'touch {M}'}}"
    system = sandbox.system(spec.replace("{M}", str(sandbox.marker)))
    before = sandbox.files()
    name, *rest = command
    words = ("zoo", name) if name == "finetune" else (name,)
    refused(sandbox.godiff(*words, system, *rest), 2, "energy.options.command", "--trust-energy")
    assert not sandbox.marker.exists() and sandbox.files() == before
