"""The Hub's failures, as the rest of kernelhook sees them, and the translation into them.

huggingface_hub raises its own errors (and its transport, httpx's); the plain
requests of the warm path see raw HTTP statuses. Both become one small family,
which says whether a cached answer may stand in and whether a retry may help.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re
from typing import TYPE_CHECKING

from ..errors import KernelHookError

if TYPE_CHECKING:
    from ..repo import RepoAddress


class HubError(KernelHookError):
    """A failed request to the Hub. The loading path turns these into ImportErrors that say what to do;
    elsewhere (publishing) they reach the user as they are, naming the URL.

    status, code and said: the HTTP status, X-Error-Code and server's message of the answer, when
    there was one.
    """

    def __init__(self, message: str, url: str | None = None, *, status: int | None = None,
                 code: str | None = None, said: str | None = None):
        super().__init__(message)
        self.url, self.status, self.code, self.said = url, status, code, said

    @property
    def answer(self) -> str:
        """The answer in a few words: "404 RepoNotFound", "401 Invalid username or password.", or the message."""
        if self.status is None:
            return str(self)
        words = self.code or (self.said or "")[:100]
        return f"{self.status} {words}".strip()


def explain(exc: BaseException) -> str:
    """The cause with the URL it came from, for messages that should name both."""
    url = getattr(exc, "url", None)
    return f"{exc}, from {url}" if url and url not in str(exc) else str(exc)


class RepoMissing(HubError):
    pass


class RevisionMissing(HubError):
    pass


class EntryMissing(HubError):
    pass


class RepoGated(HubError):
    """The repo is gated: it lists, but its files go only to accounts granted access (403 GatedRepo)."""


class TokenRejected(HubError):
    """The Hub refused the token sent (401 "Invalid credentials in Authorization header"), whatever the repo.

    The Hub was reached and said nothing about the repo, so a cached answer may stand in as in an
    outage; the message says which token was sent and how to fix it.
    """


class HubUnavailable(HubError):
    """Offline mode, a connection failure, a timeout or a server error: a cached answer may do.

    retryable: the Hub answered with a server error, or a transfer broke off; worth another try.
    A refused connection or offline mode is not: retrying would only delay the cached answer.
    retry_after: the seconds the server asked to wait, if it did; rate_limited: that wait is
    a spent rate limit's reset (which may be longer than any Retry-After kernelhook honours).
    """

    def __init__(self, message: str, url: str | None = None, *, retryable: bool = False,
                 retry_after: float | None = None, status: int | None = None, code: str | None = None,
                 said: str | None = None, rate_limited: bool = False):
        super().__init__(message, url, status=status, code=code, said=said)
        self.retryable, self.retry_after, self.rate_limited = retryable, retry_after, rate_limited


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, without importing it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in {"1", "ON", "YES", "TRUE"}


# Why requests are refused in this context (a thread or asyncio task), if they are: see local_files_only.
_local_only: contextvars.ContextVar[str | None] = contextvars.ContextVar("kernelhook_local_only", default=None)


@contextlib.contextmanager
def local_files_only(why: str):
    """Within the block, in this thread or task only, every Hub request fails before it is sent, as under
    HF_HUB_OFFLINE, with ``why`` as the reason: the loading path then answers from the cache or says what
    is missing. Other threads keep the network.

    Returns:
        A context manager; it yields nothing.
    """
    token = _local_only.set(why)
    try:
        yield
    finally:
        _local_only.reset(token)


# The Hub's X-Error-Message for a token it does not accept; huggingface_hub tells it apart the same way.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def error_for_status(status: int, headers, url: str, body: bytes = b"") -> HubError:
    """The Hub's error answers, read as huggingface_hub's hf_raise_for_status reads them.

    The message is X-Error-Message, else the body's JSON "error", else the body's text.
    """
    code = headers.get("X-Error-Code")
    said = headers.get("X-Error-Message") or _body_message(body)
    if code not in _HUB_CODES and (status >= 500 or status == 429):
        message = f"HTTP {status}: {said}" if said else f"HTTP {status}"
        return _unavailable(status, headers, message, url, code=code, said=said)
    return client_error(status, code, said or f"HTTP {status}", url)


_HUB_CODES = ("RevisionNotFound", "EntryNotFound", "GatedRepo", "RepoNotFound")


def client_error(status: int, code: str | None, message: str, url: str | None) -> HubError:
    """A 4xx answer (429 aside) as a HubError, whichever client received it.

    A 401 is the Hub's answer to an anonymous client for a repo that does not exist (or is private),
    so it means "not found", unless it names the token as invalid; a 404 without X-Error-Code is how
    a mirror or proxy says it does not hold what was asked for.
    """
    found = {"status": status, "code": code, "said": message}
    if code == "RevisionNotFound":
        return RevisionMissing(message, url, **found)
    if code == "EntryNotFound":
        return EntryMissing(message, url, **found)
    if code == "GatedRepo":
        return RepoGated(message, url, **found)
    if status == 401 and INVALID_CREDENTIALS.lower() in message.lower():
        return TokenRejected(_token_message(message), url, **found)
    if code == "RepoNotFound" or status == 401 or (status == 404 and code is None):
        return RepoMissing(f"{message} (a private or gated repo needs HF_TOKEN)", url, **found)
    return HubError(message if message.startswith("HTTP ") else f"HTTP {status}: {message}", url, **found)


def _token_message(message: str) -> str:
    token = "HF_TOKEN" if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") else (
        "the token stored by `hf auth login`")
    return (f"the Hub refused {token} ({message}), as it does for every repo, public ones included. Fix: set "
            f"HF_TOKEN to a valid token, or unset it and run `hf auth login`; public kernels need no token.")


def _body_message(body: bytes) -> str | None:
    """The error a Hub (JSON {"error": ...}) or another web server (plain text) put in the body."""
    text = body[:4096].decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return None if text.startswith("<") else text.splitlines()[0][:200]  # HTML pages say nothing useful
    return error if isinstance(error, str) and error.strip() else None


# The Hub's rate-limit header: `RateLimit: "api";r=0;t=55` is the "api" quota, 0 left, reset in 55 s.
_RATE_LIMIT = re.compile(r'"(?P<resource>\w+)"\s*;\s*r\s*=\s*(?P<remaining>\d+)\s*;\s*t\s*=\s*(?P<reset>\d+)')


def _unavailable(status: int, headers, message: str, url: str | None, *, code: str | None = None,
                 said: str | None = None) -> HubUnavailable:
    """A server error or 429, with the wait the server asks for.

    A 429 whose RateLimit header says the quota is spent is waited out as huggingface_hub
    waits it (reset + 1 s), Retry-After or not; otherwise Retry-After, when it is a number.
    """
    found = {"status": status, "code": code, "said": said}
    spent = _RATE_LIMIT.search(headers.get("RateLimit") or "") if status == 429 else None
    if spent is not None and int(spent["remaining"]) == 0:
        reset = int(spent["reset"])
        return HubUnavailable(f"{message} (the Hub's {spent['resource']!r} rate limit is spent; it resets in "
                              f"{reset} s)", url, retryable=True, retry_after=reset + 1.0, rate_limited=True, **found)
    return HubUnavailable(message, url, retryable=True, retry_after=_seconds(headers.get("Retry-After")), **found)


def _seconds(retry_after: str | None) -> float | None:
    try:
        return max(0.0, float(retry_after)) if retry_after is not None else None
    except ValueError:  # an HTTP date: not worth parsing, the backoff will do
        return None


class translated:
    """Turn huggingface_hub's and the transport's exceptions into the HubError family."""

    def __init__(self, repo: RepoAddress, revision: str | None, url: str | None = None):
        self.repo, self.revision, self.url = repo, revision, url

    def __enter__(self):
        if offline():
            raise HubUnavailable("HF_HUB_OFFLINE is set", self.url)
        why = _local_only.get()
        if why is not None:
            raise HubUnavailable(f"{why}: no request is made", self.url)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, HubError) or not _is_transport_or_hub_error(exc):
            return False  # a bug stays a bug: it is not reported as a Hub outage
        raise _translate(exc, self.url) from exc


# Failures of this machine's own disk while a download is written: not the Hub's, never retried.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _is_transport_or_hub_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
        return False
    module = type(exc).__module__
    return (
        isinstance(exc, (OSError, ValueError))  # connection and timeout errors; JSON that does not parse
        or module.startswith(("huggingface_hub", "httpx", "httpcore", "requests", "urllib3"))
    )


def _translate(exc: Exception, url: str | None) -> HubError:
    from huggingface_hub import errors

    url = url or _url_of(exc)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    code = response.headers.get("X-Error-Code") if response is not None else None
    found = {"status": status, "code": code, "said": _server_message(exc) if status is not None else None}
    if isinstance(exc, errors.RevisionNotFoundError):
        return RevisionMissing(_first_line(exc), url, **found)
    if isinstance(exc, errors.EntryNotFoundError):
        return EntryMissing(_first_line(exc), url, **found)
    if isinstance(exc, errors.GatedRepoError):
        return RepoGated(_server_message(exc), url, **found)
    if isinstance(exc, errors.RepositoryNotFoundError):
        return RepoMissing(_first_line(exc), url, **found)
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubUnavailable("offline mode is enabled", url)
    if isinstance(exc, errors.HfHubHTTPError) and status is not None:
        if status < 500 and status != 429:
            # huggingface_hub reads a 401 as RepositoryNotFoundError only on https URLs of model, dataset
            # and space repos (REPO_API_REGEX), so kernel repos and plain-http mirrors land here.
            return client_error(status, code, _server_message(exc), url)
        return _unavailable(status, response.headers, f"HTTP {status}: {_first_line(exc)}", url, code=code,
                            said=found["said"])
    # A refused connection will be refused again; a transfer that broke off may well succeed.
    refused = isinstance(exc, ConnectionRefusedError) or type(exc).__name__ in ("ConnectError", "ConnectTimeout")
    return HubUnavailable(f"{type(exc).__name__}: {_first_line(exc)}", url, retryable=not refused)


def _url_of(exc: Exception) -> str | None:
    for holder in (exc, getattr(exc, "response", None)):
        try:
            return str(holder.request.url)
        except Exception:  # httpx raises RuntimeError on .request when there is none
            continue
    return None


def _server_message(exc: Exception) -> str:
    """What the server said (X-Error-Message or the body's error), which huggingface_hub keeps apart."""
    message = getattr(exc, "server_message", None)
    return message.strip().splitlines()[0] if isinstance(message, str) and message.strip() else _first_line(exc)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
