"""A Hub-compatible HTTP server on loopback, backed by real git repositories.

Tests, demos and benchmarks point the real `huggingface_hub` client at it
(`HfApi(endpoint=hub.url)`, or `HF_ENDPOINT` in a subprocess) instead of
mocking the client: what passes here talks to the Hub the same way.

LocalHub puts together the repo store (repos.py), the HTTP front (server.py)
answering through the Hub's routes (routes.py, upload.py), the ways it refuses
(access.py: tokens, unknown repos, gated files), fault injection (faults.py) and
what mirrors and proxies in front of a Hub do (mirror.py: redirects, paged
listings with foreign Link URLs); the repos live on disk under `root`, so a
later hub on the same root serves them again.
"""

from __future__ import annotations

import logging
import os
import threading
from email.message import Message
from typing import Iterable, Iterator

from .access import AccessRules
from .faults import Fault, FaultSet
from .mirror import Mirror, Paging, Redirect
from .repos import DEFAULT_LFS_PATTERNS, RepoStore
from .responses import Response
from .routes import route
from .server import RequestLog, RequestRecord, start_server, stop_server

logger = logging.getLogger("kernelhook.testing")

__all__ = ["Fault", "LocalHub", "Redirect", "RequestRecord"]


class LocalHub:
    """A loopback Hugging Face Hub serving git-backed model and kernel repos; inject() makes it misbehave.

    `accepted_tokens`: None accepts any Bearer token; a set of tokens makes the hub answer every
    other one with 401 "Invalid credentials in Authorization header", as the Hub answers a bad
    token even for public repos (requests without a token still pass).
    `anonymous_unknown_repo_status`: 404 (RepoNotFound) or 401, the real Hub's answer to a
    client without a token for a repo that does not exist (or is private).
    Raises ValueError for any other status.
    """

    def __init__(self, root: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                 accepted_tokens: Iterable[str] | None = None, anonymous_unknown_repo_status: int = 404) -> None:
        self._access = AccessRules(accepted_tokens, anonymous_unknown_repo_status)
        self.root = os.path.abspath(os.fspath(root))
        self.host, self.port = host, port
        self.url = ""
        self._log = RequestLog()
        self.requests: list[RequestRecord] = self._log.records
        self._store = RepoStore(self.root)
        self._faults = FaultSet()
        self._mirror = Mirror()
        self._server = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "LocalHub":
        """Serve on `host:port` (port 0: a free one) and set `url`; a no-op if serving.

        Returns the hub itself; raises OSError when the address cannot be bound.
        """
        if self._server is None:
            os.makedirs(self.root, exist_ok=True)
            self._server, self._thread = start_server(self.host, self.port, self._respond, self._faults, self._log)
            host, port = self._server.server_address[:2]
            self.url = f"http://{host}:{port}"
            logger.debug("local hub serving %s from %s", self.url, self.root)
        return self

    def stop(self) -> None:
        """Stop serving and hang up open connections; a no-op if stopped. Raises nothing."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            stop_server(server, thread)

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Return the environment a subprocess needs to use this hub; raises RuntimeError before start()."""
        if not self.url:
            raise RuntimeError("LocalHub.env() needs a started hub: call start() or use it as a context manager")
        return {"HF_ENDPOINT": self.url}

    # -- request log ---------------------------------------------------------

    def clear_requests(self) -> None:
        """Empty `requests` (the same list object stays); raises nothing."""
        self._log.clear()

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        """Return how many served requests had this method and a URL path containing this text."""
        return self._log.count(method, path_contains)

    # -- faults ----------------------------------------------------------------

    def inject(self, path_contains: str, *, method: str | None = "GET", times: int | None = 1,
               status: int | None = None, retry_after: float | None = None, headers: dict | None = None,
               body: bytes | None = None, delay_s: float = 0.0, truncate_to: int | None = None,
               reset_after: int | None = None, chunk_size: int | None = None,
               chunk_delay_s: float = 0.0) -> Fault:
        """Misbehave on the next `times` matching requests (None: until clear_faults()).

        `status` answers an error instead of the real response; `body` alone swaps the real
        body; `truncate_to` / `reset_after` end the body early with a FIN / RST; `chunk_size`
        with `chunk_delay_s` trickles it out; `delay_s` stalls before anything is sent.
        Faults are tried in injection order. Returns the Fault, whose `used` counts the
        requests it changed; raises ValueError for arguments that could never take effect.
        """
        fault = Fault(path_contains, method, times, status, retry_after, dict(headers or {}),
                      None if body is None else bytes(body), delay_s, truncate_to, reset_after,
                      chunk_size, chunk_delay_s)
        return self._faults.add(fault)

    def clear_faults(self) -> None:
        """Forget every injected fault, used up or not, and every mirror switch (redirect, paging); raises nothing."""
        self._faults.clear()
        self._mirror.clear()

    # -- mirrors and proxies in front of the Hub ---------------------------------

    def redirect(self, path_contains: str, to: str, *, status: int = 302, method: str | None = "GET",
                 times: int | None = None) -> Redirect:
        """Answer matching requests with a redirect to the same path and query under `to`.

        As a mirror or proxy may: `to` is a base URL (another server on loopback, for a
        cross-origin redirect, or this hub's own `url` for a same-origin one, best with
        `times` so the redirected request is answered). Injected faults are tried first;
        redirects in the order added. Returns the Redirect, whose `used` counts the requests
        sent on; raises ValueError for a status that is not a redirect, `times` below 1 or
        a `to` that is not a URL. clear_faults() drops it.
        """
        return self._mirror.add_redirect(Redirect(path_contains, to, status, method, times))

    def page_tree_listings(self, page_size: int | None, *, link_base: str | None = None) -> None:
        """Page every tree listing at `page_size` entries (None: one page, unless a client asks).

        The next page is named in `Link: <...>; rel="next"` on `link_base` (default: this
        hub), e.g. "https://huggingface.co", as mirrors that send the Hub's own address do.
        Returns None; raises ValueError for a page size below 1. clear_faults() stops it.
        """
        self._mirror.set_paging(None if page_size is None else Paging(page_size, link_base))

    # -- refusals ----------------------------------------------------------------

    def mirror_mode(self, unknown_repos: str | None) -> None:
        """Answer requests for repos this hub does not hold as a self-hosted mirror does.

        "bare-404": 404 without `X-Error-Code` (a plain web server's Not Found);
        "refs-not-cached": 404 `EntryNotFound` "Repository refs are not cached locally";
        None: as the Hub does (404 RepoNotFound, or the anonymous status given to the
        constructor). Raises ValueError for anything else.
        """
        self._access.set_unknown_repo_answer("hub" if unknown_repos is None else unknown_repos)

    def gate(self, repo_id: str, *, repo_type: str = "model", granted_tokens: Iterable[str] = ()) -> None:
        """Gate a repo: its file downloads get 403 `GatedRepo` unless sent with a granted token.

        Listings, refs and repo info still answer (their `gated` field says "manual"), as on
        the Hub. Raises ValueError for a malformed type or id; the repo need not exist yet.
        """
        self._store.check_id(repo_type, repo_id)
        self._access.gate(repo_type, repo_id, granted_tokens)

    def ungate(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Serve a gated repo's files to everyone again; a no-op for a repo that is not gated. Raises nothing."""
        self._access.ungate(repo_type, repo_id)

    # -- repositories --------------------------------------------------------

    def create_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Create an empty repo (no commits, no branches); a no-op if it exists.

        Raises ValueError for a repo type other than model or kernel, or an id not like 'org/name'.
        """
        self._store.create(repo_type, repo_id)

    def delete_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Delete a repo with its history and LFS objects.

        Raises ValueError for a malformed type or id, LookupError if the repo does not exist.
        """
        self._store.delete(repo_type, repo_id)

    def commit(self, repo_id: str, files: dict[str, bytes | str], *, repo_type: str = "model",
               branch: str = "main", message: str = "update", delete: Iterable[str] = (),
               replace: bool = False, lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> str:
        """Commit `files` on top of `branch` (created if absent); return the new commit sha.

        `delete` drops files or folders first, `replace` starts from an empty tree, and files
        whose names match `lfs_patterns` are stored through LFS. Raises LookupError if the repo
        does not exist, ValueError for a malformed type or id, a path no repo may hold, or a
        deletion of a path that is not there.
        """
        return self._store.commit(repo_type, repo_id, files, branch=branch, message=message, delete=delete,
                                  replace=replace, lfs_patterns=lfs_patterns)

    def commit_dir(self, repo_id: str, directory: str | os.PathLike, *, repo_type: str = "model",
                   branch: str = "main", message: str = "upload folder",
                   lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> str:
        """Commit exactly the files of `directory` (bytecode left out) as the new tree.

        Returns the new commit sha; raises as commit() does, and OSError if the folder cannot be read.
        """
        files = dict(_read_dir(os.fspath(directory)))
        return self.commit(repo_id, files, repo_type=repo_type, branch=branch, message=message,
                           replace=True, lfs_patterns=lfs_patterns)

    def create_pull_request(self, repo_id: str, files: dict[str, bytes | str], *, repo_type: str = "model",
                            base: str = "main", message: str = "pull request", delete: Iterable[str] = (),
                            lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> tuple[int, str]:
        """Open a pull request: commit `files` on top of branch `base` as the ref `refs/pr/N`.

        The revision endpoint and resolve/ URLs then answer for `refs/pr/N`, and the refs
        listing names it under `pullRequests` when asked with `include_prs=1`; branches do
        not move. Returns (N, the commit sha), N counting up from 1 per repo. Raises as
        commit() does, and ValueError if `base` is not a branch.
        """
        return self._store.create_pull_request(repo_type, repo_id, files, base=base, message=message,
                                               delete=delete, lfs_patterns=lfs_patterns)

    def set_branch(self, repo_id: str, branch: str, target: str, *, repo_type: str = "model") -> None:
        """Point `branch` (created if absent) at the commit `target` names: a branch, tag or sha.

        Raises LookupError if the repo does not exist, ValueError for a malformed type or id
        or a target that names no commit.
        """
        self._store.set_branch(repo_type, repo_id, branch, target)

    def create_tag(self, repo_id: str, tag: str, target: str, *, repo_type: str = "model") -> None:
        """Tag the commit `target` names; raises as set_branch() does, and ValueError if the tag exists."""
        self._store.create_tag(repo_type, repo_id, tag, target)

    def replace_lfs_content(self, repo_id: str, sha256: str, data: bytes, *, repo_type: str = "model") -> None:
        """Serve other bytes under an LFS object's name, as a damaged store or proxy would.

        Raises as delete_repo() does, and OSError if the object's folder does not exist in the repo.
        """
        self._store.replace_lfs_content(repo_type, repo_id, sha256, data)

    def _respond(self, method: str, path: str, query: str, form: bytes, headers: Message) -> Response:
        authorization = headers.get("authorization")

        def answer(method: str, path: str, query: str, form: bytes) -> Response:
            return route(self._store, self.url, method, path, query, form, access=self._access,
                         authorization=authorization)

        return self._mirror.answer(answer, self.url, method, path, query, form)


def _read_dir(directory: str) -> Iterator[tuple[str, bytes]]:
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                yield os.path.relpath(full, directory).replace(os.sep, "/"), f.read()
