"""A Hub-compatible HTTP server on loopback, backed by real git repositories.

Tests, demos and benchmarks point the real `huggingface_hub` client at it
(`HfApi(endpoint=hub.url)`, or `HF_ENDPOINT` in a subprocess) instead of
mocking the client: what passes here talks to the Hub the same way.

On disk, under `root`: `{models|kernels}/{org}/{name}.git` is a bare git
repository and `{name}.lfs/` beside it holds the LFS content keyed by sha256.
Git objects are immutable, so everything derived from a commit or blob sha is
cached in memory; refs are cached too and refreshed by every method here that
moves one (moving refs with git behind the hub's back is not noticed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .faults import Fault, FaultSet
from .git import GitRepo, Snapshot, build_snapshot, lfs_pointer
from .responses import Response
from .routes import route
from .server import RequestLog, RequestRecord, start_server, stop_server

logger = logging.getLogger("kernelhook.testing")

REPO_TYPES = {"model": "models", "kernel": "kernels"}
DEFAULT_LFS_PATTERNS = ("*.so", "*.bin")
_MEMORY_CACHE_LIMIT = 64 << 20  # larger LFS objects are read from disk on every request

__all__ = ["Fault", "LocalHub", "RequestRecord"]


@dataclass
class _Repo:
    """One Hub repo: its git repository, its LFS store and a cache of its refs."""

    repo_type: str
    repo_id: str
    git: GitRepo
    lfs_dir: str
    refs: dict[str, str] | None = None
    # Full shas found to be commits here; only delete_repo() can make one go away.
    commits: set[str] = field(default_factory=set)

    def lfs_path(self, sha256: str) -> str:
        return os.path.join(self.lfs_dir, sha256[:2], sha256[2:4], sha256)


class LocalHub:
    """A loopback Hugging Face Hub serving git-backed model and kernel repos; inject() makes it misbehave."""

    def __init__(self, root: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.host, self.port = host, port
        self.url = ""
        self._log = RequestLog()
        self.requests: list[RequestRecord] = self._log.records
        # Re-entrant: commit() reads snapshots, which take the lock to fill caches.
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._blobs: dict[str, bytes] = {}
        self._lfs: dict[str, bytes] = {}
        self._histories: dict[str, list] = {}
        self._faults = FaultSet()
        self._server = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "LocalHub":
        if self._server is None:
            os.makedirs(self.root, exist_ok=True)
            self._server, self._thread = start_server(self.host, self.port, self._respond, self._faults, self._log)
            host, port = self._server.server_address[:2]
            self.url = f"http://{host}:{port}"
            logger.debug("local hub serving %s from %s", self.url, self.root)
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            stop_server(server, thread)

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        if not self.url:
            raise RuntimeError("LocalHub.env() needs a started hub: call start() or use it as a context manager")
        return {"HF_ENDPOINT": self.url}

    # -- request log ---------------------------------------------------------

    def clear_requests(self) -> None:
        self._log.clear()

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
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
        """
        fault = Fault(path_contains, method, times, status, retry_after, dict(headers or {}),
                      None if body is None else bytes(body), delay_s, truncate_to, reset_after,
                      chunk_size, chunk_delay_s)
        return self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def _respond(self, method: str, path: str, query: str, form: bytes) -> Response:
        return route(self, method, path, query, form)

    # -- repositories --------------------------------------------------------

    def create_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Create an empty repo (no commits, no branches); a no-op if it exists."""
        with self._lock:
            repo = self._make_repo(repo_type, repo_id)
            if not os.path.isdir(repo.git.path):
                os.makedirs(os.path.dirname(repo.git.path), exist_ok=True)
                repo.git.init()
            self._repos[(repo_type, repo_id)] = repo

    def delete_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        with self._lock:
            repo = self._require(repo_type, repo_id)
            shutil.rmtree(repo.git.path)
            shutil.rmtree(repo.lfs_dir, ignore_errors=True)
            self._repos.pop((repo_type, repo_id), None)

    def commit(self, repo_id: str, files: dict[str, bytes | str], *, repo_type: str = "model",
               branch: str = "main", message: str = "update", delete: Iterable[str] = (),
               replace: bool = False, lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> str:
        """Commit `files` on top of `branch` (created if absent); return the new commit sha."""
        with self._lock:
            repo = self._require(repo_type, repo_id)
            ref = f"refs/heads/{branch}"
            parent = self._refs(repo).get(ref)
            tree = {} if replace or parent is None else self._snapshot(repo, parent).blob_ids()
            for gone in delete:
                _remove_path(tree, _check_path(gone), repo_id)
            tree.update(self._store_files(repo, files, tuple(lfs_patterns)))
            sha = repo.git.commit_tree(repo.git.write_tree(tree), parent, message)
            repo.git.update_ref(ref, sha, parent)
            repo.refs = None
            logger.debug("%s %s: %s is now %s", repo_type, repo_id, branch, sha)
            return sha

    def commit_dir(self, repo_id: str, directory: str | os.PathLike, *, repo_type: str = "model",
                   branch: str = "main", message: str = "upload folder",
                   lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> str:
        """Commit exactly the files of `directory` (bytecode left out) as the new tree."""
        files = dict(_read_dir(os.fspath(directory)))
        return self.commit(repo_id, files, repo_type=repo_type, branch=branch, message=message,
                           replace=True, lfs_patterns=lfs_patterns)

    def set_branch(self, repo_id: str, branch: str, target: str, *, repo_type: str = "model") -> None:
        self._set_ref(repo_type, repo_id, f"refs/heads/{branch}", target)

    def create_tag(self, repo_id: str, tag: str, target: str, *, repo_type: str = "model") -> None:
        self._set_ref(repo_type, repo_id, f"refs/tags/{tag}", target, must_be_new=True)

    def replace_lfs_content(self, repo_id: str, sha256: str, data: bytes, *, repo_type: str = "model") -> None:
        """Serve other bytes under an LFS object's name, as a damaged store or proxy would."""
        with self._lock:
            repo = self._require(repo_type, repo_id)
            with open(repo.lfs_path(sha256), "wb") as f:
                f.write(data)
            self._lfs.pop(sha256, None)

    # -- lookups used by the HTTP handlers -----------------------------------

    def _lookup(self, repo_type: str, repo_id: str) -> _Repo | None:
        """The repo, or None: a repo made by an earlier hub on the same root counts."""
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            try:
                candidate = self._make_repo(repo_type, repo_id)
            except ValueError:  # a malformed id in a URL is simply not a repo
                return None
            if os.path.isdir(candidate.git.path):
                repo = self._repos.setdefault((repo_type, repo_id), candidate)
        return repo if repo is not None and os.path.isdir(repo.git.path) else None

    def _resolve(self, repo: _Repo, rev: str) -> str | None:
        """Commit sha for a branch, tag, full sha or unambiguous short sha; else None."""
        refs = self._refs(repo)
        for ref in (f"refs/heads/{rev}", f"refs/tags/{rev}", rev):
            if ref in refs:
                return refs[ref]
        if rev in repo.commits:
            return rev
        if 7 <= len(rev) <= 40 and all(c in "0123456789abcdef" for c in rev):
            sha = repo.git.resolve_commit(rev)
            if sha is not None and sha == rev:
                repo.commits.add(sha)  # a short sha is not cached: a new commit may make it ambiguous
            return sha
        return None

    def _snapshot(self, repo: _Repo, commit: str) -> Snapshot:
        snap = self._snapshots.get(commit)
        if snap is None:
            snap = build_snapshot(repo.git, commit, self._blobs)
            self._snapshots[commit] = snap
        return snap

    def _history(self, repo: _Repo, commit: str) -> list:
        log = self._histories.get(commit)
        if log is None:
            log = self._histories[commit] = repo.git.log(commit)
        return log

    def _content(self, repo: _Repo, snap: Snapshot, path: str) -> bytes:
        """A file's served bytes: the LFS object for LFS files, else the git blob."""
        entry = snap.entries[path]
        if entry.lfs is None:
            data = self._blobs.get(entry.oid)
            if data is None:
                data = self._blobs[entry.oid] = repo.git.cat_blobs([entry.oid])[entry.oid]
            return data
        data = self._lfs.get(entry.lfs.sha256)
        if data is None:
            with open(repo.lfs_path(entry.lfs.sha256), "rb") as f:
                data = f.read()
            if len(data) <= _MEMORY_CACHE_LIMIT:
                self._lfs[entry.lfs.sha256] = data
        return data

    # -- internals -----------------------------------------------------------

    def _make_repo(self, repo_type: str, repo_id: str) -> _Repo:
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type {repo_type!r} is not one of {sorted(REPO_TYPES)}")
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") and not p.endswith((".git", ".lfs"))
                                      for p in parts):
            raise ValueError(f"repo_id {repo_id!r} must look like 'org/name'")
        base = os.path.join(self.root, REPO_TYPES[repo_type], *parts)
        return _Repo(repo_type, repo_id, GitRepo(base + ".git"), base + ".lfs")

    def _require(self, repo_type: str, repo_id: str) -> _Repo:
        self._make_repo(repo_type, repo_id)  # validates the arguments
        repo = self._lookup(repo_type, repo_id)
        if repo is None:
            raise LookupError(f"{repo_type} repo {repo_id!r} does not exist; call create_repo() first")
        return repo

    def _refs(self, repo: _Repo) -> dict[str, str]:
        refs = repo.refs
        if refs is None:
            with self._lock:
                refs = repo.refs = repo.git.refs()
        return refs

    def _set_ref(self, repo_type: str, repo_id: str, ref: str, target: str, must_be_new: bool = False) -> None:
        with self._lock:
            repo = self._require(repo_type, repo_id)
            if must_be_new and ref in self._refs(repo):
                raise ValueError(f"{ref} already exists in {repo_id!r}")
            sha = self._resolve(repo, target)
            if sha is None:
                raise ValueError(f"{target!r} names no commit in {repo_type} repo {repo_id!r}")
            repo.git.update_ref(ref, sha)
            repo.refs = None

    def _store_files(self, repo: _Repo, files: dict[str, bytes | str], patterns: tuple[str, ...]) -> dict[str, str]:
        """Write blobs (LFS pointers for LFS paths) and return {path: blob sha}."""
        paths, blobs = [], []
        for path, data in files.items():
            data = data.encode() if isinstance(data, str) else bytes(data)
            if any(fnmatch.fnmatch(os.path.basename(path), p) for p in patterns):
                data = self._store_lfs(repo, data)
            paths.append(_check_path(path))
            blobs.append(data)
        return dict(zip(paths, repo.git.write_blobs(blobs)))

    def _store_lfs(self, repo: _Repo, data: bytes) -> bytes:
        sha256 = hashlib.sha256(data).hexdigest()
        target = repo.lfs_path(sha256)
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)  # readers never see a partial object
        return lfs_pointer(sha256, len(data))


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..", ".git") for p in parts) or "\\" in path:
        raise ValueError(f"{path!r} is not a valid path inside a repo")
    return path


def _remove_path(tree: dict[str, str], path: str, repo_id: str) -> None:
    """Drop a file, or a folder with everything under it."""
    doomed = [p for p in tree if p == path or p.startswith(path + "/")]
    if not doomed:
        raise ValueError(f"cannot delete {path!r}: not in {repo_id!r}")
    for p in doomed:
        del tree[p]


def _read_dir(directory: str) -> Iterator[tuple[str, bytes]]:
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                yield os.path.relpath(full, directory).replace(os.sep, "/"), f.read()
