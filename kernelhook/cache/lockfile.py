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
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import NamedTuple

from ..errors import LockfileError, LockMismatchError
from ..files import file_digest
from ..project import kernelhook_table, nearest
from ..repo import is_bytecode, split_build_path

LOCK_NAME = "kernelhook.lock"
FORMAT_VERSION = 1


class LockedKernel(NamedTuple):
    repo_id: str
    repo_type: str
    revision: str
    commit: str
    variants: dict  # variant -> {relative path: {"size": n, "sha256" | "git_sha1": hex}}


class Lock(NamedTuple):
    path: Path
    kernels: dict  # repo_id -> LockedKernel

    def find(self, repo_ids) -> LockedKernel | None:
        return next((self.kernels[r] for r in repo_ids if r in self.kernels), None)


# -- reading ------------------------------------------------------------------------------------


def lock_in_effect() -> Lock | None:
    """The lockfile named by KERNELHOOK_LOCKFILE, else the nearest one above the working directory."""
    named = os.environ.get("KERNELHOOK_LOCKFILE")
    path = Path(named).expanduser() if named else nearest(LOCK_NAME)
    if path is None:
        return None
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


def check_tree(locked: LockedKernel, variant: str, tree: Path) -> None:
    """Hash every file of a variant tree against the lock; raise before anything executes."""
    expected = locked.variants.get(variant)
    where = f"{locked.repo_id}@{locked.commit[:12]} [{variant}]"
    if expected is None:
        raise LockMismatchError(
            f"{where}: the lockfile has no entry for this variant. Fix: `kernelhook lock` on a machine "
            f"that can see it, or load a variant the lock lists ({', '.join(sorted(locked.variants))})."
        )
    expected = {relative: want for relative, want in expected.items() if not is_bytecode(relative)}
    present = {relative for p in tree.rglob("*") if p.is_file()
               and not is_bytecode(relative := p.relative_to(tree).as_posix())}
    for relative in sorted(present - set(expected)):
        raise LockMismatchError(f"{where}: {relative} is in the cache but not in the lockfile; nothing was imported.")
    for relative, want in sorted(expected.items()):
        path = tree / relative
        if not path.is_file():
            raise LockMismatchError(f"{where}: {relative} is locked but missing from the cache; nothing was imported.")
        kind = "sha256" if "sha256" in want else "git_sha1"
        actual = file_digest(path, kind)
        if actual != want[kind]:
            raise LockMismatchError(
                f"{where}: {relative} does not match the lockfile: expected {kind} {want[kind]}, got {actual}. "
                f"Nothing from this variant was imported. Fix: `kernelhook cache verify --repair`, then load again."
            )

