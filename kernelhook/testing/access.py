"""How the loopback Hub says "no": tokens, unknown repos, gated files.

The real Hub refuses in more ways than one 404, and clients have to read each
one right (huggingface_hub's hf_raise_for_status tells them apart):

* a Bearer token it does not accept: 401, `X-Error-Message: Invalid credentials
  in Authorization header`, even for a public repo;
* an unknown repo asked for without a token: 401 and no `X-Error-Code`, the same
  answer a private repo gets, so that it gives nothing away;
* a gated repo: listings answer, file downloads get 403 `X-Error-Code: GatedRepo`;
* a self-hosted mirror that does not hold a repo: a bare 404 (no `X-Error-Code`),
  or 404 `EntryNotFound` "Repository refs are not cached locally".

AccessRules holds these switches (LocalHub exposes them) and builds the answers;
routes.py asks it for every request's token, for every unknown repo and before
serving a file.
"""

from __future__ import annotations

import threading
from typing import Iterable

from .responses import ErrorResponse, Response

__all__ = ["INVALID_CREDENTIALS", "REFS_NOT_CACHED", "UNKNOWN_REPO_ANSWERS", "AccessRules"]

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
REFS_NOT_CACHED = "Repository refs are not cached locally"
# What the Hub answers for an unknown repo to an anonymous client.
_ANONYMOUS_UNKNOWN = "Invalid username or password."
# How an unknown repo is answered: as the Hub does, or as a mirror that does not hold it.
UNKNOWN_REPO_ANSWERS = ("hub", "bare-404", "refs-not-cached")
_PAGE_PREFIX = {"model": "", "kernel": "kernels/"}


class AccessRules:
    """The switches that decide how the loopback Hub refuses a request; thread-safe.

    `accepted_tokens`: None accepts any token; a set makes every other Bearer token a 401
    (requests without a token still pass). `anonymous_unknown_repo_status`: 404 (RepoNotFound)
    or 401 (as the real Hub answers clients without a token).
    """

    def __init__(self, accepted_tokens: Iterable[str] | None = None, anonymous_unknown_repo_status: int = 404):
        if anonymous_unknown_repo_status not in (401, 404):
            raise ValueError(f"anonymous_unknown_repo_status must be 401 or 404, not {anonymous_unknown_repo_status!r}")
        if isinstance(accepted_tokens, str):
            raise ValueError("accepted_tokens is a set of tokens, not one string")
        self.accepted_tokens = None if accepted_tokens is None else frozenset(accepted_tokens)
        self.anonymous_unknown_repo_status = anonymous_unknown_repo_status
        self._unknown_repo_answer = "hub"
        self._gated: dict[tuple[str, str], frozenset[str]] = {}
        self._lock = threading.Lock()

    # -- switches ------------------------------------------------------------------

    @property
    def unknown_repo_answer(self) -> str:
        """One of UNKNOWN_REPO_ANSWERS: how a repo the hub does not hold is answered."""
        return self._unknown_repo_answer

    def set_unknown_repo_answer(self, answer: str) -> None:
        """Answer unknown repos as the Hub does ("hub") or as a mirror does ("bare-404", "refs-not-cached").

        Raises ValueError for any other value.
        """
        if answer not in UNKNOWN_REPO_ANSWERS:
            raise ValueError(f"unknown repo answer {answer!r}: use one of {', '.join(UNKNOWN_REPO_ANSWERS)}")
        self._unknown_repo_answer = answer

    def gate(self, repo_type: str, repo_id: str, granted_tokens: Iterable[str] = ()) -> None:
        """Refuse the repo's file downloads with 403 GatedRepo, except to the granted tokens; raises nothing."""
        with self._lock:
            self._gated[(repo_type, repo_id)] = frozenset(granted_tokens)

    def ungate(self, repo_type: str, repo_id: str) -> None:
        """Serve the repo's files to everyone again; a no-op for a repo that is not gated."""
        with self._lock:
            self._gated.pop((repo_type, repo_id), None)

    def is_gated(self, repo_type: str, repo_id: str) -> bool:
        """Return True if the repo's files are gated."""
        return (repo_type, repo_id) in self._gated

    # -- answers -------------------------------------------------------------------

    def check_token(self, authorization: str | None) -> None:
        """Return None if the request's token (if any) is accepted; raise ErrorResponse(401) if not."""
        if self.accepted_tokens is None or authorization is None:
            return
        if _bearer(authorization) not in self.accepted_tokens:
            raise ErrorResponse(401, None, INVALID_CREDENTIALS, {"X-Error-Message": INVALID_CREDENTIALS})

    def unknown_repo(self, repo_type: str, repo_id: str, authorization: str | None) -> ErrorResponse:
        """Return the error that answers a request for a repo this hub does not hold (for the caller to raise)."""
        answer = self._unknown_repo_answer
        if answer == "bare-404":  # a mirror's web server that knows nothing of the Hub's error headers
            return _plain_error(404, "Not Found")
        if answer == "refs-not-cached":
            return ErrorResponse(404, "EntryNotFound", REFS_NOT_CACHED)
        if authorization is None and self.anonymous_unknown_repo_status == 401:
            return ErrorResponse(401, None, _ANONYMOUS_UNKNOWN, {"X-Error-Message": _ANONYMOUS_UNKNOWN})
        return ErrorResponse(404, "RepoNotFound", f"Repository {repo_id} ({repo_type}) not found")

    def check_download(self, repo_type: str, repo_id: str, authorization: str | None, base_url: str) -> None:
        """Return None if the repo's files may be served to this request; raise ErrorResponse(403) if gated."""
        granted = self._gated.get((repo_type, repo_id))
        if granted is None or (authorization is not None and _bearer(authorization) in granted):
            return
        page = f"{base_url}/{_PAGE_PREFIX[repo_type]}{repo_id}"
        raise ErrorResponse(403, "GatedRepo", f"Access to {repo_type} {repo_id} is restricted and you are not in "
                                              f"the authorized list. Visit {page} to ask for access.")


def _bearer(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _plain_error(status: int, text: str) -> ErrorResponse:
    error = ErrorResponse(status, None, text)
    error.response = Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
    return error

