"""The Hub backend (godiff.zoo.hub) with the real huggingface_hub client, offline.

The client reads HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET when it is imported,
so each scenario runs it in a subprocess with its own environment (nothing is set for the rest of
the test session), against the Hub-compatible server of ``tests/hub_server.py`` that runs in a
thread of this process; the test then checks what the server holds and what it was asked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, git_blob_sha1
from safetensors.torch import save_file

from godiff.zoo.format import write_manifest

REPO = "myorg/pt-islands"
TOKEN = "hf_test_token_0123456789"
ROOT = Path(__file__).resolve().parents[1]

# Runs a list of godiff.zoo.hub calls; prints one JSON result per call (a value or a godiff error).
_CLIENT = r"""
import json, sys
from pathlib import Path
from godiff.errors import GodiffError
from godiff.zoo import hub

results = []
for name, args, kwargs in json.loads(sys.argv[1]):
    try:
        value = getattr(hub, name)(*args, **kwargs)
        results.append({"value": str(value) if isinstance(value, Path) else value})
    except GodiffError as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(results))
"""


def run_client(calls, *, endpoint: str, home: Path, token: str | None = TOKEN, offline=False, xet=False, secrets=()):
    """Run ``calls`` (``(function, args, kwargs)`` of godiff.zoo.hub) in a fresh interpreter whose
    Hugging Face environment points at ``endpoint`` with the cache in ``home``; return the results.

    Every token given (``token`` and ``secrets``) must stay out of the output.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update(HF_HUB_DISABLE_TELEMETRY="1")
    if token is not None:
        env["HF_TOKEN"] = token
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _CLIENT, json.dumps(calls)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for secret in [token, *secrets]:
        if secret:
            assert secret not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def make_model_folder(path: Path, *, seed: float = 0.0) -> Path:
    """A small model folder of the zoo format, its content depending on ``seed``."""
    path.mkdir(parents=True)
    save_file({"w": torch.arange(10.0) + seed}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"format_version": 1, "architecture": "ScoreModel", "seed": seed}))
    (path / "system.json").write_text(json.dumps({"system": {"name": "lj13", "mobile": "Ar13"}}))
    (path / "training.json").write_text(json.dumps({"iterations": 3, "seed": seed}))
    (path / "README.md").write_text("---\nlicense: mit\n---\n# A test model\n")
    write_manifest(path)
    return path


def assert_same_files(pulled: Path, folder: Path) -> None:
    """Every file of ``folder`` is in ``pulled`` with the same bytes."""
    for source in folder.iterdir():
        assert (pulled / source.name).read_bytes() == source.read_bytes(), source.name


def flipped(data: bytes) -> bytes:
    """``data`` with its last byte changed: same length, different digest."""
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hub_server(tmp_path):
    """A Hub-compatible server (upload mode "auto": binary files go through LFS) accepting TOKEN."""
    with HubServer(tmp_path / "hub", token=TOKEN) as server:
        yield server


@pytest.fixture
def model_folder(tmp_path) -> Path:
    return make_model_folder(tmp_path / "model")


def push(folder, version, repo=REPO, **kwargs):
    return ("push", [str(folder), repo, version], kwargs)


def pull(version, repo=REPO):
    return ("pull", [repo, version], {})


def test_push_lfs_then_pull_into_clean_cache_then_offline(hub_server, model_folder, tmp_path):
    # Xet disabled, upload mode auto: the weights go through the LFS batch API and a PUT.
    pushed, listed = run_client(
        [push(model_folder, "1.0.0"), ("versions", [REPO], {})], endpoint=hub_server.url, home=tmp_path / "pusher"
    )

    history = hub_server.history(REPO)
    assert [c.summary for c in history] == ["initial commit", f"godiff model {REPO}@1.0.0"]
    head = history[-1]
    assert pushed == {"value": f"{hub_server.url}/{REPO}/commit/{head.oid}"}
    assert hub_server.tags(REPO) == {"v1.0.0": head.oid}
    assert head.files["model.safetensors"].lfs and not head.files["config.json"].lfs
    assert set(head.files) == {".gitattributes", *(p.name for p in model_folder.iterdir())}
    assert hub_server.count("POST", r"/myorg/pt-islands\.git/info/lfs/objects/batch$") == 1
    assert hub_server.count("PUT", r"^/_lfs/") == 1
    weights = (model_folder / "model.safetensors").read_bytes()
    assert hub_server.read(REPO, "model.safetensors", revision="v1.0.0") == weights
    assert listed == {"value": ["1.0.0"]}

    home = tmp_path / "puller"
    [pulled] = run_client([pull("1.0.0")], endpoint=hub_server.url, home=home)
    path = Path(pulled["value"])
    assert path == home / "hub" / "models--myorg--pt-islands" / "snapshots" / head.oid
    assert_same_files(path, model_folder)

    asked = len(hub_server.requests)
    offline = run_client([pull("1.0.0"), ("versions", [REPO], {})], endpoint=hub_server.url, home=home, offline=True)
    assert offline == [pulled, {"value": ["1.0.0"]}]
    assert len(hub_server.requests) == asked  # nothing was asked of the Hub


def test_push_regular_mode_with_xet_enabled(tmp_path, model_folder):
    # Xet left enabled: the server answers uploadMode "regular" for every file, so the content
    # travels base64 inside the commit call and the client never turns to Xet or LFS.
    with HubServer(tmp_path / "hub", upload_mode="regular", token=TOKEN) as server:
        pushed, pulled = run_client(
            [push(model_folder, "0.1.0"), pull("0.1.0")], endpoint=server.url, home=tmp_path / "home", xet=True
        )
        head = server.history(REPO)[-1]
        assert pushed == {"value": f"{server.url}/{REPO}/commit/{head.oid}"}
        assert not any(entry.lfs for entry in head.files.values())
        assert server.count("POST", r"lfs") == 0 and server.count("PUT", r".") == 0
        assert not [path for _, path in server.requests if "xet" in path]
        assert server.count("POST", r"/commit/main$") == 1
        assert_same_files(Path(pulled["value"]), model_folder)


def test_versions_sorted_and_missing_version_lists_them(hub_server, tmp_path):
    folders = {v: make_model_folder(tmp_path / v, seed=i) for i, v in enumerate(["1.0.0", "1.10.0", "1.2.0"])}
    pushes = [push(folder, v) for v, folder in folders.items()]
    results = run_client(
        [*pushes, ("versions", [REPO], {}), pull("2.0.0"), pull("1.0.0", repo="myorg/nothing")],
        endpoint=hub_server.url,
        home=tmp_path / "home",
    )
    *pushes, listed, missing, no_repo = results
    assert all("value" in r for r in pushes)
    assert len(hub_server.history(REPO)) == 4  # one commit per version after the initial one
    assert listed == {"value": ["1.0.0", "1.2.0", "1.10.0"]}
    message = f"{REPO} has no version 2.0.0 (available: 1.0.0, 1.2.0, 1.10.0)"
    assert missing == {"error": "ModelNotFoundError", "message": message}
    assert no_repo["error"] == "ModelNotFoundError" and "myorg/nothing" in no_repo["message"]


def test_same_version_is_a_no_op_other_content_refused_unless_force(hub_server, tmp_path):
    a, b = make_model_folder(tmp_path / "a", seed=0), make_model_folder(tmp_path / "b", seed=1)
    first, again, refused, forced, pulled = run_client(
        [push(a, "1.0.0"), push(a, "1.0.0"), push(b, "1.0.0"), push(b, "1.0.0", force=True), pull("1.0.0")],
        endpoint=hub_server.url,
        home=tmp_path / "home",
    )
    history = hub_server.history(REPO)
    assert len(history) == 3  # initial, a, b: pushing a again changed nothing
    assert first == again == {"value": f"{hub_server.url}/{REPO}/commit/{history[1].oid}"}
    assert refused["error"] == "VersionExistsError" and "1.0.0" in refused["message"]
    assert forced == {"value": f"{hub_server.url}/{REPO}/commit/{history[2].oid}"}
    assert hub_server.tags(REPO) == {"v1.0.0": history[2].oid}  # the tag moved
    assert_same_files(Path(pulled["value"]), b)


def test_tampered_download_refused_and_removed_from_cache(hub_server, model_folder, tmp_path):
    # Corrupt one regular file and the LFS file as served; their recorded digests stay as pushed.
    for name in ("config.json", "model.safetensors"):
        hub_server.tamper(REPO, name, flipped((model_folder / name).read_bytes()))
    # In another repository, a file arrives shorter than announced: the client itself refuses it.
    hub_server.tamper("myorg/other", "README.md", b"short")
    home = tmp_path / "home"
    other = [push(model_folder, "1.0.0", repo="myorg/other"), pull("1.0.0", repo="myorg/other")]
    _, refused, _, truncated = run_client(
        [push(model_folder, "1.0.0"), pull("1.0.0"), *other],
        endpoint=hub_server.url,
        home=home,
    )
    for result in (refused, truncated):
        assert result["error"] == "DigestMismatchError"
        assert "the download was removed from the cache" in result["message"]
    for storage in (home / "hub" / "models--myorg--pt-islands", home / "hub" / "models--myorg--other"):
        assert not list((storage / "snapshots").iterdir())

    [offline] = run_client([pull("1.0.0")], endpoint=hub_server.url, home=home, offline=True)
    assert offline["error"] == "ModelNotFoundError" and "not in the local Hugging Face cache" in offline["message"]

    # Once the Hub serves the right bytes, the next pull downloads them again: no corrupt blob was kept.
    for name in ("config.json", "model.safetensors"):
        hub_server.restore(REPO, name)
    [pulled] = run_client([pull("1.0.0")], endpoint=hub_server.url, home=home)
    assert_same_files(Path(pulled["value"]), model_folder)


def test_push_needs_a_version_and_a_token_the_hub_accepts(hub_server, model_folder, tmp_path):
    bad_version, no_token, wrong_token = run_client(
        [push(model_folder, "1.0"), push(model_folder, "1.0.0"), push(model_folder, "1.0.0", token="hf_wrong")],
        endpoint=hub_server.url,
        home=tmp_path / "home",
        token=None,
        secrets=["hf_wrong"],
    )
    assert bad_version["error"] == "ConfigError"
    assert no_token == {"error": "HubError", "message": "no Hugging Face token: run `hf auth login` or set HF_TOKEN"}
    assert wrong_token["error"] == "HubError" and "refused the token" in wrong_token["message"]
    # Only the push with a token reached the server: turned away at create_repo (after which the
    # client, exist_ok, looks whether the repository exists), it wrote nothing.
    allowed = {"/api/agent-harnesses", "/api/repos/create", f"/api/models/{REPO}"}
    assert {path for _, path in hub_server.requests} <= allowed
    with pytest.raises(Exception, match="Repository not found"):
        hub_server.history(REPO)


def test_unreachable_endpoint_is_a_hub_error_naming_it(model_folder, tmp_path):
    endpoint = closed_port_endpoint()
    calls = [push(model_folder, "1.0.0"), ("versions", [REPO], {}), pull("1.0.0")]
    results = run_client(calls, endpoint=endpoint, home=tmp_path / "home")
    for result in results:
        assert result["error"] == "HubError"
        assert f"cannot reach the Hugging Face Hub at {endpoint}" in result["message"]
        assert "\n" not in result["message"]


def _request(server, method, path, *, payload=None, token=TOKEN):
    """(status, headers, body) of one request to ``server``, with ``payload`` sent as JSON."""
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{server.url}{path}", data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_server_answers_errors_the_way_the_client_expects(hub_server):
    create = {"name": "pt-islands", "organization": "myorg", "type": "model"}
    assert _request(hub_server, "POST", "/api/repos/create", payload=create, token=None)[0] == 401
    assert _request(hub_server, "POST", "/api/repos/create", payload=create, token="hf_other")[0] == 401
    status, _, body = _request(hub_server, "POST", "/api/repos/create", payload=create)
    assert status == 200 and json.loads(body)["url"] == f"{hub_server.url}/{REPO}"
    status, _, body = _request(hub_server, "POST", "/api/repos/create", payload=create)
    assert status == 409 and json.loads(body)["url"] == f"{hub_server.url}/{REPO}"  # exist_ok reads it

    status, headers, _ = _request(hub_server, "GET", "/api/models/myorg/nothing")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    status, headers, _ = _request(hub_server, "GET", f"/api/models/{REPO}/revision/v9.9.9")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    head = hub_server.history(REPO)[-1].oid
    status, headers, _ = _request(hub_server, "HEAD", f"/{REPO}/resolve/main/missing.txt")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", head)

    content = hub_server.read(REPO, ".gitattributes")
    status, headers, body = _request(hub_server, "HEAD", f"/{REPO}/resolve/main/.gitattributes", token=None)
    assert (status, body, headers["X-Repo-Commit"]) == (200, b"", head)
    assert headers["ETag"] == f'"{git_blob_sha1(content)}"' and int(headers["Content-Length"]) == len(content)

    tag = {"tag": "v1.0.0"}
    assert _request(hub_server, "POST", f"/api/models/{REPO}/tag/main", payload=tag, token=None)[0] == 401
    assert _request(hub_server, "POST", f"/api/models/{REPO}/tag/main", payload=tag)[0] == 200
    assert _request(hub_server, "POST", f"/api/models/{REPO}/tag/main", payload=tag)[0] == 409
    assert hub_server.tags(REPO) == {"v1.0.0": head}


def test_a_registered_run_round_trips_through_the_hub_bit_identically(hub_server, tmp_path):
    """The bar of the zoo: register a run, push it, pull it into a clean cache, load it offline,
    and it samples exactly what the registered model samples (same seed)."""
    import numpy as np

    from godiff.search import Search
    from godiff.zoo import load
    from godiff.zoo.registry import Registry

    run = tmp_path / "run"
    Search(
        "lj13",
        out=run,
        iterations=1,
        samples=4,
        train_steps=2,
        steps=4,
        relax_steps=2,
        oversample=1,
        batch_size=4,
        force_batch=4,
    ).run()
    entry = Registry(local=tmp_path / "registry", shipped=tmp_path / "none").add_run(
        run, name="lj13-rt", version="1.0.0"
    )
    expected = load(entry.path).sample(3, seed=7)

    def cli(home, *args, offline=False):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=hub_server.url,
            HF_HOME=str(home),
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_TOKEN=TOKEN,
            HF_HUB_DISABLE_XET="1",
            GODIFF_ZOO=str(tmp_path / "registry"),
        )
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        code = f"import sys; from godiff.cli.main import main; sys.argv[0] = 'godiff'; main(['zoo', *{list(args)!r}])"
        return subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    pushed = cli(tmp_path / "hf-pusher", "push", "lj13-rt@1.0.0", "--repo", "myorg/lj13-rt")
    assert pushed.returncode == 0, pushed.stderr
    assert "tag v1.0.0" in pushed.stdout and TOKEN not in pushed.stdout + pushed.stderr
    pulled = cli(tmp_path / "hf-clean", "pull", "myorg/lj13-rt@1.0.0")
    assert pulled.returncode == 0, pulled.stderr
    sample = (
        "import numpy, sys; from godiff.zoo import load; "
        "numpy.save(sys.argv[1], load('myorg/lj13-rt@1.0.0').sample(3, seed=7))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-clean"), HF_HUB_OFFLINE="1", HF_ENDPOINT=hub_server.url)
    out = tmp_path / "pulled.npy"
    proc = subprocess.run(
        [sys.executable, "-c", sample, str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.load(out), expected)
    missing = cli(tmp_path / "hf-clean", "pull", "myorg/lj13-rt@2.0.0")
    assert missing.returncode == 3 and "available: 1.0.0" in missing.stderr


def test_a_file_template_model_loads_anywhere_after_a_move_and_a_pull(hub_server, tmp_path):
    """A model trained on a template read from a file carries those atoms (template.xyz, digested
    like the rest): moved away from the file, the file deleted, pushed and pulled into a clean
    cache, it samples exactly what it sampled where it was trained, and names no local path."""
    import shutil

    import ase.io
    import numpy as np
    from ase.build import fcc111

    from godiff.search import Search
    from godiff.zoo import load
    from godiff.zoo.registry import Registry

    systems = tmp_path / "systems"
    systems.mkdir()
    ase.io.write(systems / "slab.xyz", fcc111("Pt", (2, 2, 2), vacuum=6.0), format="extxyz")
    (systems / "island.yaml").write_text(
        "name: island\nmobile: Pt2\ntemplate: {file: slab.xyz, frozen: {bottom: 1}}\n"
        "box: {kind: slab, z_min: 1.5, z_max: 4.0}\nenergy: {calculator: emt}\n"
    )
    run = tmp_path / "run"
    Search(
        systems / "island.yaml",
        out=run,
        iterations=1,
        samples=4,
        train_steps=2,
        steps=4,
        relax_steps=2,
        oversample=1,
        batch_size=4,
        force_batch=4,
    ).run()
    entry = Registry(local=tmp_path / "registry", shipped=tmp_path / "none").add_run(
        run, name="island-rt", version="1.0.0"
    )
    expected = load(entry.path).sample(3, seed=7)

    moved = tmp_path / "elsewhere" / "island-rt"
    shutil.copytree(entry.path, moved)
    shutil.rmtree(tmp_path / "registry")
    shutil.rmtree(systems)  # the file it was trained on is gone
    for name in ("system.json", "README.md", "training.json", "manifest.json"):
        assert str(systems) not in (moved / name).read_text(), name
    assert "template.xyz" in json.loads((moved / "manifest.json").read_text())["files"]
    assert np.array_equal(load(moved).sample(3, seed=7), expected)

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub_server.url,
        HF_HOME=str(tmp_path / "hf-pusher"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_XET="1",
        GODIFF_ZOO=str(tmp_path / "empty-registry"),
    )
    code = "import sys; from godiff.cli.main import main; sys.argv[0] = 'godiff'; main(['zoo', *sys.argv[1:]])"
    pushed = subprocess.run(
        [sys.executable, "-c", code, "push", str(moved), "--repo", "myorg/island-rt"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stderr
    sample = (
        "import numpy, sys; from godiff.zoo import load; "
        "numpy.save(sys.argv[1], load('myorg/island-rt@1.0.0').sample(3, seed=7))"
    )
    env.update(HF_HOME=str(tmp_path / "hf-clean"), OMP_NUM_THREADS="1")  # one thread, as this process: the same sums
    out = tmp_path / "pulled.npy"
    proc = subprocess.run(
        [sys.executable, "-c", sample, str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.load(out), expected)


def test_pull_and_versions_take_the_hub_clients_names_cache_dir_local_files_only_and_token(
    hub_server, model_folder, tmp_path
):
    """pull, versions and load take revision, token, cache_dir and local_files_only as
    huggingface_hub names them: a pull into another cache folder with an explicit token, then
    the cache alone (nothing asked of the Hub), and a version not in it refused as not found."""
    run_client([push(model_folder, "1.0.0")], endpoint=hub_server.url, home=tmp_path / "pusher")
    cache = tmp_path / "elsewhere-cache"
    options = {"cache_dir": str(cache), "token": TOKEN}
    [pulled] = run_client(
        [("pull", [REPO], {"revision": "v1.0.0", **options})],
        endpoint=hub_server.url,
        home=tmp_path / "home",
        token=None,
    )
    assert Path(pulled["value"]).is_relative_to(cache)
    assert_same_files(Path(pulled["value"]), model_folder)
    asked = len(hub_server.requests)
    local = {"cache_dir": str(cache), "local_files_only": True}
    listed, again, missing = run_client(
        [("versions", [REPO], local), ("pull", [REPO, "1.0.0"], local), ("pull", [REPO, "2.0.0"], local)],
        endpoint=hub_server.url,
        home=tmp_path / "home",
        token=None,
    )
    assert listed == {"value": ["1.0.0"]} and again == pulled
    assert missing["error"] == "ModelNotFoundError" and "local_files_only" in missing["message"]
    assert len(hub_server.requests) == asked  # the cache alone answered


def test_push_all_publishes_every_shipped_model_and_each_pulls_clean(hub_server, tmp_path):
    """``godiff zoo push --all --org ORG`` (what it gives ``hub.push_all``): each shipped version one
    commit and tag in ORG/NAME; a second push changes nothing; every version pulls into a clean
    cache with the shipped bytes."""
    from godiff.zoo.registry import Registry

    shipped = Registry(local=tmp_path / "none").shipped_entries()
    models = [[e.name, e.version, str(e.path)] for e in shipped]
    [first, again] = run_client(
        [("push_all", [models, "myorg"], {}), ("push_all", [models, "myorg"], {})],
        endpoint=hub_server.url,
        home=tmp_path / "pusher",
    )
    assert [ref for ref, _ in first["value"]] == [f"myorg/{e.name}@{e.version}" for e in shipped]
    assert again == first  # nothing pushed twice
    for name in {e.name for e in shipped}:
        commits = [c for c in hub_server.history(f"myorg/{name}") if c.summary.startswith("godiff model")]
        versions = [e.version for e in shipped if e.name == name]
        assert hub_server.tags(f"myorg/{name}") == {f"v{v}": c.oid for v, c in zip(versions, commits)}
    pulled = run_client(
        [("pull", [f"myorg/{e.name}", e.version], {}) for e in shipped],
        endpoint=hub_server.url,
        home=tmp_path / "puller",
    )
    for entry, result in zip(shipped, pulled):
        assert_same_files(Path(result["value"]), entry.path)


def test_push_all_needs_an_organization(tmp_path):
    from click.testing import CliRunner

    from godiff.cli.zoo import cli

    for args in (
        ["push", "--all"],
        ["push", "--all", "--org", "myorg", "--repo", "a/b"],
        ["push", "pt-islands-emt@1.0.0"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, (args, result.output)
        assert "--org" in result.output or "--repo" in result.output
