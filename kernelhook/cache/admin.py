"""``kernelhook cache ls | verify | prune``: look after the store.

prune marks from roots, then sweeps, refs before content (as git's gc does):
roots are every revision ref (what each pin last resolved to in this cache,
lockfile pins included: their loads and downloads leave their commit's ref)
and every commit the lockfile in effect pins; the trees those commits' variant refs name,
and the objects those trees' manifests list, are kept. Entries younger than
the grace period are kept too, so a prune never pulls files from under a
download in progress.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import file_digest
from ..repo import RepoAddress
from .store import Store, tree_digest


@dataclass(frozen=True)
class CachedVariant:
    repo_id: str
    repo_type: str
    revisions: tuple[str, ...]  # the pins that last resolved to this commit
    commit: str
    variant: str
    size: int
    tree: str


def list_cached(store: Store) -> list[CachedVariant]:
    rows = []
    for repo, repo_dir in _repos(store):
        pins = _pins(store, repo_dir)
        for commit_dir in _children(repo_dir / "commits"):
            for variant_file in _children(commit_dir / "variants"):
                digest = variant_file.read_text().strip()
                tree = store.tree_path(digest)
                if tree.is_dir():
                    names = tuple(sorted(p for p, c in pins.items() if c == commit_dir.name))
                    rows.append(CachedVariant(repo.repo_id, repo.repo_type, names, commit_dir.name,
                                              variant_file.name, _size(tree), str(tree)))
    return sorted(rows, key=lambda r: (r.repo_id, r.commit, r.variant))


@dataclass
class VerifyReport:
    objects: int = 0
    trees: int = 0
    damaged: list[str] = field(default_factory=list)  # paths
    removed: list[str] = field(default_factory=list)


def verify(store: Store, repair: bool = False) -> VerifyReport:
    """Re-hash every object and tree; with repair, drop the damaged ones (they are fetched again on use)."""
    report = VerifyReport()
    for obj in _objects(store):
        report.objects += 1
        if _sha256(obj) != obj.parent.name + obj.name:
            report.damaged.append(str(obj))
    for tree in _children(store.root / "trees"):
        report.trees += 1
        manifest = _manifest(store, tree.name)
        actual = {p.relative_to(tree).as_posix(): _sha256(p) for p in tree.rglob("*") if p.is_file()}
        if manifest is None or actual != manifest or tree_digest(actual) != tree.name:
            report.damaged.append(str(tree))
    if repair:
        for path in map(Path, report.damaged):
            store.remove_tree(path) if path.is_dir() else store.remove_file(path)
            report.removed.append(str(path))
    return report


@dataclass
class PruneReport:
    refs: list[str] = field(default_factory=list)
    trees: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    bytes: int = 0


def prune(store: Store, locked_commits: set[str], dry_run: bool = False, grace_s: float = 3600.0) -> PruneReport:
    report = PruneReport()
    young = time.time() - grace_s
    live_trees = set()
    for repo, repo_dir in _repos(store):
        roots = set(_pins(store, repo_dir).values()) | locked_commits
        for commit_dir in _children(repo_dir / "commits"):
            if commit_dir.name in roots or commit_dir.stat().st_mtime > young:
                live_trees.update(p.read_text().strip() for p in _children(commit_dir / "variants"))
            else:
                report.refs.append(str(commit_dir))
                if not dry_run:
                    store.remove_tree(commit_dir)  # the refs go first
    live_objects = set()
    for tree in _children(store.root / "trees"):
        if tree.name in live_trees or tree.stat().st_mtime > young:
            live_objects.update((_manifest(store, tree.name) or {}).values())
            continue
        report.trees.append(str(tree))
        report.bytes += _size(tree)
        if not dry_run:
            store.remove_tree(tree)
            store.remove_file(store.manifest_path(tree.name))
            store.remove_tree(store.verifications_path(tree.name))
    for obj in _objects(store):
        if obj.parent.name + obj.name in live_objects or obj.stat().st_mtime > young:
            continue
        report.objects.append(str(obj))
        report.bytes += obj.stat().st_size
        if not dry_run:
            store.remove_file(obj)
    return report


def _repos(store: Store):
    for type_dir in _children(store.root / "refs"):
        for org in _children(type_dir):
            for name in _children(org):
                yield RepoAddress(f"{org.name}/{name.name}", type_dir.name), name


def _pins(store: Store, repo_dir: Path) -> dict[str, str]:
    """{revision as asked ("(unpinned)" for none): commit}, from the repo's revision refs."""
    pins = {}
    for ref in _children(repo_dir / "revisions"):
        found = store.read_json(str(ref.relative_to(store.root)))
        if isinstance(found, dict) and isinstance(found.get("commit"), str):
            asked = "(unpinned)" if ref.name == "default.json" else found.get("revision") or ref.stem
            pins[asked] = found["commit"]
    return pins


def _manifest(store: Store, digest: str) -> dict | None:
    try:
        found = json.loads(store.manifest_path(digest).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _objects(store: Store):
    for prefix in _children(store.root / "objects"):
        yield from (p for p in _children(prefix) if p.is_file())


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".tmp-"))
    except OSError:
        return []


def _size(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")
