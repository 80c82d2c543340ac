"""Lockfiles: the same bytes on every node, every day.

A project lists its kernels in pyproject.toml::

    [tool.kernelhook.kernels]
    "kernels-ext-npu/RMSNorm" = "v1"        # a branch, tag, commit or vN

``kernelhook lock`` writes ``kernelhook.lock`` beside it (JSON, sorted, no
timestamps, so an unchanged Hub rewrites the same bytes): per repo the commit,
and per build variant every file's size and the Hub's own hash for it (the LFS
sha256, or the git blob sha1 of a small file). Locking downloads nothing.

A lockfile is in effect when ``KERNELHOOK_LOCKFILE`` names one, or one is found
from the working directory upwards. Then unpinned names (imports, get_kernel,
LayerRepository without a revision) load its commit, and every file of a locked
variant is hashed against the lock before anything of it executes.

Hashing a large variant on every load would cost seconds, so a tree that matched
a lock entry is not hashed again while none of its files and folders changes
its stat (size, mtime_ns, ctime_ns, inode): checked from memory within a
process, and across processes from a record kept in the store. Editing a file
in place changes its mtime and ctime (ctime cannot be set back), replacing it
changes its inode, and adding or removing one changes its folder's: each means
hashing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LockfileError, LockMismatchError
from ..project import kernelhook_table, lockfile_in_effect
from ..records import Record
from ..repo import is_bytecode, split_build_path

if TYPE_CHECKING:
    from .store import Store

FORMAT_VERSION = 1


class LockedKernel(Record, fields="repo_id repo_type revision commit variants"):
    """One kernel of a lockfile; ``variants``: {variant: {relative path: {"size": n, "sha256" | "git_sha1": hex}}}."""

    __slots__ = ()


class Lock(Record, fields="path kernels"):
    """A lockfile: its ``path``, and ``kernels``, {repo_id: LockedKernel}."""

    __slots__ = ()

    def find(self, repo_ids) -> LockedKernel | None:
        return next((self.kernels[r] for r in repo_ids if r in self.kernels), None)


# -- reading ------------------------------------------------------------------------------------


def lock_in_effect() -> Lock | None:
    """The lockfile named by KERNELHOOK_LOCKFILE, else the nearest one above the working directory.

    Raises:
        LockfileError: it is not a file, or cannot be read as a lockfile.
    """
    path = lockfile_in_effect()
    return None if path is None else lock_at(path)


def lock_at(path: Path) -> Lock:
    """The lockfile at ``path`` (as ``project.lockfile_in_effect`` found it), read once while it is unchanged.

    Raises:
        LockfileError: it is not a file, or cannot be read as a lockfile.
    """
    if not path.is_file():
        raise LockfileError(f"KERNELHOOK_LOCKFILE names {path}, which is not a file. Fix: run `kernelhook lock` or unset it.")
    return _read_cached(path.resolve())


_cache_lock = threading.Lock()
_cache: dict = {}


def _read_cached(path: Path) -> Lock:
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = read_lock(path)
        return _cache[key]


def read_lock(path: Path) -> Lock:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
        kernels = {
            repo_id: LockedKernel(repo_id, entry["repo_type"], entry["revision"], entry["commit"], entry["variants"])
            for repo_id, entry in data["kernels"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LockfileError(f"{path}: not a kernelhook lockfile ({exc}). Fix: regenerate it with `kernelhook lock`.") from exc
    return Lock(Path(path), kernels)


def read_requirements(pyproject: Path) -> dict[str, str]:
    """``[tool.kernelhook.kernels]`` of a pyproject.toml: {repo id: revision}."""
    table = kernelhook_table(pyproject).get("kernels")
    if not isinstance(table, dict) or not table:
        raise LockfileError(
            f"{pyproject} has no [tool.kernelhook.kernels] table. Fix: add one line per kernel, "
            f'e.g. "kernels-ext-npu/RMSNorm" = "v1".'
        )
    bad = {k: v for k, v in table.items() if not isinstance(v, str)}
    if bad:
        raise LockfileError(f"{pyproject}: [tool.kernelhook.kernels] values must be revision strings: {bad}")
    return dict(table)


# -- writing ------------------------------------------------------------------------------------


def render(kernels: list[LockedKernel]) -> str:
    """The lockfile's text: the same kernels always give the same bytes."""
    data = {
        "version": FORMAT_VERSION,
        "kernels": {
            k.repo_id: {"repo_type": k.repo_type, "revision": k.revision, "commit": k.commit, "variants": k.variants}
            for k in sorted(kernels, key=lambda k: k.repo_id)
        },
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def variants_from_listing(listing) -> dict:
    """{variant: {path below the variant: {"size", "sha256" | "git_sha1"}}} from a build/ listing.

    Bytecode is not locked: it is never fetched or executed (fetch.py).
    """
    variants: dict = {}
    for entry in listing:
        split = split_build_path(entry.path)
        if split is None or is_bytecode(entry.path):
            continue
        variant, relative = split
        digest = {"sha256": entry.lfs_sha256} if entry.lfs_sha256 else {"git_sha1": entry.git_oid}
        variants.setdefault(variant, {})[relative] = {"size": entry.size, **digest}
    return variants


# -- checking -----------------------------------------------------------------------------------


def check_tree(locked: LockedKernel, variant: str, tree: Path, store: Store | None = None) -> None:
    """Check a variant tree's files against the lock; raise before anything of it executes.

    Every file is hashed, unless the tree matched the same lock entry before and no file or
    folder of it has changed its stat since: hashed at most once per process, and with
    ``store``, once across processes (a read-only store keeps no record: each process hashes).

    Raises:
        LockMismatchError: the lock has no entry for the variant, or a file is missing,
            extra or different; nothing of the variant was imported.
    """
    expected = locked.variants.get(variant)
    where = f"{locked.repo_id}@{locked.commit[:12]} [{variant}]"
    if expected is None:
        raise LockMismatchError(
            f"{where}: the lockfile has no entry for this variant. Fix: `kernelhook lock` on a machine "
            f"that can see it, or load a variant the lock lists ({', '.join(sorted(locked.variants))})."
        )
    expected = {relative: want for relative, want in expected.items() if not is_bytecode(relative)}
    key = _entry_key(locked, variant, expected)
    memo = (key, str(tree))
    with _verify_lock(memo):  # threads loading one kernel hash it once between them
        record = _verified.get(memo)
        if record is None and store is not None:
            record = store.verification(tree.name, key)
        if record is not None and _unchanged(tree, record, expected):
            _verified[memo] = record
            return
        record = _hash_tree(expected, tree, where)
        _verified[memo] = record
        if store is not None:
            store.remember_verification(tree.name, key, record)


# (lock entry key, tree) -> the record of the tree as it was when it matched, for this process
_verified: dict[tuple[str, str], dict] = {}
_verify_locks: dict[tuple[str, str], threading.Lock] = {}
_verify_locks_guard = threading.Lock()


def _verify_lock(memo: tuple[str, str]) -> threading.Lock:
    with _verify_locks_guard:
        return _verify_locks.setdefault(memo, threading.Lock())


def _entry_key(locked: LockedKernel, variant: str, expected: dict) -> str:
    """Names what a tree is checked against: the repo, commit and variant, and every hash the lock lists."""
    text = json.dumps([locked.repo_id, locked.commit, variant, expected], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stat_of(path: Path | str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _unchanged(tree: Path, record: dict, expected: dict) -> bool:
    """Whether every file and folder the record lists still has its recorded stat."""
    try:
        if set(record["files"]) != set(expected):
            return False
        paths = [*record["folders"].items(), *record["files"].items()]
        return all(_stat_of(tree / relative) == recorded for relative, recorded in paths)
    except (OSError, KeyError, TypeError, AttributeError):  # gone, or a damaged record: hash again
        return False


def _hash_tree(expected: dict, tree: Path, where: str) -> dict:
    """Hash every file against the lock; return the record of the stats taken before reading each,
    so that a change made while hashing shows as a changed stat next time."""
    folders: dict[str, list[int]] = {}
    present: list[str] = []
    _walk(tree, "", folders, present)
    present = [relative for relative in present if not is_bytecode(relative)]  # never fetched, never run
    for relative in sorted(set(present) - set(expected)):
        raise LockMismatchError(f"{where}: {relative} is in the cache but not in the lockfile; nothing was imported.")
    from .. import files  # here, not at the top: a verified tree, or no lockfile, hashes nothing

    stats = {}
    for relative, want in sorted(expected.items()):
        path = tree / relative
        try:
            stats[relative] = _stat_of(path)
        except OSError:
            pass
        if relative not in stats or not path.is_file():
            raise LockMismatchError(f"{where}: {relative} is locked but missing from the cache; nothing was imported.")
        kind = "sha256" if "sha256" in want else "git_sha1"
        actual = files.file_digest(path, kind)
        if actual != want[kind]:
            raise LockMismatchError(
                f"{where}: {relative} does not match the lockfile: expected {kind} {want[kind]}, got {actual}. "
                f"Nothing from this variant was imported. Fix: `kernelhook cache verify --repair`, then load again."
            )
    return {"files": stats, "folders": folders}


def _walk(folder: Path, relative: str, folders: dict, present: list) -> None:
    """Every entry below ``folder`` but __pycache__ (kernels never write there; Python may), and the
    stat of each folder, taken before listing it: an entry added afterwards changes that stat."""
    folders[relative or "."] = _stat_of(folder)
    with os.scandir(folder) as entries:
        for entry in entries:
            below = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    _walk(folder / entry.name, below, folders, present)
            else:
                present.append(below)
