"""The loopback Hub's repo store: Hub repos as bare git repositories, with their LFS objects.

On disk, under `root`: `{models|kernels}/{org}/{name}.git` is a bare git
repository and `{name}.lfs/` beside it holds the LFS content keyed by sha256.
Git objects are immutable, so everything derived from a commit or blob sha is
cached in memory; refs are cached too and refreshed by every method here that
moves one (moving refs with git behind the store's back is not noticed).

Nothing here speaks HTTP: LocalHub writes through this interface and the routes
read (and the write endpoints write) through it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from typing import Iterable

from .git import CommitItem, GitRepo, Snapshot, build_snapshot, lfs_pointer

logger = logging.getLogger("kernelhook.testing")

REPO_TYPES = {"model": "models", "kernel": "kernels"}
DEFAULT_LFS_PATTERNS = ("*.so", "*.bin")
_MEMORY_CACHE_LIMIT = 64 << 20  # larger LFS objects are read from disk on every request
_PR_PREFIX = "refs/pr/"  # the Hub's pull requests are refs of their own, beside branches and tags

__all__ = ["DEFAULT_LFS_PATTERNS", "REPO_TYPES", "Repo", "RepoStore"]


@dataclass
class Repo:
    """One Hub repo: its git repository, its LFS store and a cache of its refs."""

    repo_type: str
    repo_id: str
    git: GitRepo
    lfs_dir: str
    _refs: dict[str, str] | None = field(default=None, init=False, repr=False)
    # Full shas found to be commits here; only RepoStore.delete() can make one go away.
    _commits: set[str] = field(default_factory=set, init=False, repr=False)

    def lfs_path(self, sha256: str) -> str:
        """Return where the LFS object with this sha256 lies (or would lie) on disk."""
        return os.path.join(self.lfs_dir, sha256[:2], sha256[2:4], sha256)


class RepoStore:
    """Every repo under `root`, with caches shared by all of them; thread-safe."""

    def __init__(self, root: str) -> None:
        self.root = root
        # Re-entrant: commit() reads refs, which take the lock to fill their cache,
        # and the write endpoints hold it around several writes that must be one step.
        self.lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._blobs: dict[str, bytes] = {}
        self._lfs: dict[str, bytes] = {}
        self._histories: dict[str, list[CommitItem]] = {}

    # -- finding repos and revisions -------------------------------------------

    def check_id(self, repo_type: str, repo_id: str) -> None:
        """Return None for a well-formed type and id; raise ValueError for anything else."""
        self._new_repo(repo_type, repo_id)

    def lookup(self, repo_type: str, repo_id: str) -> Repo | None:
        """The repo, or None: a repo made by an earlier store on the same root counts.

        A malformed type or id is simply not a repo: this raises nothing.
        """
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            try:
                candidate = self._new_repo(repo_type, repo_id)
            except ValueError:  # a malformed id in a URL is simply not a repo
                return None
            if os.path.isdir(candidate.git.path):
                repo = self._repos.setdefault((repo_type, repo_id), candidate)
        return repo if repo is not None and os.path.isdir(repo.git.path) else None

    def require(self, repo_type: str, repo_id: str) -> Repo:
        """Return the repo; raise ValueError for a malformed type or id, LookupError if it does not exist."""
        self.check_id(repo_type, repo_id)
        repo = self.lookup(repo_type, repo_id)
        if repo is None:
            raise LookupError(f"{repo_type} repo {repo_id!r} does not exist; call create_repo() first")
        return repo

    def refs(self, repo: Repo) -> dict[str, str]:
        """Return {"refs/heads/main": sha, "refs/tags/v1": sha, ...}; raises GitError if git fails."""
        refs = repo._refs
        if refs is None:
            with self.lock:
                refs = repo._refs = repo.git.refs()
        return refs

    def resolve(self, repo: Repo, rev: str) -> str | None:
        """Commit sha for a branch, tag, full sha or unambiguous short sha; else None."""
        refs = self.refs(repo)
        for ref in (f"refs/heads/{rev}", f"refs/tags/{rev}", rev):
            if ref in refs:
                return refs[ref]
        if rev in repo._commits:
            return rev
        if 7 <= len(rev) <= 40 and all(c in "0123456789abcdef" for c in rev):
            sha = repo.git.resolve_commit(rev)
            if sha is not None and sha == rev:
                repo._commits.add(sha)  # a short sha is not cached: a new commit may make it ambiguous
            return sha
        return None

    # -- reading one commit ----------------------------------------------------

    def snapshot(self, repo: Repo, commit: str) -> Snapshot:
        """Return every file and folder of `commit` (a full sha); raises GitError if it is no commit."""
        snap = self._snapshots.get(commit)
        if snap is None:
            snap = build_snapshot(repo.git, commit, self._blobs)
            self._snapshots[commit] = snap
        return snap

    def history(self, repo: Repo, commit: str) -> list[CommitItem]:
        """Return the commits reachable from `commit`, newest first; raises GitError if it is no commit."""
        log = self._histories.get(commit)
        if log is None:
            log = self._histories[commit] = repo.git.log(commit)
        return log

    def content(self, repo: Repo, snap: Snapshot, path: str) -> bytes:
        """A file's served bytes: the LFS object for LFS files, else the git blob.

        Raises KeyError if `snap` has no such path, OSError if an LFS object is missing.
        """
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

    # -- writing -----------------------------------------------------------------

    def create(self, repo_type: str, repo_id: str) -> None:
        """Create an empty repo (no commits, no branches); a no-op if it exists. Raises ValueError for a bad id."""
        with self.lock:
            repo = self._new_repo(repo_type, repo_id)
            if not os.path.isdir(repo.git.path):
                os.makedirs(os.path.dirname(repo.git.path), exist_ok=True)
                repo.git.init()
            self._repos[(repo_type, repo_id)] = repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        """Delete a repo and its LFS objects; raises as require() does."""
        with self.lock:
            repo = self.require(repo_type, repo_id)
            shutil.rmtree(repo.git.path)
            shutil.rmtree(repo.lfs_dir, ignore_errors=True)
            self._repos.pop((repo_type, repo_id), None)

    def commit(self, repo_type: str, repo_id: str, files: dict[str, bytes | str], *, branch: str = "main",
               message: str = "update", delete: Iterable[str] = (), replace: bool = False,
               lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> str:
        """Commit `files` on top of `branch` (created if absent); return the new commit sha.

        Raises as require() does, and ValueError for a path no repo may hold or a deletion of
        a path that is not there.
        """
        with self.lock:
            repo = self.require(repo_type, repo_id)
            ref = f"refs/heads/{branch}"
            parent = self.refs(repo).get(ref)
            return self._commit_onto(repo, ref, parent, files, message, delete, replace, lfs_patterns)

    def create_pull_request(self, repo_type: str, repo_id: str, files: dict[str, bytes | str], *,
                            base: str = "main", message: str = "pull request", delete: Iterable[str] = (),
                            lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS) -> tuple[int, str]:
        """Commit `files` on top of branch `base` as the next pull request, the ref `refs/pr/N`.

        Returns (N, the commit sha); N counts up from 1 per repo. Raises as commit() does,
        and ValueError if `base` is not a branch.
        """
        with self.lock:
            repo = self.require(repo_type, repo_id)
            refs = self.refs(repo)
            parent = refs.get(f"refs/heads/{base}")
            if parent is None:
                raise ValueError(f"{base!r} is not a branch of {repo_type} repo {repo_id!r}")
            numbers = [int(ref[len(_PR_PREFIX):]) for ref in refs
                       if ref.startswith(_PR_PREFIX) and ref[len(_PR_PREFIX):].isdigit()]
            number = max(numbers, default=0) + 1
            sha = self._commit_onto(repo, f"{_PR_PREFIX}{number}", None, files, message, delete, False,
                                    lfs_patterns, base=parent)
            return number, sha

    def set_branch(self, repo_type: str, repo_id: str, branch: str, target: str) -> None:
        """Point `branch` at the commit `target` names; raises as require() does, ValueError for no commit."""
        self._set_ref(repo_type, repo_id, f"refs/heads/{branch}", target)

    def create_tag(self, repo_type: str, repo_id: str, tag: str, target: str) -> None:
        """Tag the commit `target` names; raises as set_branch() does, and ValueError if the tag exists."""
        self._set_ref(repo_type, repo_id, f"refs/tags/{tag}", target, must_be_new=True)

    def replace_lfs_content(self, repo_type: str, repo_id: str, sha256: str, data: bytes) -> None:
        """Serve other bytes under an LFS object's name, as a damaged store or proxy would.

        Raises as require() does, OSError if the object's folder does not exist.
        """
        with self.lock:
            repo = self.require(repo_type, repo_id)
            with open(repo.lfs_path(sha256), "wb") as f:
                f.write(data)
            self._lfs.pop(sha256, None)

    # -- internals -----------------------------------------------------------------

    def _commit_onto(self, repo: Repo, ref: str, parent: str | None, files: dict[str, bytes | str], message: str,
                     delete: Iterable[str], replace: bool, lfs_patterns: Iterable[str],
                     base: str | None = None) -> str:
        """One commit on `base` (default: `parent`, the ref's current commit), then `ref` moved to it.

        The lock is held by the caller. `parent` guards the move: a ref that moved meanwhile is a GitError.
        """
        base = parent if base is None else base
        tree = {} if replace or base is None else self.snapshot(repo, base).blob_ids()
        for gone in delete:
            _remove_path(tree, _check_path(gone), repo.repo_id)
        tree.update(self._store_files(repo, files, tuple(lfs_patterns)))
        sha = repo.git.commit_tree(repo.git.write_tree(tree), base, message)
        repo.git.update_ref(ref, sha, parent)
        repo._refs = None
        logger.debug("%s %s: %s is now %s", repo.repo_type, repo.repo_id, ref, sha)
        return sha

    def _new_repo(self, repo_type: str, repo_id: str) -> Repo:
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type {repo_type!r} is not one of {sorted(REPO_TYPES)}")
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") and not p.endswith((".git", ".lfs"))
                                      for p in parts):
            raise ValueError(f"repo_id {repo_id!r} must look like 'org/name'")
        base = os.path.join(self.root, REPO_TYPES[repo_type], *parts)
        return Repo(repo_type, repo_id, GitRepo(base + ".git"), base + ".lfs")

    def _set_ref(self, repo_type: str, repo_id: str, ref: str, target: str, must_be_new: bool = False) -> None:
        with self.lock:
            repo = self.require(repo_type, repo_id)
            if must_be_new and ref in self.refs(repo):
                raise ValueError(f"{ref} already exists in {repo_id!r}")
            sha = self.resolve(repo, target)
            if sha is None:
                raise ValueError(f"{target!r} names no commit in {repo_type} repo {repo_id!r}")
            repo.git.update_ref(ref, sha)
            repo._refs = None

    def _store_files(self, repo: Repo, files: dict[str, bytes | str], patterns: tuple[str, ...]) -> dict[str, str]:
        """Write blobs (LFS pointers for LFS paths) and return {path: blob sha}."""
        paths, blobs = [], []
        for path, data in files.items():
            data = data.encode() if isinstance(data, str) else bytes(data)
            if any(fnmatch.fnmatch(os.path.basename(path), p) for p in patterns):
                data = self._store_lfs(repo, data)
            paths.append(_check_path(path))
            blobs.append(data)
        return dict(zip(paths, repo.git.write_blobs(blobs)))

    def _store_lfs(self, repo: Repo, data: bytes) -> bytes:
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
