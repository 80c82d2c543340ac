"""Step 2 of the data path: a KernelName -> a Hub repo and a commit.

Requests made (each at most once per resolve):
  * full sha pin, repo known from an earlier import:   none
  * short sha pin matching one commit already known:   none
  * unknown short sha, or a pull request (refs/pr/N): one (the revision endpoint)
  * branch, tag or vN:                                 one (the refs listing)
  * unpinned:                                          one (the refs listing): highest vN, else main
A name never seen before first finds its repo: each spelling (as written, then
underscores as hyphens) in each repo type (kernel, then model) until one
exists; that request doubles as the resolve, and the mapping is remembered.
Any answer that says "not here" moves on to the next candidate; only a
transport failure or server error (or a refused token) stops the search.

When the Hub cannot be asked (HF_HUB_OFFLINE, no connection, server errors, a
token it refuses), a branch, tag, pull request or unpinned name falls back to
the commit it last resolved to, with a warning. A name this machine never
imported (its cache came from ``kernelhook download`` here or elsewhere, which
records revisions, not names) is then looked for in the cache under each
spelling, in discovery's order; the first that the cache can answer wins. A
lockfile in effect pins unpinned names, with no request, and leaves refs for
``kernelhook cache prune``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from .. import hub
from ..cache.store import Store
from ..errors import HubUnreachableError, InvalidTokenError, KernelNotFoundError, RevisionNotFoundError
from ..project import lockfile_in_effect
from ..repo import RepoAddress, Resolved
from . import recall
from .names import KernelName, is_full_sha, is_pull_request, is_short_sha

if TYPE_CHECKING:  # imported where used: a load without a lockfile never needs it
    from ..cache import lockfile

logger = logging.getLogger("kernelhook")

_VERSION_BRANCH = r"v(\d+)"  # compiled on first use (re keeps it): only branch and unpinned resolves need it


def lockfile_pin(name: KernelName, store: Store) -> Resolved | None:
    """The commit the lockfile in effect pins for this name, if any (see ``locked_resolution``)."""
    path = lockfile_in_effect()
    if path is None:
        return None
    from ..cache import lockfile  # here, not at the top: without a lockfile a load never needs it

    lock = lockfile.lock_at(path)
    locked = lock.find(name.repo_id_candidates())
    if locked is None:
        return None
    return locked_resolution(lock, locked, store, f"lockfile {lock.path}")


def locked_resolution(lock: lockfile.Lock, locked: lockfile.LockedKernel, store: Store, how: str) -> Resolved:
    """A lockfile's pin as a resolution, with no request.

    It leaves the revision refs a load of the same pin would: the commit's own (a root that
    ``kernelhook cache prune`` keeps wherever it runs) and, unless the cache has one already, the
    locked revision's, so that ``import kernels_hub.<org>.<repo>@<revision>`` also works offline.

    Returns:
        The locked repo and commit, resolved ``how``.
    """
    repo = RepoAddress(locked.repo_id, locked.repo_type)
    if store.recall_revision(repo, locked.commit) is None:
        store.remember_revision(repo, locked.commit, locked.commit, locked.commit)
    if store.recall_revision(repo, locked.revision) is None:  # dated when the lock was written, as it resolved then
        store.remember_revision(repo, locked.revision, locked.revision, locked.commit, _written_at(lock.path))
    return Resolved(repo, locked.commit, how)


def _written_at(path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def resolve(name: KernelName, store: Store) -> Resolved:
    """The repo and commit a name means now.

    Raises:
        KernelNotFoundError: no spelling of the name is a repo on the Hub.
        RevisionNotFoundError: the repo has no such revision.
        HubUnreachableError: the Hub cannot be asked and this name was never resolved here.
        LockfileError: the lockfile in effect cannot be read.
    """
    if name.revision is None:
        pinned = lockfile_pin(name, store)
        if pinned is not None:
            return pinned
    movable = name.revision is None or not (is_full_sha(name.revision) or is_short_sha(name.revision))
    if not movable:
        return _resolve_here(name, store)
    from . import distributed  # here, not at the top: a commit pin never needs it

    job = distributed.job_store()
    if job is None:
        return _resolve_here(name, store)
    # Under torchrun, one rank resolves a movable name for the whole job; the rest load its commit.
    answer = distributed.shared(job, f"{name.key}@{name.revision or ''}", lambda: _resolve_here(name, store)._asdict())
    resolved = Resolved(RepoAddress(*answer["repo"]), answer["commit"], answer["how"])
    store.remember_name(name.key, resolved.repo)
    store.remember_revision(resolved.repo, name.revision, name.revision or resolved.how, resolved.commit)
    return resolved


def _resolve_here(name: KernelName, store: Store) -> Resolved:
    known = store.recall_name(name.key) or _cached_spelling(name, store)
    if known is not None:
        local = recall.commit_pin(name, store, known)  # commit pins need no request once the repo is known
        if local is not None:
            return local
        try:
            return _resolve_online(name, known, store)
        except hub.RepoMissing:
            logger.info("%s: %s is gone from the Hub; looking the name up again", name.typed, known)
        except hub.HubError as exc:  # unreachable, offline, server or HTTP errors: the last answer may do
            return _resolve_from_cache(name, known, store, exc)
    return _discover(name, store)


def _cached_spelling(name: KernelName, store: Store) -> RepoAddress | None:
    """A commit pin needs no lookup when the cache holds that commit under one of the name's spellings
    (say it was first loaded as ``get_kernel("kernels-ext-npu/RMSNorm", ...)``)."""
    revision = name.revision
    if revision is None or not (is_full_sha(revision) or is_short_sha(revision)):
        return None
    for repo in _addresses(name):
        if any(commit.startswith(revision) for commit in store.known_commits(repo)):
            return repo
    return None


def _resolve_online(name: KernelName, repo: RepoAddress, store: Store) -> Resolved:
    if name.revision is None:
        return _resolve_unpinned(name, repo, store)
    if is_full_sha(name.revision) or is_short_sha(name.revision) or is_pull_request(name.revision):
        # The Hub resolves (short) shas and pull requests on its revision endpoint. For a pull request
        # the refs listing would do only when asked with include_prs, and then it carries every pull
        # request the repo ever had; the revision endpoint answers for this one ref alone.
        try:
            commit = hub.resolve_revision(repo, name.revision)
        except hub.RevisionMissing as exc:
            raise _revision_not_found(name, repo) from exc
    else:  # branches and tags: the refs listing is the lighter answer, and names the alternatives
        refs = hub.list_refs(repo)
        commit = refs.branches.get(name.revision) or refs.tags.get(name.revision)
        if commit is None:
            raise _revision_not_found(name, repo, refs)
        _warn_if_newer_version(name, repo, refs)
    store.remember_revision(repo, name.revision, name.revision, commit)
    how = "commit pin" if is_full_sha(name.revision) else f"revision {name.revision}"
    logger.info("%s: %s %s resolved to commit %s", name.typed, repo, how, commit)
    return Resolved(repo, commit, how)


def _resolve_unpinned(name: KernelName, repo: RepoAddress, store: Store) -> Resolved:
    refs = hub.list_refs(repo)
    versions = {int(m.group(1)): b for b in refs.branches if (m := re.fullmatch(_VERSION_BRANCH, b))}
    branch = versions[max(versions)] if versions else "main"
    if branch not in refs.branches:
        raise RevisionNotFoundError(
            f"{name.typed}: {repo} has neither a vN branch nor main, so there is nothing to load unpinned "
            f"(branches: {_names(refs.branches)}; tags: {_names(refs.tags)}). Pin a revision: "
            f"kernelhook.get_kernel({repo.repo_id!r}, revision=...)."
        )
    commit = refs.branches[branch]
    store.remember_revision(repo, None, branch, commit)
    logger.info("%s: unpinned, using %s branch %s at commit %s", name.typed, repo, branch, commit)
    return Resolved(repo, commit, f"branch {branch}")


_warned_lock = threading.Lock()
_warned: set[str] = set()  # repos already warned about in this process


def _warn_if_newer_version(name: KernelName, repo: RepoAddress, refs: hub.Refs) -> None:
    """Warn, once per repo and process, when a pinned major version (branch ``vN``) is older than the
    newest on the Hub, as the ``kernels`` package does. It reads the refs listing the resolve fetched
    anyway, so it never costs a request (a cached or locked pin, which sends none, never warns)."""
    pinned = re.fullmatch(_VERSION_BRANCH, name.revision or "")
    if pinned is None or name.revision not in refs.branches:
        return
    newest = max(int(m.group(1)) for b in refs.branches if (m := re.fullmatch(_VERSION_BRANCH, b)))
    with _warned_lock:
        if newest <= int(pinned.group(1)) or repo.repo_id in _warned:
            return
        _warned.add(repo.repo_id)
    logger.warning("%s: you are using version %s of %s, version %d is available (branch v%d); pin version=%d to "
                   "upgrade once its API suits you", name.typed, pinned.group(1), repo.repo_id, newest, newest, newest)


def _resolve_from_cache(name: KernelName, repo: RepoAddress, store: Store, cause: hub.HubError) -> Resolved:
    last = store.recall_revision(repo, name.revision)
    if last is None:
        asked = "unpinned" if name.revision is None else f"revision {name.revision!r}"
        if isinstance(cause, hub.TokenRejected):
            raise _token_rejected(name, cause, f"resolve {asked} of {repo}, which was never resolved here") from cause
        raise HubUnreachableError(
            f"{name.typed}: could not ask the Hub at {hub.endpoint()} to resolve {asked} of {repo} "
            f"({hub.explain(cause)}), and it was never resolved on this machine. Fix: import it once online, pin a "
            f"commit that is cached, or check HF_ENDPOINT / HF_HUB_OFFLINE."
        ) from cause
    age = _age(last.get("resolved_at"))
    why = str(cause) if isinstance(cause, hub.TokenRejected) else f"the Hub cannot be asked ({cause})"
    logger.warning(
        "%s: %s; using commit %s, which %s resolved to %s ago",
        name.typed, why, last["commit"], last.get("revision") or "the unpinned name", age,
    )
    return Resolved(repo, last["commit"], f"cached {last.get('revision')} (offline)")


def _addresses(name: KernelName) -> list[RepoAddress]:
    """Every repo a name may mean, in the order discovery tries them."""
    return [RepoAddress(repo_id, repo_type) for repo_id in name.repo_id_candidates() for repo_type in hub.REPO_TYPES]


def _discover(name: KernelName, store: Store) -> Resolved:
    """Try every spelling in every repo type; the first that exists wins and is remembered.
    When the Hub cannot be asked, the first that the cache can answer for wins instead.

    Every answer that is not the repo says "not here" for that candidate only: RepoNotFound, the
    401 an anonymous client gets for an unknown repo, a mirror's bare 404 or EntryNotFound for the
    repo's refs, or any other refusal (a mirror without kernel repos may answer 400 or 403 for them).
    A transport failure or server error stops the search, since the name may be right and the Hub
    down; so does a refused token, which the Hub would refuse for every candidate.
    """
    tried, gone = [], []
    for repo in _addresses(name):
        try:
            resolved = _resolve_online(name, repo, store)
        except (hub.TokenRejected, hub.HubUnavailable) as exc:
            return _discover_in_cache(name, store, exc, gone)
        except hub.HubError as exc:
            tried.append(f"{_tried(repo)}: {exc.answer}")
            gone.append(repo)
            logger.debug("%s: %s is not on the Hub (%s)", name.typed, repo, hub.explain(exc))
            continue
        store.remember_name(name.key, repo)
        return resolved
    raise KernelNotFoundError(
        f"No Hub repo answers to {name.typed}: tried {'; '.join(tried)} at {hub.endpoint()}. "
        f"Fix: check the spelling on the Hub; for a private or gated repo set HF_TOKEN; for names with "
        f"dots use kernelhook.get_kernel('org/repo')."
    )


def _discover_in_cache(name: KernelName, store: Store, cause: hub.HubError, gone: list[RepoAddress]) -> Resolved:
    """The first spelling (in discovery's order, less those the Hub just said do not exist) whose
    revision the cache has resolved before. The name is not remembered: online, discovery may
    find an earlier spelling that this cache never held."""
    for repo in _addresses(name):
        if repo not in gone and store.recall_revision(repo, name.revision) is not None:
            logger.info("%s: the Hub cannot be asked; the cache holds it as %s", name.typed, repo)
            return _resolve_from_cache(name, repo, store, cause)
    if isinstance(cause, hub.TokenRejected):
        raise _token_rejected(name, cause, "find which repo the name means") from cause
    wanted = "unpinned" if name.revision is None else f"revision {name.revision!r}"
    raise HubUnreachableError(
        f"{name.typed}: could not reach the Hub at {hub.endpoint()} ({hub.explain(cause)}) to find which repo the "
        f"name means, and the cache at {store.top} has never resolved it ({wanted}) as any of "
        f"{', '.join(_tried(r) for r in _addresses(name))}. Fix: import it once online or `kernelhook download` it "
        f"(then it also works offline), or check HF_ENDPOINT / HF_HUB_OFFLINE."
    ) from cause


def _token_rejected(name: KernelName, cause: hub.TokenRejected, doing: str) -> InvalidTokenError:
    return InvalidTokenError(f"{name.typed}: could not {doing} at {hub.endpoint()}: {cause}")


def _revision_not_found(name: KernelName, repo: RepoAddress, refs: hub.Refs | None = None) -> RevisionNotFoundError:
    try:
        refs = refs or hub.list_refs(repo)  # on the error path only: worth a request for a useful message
        available = f" (branches: {_names(refs.branches)}; tags: {_names(refs.tags)})"
    except hub.HubError:
        available = ""
    return RevisionNotFoundError(
        f"{name.typed}: {repo} has no revision {name.revision!r}{available}. "
        f"Fix: pin an existing branch, tag, vN or commit sha."
    )


def _tried(repo: RepoAddress) -> str:
    return f"{repo.repo_id} ({repo.repo_type} repo)"


def _names(refs: dict) -> str:
    return ", ".join(sorted(refs)) or "none"


def _age(resolved_at) -> str:
    if not isinstance(resolved_at, (int, float)):
        return "an unknown time"
    seconds = max(0, int(time.time() - resolved_at))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
