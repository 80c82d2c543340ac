"""Requests to the Hub: the only module that reads from it.

huggingface_hub is imported on first use, never at import time, so that a
warm, commit-pinned import never loads it. Endpoint, token and offline mode
follow its environment variables (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).

Calls made, and nothing else (the API calls over plain HTTP with huggingface_hub's
headers and timeout, its session as fallback: see _request_json; files and
publishing through huggingface_hub itself):
  * ``GET /api/{type}s/{repo}/revision/{rev}``   resolve a (short) commit sha
  * ``GET /api/{type}s/{repo}/refs``             branches and tags: named and unpinned revisions
  * ``GET /api/{type}s/{repo}/tree/{sha}/build`` the build/ listing, recursive, page by page
  * ``GET /[kernels/]{repo}/resolve/{sha}/{path}``  one request per file
Publishing (the one write) is in upload.py.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
from collections import namedtuple
from typing import BinaryIO
from urllib.parse import quote

from ..repo import ListingEntry, RepoAddress
from .errors import HubUnavailable, error_for_status, translated

logger = logging.getLogger("kernelhook")

REPO_TYPES = ("kernel", "model")  # kernel repos are the Hub's own type for kernels; try them first
LARGE_FILE = 8 * 1024 * 1024  # files at least this big get a progress bar
_SHA = r"[0-9a-f]{40}"  # patterns here are compiled on first use (re keeps them): the warm path needs none


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


# A repo's refs: branches and tags, each {name: commit}. (collections.namedtuple: typing.NamedTuple
# costs ~0.25 ms a class to create.)
Refs = namedtuple("Refs", "branches tags")


def resolve_revision(repo: RepoAddress, revision: str) -> str:
    """One request: the commit a branch, tag, full or short sha names."""
    info = with_retries(f"resolving {revision} of {repo}", lambda: _get_json(repo, f"revision/{quote(revision, safe='')}"))
    return checked_sha(info.get("sha") if isinstance(info, dict) else None, repo)


def list_refs(repo: RepoAddress) -> Refs:
    """One request: every branch and tag with the commit it points at."""
    data = with_retries(f"listing the refs of {repo}", lambda: _get_json(repo, "refs"))
    try:
        return Refs(
            branches={ref["name"]: checked_sha(ref["targetCommit"], repo) for ref in data["branches"]},
            tags={ref["name"]: checked_sha(ref["targetCommit"], repo) for ref in data["tags"]},
        )
    except (KeyError, TypeError) as exc:
        raise HubUnavailable(f"the Hub's refs answer for {repo} is malformed ({exc!r})") from exc


def _get_json(repo: RepoAddress, path: str):
    """GET /api/{type}s/{repo}/{path}: a warm branch, tag or unpinned import's only request."""
    data, _ = _request_json(f"{endpoint()}/api/{repo.repo_type}s/{repo.repo_id}/{path}", repo)
    return data


def _request_json(url: str, repo: RepoAddress):
    """(JSON answer, URL of the next page or None), bounded by HF_HUB_ETAG_TIMEOUT.

    It goes out over plain HTTP first: huggingface_hub's session costs ~130 ms to
    create (httpx, anyio) and HfApi ~170 ms to import, ten times the rest of a warm
    load. The headers are the ones huggingface_hub would send (see _headers). If
    that request cannot connect at all (a proxy, CA bundle or transport only
    huggingface_hub's client is set up for), it is sent again through
    huggingface_hub's own session; an HTTP answer, error or not, is final, and so
    is a timeout (the Hub is there, but slow: with_retries decides).
    """
    with translated(repo, None, url=url):  # offline is checked before anything is imported
        try:
            return _get_json_plain(url)
        except _NoAnswer as exc:
            logger.debug("no answer over plain HTTP from %s (%s); asking through huggingface_hub", url, exc)
        from huggingface_hub.utils._http import get_session, hf_raise_for_status

        response = get_session().get(url, headers=_headers(), timeout=_timeout())
        hf_raise_for_status(response)
        return response.json(), _next_page(response.headers.get("Link"))


class _NoAnswer(Exception):
    """The plain request could not connect at all."""


def _get_json_plain(url: str):
    import http.client
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={**_headers(), "accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=_timeout()) as response:
            return json.load(response), _next_page(response.headers.get("Link"))
    except urllib.error.HTTPError as exc:
        raise error_for_status(exc.code, exc.headers, url) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, (TimeoutError, http.client.HTTPException, ValueError)):
            raise HubUnavailable(f"{type(reason).__name__}: {reason} (after {_timeout():g} s at most)", url,
                                 retryable=True) from exc
        raise _NoAnswer(str(reason)) from exc


def _timeout() -> float:
    """huggingface_hub's own bound for metadata requests (HF_HUB_ETAG_TIMEOUT, default 10 s)."""
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT", "10"))
    except ValueError:
        return 10.0


def _next_page(link: str | None) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="next"', link or "")
    return match.group(1) if match else None


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


def list_build(repo: RepoAddress, commit: str) -> list[ListingEntry]:
    """Every file under build/ at a commit, one request per page (the Hub pages at 1000 entries)."""
    url = f"{endpoint()}/api/{repo.repo_type}s/{repo.repo_id}/tree/{commit}/build?recursive=true"
    items = []
    for _ in range(_MAX_PAGES):
        page, url = with_retries(f"listing build/ of {repo}@{commit[:12]}", lambda u=url: _request_json(u, repo))
        if not isinstance(page, list):
            raise HubUnavailable(f"the Hub's listing of build/ in {repo}@{commit[:12]} is not a list", url)
        items.extend(page)
        if url is None:
            break
    return [_listing_entry(item, repo) for item in items if isinstance(item, dict) and item.get("type") == "file"]


_MAX_PAGES = 1000
_OID = r"[0-9a-f]{40}"
_SHA256 = r"[0-9a-f]{64}"


def _listing_entry(item: dict, repo: RepoAddress) -> ListingEntry:
    """One listed file, refused unless every field is what the Hub sends: hashes become file names."""
    path, size, oid, lfs = item.get("path"), item.get("size"), item.get("oid"), item.get("lfs")
    sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
    if (
        not isinstance(path, str)
        or not isinstance(size, int) or isinstance(size, bool) or size < 0
        or not isinstance(oid, str) or not re.fullmatch(_OID, oid)
        or (lfs is not None and not (isinstance(sha256, str) and re.fullmatch(_SHA256, sha256)))
    ):
        raise HubUnavailable(f"the Hub's listing for {repo} has a malformed entry: {str(item)[:200]}")
    return ListingEntry(path, size, oid, sha256)


def download(repo: RepoAddress, commit: str, path: str, into: BinaryIO, size: int) -> None:
    """One GET of one file at a commit into an open file; a progress bar for large files only."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers, tqdm

    url = hf_hub_url(repo.repo_id, path, repo_type=repo.repo_type, revision=commit, endpoint=endpoint())
    headers = build_hf_headers(library_name="kernelhook")
    # None keeps huggingface_hub's own bar, which honours HF_HUB_DISABLE_PROGRESS_BARS.
    bar = None if size >= LARGE_FILE else functools.partial(tqdm, disable=True)
    capped = _Capped(into, size, url)

    def get():
        into.seek(0)
        into.truncate()  # a retry starts the file over
        with translated(repo, commit, url=url):
            http_get(url, capped, headers=headers, expected_size=size, displayed_filename=path.rsplit("/", 1)[-1],
                     tqdm_class=bar)

    with_retries(f"downloading {path}", get)


class _Capped:
    """The download's file, refusing bytes beyond the listed size: a server that sends more
    (broken, or hostile) must not fill the disk before the size check at the end."""

    def __init__(self, into: BinaryIO, size: int, url: str):
        self.into, self.size, self.url = into, size, url

    def write(self, data: bytes) -> int:
        if self.into.tell() + len(data) > self.size:
            raise HubUnavailable(f"the server sent more than the {self.size} bytes listed", self.url)
        return self.into.write(data)

    def __getattr__(self, name):  # seek, tell, truncate, flush: the file's own
        return getattr(self.into, name)


def checked_sha(sha: object, repo: RepoAddress) -> str:
    if not isinstance(sha, str) or not re.fullmatch(_SHA, sha):
        raise HubUnavailable(f"the Hub answered for {repo} with {sha!r}, which is not a commit sha")
    return sha
