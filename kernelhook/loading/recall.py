"""What the cache alone answers for steps 2 to 4 of the data path: no request, no ranking.

A full commit pin of a name the cache knows resolves to that commit, and a commit whose
variant was chosen for this system before has that choice and its tree remembered. When
both answers are cached, a load needs nothing else: ``api`` asks here first and imports
resolve.py and fetch.py (and through them the Hub client) only when the cache cannot
answer, so a warm commit-pinned import stays cheap. resolve.py and fetch.py ask here too,
so there is one rule for each answer.
"""

from __future__ import annotations

from pathlib import Path

from ..cache.store import Store
from ..platform import SystemInfo, choice_key
from ..repo import Resolved
from .names import KernelName, is_full_sha


class PlacedVariant:
    """A variant whose files are all in the store: the ``resolved`` repo and commit, the ``variant``'s
    name, its tree ``digest`` and the ``tree`` folder (a Path)."""

    __slots__ = ("resolved", "variant", "digest", "tree")

    def __init__(self, resolved: Resolved, variant: str, digest: str, tree: Path):
        self.resolved, self.variant, self.digest, self.tree = resolved, variant, digest, tree


def commit_pin(name: KernelName, store: Store) -> Resolved | None:
    """A full-sha pin of a name whose repo the cache remembers, resolved with no request; else None.

    Like every pin, it leaves a ref for the commit (a root ``kernelhook cache prune`` keeps) when
    there is none yet.

    Raises:
        CacheError: permissions keep this user from reading the cache.
    """
    if name.revision is None or not is_full_sha(name.revision):
        return None
    repo = store.recall_name(name.key)
    if repo is None:
        return None
    if store.recall_revision(repo, name.revision) is None:
        store.remember_revision(repo, name.revision, name.revision, name.revision)
    return Resolved(repo, name.revision, "commit pin")


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
    repo, commit = placed.resolved.repo, placed.resolved.commit
    key = choice_key(system)
    if store.chosen_variant(repo, commit, key) != placed.variant:
        store.remember_chosen_variant(repo, commit, key, placed.variant)
