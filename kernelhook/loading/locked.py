"""Locked kernels, as the ``kernels`` package loads them: ``get_locked_kernel`` and ``load_kernel``.

A lock (``kernels.lock`` in either of its formats, or ``kernelhook.lock``; cache/kernels_lock.py)
pins a repo to a commit. Both functions load that commit's variant for this machine, hash the
variant's files against the lock before anything of it executes (LockMismatchError otherwise), and
execute it as any Hub kernel is executed, so a locked load and ``get_kernel(repo, revision=<commit>)``
give the same module. ``get_locked_kernel`` downloads what is missing; ``load_kernel``, as in the
``kernels`` package, never makes a request: it loads from the cache or fails saying what is missing.
``LOCAL_KERNELS`` does not apply to either (nor does it in the ``kernels`` package): a lock is an
exact pin.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from types import ModuleType

from .. import hub
from ..cache import lockfile
from ..cache.kernels_lock import KernelPin, check_variant, find_pin
from ..cache.store import Store
from ..platform import SystemInfo, current_system, system_for_backend
from ..repo import Resolved, find_package
from .fetch import PlacedVariant, listing_of, place_variant
from .loader import KernelOrigin, load
from .names import parse_repo_id
from .resolve import resolve

logger = logging.getLogger("kernelhook")

_CACHE_ONLY = "load_kernel loads locked kernels from the cache only"


def get_locked_kernel(repo_id: str, local_files: bool = False, *, lockfile=None,
                      trust_remote_code: bool | list[str] = False, user_agent: str | dict | None = None) -> ModuleType:
    """Load the commit a lock pins ``repo_id`` to, as the ``kernels`` package's ``get_locked_kernel`` does.

    Args:
        repo_id: ``"org/repo"`` as the lock names it.
        local_files: load from the cache only, with no request (as ``load_kernel``).
        lockfile: the lock to read (kernels.lock or kernelhook.lock); default: the ``kernels.lock`` in the
            calling package's installed metadata, else the kernelhook lockfile in effect, else the
            nearest ``kernels.lock`` from the working directory upwards.
        trust_remote_code, user_agent: accepted as the ``kernels`` package takes them, without effect (a
            lock is the caller's own choice of code).

    Returns:
        The kernel module, the very object ``get_kernel(repo_id, revision=<locked commit>)`` gives.

    Raises:
        LockfileError: no lock pins ``repo_id``, or the lock cannot be read.
        LockMismatchError: a file of the locked variant does not match the lock; nothing of it was imported.
        HubUnreachableError, DownloadError: with ``local_files``, or offline, what is needed is not cached.
        And what ``get_kernel`` raises for a commit pin.
    """
    pin = find_pin(repo_id, lockfile, caller_package())
    return load_pinned(pin, local_files=local_files)


def load_kernel(repo_id: str, *, lockfile=None, backend: str | None = None) -> ModuleType:
    """Load a locked kernel from the cache, making no request, as the ``kernels`` package's ``load_kernel`` does.

    Fill the cache first (``get_locked_kernel``, ``kernelhook download``, or any load of the commit).

    Args:
        repo_id: ``"org/repo"`` as the lock names it.
        lockfile: as for ``get_locked_kernel``.
        backend: load the build for this backend (None: this machine's own; ``"cpu"``: a CPU build).

    Returns:
        The kernel module.

    Raises:
        HubUnreachableError, DownloadError: the locked commit, its listing or a file is not in the cache.
        And what ``get_locked_kernel`` raises.
    """
    pin = find_pin(repo_id, lockfile, caller_package())
    return load_pinned(pin, local_files=True, system=system_for_backend(backend))


def load_pinned(pin: KernelPin, *, local_files: bool = False, system: SystemInfo | None = None,
                store: Store | None = None) -> ModuleType:
    """Resolve, place, check and execute a locked kernel (see the module docstring).

    Returns:
        The kernel module.

    Raises:
        What ``get_locked_kernel`` raises.
    """
    store = store if store is not None else Store()
    system = system if system is not None else current_system()
    with hub.local_files_only(_CACHE_ONLY) if local_files else contextlib.nullcontext():
        resolved = resolve(parse_repo_id(pin.repo_id, pin.commit), store)._replace(how=f"locked by {pin.source}")
        placed = place_variant(resolved, store, system)
        listed = lockfile.variants_from_listing(listing_of(resolved, store)).get(placed.variant, {})
    check_variant(pin, placed.variant, placed.tree, listed)
    logger.debug("%s@%s [%s]: checked %s (%s)", pin.repo_id, pin.commit[:12], placed.variant, pin.checks, pin.source)
    return _execute(resolved, placed)


def _execute(resolved: Resolved, placed: PlacedVariant) -> ModuleType:
    where = f"{resolved.repo}@{resolved.commit[:12]} [{placed.variant}] at {placed.tree}"
    package = find_package(placed.tree, resolved.repo.repo_id.split("/")[1], where)
    origin = KernelOrigin(resolved.repo.repo_id, resolved.repo.repo_type, resolved.commit, placed.variant,
                          placed.tree, package, module_name="", how=resolved.how)
    return load(origin, placed.digest)


def caller_package() -> str | None:
    """The top-level package of the nearest calling code outside kernelhook (whose distribution's
    metadata may hold a kernels.lock), or None when there is none."""
    frame = inspect.currentframe()
    while frame is not None:
        top = str(frame.f_globals.get("__name__") or "").split(".")[0]
        if top and top != "kernelhook":
            return top
        frame = frame.f_back
    return None
