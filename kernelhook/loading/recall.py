"""What the cache alone answers for steps 2 to 4 of the data path: no request, no ranking.

A commit pin of a name the cache knows resolves to that commit (a short one when it
matches exactly one commit the cache knows), and a commit whose variant was chosen for this system before has that choice and its tree remembered. When
both answers are cached, a load needs nothing else: ``api`` asks here first and imports
resolve.py and fetch.py (and through them the Hub client) only when the cache cannot
answer, so a warm commit-pinned import stays cheap. resolve.py and fetch.py ask here too,
so there is one rule for each answer.
"""

from __future__ import annotations

from pathlib import Path

from ..cache.store import Store
from ..platform import SystemInfo, choice_key
from ..repo import RepoAddress, Resolved
from .names import KernelName, is_full_sha, is_short_sha


class PlacedVariant:
    """A variant whose files are all in the store: the ``resolved`` repo and commit, the ``variant``'s
    name, its tree ``digest`` and the ``tree`` folder (a Path)."""

    __slots__ = ("resolved", "variant", "digest", "tree")

    def __init__(self, resolved: Resolved, variant: str, digest: str, tree: Path):
        self.resolved, self.variant, self.digest, self.tree = resolved, variant, digest, tree


def commit_pin(name: KernelName, store: Store, repo: RepoAddress | None = None) -> Resolved | None:
    """A commit pin resolved with no request: a full sha, or a short one that matches exactly one commit
    the cache knows of the repo; else None (no pin, an unknown repo, an unknown or ambiguous short sha).

    Like every pin, it leaves a ref for the revision (a root ``kernelhook cache prune`` keeps) when
    there is none yet.

    Args:
        repo: the Hub repo the name means (default: the one the cache remembers for the name as typed).

    Raises:
        CacheError: permissions keep this user from reading the cache.
    """
    revision = name.revision
    if revision is None or not (is_full_sha(revision) or is_short_sha(revision)):
        return None
    repo = repo if repo is not None else store.recall_name(name.key)
    if repo is None:
        return None
    if is_full_sha(revision):
        resolved = Resolved(repo, revision, "commit pin")
    else:
        matches = sorted(c for c in store.known_commits(repo) if c.startswith(revision))
        if len(matches) != 1:
            return None
        resolved = Resolved(repo, matches[0], f"commit pin {revision}")
    if store.recall_revision(repo, revision) is None:
        store.remember_revision(repo, revision, revision, resolved.commit)
    return resolved


def placed_variant(resolved: Resolved, store: Store, system: SystemInfo) -> PlacedVariant | None:
    """The variant chosen for ``system`` at this commit before (``remember_choice``), if its tree is
    still in the store; else None (choose, and fetch what is missing).

    Raises:
        CacheError: permissions keep this user from reading the cache.
    """
    repo, commit = resolved.repo, resolved.commit
    variant = store.chosen_variant(repo, commit, choice_key(system))
    digest = store.variant_tree(repo, commit, variant) if variant is not None else None
    return None if digest is None else PlacedVariant(resolved, variant, digest, store.tree_path(digest))


def remember_choice(placed: PlacedVariant, store: Store, system: SystemInfo) -> None:
    """Keep the variant chosen for ``system`` at this commit (a commit's listing never changes, so neither
    does the choice, under the same rules: ``platform.CHOICE_RULES`` is part of the key)."""
    store.remember_chosen_variant(placed.resolved.repo, placed.resolved.commit, choice_key(system), placed.variant)
