"""Requests to the Hub: the only module that reads from it.

huggingface_hub is imported on first use, never at import time, so that a
warm, commit-pinned import never loads it. Endpoint, token and offline mode
follow its environment variables (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).

Calls made, and nothing else (the API calls over plain HTTP with huggingface_hub's
headers and timeout where that takes the route its client would, else and as fallback
through its session: see _request_json; files and publishing through huggingface_hub
itself):
  * ``GET /api/{type}s/{repo}/revision/{rev}``   resolve a (short) commit sha or a pull request (refs/pr/N)
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
from typing import BinaryIO
from urllib.parse import quote, urljoin, urlsplit

from .. import settings
from ..records import Record
from ..repo import ListingEntry, RepoAddress
from .errors import EntryMissing, HubUnavailable, RepoMissing, error_for_status, translated

logger = logging.getLogger("kernelhook")

REPO_TYPES = ("kernel", "model")  # kernel repos are the Hub's own type for kernels; try them first
LARGE_FILE = 8 * 1024 * 1024  # files at least this big get a progress bar
_SHA = r"[0-9a-f]{40}"  # patterns here are compiled on first use (re keeps them): the warm path needs none


# Defaults; KERNELHOOK_RETRIES and KERNELHOOK_RETRY_BACKOFF_S override them, read at each call.
RETRIES = 3  # tries after the first, for retryable failures
BACKOFF_S = 0.5  # the first pause, doubled at each try
MAX_WAIT_S = 30.0  # the longest pause, Retry-After included
# The longest pause for a spent rate limit (429 with `RateLimit: "api";r=0;t=N`): the Hub's
# windows are 5 minutes, so its t+1 s always fits; only a broken header is cut short.
MAX_RATE_LIMIT_WAIT_S = 301.0


def with_retries(what: str, call):
    """call(), tried again while it fails retryably.

    Each pause is what the server asked for (a spent rate limit's reset + 1 s, as huggingface_hub
    waits, capped at MAX_RATE_LIMIT_WAIT_S; else Retry-After, capped at MAX_WAIT_S), or exponential
    backoff from KERNELHOOK_RETRY_BACKOFF_S (default BACKOFF_S).

    Returns:
        What call() returns.

    Raises:
        HubError: call()'s last failure after KERNELHOOK_RETRIES (default RETRIES) more tries, or its
            first one that is not worth retrying.
        SettingError: KERNELHOOK_RETRIES or KERNELHOOK_RETRY_BACKOFF_S is malformed (before any request).
    """
    retries = settings.whole_number("KERNELHOOK_RETRIES", RETRIES)
    backoff_s = settings.seconds("KERNELHOOK_RETRY_BACKOFF_S", BACKOFF_S, example="0.5")
    for attempt in range(retries + 1):
        try:
            return call()
        except HubUnavailable as exc:
            if not exc.retryable or attempt == retries:
                raise
            cap = MAX_RATE_LIMIT_WAIT_S if exc.rate_limited else MAX_WAIT_S
            wait = min(exc.retry_after if exc.retry_after is not None else backoff_s * 2**attempt, cap)
            logger.warning("kernelhook: %s failed (%s); try %d of %d in %.1f s", what, exc, attempt + 2,
                           retries + 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


class Refs(Record, fields="branches tags"):
    """A repo's refs: ``branches`` and ``tags``, each {name: commit}."""

    __slots__ = ()


def resolve_revision(repo: RepoAddress, revision: str) -> str:
    """One request: the commit a branch, tag, pull request (refs/pr/N), full or short sha names."""
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
    """GET /api/{type}s/{repo}/{path}: a warm branch, tag or unpinned import's only request.

    These endpoints name no file, so EntryNotFound here is about the repo: a self-hosted mirror
    answers so for a repo it does not hold ("Repository refs are not cached locally").
    """
    try:
        data, _ = _request_json(f"{endpoint()}/api/{repo.repo_type}s/{repo.repo_id}/{path}", repo)
    except EntryMissing as exc:
        raise RepoMissing(f"{exc} (EntryNotFound for the repo itself: a mirror that does not hold {repo})", exc.url,
                          status=exc.status, code=exc.code, said=exc.said) from exc
    return data


def _request_json(url: str, repo: RepoAddress):
    """(JSON answer, URL of the next page or None), bounded by HF_HUB_ETAG_TIMEOUT.

    It goes out over plain HTTP when that takes the route huggingface_hub's client would
    (plain_http_carries): that session costs ~130 ms to create (httpx, anyio) and HfApi
    ~170 ms to import, ten times the rest of a warm load. The headers are the ones
    huggingface_hub would send (see _headers). A plain request that gets no HTTP answer at
    all (refused, DNS, TLS, a connect or read timeout: a route only huggingface_hub's client
    may know) is sent once more through huggingface_hub's session, whose answer is final;
    an HTTP answer to the plain request, error or not, is final too (with_retries decides).
    """
    with translated(repo, None, url=url):  # offline is checked before anything is imported
        if plain_http_carries(url):
            try:
                return _get_json_plain(url)
            except _NoAnswer as exc:
                logger.debug("no answer over plain HTTP from %s (%s); asking through huggingface_hub", url, exc)
        return _get_json_session(url)


def plain_http_carries(url: str) -> bool:
    """Whether a request kernelhook sends itself (urllib) takes the route huggingface_hub's would.

    urllib honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY, but knows neither ALL_PROXY nor SOCKS
    proxies, nor a client given to huggingface_hub's set_client_factory (its own proxy, CA
    bundle or transport). The factory is looked at only when huggingface_hub's HTTP module is
    imported already: before that, nobody can have set one, and the check imports nothing.

    Returns False where only huggingface_hub's session honours the configuration; raises nothing.
    """
    for name, value in os.environ.items():
        name, value = name.lower(), value.strip().lower()
        if name.endswith("_proxy") and name != "no_proxy" and (
                (name == "all_proxy" and value) or value.startswith("socks")):
            return False
    http = sys.modules.get("huggingface_hub.utils._http")
    if http is None:
        return True
    return getattr(http, "_GLOBAL_CLIENT_FACTORY", _UNKNOWN) is getattr(http, "default_client_factory", None)


_UNKNOWN = object()  # a huggingface_hub whose factory cannot be read: its session decides


class _NoAnswer(Exception):
    """The plain request got no HTTP answer: no connection, no TLS, or no status line in time."""


def _get_json_plain(url: str):
    import http.client
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={**_headers(url), "accept": "application/json"})
    proxies = tuple(sorted((k, v) for k, v in os.environ.items() if k.lower().endswith("_proxy")))
    try:
        response = _opener(proxies).open(request, timeout=_timeout())
    except urllib.error.HTTPError as exc:
        with exc:
            raise error_for_status(exc.code, exc.headers, url, _error_body(exc)) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _NoAnswer(f"{type(reason).__name__}: {reason}") from exc
    with response:  # answered: what goes wrong now is the Hub's transfer, for with_retries
        try:
            return json.load(response), _next_page(response.headers.get("Link"), response.geturl())
        except (http.client.HTTPException, OSError, ValueError) as exc:
            after = f" (after {_timeout():g} s at most)" if isinstance(exc, TimeoutError) else ""
            raise HubUnavailable(f"{type(exc).__name__}: {exc}{after}", url, retryable=True) from exc


def _get_json_session(url: str):
    from huggingface_hub.utils._http import get_session, hf_raise_for_status

    response = get_session().get(url, headers=_headers(url), timeout=_timeout())
    hf_raise_for_status(response)
    return response.json(), _next_page(response.headers.get("Link"), str(response.url))


@functools.lru_cache(maxsize=4)
def _opener(proxies: tuple):
    """urllib's opener, its proxies read from the environment (`proxies`, the key: those variables),
    and a redirect handler that keeps Authorization within one origin, as httpx does.

    urllib's own handler copies every header onto the redirected request, so a Hub or mirror
    that redirects elsewhere would be sending the user's token there. Defined on first use, so
    that importing this module never imports urllib.request; cached, as building one costs ~0.5 ms.
    """
    import urllib.request

    class SameOriginAuthorization(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and origin(newurl) != origin(req.full_url):
                new.remove_header("Authorization")
            return new

    return urllib.request.build_opener(SameOriginAuthorization())


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in from the scheme: what a token is bound to.

    Returns a port of None for an unknown scheme or a malformed port; raises nothing.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _error_body(exc) -> bytes:
    """The start of an error answer's body, where the Hub also says what went wrong."""
    import http.client

    try:
        return exc.read(4096) or b""
    except (OSError, http.client.HTTPException, ValueError):
        return b""


def _timeout() -> float:
    """huggingface_hub's own bound for metadata requests (HF_HUB_ETAG_TIMEOUT, default 10 s)."""
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT", "10"))
    except ValueError:
        return 10.0


# The Hub's own addresses: mirrors send Link URLs on them even when asked under HF_ENDPOINT.
_HUB_ENDPOINTS = ("https://huggingface.co", "https://hub-ci.huggingface.co")


def _next_page(link: str | None, current: str) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="next"', link or "")
    return on_endpoint(urljoin(current, match.group(1))) if match else None


def on_endpoint(url: str) -> str:
    """A URL the Hub sent, on HF_ENDPOINT when it names huggingface.co and HF_ENDPOINT is a mirror.

    As huggingface_hub's fix_hf_endpoint_in_url does (without importing it): some mirrors
    answer with Link URLs on huggingface.co, which a machine behind the mirror cannot reach,
    and which would otherwise be sent the user's token. Returns the URL; raises nothing.
    """
    configured = endpoint()
    hubs = {origin(hub) for hub in _HUB_ENDPOINTS}
    if origin(url) not in hubs or origin(configured) in hubs:
        return url
    parts = urlsplit(url)
    return configured + parts.path + (f"?{parts.query}" if parts.query else "")


def _headers(url: str) -> dict[str, str]:
    """huggingface_hub's request headers for `url`, without its token machinery when the answer is plain.

    build_hf_headers imports OAuth, OIDC and yaml support (~130 ms) to find the token. That
    is needed only when OIDC, a token file (which it may refresh) or Colab could supply one;
    with HF_TOKEN set, or no token anywhere, the token it would send is known already.
    The token goes only to HF_ENDPOINT's origin: a next-page URL elsewhere is asked without it.
    """
    from huggingface_hub import __version__ as hf_version
    from huggingface_hub import constants

    token = (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip() or None
    if os.environ.get("HF_OIDC_RESOURCE") or (
        token is None and (os.path.exists(constants.HF_TOKEN_PATH) or "google.colab" in sys.modules)
    ):
        from huggingface_hub.utils import build_hf_headers

        headers = build_hf_headers(library_name="kernelhook")
    else:
        python = ".".join(map(str, sys.version_info[:3]))
        headers = {"user-agent": f"kernelhook; hf_hub/{hf_version}; python/{python}"}
        if token is not None and not constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
            headers["authorization"] = f"Bearer {token}"
    if origin(url) != origin(endpoint()):
        headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
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
