"""The model zoo on the Hugging Face Hub: push, list and pull versioned model folders.

A Hub repository holds one model; each version is one commit tagged ``v<MAJOR.MINOR.PATCH>``,
whose files are exactly the model folder (:mod:`godiff.zoo.format`). A version is immutable:
pushing it again with the same content changes nothing, with different content it is refused
unless ``force=True``. Pulled folders live in the standard Hugging Face cache and are verified
against their manifest before use, so a corrupt download is never returned, and later calls work
offline (``HF_HUB_OFFLINE=1``).

Every failure of the Hub client becomes a one-line godiff error: a missing repository or version
is a :class:`~godiff.errors.ModelNotFoundError`, an unreachable endpoint or a refused token a
:class:`~godiff.errors.HubError`. The token is never printed or logged.

Example:
    >>> from godiff.zoo import hub
    >>> hub.push("zoo/pt-islands-emt/1.0.0", "myorg/pt-islands-emt", "1.0.0")   # doctest: +SKIP
    'https://huggingface.co/myorg/pt-islands-emt/commit/...'
    >>> hub.versions("myorg/pt-islands-emt")                                    # doctest: +SKIP
    ['1.0.0']
    >>> folder = hub.pull("myorg/pt-islands-emt", "1.0.0")                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from godiff.errors import (
    CheckpointError,
    ConfigError,
    DigestMismatchError,
    GodiffError,
    HubError,
    ModelNotFoundError,
    VersionExistsError,
    shown,
)
from godiff.zoo.format import MANIFEST, parse_version, read_json, verify_folder

__all__ = ["push", "push_all", "versions", "pull", "check_repo_id"]

logger = logging.getLogger(__name__)

NO_TOKEN = "no Hugging Face token: run `hf auth login` or set HF_TOKEN"


def push(
    folder, repo_id: str, version: str, *, token: str | None = None, private: bool = False, force: bool = False
) -> str:
    """Publish a model folder as ``version`` of the Hub repository ``repo_id``; return the commit URL.

    The folder is verified first; the repository is created if needed; the folder is uploaded in
    one commit (remote files it no longer has are deleted) tagged ``v<version>``.

    Args:
        folder: a model folder (:mod:`godiff.zoo.format`), its manifest checked before anything is sent.
        repo_id: ``organization/name`` on the Hub.
        version: ``MAJOR.MINOR.PATCH``.
        token: a Hub token with write access; by default the standard login (``hf auth login``) or
            ``HF_TOKEN``.
        private: create the repository private (an existing repository keeps its visibility).
        force: replace an existing version whose content differs (the tag moves to a new commit).

    Returns:
        The URL of the commit tagged ``v<version>``; when the version already exists with the same
        content, the URL of that commit, and nothing changes.

    Raises:
        CheckpointError: the folder is not a valid model folder (DigestMismatchError: a file changed).
        ConfigError: ``version`` is not ``MAJOR.MINOR.PATCH``.
        VersionExistsError: the version exists with different content and ``force`` is false.
        HubError: no token, the token was refused, or the Hub cannot be reached.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    manifest = verify_folder(folder)
    version = _canonical_version(version)
    token = _token(token)
    api = HfApi(token=token)
    tag, message = f"v{version}", f"godiff model {repo_id}@{version}"
    with _hub_errors(repo_id, writing=True):
        api.create_repo(repo_id, private=private, exist_ok=True)
        tagged = _tag_target(api, repo_id, tag)
        if tagged is not None:
            if _remote_manifest(api, repo_id, tagged) == manifest:
                logger.info("%s@%s is already on the Hub with this content", repo_id, version)
                return f"{api.endpoint}/{repo_id}/commit/{tagged}"
            if not force:
                raise VersionExistsError(
                    f"{repo_id} already has version {version} with different content "
                    "(versions are immutable: push a new version, or force to replace it)"
                )
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message, delete_patterns="*")
        if tagged is not None:
            api.delete_tag(repo_id, tag=tag)
        api.create_tag(repo_id, tag=tag, tag_message=message, revision=commit.oid)
    logger.info("pushed %s@%s: %s", repo_id, version, commit.commit_url)
    return commit.commit_url


def push_all(models, org: str, *, token: str | None = None, private: bool = False) -> list[tuple[str, str]]:
    """Publish several model versions under one organization: each ``(name, version, folder)`` of
    ``models`` to ``org/name`` as :func:`push` does, in the order given (a version already there
    with the same content is left as it is; one with other content is refused, never replaced).
    ``godiff zoo push --all --org ORG`` gives it every shipped model, oldest version first.
    Returns ``[(org/name@version, commit URL)]``."""
    if not isinstance(org, str) or "/" in org:
        raise ConfigError(f"Hub organization {shown(org)}: expected a name without '/', e.g. myorg")
    check_repo_id(f"{org}/model")
    models = list(models)
    if not models:
        raise ModelNotFoundError("no models to push")
    pushed = []
    for name, version, folder in models:
        repo_id = f"{org}/{name}"
        url = push(folder, repo_id, version, token=token, private=private)
        pushed.append((f"{repo_id}@{version}", url))
    return pushed


def versions(repo_id: str, *, token: str | None = None, cache_dir=None, local_files_only: bool = False) -> list[str]:
    """The versions of ``repo_id`` on the Hub (its ``v<MAJOR.MINOR.PATCH>`` tags), oldest first.

    With ``HF_HUB_OFFLINE=1``, the versions pulled into the local cache.

    Example:
        >>> versions("myorg/pt-islands-emt")   # doctest: +SKIP
        ['1.0.0', '1.2.0', '1.10.0']
    """
    check_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE or local_files_only:
        return _cached_versions(repo_id, cache_dir)
    with _hub_errors(repo_id):
        refs = HfApi(token=token).list_repo_refs(repo_id)
    return _sorted_versions(ref.name for ref in refs.tags)


def pull(
    repo_id: str, revision: str, *, token: str | None = None, cache_dir=None, local_files_only: bool = False
) -> Path:
    """Download version ``revision`` (``1.2.0`` or its tag ``v1.2.0``) of ``repo_id`` into the
    Hugging Face cache; return its verified folder.

    ``token``, ``cache_dir`` and ``local_files_only`` mean what they mean to
    ``huggingface_hub.snapshot_download``: a token instead of the login's, another cache folder,
    and the cache alone (as ``HF_HUB_OFFLINE=1`` for this call).

    Every file's SHA-256 is checked against the manifest before the folder is returned. A
    download that fails the check is removed from the cache (its snapshot, and each cached blob
    whose bytes do not match its own digest), so that no later call, online or offline, finds it.
    A version pulled once loads again with ``HF_HUB_OFFLINE=1``.

    Raises:
        ModelNotFoundError: no such repository, or no such version (the message lists the
            available ones); offline, a version that is not in the cache.
        DigestMismatchError: a downloaded file differs from the manifest.
        CheckpointError: the version is not a valid model folder.
        HubError: the Hub cannot be reached or refused the request.
    """
    check_repo_id(repo_id)
    version = _canonical_version(revision)
    offline = constants.HF_HUB_OFFLINE or local_files_only
    with _hub_errors(repo_id):
        try:
            folder = Path(
                snapshot_download(
                    repo_id, revision=f"v{version}", token=token, cache_dir=cache_dir, local_files_only=local_files_only
                )
            )
        except RevisionNotFoundError as exc:
            raise _no_such_version(repo_id, version) from exc
        except LocalEntryNotFoundError as exc:
            if not offline:
                raise
            cached = ", ".join(_cached_versions(repo_id, cache_dir)) or "none"
            why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "local_files_only was asked"
            raise ModelNotFoundError(
                f"{repo_id}@{version} is not in the local Hugging Face cache and {why} (cached: {cached})"
            ) from exc
        except OSError as exc:
            if not _is_size_mismatch(exc):
                raise
            _evict_snapshot(_cached_snapshot(repo_id, f"v{version}", cache_dir))
            raise DigestMismatchError(
                f"{repo_id}@{version}: {_first_line(exc).rstrip('.')}; the download was removed from the cache"
            ) from exc
    try:
        verify_folder(folder)  # a snapshot: its links may lead into the repo's blobs/, no further
    except DigestMismatchError as exc:
        _evict_snapshot(folder)
        raise DigestMismatchError(f"{repo_id}@{version}: {exc}; the download was removed from the cache") from exc
    return folder


# -- versions and tags ----------------------------------------------------------------------------


def _canonical_version(version: str) -> str:
    """``"1.2.3"`` (or ``"v1.2.3"``) -> ``"1.2.3"``; a ConfigError for anything else."""
    return "%d.%d.%d" % parse_version(version)


def _sorted_versions(tags) -> list[str]:
    """The versions named by ``v<MAJOR.MINOR.PATCH>`` tags, sorted by semantic version; other tags are ignored."""
    found = set()
    for tag in tags:
        try:
            version = _canonical_version(tag)
        except GodiffError:
            continue
        if tag == f"v{version}":
            found.add(version)
    return sorted(found, key=parse_version)


def _no_such_version(repo_id: str, version: str) -> ModelNotFoundError:
    try:
        available = ", ".join(versions(repo_id)) or "none"
    except GodiffError:
        available = "unknown"
    return ModelNotFoundError(f"{repo_id} has no version {version} (available: {available})")


def _tag_target(api: HfApi, repo_id: str, tag: str) -> str | None:
    """The commit that ``tag`` points to, or None."""
    return next((ref.target_commit for ref in api.list_repo_refs(repo_id).tags if ref.name == tag), None)


def _remote_manifest(api: HfApi, repo_id: str, commit: str) -> dict | None:
    """The parsed ``manifest.json`` of ``commit`` (None if it has none or it is unreadable).

    Read through a temporary folder, so that the Hugging Face cache does not get a partial snapshot.
    """
    with tempfile.TemporaryDirectory(prefix="godiff-manifest-") as tmp:
        try:
            path = api.hf_hub_download(repo_id, MANIFEST, revision=commit, local_dir=tmp)
            return read_json(Path(path))
        except (EntryNotFoundError, CheckpointError):
            return None


# -- the local cache ------------------------------------------------------------------------------


def _storage_folder(repo_id: str, cache_dir=None) -> Path:
    """The Hugging Face cache folder of a model repository (``models--org--name``)."""
    return Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _cached_snapshot(repo_id: str, revision: str, cache_dir=None) -> Path | None:
    """The cached snapshot folder that ``revision`` (a tag or branch) pointed to when last resolved."""
    ref = _storage_folder(repo_id, cache_dir) / "refs" / revision
    if not ref.is_file():
        return None
    return _storage_folder(repo_id, cache_dir) / "snapshots" / ref.read_text().strip()


def _cached_versions(repo_id: str, cache_dir=None) -> list[str]:
    """The versions whose snapshot is in the local cache."""
    refs = _storage_folder(repo_id, cache_dir) / "refs"
    if not refs.is_dir():
        return []
    pulled = []
    for ref in refs.iterdir():
        snapshot = _cached_snapshot(repo_id, ref.name, cache_dir)
        if snapshot is not None and snapshot.is_dir():
            pulled.append(ref.name)
    return _sorted_versions(pulled)


def _is_size_mismatch(exc: OSError) -> bool:
    """Whether the client refused a download whose size differs from the announced one."""
    return type(exc) is OSError and str(exc).startswith("Consistency check failed")


def _evict_snapshot(snapshot: Path | None) -> None:
    """Remove a snapshot that failed verification, and each blob it links that is corrupt.

    The cache names each blob by its ETag (the sha256 of an LFS file, the git-sha1 of a regular
    one); a blob whose bytes do not hash to its name would be reused by the next download of the
    same file, so it goes too.
    """
    if snapshot is None or not snapshot.is_dir():
        return
    blobs = (snapshot.parent.parent / "blobs").resolve()
    for path in snapshot.rglob("*"):
        if path.is_symlink():
            blob = path.resolve()
            if blob.parent == blobs and blob.is_file() and not _blob_matches_name(blob):
                blob.unlink(missing_ok=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    logger.warning("removed the corrupt download %s from the Hugging Face cache", snapshot)


def _blob_matches_name(blob: Path) -> bool:
    """Whether a cached blob's bytes hash to its name (sha256, or git-sha1 ``sha1(b"blob <size>\\0" + bytes)``)."""
    if len(blob.name) == 64:
        digest = hashlib.sha256()
    elif len(blob.name) == 40:
        digest = hashlib.sha1(b"blob %d\0" % blob.stat().st_size)
    else:
        return False
    with open(blob, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == blob.name


# -- tokens and errors ----------------------------------------------------------------------------


def _token(token: str | None) -> str:
    """The token to write with: the argument, else the standard login or ``HF_TOKEN``."""
    token = token or get_token()
    if not token:
        raise HubError(NO_TOKEN)
    return token


def check_repo_id(repo_id: object) -> str:
    """A Hub repository id ``organization/name`` as the Hub accepts it, else a one-line
    :class:`ConfigError` (exit 2)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    shown_id = shown(repo_id)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ConfigError(f"Hub repository {shown_id}: expected ORGANIZATION/NAME, e.g. myorg/pt-islands-emt")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"Hub repository {shown_id}: {_first_line(exc)}") from None
    return repo_id


@contextmanager
def _hub_errors(repo_id: str, *, writing: bool = False):
    """Turn the Hub client's exceptions into one-line godiff errors (the original stays as the cause)."""
    try:
        yield
    except GodiffError:
        raise
    except Exception as exc:
        error = _godiff_error(exc, repo_id, writing=writing)
        if error is None:
            raise
        raise error from exc


def _godiff_error(exc: Exception, repo_id: str, *, writing: bool) -> GodiffError | None:
    """The godiff error for a Hub client exception, or None for an unexpected one."""
    endpoint = constants.ENDPOINT
    status = _status(exc)
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFoundError(f"{repo_id}: revision not found on the Hub at {endpoint}")
    if isinstance(exc, RepositoryNotFoundError):
        if writing and status in (401, 403):
            return _refused(endpoint, status, repo_id, writing=writing)
        return ModelNotFoundError(
            f"{repo_id} not found on the Hub at {endpoint} (a private repository needs `hf auth login` or HF_TOKEN)"
        )
    if isinstance(exc, HfHubHTTPError):
        if status in (401, 403):
            return _refused(endpoint, status, repo_id, writing=writing)
        return HubError(f"the Hub at {endpoint} answered HTTP {status} for {repo_id}: {_server_message(exc)}")
    if isinstance(exc, OfflineModeIsEnabled):
        return HubError(f"HF_HUB_OFFLINE is set: cannot reach the Hub for {repo_id}")
    cause = _network_cause(exc)
    if cause is not None:
        return HubError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(cause).__name__}); "
            "check HF_ENDPOINT and the network, or set HF_HUB_OFFLINE=1 to use the local cache"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return HubError(f"cannot download {repo_id} from the Hub at {endpoint}: {_first_line(exc)}")
    return None


def _refused(endpoint: str, status: int, repo_id: str, *, writing: bool) -> HubError:
    access = "write" if writing else "read"
    return HubError(
        f"the Hub at {endpoint} refused the token (HTTP {status}) for {repo_id}: it needs {access} access; "
        "run `hf auth login` or set HF_TOKEN"
    )


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _server_message(exc: HfHubHTTPError) -> str:
    return _first_line(getattr(exc, "server_message", None) or exc)


def _first_line(text) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(text).__name__


def _network_cause(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain that says the endpoint could not be reached, if any."""
    transport = _transport_errors()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, transport) and not isinstance(exc, (OfflineModeIsEnabled, HfHubHTTPError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


_TRANSPORT_ERRORS = {
    "httpx2": ("TransportError",),
    "httpx": ("TransportError",),
    "requests": ("ConnectionError", "Timeout"),
}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the HTTP library the client uses (httpx2, httpx or requests,
    depending on the huggingface_hub version; only the ones already imported can have raised)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in _TRANSPORT_ERRORS.items():
        if module in sys.modules:
            errors += [getattr(sys.modules[module], name) for name in names if hasattr(sys.modules[module], name)]
    return tuple(errors)
