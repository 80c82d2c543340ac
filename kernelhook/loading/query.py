"""Questions about a Hub kernel that load nothing: ``has_kernel``, ``get_kernel_variants`` and the
prefetch ``install_kernel``, under the ``kernels`` package's names and semantics.

Each resolves the name as a load would (lockfile pins, refs, offline fallbacks; resolve.py) and
reads the ``build/`` listing at that commit (cached once fetched). None executes kernel code;
``has_kernel`` and ``get_kernel_variants`` download no file either.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from .. import hub
from ..cache.store import Store
from ..errors import KernelNotFoundError, NoBuildError, NoCompatibleVariantError
from ..platform import system_for_backend
from .fetch import place_variant, rank_for
from .local import override_for, variant_in
from .names import parse_repo_id
from .resolve import resolve


@dataclass(frozen=True)
class BuildVariant:
    """A build variant of a kernel repo (``build/<variant_str>/``)."""

    variant_str: str

    def __str__(self) -> str:
        return self.variant_str


@dataclass(frozen=True)
class VariantAccepted:
    """A variant this system can load; ``kind`` says what kind of match (strict, stable ABI, no-arch, universal)."""

    variant: BuildVariant
    kind: str = ""


@dataclass(frozen=True)
class VariantRejected:
    """A variant this system cannot load, and why."""

    variant: BuildVariant
    reason: str


def has_kernel(repo_id: str, revision: str | None = None, version: int | None = None, *, backend: str | None = None,
               trust_remote_code: bool | list[str] = False, check_arch: bool = True) -> bool:
    """Whether the repo has a build for this machine at that revision, without loading or downloading it.

    Args:
        repo_id, revision, version: as for ``get_kernel``; a ``LOCAL_KERNELS`` folder stands in for the repo.
        backend: ask for this backend's builds (None: this machine's own; ``"cpu"``).
        trust_remote_code, check_arch: accepted as the ``kernels`` package takes them, without effect.

    Returns:
        True when a variant fits; False when the commit has no ``build/`` or no variant that fits.

    Raises:
        KernelNotFoundError, RevisionNotFoundError, HubUnreachableError...: as ``get_kernel`` raises them
            while resolving (the ``kernels`` package raises for a missing repo too).
    """
    name = parse_repo_id(repo_id, revision, version)
    system = system_for_backend(backend)
    local = override_for(name)
    if local is not None:
        try:
            variant_in(local[1].resolve(), system)
        except (KernelNotFoundError, NoCompatibleVariantError):
            return False
        return True
    store = Store()
    try:
        return any(decision.accepted for decision in rank_for(resolve(name, store), store, system))
    except NoBuildError:
        return False


def get_kernel_variants(repo_id: str, revision: str | None = None, version: int | None = None, *,
                        backend: str | None = None) -> list[VariantAccepted | VariantRejected]:
    """Every build variant at that revision with this system's verdict, the ``kernels`` package's way.

    Returns:
        ``VariantAccepted`` entries first, the one a load would pick leading, then ``VariantRejected``
        entries with their reasons (a folder that is no variant name is rejected as such).

    Raises:
        NoBuildError: the commit has no ``build/``; else what ``get_kernel`` raises while resolving.
    """
    name = parse_repo_id(repo_id, revision, version)
    store = Store()
    decisions = rank_for(resolve(name, store), store, system_for_backend(backend))
    return [VariantAccepted(BuildVariant(d.name), d.reason) if d.accepted else VariantRejected(BuildVariant(d.name),
                                                                                               d.reason)
            for d in decisions]


def install_kernel(repo_id: str, revision: str | None = None, version: int | None = None, *,
                   backend: str | None = None, local_files_only: bool = False, user_agent: str | dict | None = None,
                   trust_remote_code: bool | list[str] = False) -> Path:
    """Download the build for this machine into the cache without loading it (prefetch).

    Args:
        repo_id, revision, version, backend: as for ``get_kernel``.
        local_files_only: make no request: succeed only when the cache holds it already.
        user_agent, trust_remote_code: accepted as the ``kernels`` package takes them, without effect.

    Returns:
        The variant folder in the cache (read-only), as the ``kernels`` package returns its variant path.

    Raises:
        What ``get_kernel`` raises before executing anything.
    """
    name = parse_repo_id(repo_id, revision, version)
    store = Store()
    why = "install_kernel(local_files_only=True) uses the cache only"
    with hub.local_files_only(why) if local_files_only else contextlib.nullcontext():
        placed = place_variant(resolve(name, store), store, system_for_backend(backend))
    return placed.tree
