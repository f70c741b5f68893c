"""Downloads from a model hub laid out like Hugging Face's, resumable and checked.

The hub answers two kinds of request:

- ``GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true``: JSON with the
  commit (``sha``) and ``siblings``, each with ``rfilename``, ``size``, the git
  ``blobId`` and, for large files, ``lfs.sha256``;
- ``GET {endpoint}/{repo}/resolve/{commit}/{filename}``: the file (redirects allowed),
  honouring ``Range`` so that a broken download continues where it stopped.

Dataset repositories are the same under ``/api/datasets/…`` and ``/datasets/{repo}/resolve/…``.

Files are pinned to the commit the listing named, so a repository updated mid-download
cannot mix versions. Every file is checked (sha256 for LFS files, the git blob hash for
small ones) before it gets its final name; a partial file is kept as
``.downloads/NAME.incomplete`` until then. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from muse_desktop import __version__
from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, Cancelled, Done, Event, Log, Progress
from muse_desktop.base.fileio import atomic_write_text
from muse_desktop.base.fileio import check_free_space as _check_free_space

DEFAULT_ENDPOINT = "https://huggingface.co"
ENV_ENDPOINT = "MUSE_HUB_ENDPOINT"  # also honours HF_ENDPOINT, like huggingface_hub
CHUNK = 1 << 20
RETRIES = 3
TIMEOUT_S = 30
PARTIAL_DIR = ".downloads"
MANIFEST = ".muse-download.json"  # which files were checked, by repo and commit


class DownloadError(MuseError, RuntimeError):
    """A download that cannot go on; the message is meant for the person using the app."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # the git blob id (small files)


class RepoType:
    MODEL = "model"
    DATASET = "dataset"


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    commit: str
    files: tuple[RemoteFile, ...]
    repo_type: str = RepoType.MODEL

    def select(self, patterns: Iterable[str]) -> list[RemoteFile]:
        patterns = tuple(patterns)
        return [f for f in self.files if any(fnmatch.fnmatch(f.name, p) for p in patterns)]


def endpoint_from_env() -> str:
    return (os.environ.get(ENV_ENDPOINT) or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": f"muse-desktop/{__version__}", **(headers or {})})


def _describe_http(exc: urllib.error.HTTPError, what: str) -> str:
    if exc.code in (401, 403):
        return f"The hub refused access to {what} (HTTP {exc.code}): it may need a login or an accepted licence."
    if exc.code == 404:
        return f"{what[:1].upper()}{what[1:]} was not found on the hub (HTTP 404)."
    return f"The hub answered HTTP {exc.code} for {what}."


def _describe_network(exc: Exception, endpoint: str) -> str:
    host = urllib.parse.urlsplit(endpoint).netloc or endpoint
    return f"Could not reach {host} ({getattr(exc, 'reason', exc)}). Is this computer online?"


def _api_url(endpoint: str, repo_id: str, revision: str, repo_type: str) -> str:
    kind = "datasets" if repo_type == RepoType.DATASET else "models"
    return f"{endpoint}/api/{kind}/{repo_id}/revision/{urllib.parse.quote(revision, safe='')}?blobs=true"


def resolve_url(endpoint: str, listing: RepoListing, name: str) -> str:
    """Where a file of ``listing`` is served, pinned to the listing's commit."""
    prefix = "datasets/" if listing.repo_type == RepoType.DATASET else ""
    return f"{endpoint.rstrip('/')}/{prefix}{listing.repo_id}/resolve/{listing.commit}/{urllib.parse.quote(name)}"


_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


def unsafe_name_reason(name: str) -> str | None:
    """Why a listed file name could write outside the folder (on any OS), or None when it is safe."""
    if not name or name.startswith("/"):
        return "it is empty or starts at the root"
    if "\\" in name or ":" in name:
        return "it has a backslash or a colon (a drive letter or another folder on Windows)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it has control characters"
    if any(c in '<>"|?*' for c in name):
        return "it has characters Windows does not allow in file names"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "it has an empty, '.' or '..' folder"
        if part.endswith((" ", ".")):
            return "a part ends in a space or a dot, which Windows drops"
        if part.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
            return f"'{part}' is a device name on Windows"
    return None


def list_repo(repo_id: str, revision: str = "main", endpoint: str | None = None,
              repo_type: str = RepoType.MODEL) -> RepoListing:
    """Ask the hub which files ``repo_id`` has at ``revision`` (and which commit that is)."""
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    url = _api_url(endpoint, repo_id, revision, repo_type)
    what = f"the {'data set' if repo_type == RepoType.DATASET else 'model'} '{repo_id}'"
    try:
        with urllib.request.urlopen(_request(url), timeout=TIMEOUT_S) as response:
            info = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise DownloadError(_describe_http(exc, what)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(_describe_network(exc, endpoint)) from None
    except (ValueError, UnicodeDecodeError):
        raise DownloadError(f"The hub sent an unreadable file list for '{repo_id}'.") from None
    try:
        files = tuple(
            RemoteFile(
                name=s["rfilename"],
                size=int((s.get("lfs") or {}).get("size", s.get("size", -1))),
                sha256=(s.get("lfs") or {}).get("sha256"),
                git_sha1=s.get("blobId"),
            )
            for s in info["siblings"]
        )
        commit = str(info.get("sha") or revision)
    except (KeyError, TypeError, ValueError):
        raise DownloadError(f"The hub sent an unexpected file list for '{repo_id}'.") from None
    for remote in files:
        # A listing must never make us write outside the target folder, on any OS.
        reason = unsafe_name_reason(remote.name) if isinstance(remote.name, str) else "it is not text"
        if reason:
            raise DownloadError(f"The hub listed an unsafe file name: {remote.name!r} ({reason}).")
        if not (remote.sha256 or (remote.git_sha1 and remote.size >= 0)):
            raise DownloadError(f"The hub listed {remote.name!r} without a checksum, so it could not be checked. "
                                "Nothing was downloaded.")
    return RepoListing(repo_id, commit, files, repo_type)


class _Checker:
    """The checksum a file must have: sha256 (LFS) or the git blob hash."""

    def __init__(self, remote: RemoteFile):
        self.remote = remote
        if remote.sha256:
            self.hash = hashlib.sha256()
            self.expected = remote.sha256.lower()
        elif remote.git_sha1 and remote.size >= 0:
            self.hash = hashlib.sha1(f"blob {remote.size}\0".encode())
            self.expected = remote.git_sha1.lower()
        else:  # list_repo refuses such files; never accept bytes unchecked
            raise DownloadError(f"{remote.name!r} has no checksum, so it cannot be checked.")

    def update(self, data: bytes) -> None:
        self.hash.update(data)

    def ok(self) -> bool:
        return self.hash.hexdigest() == self.expected


def _hash_existing(path: Path, checker: _Checker, cancel: CancelToken | None) -> int:
    """Feed the bytes already downloaded into ``checker``; return how many there are."""
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            if cancel is not None:
                cancel.check()
            checker.update(chunk)
            done += len(chunk)
    return done


def check_free_space(folder: Path, needed: int, what: str = "the download") -> None:
    """The app's one free-space rule (muse_desktop.base.fileio), as a DownloadError."""
    _check_free_space(folder, needed, what, DownloadError)


def download_file(
    url: str,
    remote: RemoteFile,
    final: Path,
    cancel: CancelToken | None = None,
    progress_base: int = 0,
    progress_total: int | None = None,
) -> Iterator[Event]:
    """Download ``url`` to ``final``, resuming a partial file; checked before it gets its name."""
    partial = _partial(final.parent, final.name)
    partial.parent.mkdir(parents=True, exist_ok=True)
    total = progress_total if progress_total is not None else remote.size
    # What is already on disk is hashed once; a retry after a broken connection carries on
    # with the same running checksum (the file holds exactly the bytes it was fed).
    checker = _Checker(remote)
    have = _hash_existing(partial, checker, cancel) if partial.exists() else 0
    if remote.size >= 0 and have > remote.size:  # not ours or a different version: start again
        partial.unlink()
        checker, have = _Checker(remote), 0
    for attempt in range(RETRIES + 1):
        if remote.size >= 0 and have == remote.size:
            break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with urllib.request.urlopen(_request(url, headers), timeout=TIMEOUT_S) as response:
                if have and response.status != 206:
                    # The server ignored the range: the body is the whole file.
                    checker, have = _Checker(remote), 0
                    mode = "wb"
                else:
                    mode = "ab" if have else "wb"
                with open(partial, mode) as out:
                    last = 0.0
                    while True:
                        if cancel is not None and cancel.cancelled:
                            raise Cancelled("download cancelled")
                        chunk = response.read1(CHUNK)  # what has arrived: cancel stays quick on slow lines
                        if not chunk:
                            break
                        out.write(chunk)
                        checker.update(chunk)
                        have += len(chunk)
                        now = time.monotonic()
                        if now - last > 0.2:
                            last = now
                            yield Progress(progress_base + have, total, "bytes", remote.name)
                    out.flush()
                    os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # our partial file does not fit the server's: start again
                partial.unlink()
                checker, have = _Checker(remote), 0
                continue
            raise DownloadError(_describe_http(exc, remote.name)) from None
        except (OSError, http.client.HTTPException) as exc:
            # Connection refused, dropped, reset or timed out: resume from what we have.
            if getattr(exc, "errno", None) == errno.ENOSPC:
                raise DownloadError(f"The disk filled up while downloading {remote.name}; "
                                    "free some space and press the button again to continue.") from None
            if attempt == RETRIES:
                if isinstance(exc, urllib.error.URLError):
                    raise DownloadError(_describe_network(exc, url)) from None
                raise DownloadError(
                    f"The connection broke while downloading {remote.name} ({exc!r}). "
                    "What arrived is kept: try again to continue where it stopped."
                ) from None
            yield Log(f"Connection lost; continuing {remote.name} from {have / 2**20:.1f} MiB", "warning")
            time.sleep(min(2**attempt, 8) * 0.25)
            continue
        if remote.size < 0 or have >= remote.size:
            break
        # The server closed the connection before the end without an error.
        yield Log(f"Connection lost; continuing {remote.name} from {have / 2**20:.1f} MiB", "warning")
    else:
        raise DownloadError(f"Could not download {remote.name} completely.")
    if remote.size >= 0 and have != remote.size:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{remote.name} arrived with {have} bytes instead of {remote.size}; try again.")
    if not checker.ok():
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{remote.name} arrived damaged (its checksum does not match); try again.")
    os.replace(partial, final)
    yield Progress(progress_base + have, total, "bytes", remote.name)


def _read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _partial(dest: Path, name: str) -> Path:
    return dest / PARTIAL_DIR / (name + ".incomplete")


def pending(dest: str | os.PathLike[str], listing: RepoListing, patterns: Iterable[str]) -> list[RemoteFile]:
    """The files of ``listing`` matching ``patterns`` not yet in ``dest`` checked at this commit."""
    dest = Path(dest)
    manifest = _read_manifest(dest)
    verified = manifest.get("files", {}) if manifest.get("commit") == listing.commit else {}
    return [
        f for f in listing.select(patterns)
        if not ((dest / f.name).is_file() and verified.get(f.name) == (f.sha256 or f.git_sha1)
                and (dest / f.name).stat().st_size == f.size)
    ]


def bytes_left(dest: str | os.PathLike[str], files: Iterable[RemoteFile]) -> int:
    """How much of ``files`` is still to download into ``dest`` (partial files count as arrived)."""
    dest = Path(dest)
    return sum(max(f.size, 0) - (_partial(dest, f.name).stat().st_size if _partial(dest, f.name).exists() else 0)
               for f in files)


def download_repo(
    repo_id: str,
    dest: str | os.PathLike[str],
    patterns: Iterable[str] = ("*",),
    revision: str = "main",
    endpoint: str | None = None,
    cancel: CancelToken | None = None,
    listing: RepoListing | None = None,
    repo_type: str = RepoType.MODEL,
) -> Iterator[Event]:
    """Download the files of ``repo_id`` matching ``patterns`` into ``dest``; Done's path is ``dest``.

    Files checked by an earlier run of the same commit are not fetched again.
    """
    dest = Path(dest)
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    listing = listing or list_repo(repo_id, revision, endpoint, repo_type)
    wanted = listing.select(patterns)
    if not wanted:
        raise DownloadError(f"'{repo_id}' has no files matching {', '.join(patterns)}.")
    todo = pending(dest, listing, patterns)
    manifest = _read_manifest(dest)
    verified = manifest.get("files", {}) if manifest.get("commit") == listing.commit else {}
    total = sum(max(f.size, 0) for f in todo)
    check_free_space(dest, bytes_left(dest, todo), f"'{repo_id}'")
    if todo:
        yield Log(f"Downloading {len(todo)} files ({total / 2**30:.2f} GiB) of {repo_id}")
    done = 0
    for remote in todo:
        target = dest / remote.name
        target.parent.mkdir(parents=True, exist_ok=True)
        url = resolve_url(endpoint, listing, remote.name)
        yield from download_file(url, remote, target, cancel, done, total)
        done += max(remote.size, 0)
        verified[remote.name] = remote.sha256 or remote.git_sha1
        atomic_write_text(dest / MANIFEST, json.dumps(
            {"repo": repo_id, "commit": listing.commit, "files": verified}, indent=1))
    with contextlib.suppress(OSError):
        (dest / PARTIAL_DIR).rmdir()
    yield Done(f"{repo_id} is ready in {dest}", str(dest), {"commit": listing.commit, "files": len(wanted)})


def fetch_small(listing: RepoListing, name: str, endpoint: str | None = None, limit: int = 64 << 20) -> bytes:
    """One small file of ``listing`` read into memory and checked, written nowhere.

    For what must be looked at before anything is saved (an adapter's config, a
    tokenizer to compare): a refusal then leaves no file behind.
    """
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    remote = next((f for f in listing.files if f.name == name), None)
    if remote is None:
        raise DownloadError(f"'{listing.repo_id}' has no file {name}.")
    if remote.size > limit:
        raise DownloadError(f"{name} of '{listing.repo_id}' is {remote.size / 2**20:.0f} MiB, too large to check.")
    url = resolve_url(endpoint, listing, name)
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(_request(url), timeout=TIMEOUT_S) as response:
                data = response.read(limit + 1)
            break
        except urllib.error.HTTPError as exc:
            raise DownloadError(_describe_http(exc, name)) from None
        except (OSError, http.client.HTTPException) as exc:
            if attempt == RETRIES:
                raise DownloadError(_describe_network(exc, endpoint)) from None
            time.sleep(min(2**attempt, 8) * 0.25)
    checker = _Checker(remote)
    checker.update(data)
    if (remote.size >= 0 and len(data) != remote.size) or not checker.ok():
        raise DownloadError(f"{name} of '{listing.repo_id}' arrived damaged (its checksum does not match); try again.")
    return data
