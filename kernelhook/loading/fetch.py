"""Steps 3 and 4 of the data path: choose the variant, then make its files present.

Only the chosen variant's source and data files are downloaded (bytecode never:
kernels run from source), one request per file, each
verified against the Hub's own hash (git blob sha1, or the LFS sha256) before
it becomes a cache object. Nothing reaches the store unverified, so a warm
load trusts the store and reads no file twice.
"""

from __future__ import annotations

import logging

from .. import hub, settings
from ..cache.store import Store, cache_error, check_relative_path
from ..errors import (
    DownloadError,
    GatedKernelError,
    HubUnreachableError,
    InvalidTokenError,
    KernelImportError,
    NoBuildError,
    NoCompatibleVariantError,
    RevisionNotFoundError,
)
from ..platform import SystemInfo, candidate_patterns, choose_variant, parse_variant, rank_variants
from ..repo import ListingEntry, Resolved, is_bytecode, split_build_path
from . import recall
from .recall import PlacedVariant

logger = logging.getLogger("kernelhook")

# A hostile or broken listing could name a file of any size: refuse past this before downloading it
# (the default; KERNELHOOK_MAX_FILE_BYTES overrides it, read before each download).
MAX_FILE_BYTES = 64 * 1024**3


def place_variant(resolved: Resolved, store: Store, system: SystemInfo) -> PlacedVariant:
    """The variant of a commit that fits ``system``, its files in the store (fetched if need be).

    A commit's listing never changes, so the choice made for a system is remembered beside it
    (recall.py): a warm load reads that one small file, then the variant's tree ref, and ranks nothing.

    Raises:
        NoBuildError, NoCompatibleVariantError, HubUnreachableError, DownloadError, CacheError...: see get_kernel.
    """
    placed = recall.placed_variant(resolved, store, system)
    if placed is not None:
        return placed
    listing = _listing(resolved, store)
    variant = choose_variant(_variant_names(listing), system)
    if variant is None:
        raise _no_variant(resolved, listing, system)
    placed = _place(resolved, store, listing, variant)
    recall.remember_choice(placed, store, system)
    return placed


def place_all_variants(resolved: Resolved, store: Store) -> list[PlacedVariant]:
    """Every variant of a commit (to fill a cache for other machines); folders that are not variants are skipped."""
    listing = _listing(resolved, store)
    return [_place(resolved, store, listing, v) for v in _variant_names(listing) if _is_variant(v)]


def rank_for(resolved: Resolved, store: Store, system: SystemInfo):
    """Every variant at a commit with this system's verdict on it (kernelhook info)."""
    return rank_variants(_variant_names(_listing(resolved, store)), system)


def listing_of(resolved: Resolved, store: Store) -> list[ListingEntry]:
    return _listing(resolved, store)


def _place(resolved: Resolved, store: Store, listing, variant: str) -> PlacedVariant:
    repo, commit = resolved.repo, resolved.commit
    digest = store.variant_tree(repo, commit, variant)
    if digest is None:
        files = _variant_files(listing, variant)
        objects = {relative: _ensure_object(resolved, store, entry) for relative, entry in files.items()}
        digest, _ = store.make_tree(objects)
        store.remember_variant_tree(repo, commit, variant, digest)
        logger.info("%s@%s: fetched variant %s (%d files)", repo.repo_id, commit[:12], variant, len(files))
    return PlacedVariant(resolved, variant, digest, store.tree_path(digest))


def _is_variant(name: str) -> bool:
    try:
        parse_variant(name)
    except ValueError:
        return False
    return True


def _listing(resolved: Resolved, store: Store) -> list[ListingEntry]:
    """The build/ listing at a commit: immutable, so fetched once and kept."""
    cached = store.load_listing(resolved.repo, resolved.commit)
    if cached is None:
        with store.lock(f"listing-{resolved.commit}"):  # ranks on one node list once; the rest read it
            cached = store.load_listing(resolved.repo, resolved.commit)
            if cached is None:
                return _fetch_listing(resolved, store)
    return [ListingEntry.from_json(entry) for entry in cached]


def _fetch_listing(resolved: Resolved, store: Store) -> list[ListingEntry]:
    try:
        listing = hub.list_build(resolved.repo, resolved.commit)
    except hub.RevisionMissing as exc:  # a commit pin the repo does not have
        raise RevisionNotFoundError(
            f"{resolved.repo} has no commit {resolved.commit}. Fix: check the sha, or pin a branch, tag or vN."
        ) from exc
    except hub.TokenRejected as exc:
        raise InvalidTokenError(f"{resolved.repo} at commit {resolved.commit}: could not list build/: {exc}") from exc
    except hub.EntryMissing as exc:
        raise NoBuildError(
            f"{resolved.repo} at commit {resolved.commit} has no build/ folder, so it holds no kernel builds. "
            f"Fix: check that this is a kernel repo and the revision is right; authors publish under build/<variant>/."
        ) from exc
    except hub.HubError as exc:
        raise HubUnreachableError(
            f"{resolved.repo} at commit {resolved.commit}: could not list build/ ({hub.explain(exc)}) and it is not cached. "
            f"Fix: retry online, or check HF_ENDPOINT / HF_HUB_OFFLINE."
        ) from exc
    if not listing:
        raise NoBuildError(f"{resolved.repo} at commit {resolved.commit}: build/ holds no files.")
    store.save_listing(resolved.repo, resolved.commit, [entry.to_json() for entry in listing])
    return listing


def _variant_names(listing: list[ListingEntry]) -> list[str]:
    return sorted({split[0] for entry in listing
                   if not is_bytecode(entry.path) and (split := split_build_path(entry.path))})


def _variant_files(listing: list[ListingEntry], variant: str) -> dict[str, ListingEntry]:
    """{path below the variant folder: entry}, each path refused unless it stays inside the folder.

    Bytecode is left out: it is never downloaded, so it can never be executed instead of the source.
    """
    files = {}
    for entry in listing:
        split = split_build_path(entry.path)
        if split is None or split[0] != variant:
            continue
        if is_bytecode(entry.path):
            logger.debug("%s: bytecode is never fetched; kernels run from source", entry.path)
            continue
        files[check_relative_path(split[1])] = entry
    return files


def _ensure_object(resolved: Resolved, store: Store, entry: ListingEntry) -> str:
    """The sha256 of an entry's content, downloading and verifying it if the store lacks it."""
    known = _known_sha256(store, entry)
    if known is not None:
        return known
    with store.lock(entry.lfs_sha256 or entry.git_oid):
        known = _known_sha256(store, entry)  # another process may have fetched it meanwhile
        if known is not None:
            return known
        return _download_verified(resolved, store, entry)


def _known_sha256(store: Store, entry: ListingEntry) -> str | None:
    sha256 = entry.lfs_sha256 or store.sha256_of_git_blob(entry.git_oid)
    return sha256 if sha256 and store.has_object(sha256) else None


def _download_verified(resolved: Resolved, store: Store, entry: ListingEntry) -> str:
    repo, commit = resolved.repo, resolved.commit
    limit = settings.byte_count("KERNELHOOK_MAX_FILE_BYTES", MAX_FILE_BYTES)
    if entry.size > limit:
        raise DownloadError(
            f"{repo}@{commit[:12]}: {entry.path} is listed at {entry.size} bytes, over the limit of {limit}; "
            f"refused without downloading. Fix: if this kernel is trusted, raise KERNELHOOK_MAX_FILE_BYTES."
        )
    from ..files import hash_stream  # here, not at the top: a warm load downloads nothing

    for attempt in (1, 2):  # bytes that do not match may be a passing fault (a proxy, a cut): one more try
        handle, temp = store.temp_file()
        try:
            with handle:
                hub.download(repo, commit, entry.path, handle, entry.size)
                handle.seek(0)
                size, sha256, git_oid = hash_stream(handle)
            problem = _mismatch(entry, size, sha256, git_oid)
        except hub.HubError as exc:
            temp.unlink(missing_ok=True)
            raise _download_failed(resolved, entry, exc) from exc
        except OSError as exc:  # this machine's disk (full, read-only, no permission), not the Hub
            temp.unlink(missing_ok=True)
            raise cache_error("write", temp, exc) from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if problem is None:
            break
        temp.unlink(missing_ok=True)
        logger.warning("%s@%s: %s does not match the Hub's listing (%s) on try %d", repo.repo_id, commit[:12],
                       entry.path, problem, attempt)
    else:
        raise DownloadError(
            f"{repo}@{commit[:12]}: {entry.path} does not match the Hub's listing ({problem}); it was not "
            f"cached. Fix: retry; if it persists, the Hub or a proxy serves wrong bytes."
        )
    store.add_object(temp, sha256)
    if entry.lfs_sha256 is None:
        store.remember_git_blob(entry.git_oid, sha256)
    return sha256


def _download_failed(resolved: Resolved, entry: ListingEntry, exc: hub.HubError) -> KernelImportError:
    repo, commit = resolved.repo, resolved.commit
    if isinstance(exc, hub.TokenRejected):
        return InvalidTokenError(f"{repo}@{commit[:12]}: could not download {entry.path}: {exc}")
    if isinstance(exc, hub.RepoGated):
        page = f"{hub.endpoint()}/{'kernels/' if repo.repo_type == 'kernel' else ''}{repo.repo_id}"
        return GatedKernelError(
            f"{repo}@{commit[:12]}: {repo.repo_id} is a gated repo: it lists, but its files are served only to "
            f"accounts granted access, and the Hub refused {entry.path} ({exc.answer}). Fix: visit {page} while logged "
            f"in, accept the conditions to request access, then set HF_TOKEN to a token of that account "
            f"(or run `hf auth login`)."
        )
    return DownloadError(f"{repo}@{commit[:12]}: could not download {entry.path} from {exc.url}: {exc}")


def _mismatch(entry: ListingEntry, size: int, sha256: str, git_oid: str) -> str | None:
    if size != entry.size:
        return f"expected {entry.size} bytes, got {size}"
    if entry.lfs_sha256 is not None and sha256 != entry.lfs_sha256:
        return f"expected sha256 {entry.lfs_sha256}, got {sha256}"
    if entry.lfs_sha256 is None and git_oid != entry.git_oid:
        return f"expected git blob {entry.git_oid}, got {git_oid}"
    return None


def _no_variant(resolved: Resolved, listing, system: SystemInfo) -> NoCompatibleVariantError:
    decisions = rank_variants(_variant_names(listing), system)
    lines = "\n".join(f"  {d.name}: {d.reason}" for d in decisions) or "  (build/ holds no variant folders)"
    return NoCompatibleVariantError(
        f"{resolved.repo} at commit {resolved.commit} has no build variant for this system "
        f"({system}; it would load {', '.join(candidate_patterns(system))}).\n"
        f"Variants in the repo:\n{lines}\n"
        f"Fix: ask the kernel's authors for a build for this system, or pin a revision that has one."
    )
