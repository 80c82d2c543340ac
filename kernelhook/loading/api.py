"""The data path end to end: name -> commit -> variant -> files -> module.

``get_kernel`` and the import hook both come through ``load_kernel``, so the
same repo, commit and variant give the very same module object either way.
The cache is asked first (recall.py); resolve.py and fetch.py, which may ask
the Hub, are imported only when it cannot answer.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

from ..cache.store import Store
from ..platform import SystemInfo, current_system, system_for_backend
from ..project import lockfile_in_effect
from ..repo import Resolved, find_package
from .loader import KernelOrigin, load
from .names import KernelName, parse_repo_id
from .recall import PlacedVariant, commit_pin, placed_variant

logger = logging.getLogger("kernelhook")


def get_kernel(repo_id: str, revision: str | None = None, version: int | None = None, *, backend: str | None = None,
               user_agent: str | dict | None = None, trust_remote_code: bool | list[str] = False,
               check_arch: bool = True) -> ModuleType:
    """Load a Hub kernel by its exact repo id; works for every name and revision.

    Args:
        repo_id: ``"org/repo"`` as the Hub spells it.
        revision: a branch, tag, ``vN`` or commit sha (7 to 40 hex digits).
        version: major version N, meaning the branch ``vN`` (give revision or version, not both).
            Without either: the lockfile's pin when one applies, else the highest ``vN`` branch, else ``main``.
        backend: load the build for this backend (None: this machine's own; ``"cpu"``: a CPU build).
        user_agent, trust_remote_code, check_arch: accepted as the ``kernels`` package takes them, and
            without effect: an explicit load is the caller's own choice of code (see trust.py).

    Returns:
        The kernel module: the very object ``import kernels_hub.<org>.<repo>@<rev>`` gives for
        the same commit and variant.

    Raises:
        InvalidKernelName, InvalidRevision: the arguments are malformed.
        KernelNotFoundError, RevisionNotFoundError: the Hub has no such repo or revision.
        HubUnreachableError: the Hub cannot be asked and nothing usable is cached.
        NoBuildError, NoCompatibleVariantError: no build of this commit fits this machine.
        DownloadError, CacheError: a file could not be fetched, verified or stored.
        LockMismatchError, LockfileError: the lockfile in effect refuses the files, or cannot be read.
        KernelLoadError: executing the kernel failed.
        InvalidBackend, SettingError: ``backend`` or LOCAL_KERNELS is malformed.
    All are ``KernelImportError``s, hence ``ImportError``s.
    """
    return load_kernel(parse_repo_id(repo_id, revision, version), system=system_for_backend(backend))


def load_kernel(name: KernelName, *, system: SystemInfo | None = None, store: Store | None = None) -> ModuleType:
    """The data path for a parsed name: resolve, choose and place the variant, check it against
    the lockfile, execute it. Raises what ``get_kernel`` raises."""
    store = store if store is not None else Store()
    system = system if system is not None else current_system()
    if os.environ.get("LOCAL_KERNELS"):  # the folder it names stands in for the repo
        from .local import load_override  # here, not at the top: only LOCAL_KERNELS needs it

        local = load_override(name, system, store)
        if local is not None:
            return local
    resolved = commit_pin(name, store)
    placed = placed_variant(resolved, store, system) if resolved is not None else None
    if placed is None:
        resolved, placed = _resolve_and_place(name, resolved, store, system)
    _check_against_lockfile(resolved, placed, store)
    where = f"{resolved.repo}@{resolved.commit[:12]} [{placed.variant}] at {placed.tree}"
    package = find_package(placed.tree, resolved.repo.repo_id.split("/")[1], where)
    origin = KernelOrigin(
        resolved.repo.repo_id, resolved.repo.repo_type, resolved.commit, placed.variant,
        placed.tree, package, module_name="", how=resolved.how,
    )
    module = load(origin, placed.digest)
    logger.debug("%s -> %s (%s)", name.typed, module.__name__, origin)
    return module


def _resolve_and_place(name: KernelName, resolved: Resolved | None, store: Store,
                        system: SystemInfo) -> tuple[Resolved, PlacedVariant]:
    """Steps 2 to 4 where the cache alone cannot answer; they may ask the Hub."""
    from .fetch import place_variant  # here, not at the top: a warm commit pin never needs them (recall.py)
    from .resolve import resolve

    resolved = resolved if resolved is not None else resolve(name, store)
    return resolved, place_variant(resolved, store, system)


def _check_against_lockfile(resolved: Resolved, placed: PlacedVariant, store: Store) -> None:
    """A locked commit's files are checked against the lock before any of them executes."""
    path = lockfile_in_effect()
    if path is None:
        return
    from ..cache import lockfile  # here, not at the top: without a lockfile a load never needs it

    locked = lockfile.lock_at(path).find([resolved.repo.repo_id])
    if locked is not None and locked.commit == resolved.commit:
        lockfile.check_tree(locked, placed.variant, placed.tree, store)
