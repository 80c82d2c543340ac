"""The only module that talks to the Hub, always through huggingface_hub.

huggingface_hub is imported on first use, never at import time, so that a
warm, commit-pinned import never loads it. Endpoint, token and offline mode
follow its environment variables (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).

Calls made, and nothing else:
  * ``GET /api/{type}s/{repo}/revision/{rev}``   resolve a revision to a commit
  * ``GET /api/{type}s/{repo}/refs``             branches and tags (unpinned imports)
  * ``GET /api/{type}s/{repo}/tree/{sha}/build`` the build/ listing, recursive
  * ``GET /[kernels/]{repo}/resolve/{sha}/{path}``  one request per file
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import BinaryIO

from .store import RepoAddress

logger = logging.getLogger("kernelhook")

REPO_TYPES = ("kernel", "model")  # kernel repos are the Hub's own type for kernels; try them first
LARGE_FILE = 8 * 1024 * 1024  # files at least this big get a progress bar
_SHA = re.compile(r"[0-9a-f]{40}")


class HubError(Exception):
    """Base of the Hub's answers, before resolve.py turns them into user-facing errors."""

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.url = url


class RepoMissing(HubError):
    pass


class RevisionMissing(HubError):
    pass


class EntryMissing(HubError):
    pass


class HubUnavailable(HubError):
    """Offline mode, a connection failure, a timeout or a server error: a cached answer may do."""


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, without importing it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class ListingEntry:
    """A file under build/ as the Hub lists it."""

    path: str  # relative to the repo root
    size: int
    git_oid: str  # git blob sha1 (of the LFS pointer, for LFS files)
    lfs_sha256: str | None  # sha256 of the real content, for LFS files

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "oid": self.git_oid, "lfs_sha256": self.lfs_sha256}

    @classmethod
    def from_json(cls, data: dict) -> "ListingEntry":
        return cls(data["path"], int(data["size"]), data["oid"], data.get("lfs_sha256"))


@dataclass(frozen=True)
class Refs:
    branches: dict[str, str]
    tags: dict[str, str]


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def resolve_revision(repo: RepoAddress, revision: str) -> str:
    """One request: the commit a branch, tag, full or short sha names."""
    with _translated(repo, revision):
        info = _api().repo_info(repo.repo_id, repo_type=repo.repo_type, revision=revision)
    return _checked_sha(info.sha, repo)


def list_refs(repo: RepoAddress) -> Refs:
    with _translated(repo, None):
        refs = _api().list_repo_refs(repo.repo_id, repo_type=repo.repo_type)
    return Refs(
        branches={ref.name: _checked_sha(ref.target_commit, repo) for ref in refs.branches},
        tags={ref.name: _checked_sha(ref.target_commit, repo) for ref in refs.tags},
    )


def list_build(repo: RepoAddress, commit: str) -> list[ListingEntry]:
    """Every file under build/ at a commit (one request per page of 1000 entries)."""
    from huggingface_hub.hf_api import RepoFile

    with _translated(repo, commit):
        items = list(_api().list_repo_tree(repo.repo_id, "build", recursive=True, revision=commit, repo_type=repo.repo_type))
    return [
        ListingEntry(item.path, int(item.size), item.blob_id, item.lfs.sha256 if item.lfs else None)
        for item in items
        if isinstance(item, RepoFile)
    ]


def download(repo: RepoAddress, commit: str, path: str, into: BinaryIO, size: int) -> None:
    """One GET of one file at a commit into an open file; a progress bar for large files only."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers, tqdm

    url = hf_hub_url(repo.repo_id, path, repo_type=repo.repo_type, revision=commit, endpoint=endpoint())
    headers = build_hf_headers(library_name="kernelhook")
    # None keeps huggingface_hub's own bar, which honours HF_HUB_DISABLE_PROGRESS_BARS.
    bar = None if size >= LARGE_FILE else functools.partial(tqdm, disable=True)
    with _translated(repo, commit, url=url):
        http_get(url, into, headers=headers, expected_size=size, displayed_filename=path.rsplit("/", 1)[-1],
                 tqdm_class=bar)


def _checked_sha(sha: object, repo: RepoAddress) -> str:
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise HubUnavailable(f"the Hub answered for {repo} with {sha!r}, which is not a commit sha")
    return sha


class _translated:
    """Turn huggingface_hub's and the transport's exceptions into the HubError family."""

    def __init__(self, repo: RepoAddress, revision: str | None, url: str | None = None):
        self.repo, self.revision, self.url = repo, revision, url

    def __enter__(self):
        if offline():
            raise HubUnavailable("HF_HUB_OFFLINE is set", self.url)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, HubError) or not isinstance(exc, Exception):
            return False
        raise _translate(exc, self.url) from exc


def _translate(exc: Exception, url: str | None) -> HubError:
    from huggingface_hub import errors

    url = url or _url_of(exc)
    if isinstance(exc, errors.RevisionNotFoundError):
        return RevisionMissing(_first_line(exc), url)
    if isinstance(exc, errors.EntryNotFoundError):
        return EntryMissing(_first_line(exc), url)
    if isinstance(exc, errors.RepositoryNotFoundError):  # GatedRepoError included
        return RepoMissing(_first_line(exc), url)
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubUnavailable("offline mode is enabled", url)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.HfHubHTTPError) and status is not None and status < 500 and status != 429:
        return HubError(f"HTTP {status}: {_first_line(exc)}", url)
    return HubUnavailable(f"{type(exc).__name__}: {_first_line(exc)}", url)


def _url_of(exc: Exception) -> str | None:
    for holder in (exc, getattr(exc, "response", None)):
        try:
            return str(holder.request.url)
        except Exception:  # httpx raises RuntimeError on .request when there is none
            continue
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
