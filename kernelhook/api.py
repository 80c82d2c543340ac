"""The data path end to end: name -> commit -> variant -> files -> module.

``get_kernel`` and the import hook both come through ``load_kernel``, so the
same commit and variant give the very same module object either way.
"""

from __future__ import annotations

import logging
from types import ModuleType

from . import lockfile
from .fetch import PlacedVariant, place_variant
from .loader import KernelOrigin, find_package, load
from .names import KernelName, parse_repo_id
from .resolve import Resolved, resolve
from .store import Store
from .system import SystemInfo, current_system

logger = logging.getLogger("kernelhook")


def get_kernel(repo_id: str, revision: str | None = None, *, version: int | None = None) -> ModuleType:
    """Load a Hub kernel by its exact repo id; works for every name and revision.

    ``version=N`` means the branch ``vN``. Without either, the lockfile's pin is
    used when one applies, else the highest ``vN`` branch, else ``main``.
    """
    return load_kernel(parse_repo_id(repo_id, revision, version))


def load_kernel(name: KernelName, *, system: SystemInfo | None = None, store: Store | None = None) -> ModuleType:
    store = store if store is not None else Store()
    system = system if system is not None else current_system()
    resolved = resolve(name, store)
    placed = place_variant(resolved, store, system)
    _check_against_lockfile(resolved, placed)
    package = find_package(placed.tree, resolved.repo.repo_id.split("/")[1])
    origin = KernelOrigin(
        resolved.repo.repo_id, resolved.repo.repo_type, resolved.commit, placed.variant,
        placed.tree, package, module_name="", how=resolved.how,
    )
    module = load(origin, placed.digest)
    logger.debug("%s -> %s (%s)", name.typed, module.__name__, origin)
    return module


def _check_against_lockfile(resolved: Resolved, placed: PlacedVariant) -> None:
    """A locked commit's files are hashed against the lock before any of them executes."""
    lock = lockfile.lock_in_effect()
    locked = lock.find([resolved.repo.repo_id]) if lock is not None else None
    if locked is not None and locked.commit == resolved.commit:
        lockfile.check_tree(locked, placed.variant, placed.tree)
