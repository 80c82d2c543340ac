"""The only module that talks to the Hub.

huggingface_hub is imported on first use, never at import time, so that a
warm, commit-pinned import never loads it. Endpoint, token and offline mode
follow its environment variables (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).

Calls made, and nothing else (the first two over plain HTTP with huggingface_hub's
headers, because they are the warm path's only requests; see _get_json):
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
import sys
import time
from typing import BinaryIO, NamedTuple
from urllib.parse import quote

from .hub_errors import (  # noqa: F401  (re-exported: callers catch hub.HubError and its kin)
    EntryMissing,
    HubError,
    HubUnavailable,
    RepoMissing,
    RevisionMissing,
    error_for_status,
    offline,
    translated,
)
from .store import RepoAddress

logger = logging.getLogger("kernelhook")

REPO_TYPES = ("kernel", "model")  # kernel repos are the Hub's own type for kernels; try them first
LARGE_FILE = 8 * 1024 * 1024  # files at least this big get a progress bar
_SHA = re.compile(r"[0-9a-f]{40}")


RETRIES = int(os.environ.get("KERNELHOOK_RETRIES", "3"))  # tries after the first, for retryable failures
BACKOFF_S = float(os.environ.get("KERNELHOOK_RETRY_BACKOFF_S", "0.5"))  # doubled at each try
MAX_WAIT_S = 30.0  # the longest pause, Retry-After included


def with_retries(what: str, call):
    """call(), tried again with exponential backoff (or the server's Retry-After) while it fails retryably."""
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except HubUnavailable as exc:
            if not exc.retryable or attempt == RETRIES:
                raise
            wait = min(exc.retry_after if exc.retry_after is not None else BACKOFF_S * 2**attempt, MAX_WAIT_S)
            logger.warning("kernelhook: %s failed (%s); try %d of %d in %.1f s", what, exc, attempt + 2,
                           RETRIES + 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


class ListingEntry(NamedTuple):
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


class Refs(NamedTuple):
    branches: dict[str, str]
    tags: dict[str, str]


def resolve_revision(repo: RepoAddress, revision: str) -> str:
    """One request: the commit a branch, tag, full or short sha names."""
    info = with_retries(f"resolving {revision} of {repo}", lambda: _get_json(repo, f"revision/{quote(revision, safe='')}"))
    return _checked_sha(info.get("sha") if isinstance(info, dict) else None, repo)


def list_refs(repo: RepoAddress) -> Refs:
    """One request: every branch and tag with the commit it points at."""
    data = with_retries(f"listing the refs of {repo}", lambda: _get_json(repo, "refs"))
    try:
        return Refs(
            branches={ref["name"]: _checked_sha(ref["targetCommit"], repo) for ref in data["branches"]},
            tags={ref["name"]: _checked_sha(ref["targetCommit"], repo) for ref in data["tags"]},
        )
    except (KeyError, TypeError) as exc:
        raise HubUnavailable(f"the Hub's refs answer for {repo} is malformed ({exc!r})") from exc


def _get_json(repo: RepoAddress, path: str):
    """GET /api/{type}s/{repo}/{path}: a warm branch, tag or unpinned import's only request.

    It goes out over plain HTTP first: huggingface_hub's session costs ~130 ms to
    create (httpx, anyio) and HfApi ~170 ms to import, ten times the rest of a warm
    load. The headers are the ones huggingface_hub would send (see _headers). If
    that request gets no HTTP answer at all (a proxy, CA bundle or transport only
    huggingface_hub's client is set up for), it is sent again through
    huggingface_hub's own session; an HTTP answer, error or not, is final.
    """
    url = f"{endpoint()}/api/{repo.repo_type}s/{repo.repo_id}/{path}"
    with translated(repo, None, url=url):  # offline is checked before anything is imported
        try:
            return _get_json_plain(url)
        except _NoAnswer as exc:
            logger.debug("no answer over plain HTTP from %s (%s); asking through huggingface_hub", url, exc)
        from huggingface_hub.utils._http import get_session, hf_raise_for_status

        response = get_session().get(url, headers=_headers())
        hf_raise_for_status(response)
        return response.json()


class _NoAnswer(Exception):
    """The plain request got no HTTP response at all."""


def _get_json_plain(url: str):
    import http.client
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={**_headers(), "accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise error_for_status(exc.code, exc.headers, url) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _NoAnswer(str(getattr(exc, "reason", exc))) from exc


_TIMEOUT_S = 10  # huggingface_hub's own default for metadata requests


def _headers() -> dict[str, str]:
    """huggingface_hub's request headers, without its token machinery when the answer is plain.

    build_hf_headers imports OAuth, OIDC and yaml support (~130 ms) to find the token. That
    is needed only when OIDC, a token file (which it may refresh) or Colab could supply one;
    with HF_TOKEN set, or no token anywhere, the token it would send is known already.
    """
    from huggingface_hub import __version__ as hf_version
    from huggingface_hub import constants

    token = (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip() or None
    if os.environ.get("HF_OIDC_RESOURCE") or (
        token is None and (os.path.exists(constants.HF_TOKEN_PATH) or "google.colab" in sys.modules)
    ):
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(library_name="kernelhook")
    python = ".".join(map(str, sys.version_info[:3]))
    headers = {"user-agent": f"kernelhook; hf_hub/{hf_version}; python/{python}"}
    if token is not None and not constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
        headers["authorization"] = f"Bearer {token}"
    return headers


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def list_build(repo: RepoAddress, commit: str) -> list[ListingEntry]:
    """Every file under build/ at a commit (one request per page of 1000 entries)."""
    from huggingface_hub.hf_api import RepoFile

    def list_tree():
        with translated(repo, commit):
            return list(_api().list_repo_tree(repo.repo_id, "build", recursive=True, revision=commit,
                                              repo_type=repo.repo_type))

    items = with_retries(f"listing build/ of {repo}@{commit[:12]}", list_tree)
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
    def get():
        into.seek(0)
        into.truncate()  # a retry starts the file over
        with translated(repo, commit, url=url):
            http_get(url, into, headers=headers, expected_size=size, displayed_filename=path.rsplit("/", 1)[-1],
                     tqdm_class=bar)

    with_retries(f"downloading {path}", get)


def _checked_sha(sha: object, repo: RepoAddress) -> str:
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise HubUnavailable(f"the Hub answered for {repo} with {sha!r}, which is not a commit sha")
    return sha


def publish_folder(repo: RepoAddress, folder: str, branch: str, message: str) -> str:
    """Upload a folder as one commit on a branch (creating repo and branch as needed); the commit sha."""
    api = _api()
    ignore = ["**/__pycache__/**", "**/*.pyc", ".git/**"]
    with translated(repo, branch):
        api.create_repo(repo.repo_id, repo_type=repo.repo_type, exist_ok=True)
        branches = {ref.name for ref in api.list_repo_refs(repo.repo_id, repo_type=repo.repo_type).branches}
        if branch not in branches:
            api.create_branch(repo.repo_id, branch=branch, repo_type=repo.repo_type, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo.repo_id, repo_type=repo.repo_type,
                                 revision=branch, commit_message=message, ignore_patterns=ignore)
    return _checked_sha(info.oid, repo)
