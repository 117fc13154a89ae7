"""A small Hugging Face Hub-compatible server, for testing Hub code offline with the real client.

The real ``huggingface_hub`` client (measured with 2.4.0, see ``/work/shared/hub-protocol.md``)
talks to this server when ``HF_ENDPOINT`` points at :attr:`HubServer.url`. It keeps git-like
repositories in a folder: commits that each hold a full snapshot (path -> content digest), the
``main`` branch, tags, and a content-addressed store of the file bytes. It answers every call that
``create_repo``, ``upload_folder`` (regular and LFS uploads), ``create_tag``/``delete_tag``,
``list_repo_refs``, ``repo_info``, ``list_repo_tree``, ``get_paths_info``, ``hf_hub_download`` and
``snapshot_download`` make, with the headers and error codes the client relies on.

Only the standard library is used: a :class:`http.server.ThreadingHTTPServer` in a thread.

Example:
    >>> with HubServer(tmp_path, upload_mode="regular") as server:      # doctest: +SKIP
    ...     env = {"HF_ENDPOINT": server.url, "HF_TOKEN": "hf_test"}
    ...     # run the client with this environment, then inspect the server:
    ...     server.tags("myorg/model"), server.requests

Not served: pull requests, Xet storage (answer ``upload_mode="regular"`` or set
``HF_HUB_DISABLE_XET=1``), LFS downloads by the batch API, pagination (one page holds every entry).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer", "git_blob_sha1", "lfs_pointer"]

LFS_THRESHOLD = 10 * 1024 * 1024  # bytes; the Hub stores larger files with LFS
DEFAULT_BRANCH = "main"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # API path segment -> repo type
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # repo type -> page URL prefix
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` stored as a blob: ``sha1(b"blob <len>\\0" + data)``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file's content."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ------------------------------------------------------------------------------------------------
# The git-like model


@dataclass(frozen=True)
class Entry:
    """One file of a commit: its content digest and how git stores it (regular blob or LFS)."""

    sha256: str
    size: int
    blob_id: str  # git-sha1 of the content, or of the LFS pointer for an LFS file
    lfs: bool

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag: the sha256 for LFS files, the git-sha1 for regular ones."""
        return self.sha256 if self.lfs else self.blob_id

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def as_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size, "blob_id": self.blob_id, "lfs": self.lfs}


@dataclass
class Commit:
    """A commit: its parent and the full snapshot of the repository (path -> :class:`Entry`)."""

    oid: str
    parent: str | None
    summary: str
    description: str
    date: str
    files: dict[str, Entry]

    def as_json(self) -> dict:
        return {
            "oid": self.oid,
            "parent": self.parent,
            "summary": self.summary,
            "description": self.description,
            "date": self.date,
            "files": {path: entry.as_json() for path, entry in sorted(self.files.items())},
        }


@dataclass
class Repo:
    """A repository: commits, branches and tags (each tag is ``{"commit", "message"}``)."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, dict] = field(default_factory=dict)

    def resolve(self, revision: str) -> str:
        """The commit oid of a branch, tag, ``refs/heads/x``, ``refs/tags/x`` or commit oid."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if name in self.branches:
            return self.branches[name]
        if name in self.tags:
            return self.tags[name]["commit"]
        if COMMIT_OID.match(revision) and revision in self.commits:
            return revision
        raise HubHTTPError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def history(self, branch: str = DEFAULT_BRANCH) -> list[Commit]:
        """The commits of ``branch``, oldest first."""
        commits, oid = [], self.branches.get(branch)
        while oid is not None:
            commits.append(self.commits[oid])
            oid = self.commits[oid].parent
        return commits[::-1]

    def as_json(self) -> dict:
        return {
            "type": self.repo_type,
            "id": self.repo_id,
            "private": self.private,
            "createdAt": self.created_at,
            "branches": self.branches,
            "tags": self.tags,
            "commits": [commit.as_json() for commit in self.commits.values()],
        }


class HubHTTPError(Exception):
    """An error answer: status, message, and the ``X-Error-Code`` the client turns into a type."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers=None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = {"error": message, **(body or {})}


class Store:
    """The repositories and the content store, kept in ``root`` (thread-safe).

    File bytes live in ``root/objects/<sha256>``; each repository's commits, branches and tags are
    also written to ``root/repos/<type>/<namespace>/<name>.json`` after every change, so a test
    can read what the server holds.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.pending_lfs: dict[str, int] = {}  # oid -> size, announced by the LFS batch call
        self.tampered: dict[tuple[str, str, str], bytes] = {}
        self._counter = 0

    # -- content ---------------------------------------------------------------------------------

    def put_object(self, data: bytes) -> str:
        """Store ``data``; return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / digest
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    def has_object(self, sha256: str, size: int | None = None) -> bool:
        path = self.root / "objects" / sha256
        return path.is_file() and (size is None or path.stat().st_size == size)

    def get_object(self, sha256: str) -> bytes:
        return (self.root / "objects" / sha256).read_bytes()

    def served_bytes(self, repo: Repo, path: str, entry: Entry) -> bytes:
        """The bytes the server sends for ``path``: the stored ones, unless a test tampered with them."""
        key = (repo.repo_type, repo.repo_id, path)
        return self.tampered[key] if key in self.tampered else self.get_object(entry.sha256)

    # -- repositories ----------------------------------------------------------------------------

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise HubHTTPError(404, "Repository not found", code="RepoNotFound") from None

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool) -> Repo:
        """A new repository whose first commit holds the Hub's default ``.gitattributes``."""
        repo = Repo(repo_type, repo_id, private, _now())
        self.repos[(repo_type, repo_id)] = repo
        entry = self.regular_entry(GITATTRIBUTES)
        self.commit(repo, DEFAULT_BRANCH, {".gitattributes": entry}, "initial commit", "")
        return repo

    def regular_entry(self, data: bytes) -> Entry:
        return Entry(self.put_object(data), len(data), git_blob_sha1(data), lfs=False)

    def lfs_entry(self, sha256: str) -> Entry:
        size = (self.root / "objects" / sha256).stat().st_size
        return Entry(sha256, size, git_blob_sha1(lfs_pointer(sha256, size)), lfs=True)

    def commit(self, repo: Repo, branch: str, files: dict[str, Entry], summary: str, description: str) -> Commit:
        """Record a snapshot as a new commit on ``branch`` and move the branch to it."""
        self._counter += 1
        parent = repo.branches.get(branch)
        seed = json.dumps([parent, summary, self._counter, {p: e.as_json() for p, e in sorted(files.items())}])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, summary, description, _now(), dict(files))
        repo.branches[branch] = oid
        self.save(repo)
        return repo.commits[oid]

    def save(self, repo: Repo) -> None:
        path = self.root / "repos" / repo.repo_type / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(repo.as_json(), indent=1))


# ------------------------------------------------------------------------------------------------
# HTTP


def _is_binary(sample: bytes) -> bool:
    """What the Hub treats as binary: a NUL byte, or bytes that are not UTF-8 text."""
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A sample may end in the middle of a multi-byte character.
        return not (exc.reason == "unexpected end of data" and exc.start >= len(sample) - 3)
    return False


def _flag(value: str | None) -> bool:
    return str(value).lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    """Routes each request to the :class:`HubServer` that owns this handler's server."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a kept-alive connection may stay idle
    hub: "HubServer"  # set on the subclass made for each server

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: the requests are recorded in HubServer.requests instead

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.hub._record(method, split.path)
        try:
            body = self._read_body()
            self.hub._route(self, method, split.path.split("/")[1:], body)
        except HubHTTPError as err:
            self._send_error(err, head=method == "HEAD")
        except (ValueError, KeyError, TypeError) as exc:  # a malformed request body
            self._send_error(HubHTTPError(400, f"Bad request: {exc}"), head=method == "HEAD")

    def _send_error(self, err: HubHTTPError, *, head: bool) -> None:
        """Answer with an error: its message in the body and ``X-Error-Message``, its ``X-Error-Code``."""
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code is not None:
            headers["X-Error-Code"] = err.code
        self.send_json(err.body, status=err.status, headers=headers, head=head)

    def _read_body(self) -> bytes:
        """The request body, sent with a Content-Length or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_bytes(self, status: int, data: bytes, *, headers=None, head: bool = False) -> None:
        """Answer with ``data`` (its true Content-Length; no body for HEAD)."""
        self.send_response(status)
        for key, value in {"Content-Type": "application/octet-stream", **(headers or {})}.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def send_json(self, payload, *, status: int = 200, headers=None, head: bool = False) -> None:
        """Answer with ``payload`` as JSON."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_bytes(status, json.dumps(payload).encode(), headers=headers, head=head)


class HubServer:
    """A Hub-compatible server on 127.0.0.1, backed by the folder ``root``.

    Args:
        root: folder for the content store and the repositories' JSON records.
        upload_mode: ``"auto"`` stores a file with LFS, like the Hub, when its sample is binary or
            it is over 10 MB; ``"regular"`` answers ``uploadMode: "regular"`` for every file, so the
            content travels base64 inside the commit call and the client never tries Xet.
        token: the one token accepted for writes; ``None`` accepts any ``Bearer`` token. A write
            without a (valid) ``Authorization: Bearer ...`` header gets 401.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, root, *, upload_mode: str = "auto", token: str | None = None):
        if upload_mode not in ("auto", "regular"):
            raise ValueError(f"upload_mode must be 'auto' or 'regular', not {upload_mode!r}")
        self.store = Store(Path(root))
        self.upload_mode = upload_mode
        self.token = token
        self._requests: list[tuple[str, str]] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:54321``; give it to the client as ``HF_ENDPOINT``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests look at ----------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request so far, as ``(method, path)`` (path without the query)."""
        with self.store.lock:
            return list(self._requests)

    def count(self, method: str, pattern: str) -> int:
        """How many ``method`` requests had a path matching the regular expression ``pattern``."""
        return sum(1 for m, path in self.requests if m == method and re.search(pattern, path))

    def history(self, repo_id: str, *, repo_type: str = "model", branch: str = DEFAULT_BRANCH) -> list[Commit]:
        """The commits of ``branch``, oldest first."""
        with self.store.lock:
            return self.store.repo(repo_type, repo_id).history(branch)

    def tags(self, repo_id: str, *, repo_type: str = "model") -> dict[str, str]:
        """Tag name -> commit oid."""
        with self.store.lock:
            return {name: tag["commit"] for name, tag in self.store.repo(repo_type, repo_id).tags.items()}

    def read(self, repo_id: str, path: str, *, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> bytes:
        """The stored (untampered) bytes of ``path`` at ``revision``."""
        with self.store.lock:
            repo = self.store.repo(repo_type, repo_id)
            return self.store.get_object(repo.commits[repo.resolve(revision)].files[path].sha256)

    def tamper(self, repo_id: str, path: str, data: bytes, *, repo_type: str = "model") -> None:
        """Serve ``data`` for ``path`` at every revision, leaving every recorded digest and ETag as is.

        This simulates corruption in storage or in transit: the client receives bytes that do not
        match what the repository's metadata says. It also applies to a file pushed later.
        """
        with self.store.lock:
            self.store.tampered[(repo_type, repo_id, path)] = bytes(data)

    def restore(self, repo_id: str, path: str, *, repo_type: str = "model") -> None:
        """Undo :meth:`tamper`: serve the stored bytes again."""
        with self.store.lock:
            self.store.tampered.pop((repo_type, repo_id, path), None)

    def _record(self, method: str, path: str) -> None:
        with self.store.lock:
            self._requests.append((method, unquote(path)))

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, h: _Handler, method: str, seg: list[str], body: bytes) -> None:
        """Send the request to the handler of its endpoint (``seg``: the raw, still-quoted path parts)."""
        with self.store.lock:
            if seg[:1] == ["api"]:
                return self._route_api(h, method, seg[1:], body)
            if seg[:1] == ["_lfs"] and len(seg) == 2 and method == "PUT":
                return self._lfs_put(h, seg[1], body)
            repo_type = "model"
            if seg[:1] in (["datasets"], ["spaces"]):
                repo_type, seg = TYPES[seg[0]], seg[1:]
            if len(seg) == 6 and seg[1].endswith(".git") and seg[2:] == ["info", "lfs", "objects", "batch"]:
                if method == "POST":
                    repo_id = f"{unquote(seg[0])}/{unquote(seg[1])[: -len('.git')]}"
                    return self._lfs_batch(h, repo_type, repo_id, json.loads(body))
            if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
                path = "/".join(unquote(s) for s in seg[4:])
                return self._resolve(h, method, repo_type, repo_id, unquote(seg[3]), path)
        raise HubHTTPError(404, f"Not found: {method} {h.path}")

    def _route_api(self, h: _Handler, method: str, seg: list[str], body: bytes) -> None:
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo(h, json.loads(body))
        if seg == ["validate-yaml"] and method == "POST":
            return h.send_json({"errors": [], "warnings": []})
        if seg == ["agent-harnesses"] and method == "GET":
            # Fetched by the client (best effort, once a day) to tell AI agents in its user agent.
            return h.send_json({"standardEnvVars": [], "harnesses": {}})
        if len(seg) < 3 or seg[0] not in TYPES:
            raise HubHTTPError(404, f"Not found: {method} {h.path}")
        repo_type, repo_id, rest = TYPES[seg[0]], f"{unquote(seg[1])}/{unquote(seg[2])}", seg[3:]
        action, args = (rest[0], [unquote(s) for s in rest[1:]]) if rest else ("", [])
        routes = {
            ("GET", ""): lambda: self._repo_info(h, repo_type, repo_id, None),
            ("GET", "revision"): lambda: self._repo_info(h, repo_type, repo_id, args[0]),
            ("GET", "refs"): lambda: self._refs(h, repo_type, repo_id),
            ("GET", "tree"): lambda: self._tree(h, repo_type, repo_id, args[0], "/".join(args[1:])),
            ("POST", "paths-info"): lambda: self._paths_info(h, repo_type, repo_id, args[0], body),
            ("POST", "preupload"): lambda: self._preupload(h, repo_type, repo_id, args[0], json.loads(body)),
            ("POST", "commit"): lambda: self._commit(h, repo_type, repo_id, args[0], body),
            ("POST", "tag"): lambda: self._create_tag(h, repo_type, repo_id, args[0], json.loads(body)),
            ("DELETE", "tag"): lambda: self._delete_tag(h, repo_type, repo_id, args[0]),
        }
        needs_arg = action in ("revision", "tree", "paths-info", "preupload", "commit", "tag")
        if (method, action) not in routes or (needs_arg and not args):
            raise HubHTTPError(404, f"Not found: {method} {h.path}")
        return routes[(method, action)]()

    # -- auth ------------------------------------------------------------------------------------

    def _authorized(self, h: _Handler) -> bool:
        scheme, _, token = h.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token) and (self.token is None or token == self.token)

    def _require_write(self, h: _Handler) -> None:
        """401 unless the request carries an accepted token."""
        if not self._authorized(h):
            raise HubHTTPError(401, "Invalid credentials in Authorization header")

    def _readable(self, h: _Handler, repo_type: str, repo_id: str) -> Repo:
        """The repository, if it exists and this request may read it (401 RepoNotFound otherwise, like the Hub)."""
        repo = self.store.repo(repo_type, repo_id)
        if repo.private and not self._authorized(h):
            raise HubHTTPError(401, "Repository not found", code="RepoNotFound")
        return repo

    def _writable(self, h: _Handler, repo_type: str, repo_id: str) -> Repo:
        self._require_write(h)
        return self.store.repo(repo_type, repo_id)

    # -- endpoints -------------------------------------------------------------------------------

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _create_repo(self, h: _Handler, payload: dict) -> None:
        self._require_write(h)
        if not payload.get("organization"):
            raise HubHTTPError(400, "this test server needs repo ids with a namespace (organization/name)")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubHTTPError(400, f"Invalid repo type: {repo_type}")
        repo_id = f"{payload['organization']}/{payload['name']}"
        if (repo_type, repo_id) in self.store.repos:
            url = self._repo_url(self.store.repos[(repo_type, repo_id)])
            raise HubHTTPError(409, f"You already created this {repo_type} repo", body={"url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.store.create_repo(repo_type, repo_id, private=private)
        h.send_json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _repo_info(self, h: _Handler, repo_type: str, repo_id: str, revision: str | None) -> None:
        repo = self._readable(h, repo_type, repo_id)
        commit = repo.commits[repo.resolve(revision or DEFAULT_BRANCH)]
        with_blobs = _flag((h.query.get("blobs") or [None])[0])
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": siblings,
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        h.send_json(info)

    def _refs(self, h: _Handler, repo_type: str, repo_id: str) -> None:
        repo = self._readable(h, repo_type, repo_id)
        h.send_json(
            {
                "branches": [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo.branches.items())
                ],
                "tags": [
                    {"name": name, "ref": f"refs/tags/{name}", "targetCommit": tag["commit"]}
                    for name, tag in sorted(repo.tags.items())
                ],
                "converts": [],
                "pullRequests": [],
            }
        )

    @staticmethod
    def _file_item(path: str, entry: Entry) -> dict:
        item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return item

    @staticmethod
    def _folder_item(path: str, commit: Commit) -> dict:
        listing = sorted((p, e.blob_id) for p, e in commit.files.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(listing).encode()).hexdigest(), "path": path}

    @staticmethod
    def _folders(commit: Commit) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)}

    def _tree(self, h: _Handler, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._readable(h, repo_type, repo_id)
        oid = repo.resolve(revision)
        commit = repo.commits[oid]
        folders = self._folders(commit)
        if path and path not in folders:
            raise HubHTTPError(404, f"{path} does not exist on {revision}", code="EntryNotFound")
        prefix = f"{path}/" if path else ""
        recursive = _flag((h.query.get("recursive") or [None])[0])

        def listed(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        items = [self._folder_item(p, commit) for p in sorted(folders) if listed(p)]
        items += [self._file_item(p, e) for p, e in sorted(commit.files.items()) if listed(p)]
        h.send_json(items)

    def _paths_info(self, h: _Handler, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._readable(h, repo_type, repo_id)
        commit = repo.commits[repo.resolve(revision)]
        folders = self._folders(commit)
        items = []
        for path in parse_qs(body.decode()).get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                items.append(self._file_item(path, commit.files[path]))
            elif path in folders:
                items.append(self._folder_item(path, commit))
        h.send_json(items)

    def _upload_mode(self, size: int, sample: bytes) -> str:
        if self.upload_mode == "regular":
            return "regular"
        return "lfs" if size > LFS_THRESHOLD or _is_binary(sample) else "regular"

    def _preupload(self, h: _Handler, repo_type: str, repo_id: str, revision: str, payload: dict) -> None:
        repo = self._writable(h, repo_type, repo_id)
        files = repo.commits[repo.resolve(revision)].files
        answer = []
        for item in payload["files"]:
            mode = self._upload_mode(int(item["size"]), base64.b64decode(item.get("sample", "")))
            info = {"path": item["path"], "uploadMode": mode, "shouldIgnore": False}
            if item["path"] in files:
                entry = files[item["path"]]
                info["oid"] = entry.sha256 if entry.lfs else entry.blob_id
            answer.append(info)
        h.send_json({"files": answer, "commitOid": repo.resolve(revision)})

    def _lfs_batch(self, h: _Handler, repo_type: str, repo_id: str, payload: dict) -> None:
        self._writable(h, repo_type, repo_id)
        if payload.get("operation") != "upload":
            raise HubHTTPError(400, "this test server only serves LFS uploads")
        objects = []
        for item in payload["objects"]:
            oid, size = str(item["oid"]), int(item["size"])
            answer = {"oid": oid, "size": size}
            if not self.store.has_object(oid, size):
                self.store.pending_lfs[oid] = size
                answer["authenticated"] = True
                answer["actions"] = {"upload": {"href": f"{self.url}/_lfs/{oid}"}}
            objects.append(answer)
        payload = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        h.send_json(payload, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, h: _Handler, oid: str, body: bytes) -> None:
        """The upload href of the LFS batch answer: like a signed URL, it needs no token."""
        size = self.store.pending_lfs.get(oid)
        if size is None:
            raise HubHTTPError(403, f"no upload of {oid} was announced by the LFS batch call")
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubHTTPError(400, f"the uploaded content does not match {oid} ({size} bytes)")
        self.store.put_object(body)
        del self.store.pending_lfs[oid]
        h.send_bytes(200, b"")

    def _commit(self, h: _Handler, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._writable(h, repo_type, repo_id)
        if _flag((h.query.get("create_pr") or [None])[0]):
            raise HubHTTPError(400, "this test server does not serve pull requests")
        if revision not in repo.branches:
            raise HubHTTPError(404, f"Invalid rev id: {revision} (commits go to a branch)", code="RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubHTTPError(400, "the first line of a commit must be its header")
        header = lines[0]["value"]
        head = repo.branches[revision]
        if header.get("parentCommit") not in (None, head):
            raise HubHTTPError(412, f"parent commit {header['parentCommit']} is not the head of {revision}")
        files = dict(repo.commits[head].files)
        for line in lines[1:]:
            self._apply(files, line["key"], line["value"])
        commit = self.store.commit(repo, revision, files, header.get("summary", ""), header.get("description", ""))
        h.send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
            }
        )

    def _apply(self, files: dict[str, Entry], key: str, value: dict) -> None:
        """Apply one NDJSON operation of a commit to the snapshot ``files``."""
        path = str(value["path"]).strip("/")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubHTTPError(400, f"{path}: unknown encoding {value.get('encoding')!r}")
            files[path] = self.store.regular_entry(base64.b64decode(value["content"]))
        elif key == "lfsFile":
            oid = str(value["oid"])
            if value.get("algo", "sha256") != "sha256" or not self.store.has_object(oid, value.get("size")):
                raise HubHTTPError(422, f"{path}: LFS object {oid} was not uploaded")
            files[path] = self.store.lfs_entry(oid)
        elif key == "deletedFile":
            if path not in files:
                raise HubHTTPError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
            del files[path]
        elif key == "deletedFolder":
            for p in [p for p in files if p.startswith(path + "/")]:
                del files[p]
        else:
            raise HubHTTPError(400, f"unknown commit operation {key!r}")

    def _create_tag(self, h: _Handler, repo_type: str, repo_id: str, revision: str, payload: dict) -> None:
        repo = self._writable(h, repo_type, repo_id)
        tag = str(payload.get("tag") or "")
        if not tag or "/" in tag:
            raise HubHTTPError(400, f"invalid tag name {tag!r}")
        oid = repo.resolve(revision)
        if tag in repo.tags:
            raise HubHTTPError(409, f"Tag {tag} already exists")
        repo.tags[tag] = {"commit": oid, "message": payload.get("message") or ""}
        self.store.save(repo)
        h.send_json({"tag": tag, "targetCommit": oid})

    def _delete_tag(self, h: _Handler, repo_type: str, repo_id: str, tag: str) -> None:
        repo = self._writable(h, repo_type, repo_id)
        if tag not in repo.tags:
            raise HubHTTPError(404, f"Invalid rev id: {tag}", code="RevisionNotFound")
        del repo.tags[tag]
        self.store.save(repo)
        h.send_json({"tag": tag, "deleted": True})

    def _resolve(self, h: _Handler, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        """HEAD or GET of a file: the bytes with the headers the client's download code requires."""
        repo = self._readable(h, repo_type, repo_id)
        oid = repo.resolve(revision)
        entry = repo.commits[oid].files.get(path)
        if entry is None:
            raise HubHTTPError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": oid})
        headers = {"X-Repo-Commit": oid, "ETag": f'"{entry.etag}"', "Accept-Ranges": "none"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": entry.size})
        h.send_bytes(200, self.store.served_bytes(repo, path, entry), headers=headers, head=method == "HEAD")
