"""Which commit a lock pins a kernel to, read from the ``kernels`` package's ``kernels.lock`` as well
as from ``kernelhook.lock``, and how a locked variant's files are checked before they execute.

``kernels.lock`` comes in two formats, both JSON lists:

* ``kernels lock`` of kernels 0.17 and later (from ``[tool.kernels.dependencies]``)::

      [{"dependency": {"repo-id": "org/repo", "version": 1}, "lock": {"commit": "<40 hex>"}}]

  (``"revision": "<rev>"`` in place of ``"version"`` for a revision pin). It holds the commit only,
  so a locked variant's files are hashed against the Hub's own listing of that commit (kept in the
  cache since the files were downloaded and verified against it).
* earlier releases: ``[{"repo_id": "org/repo", "sha": "<40 hex>", "variants": {"<variant>":
  {"hash": "sha256-<hex>", "hash_type": "git_lfs_concat"}}}]``. A variant's hash is the sha256 of
  its files' paths (below the variant folder, byte order) each followed by the bytes of the file's
  git blob sha1, or for an LFS file its sha256; the variant's files are hashed that way.

``kernelhook.lock`` (cache/lockfile.py) holds every file's own hash and is checked file by file.
A mismatch in any format raises LockMismatchError before anything of the variant executes.

Without a lockfile named, the lock is looked for as the ``kernels`` package looks (``kernels.lock``
in the installed metadata of the distribution the calling code belongs to), then as kernelhook
looks (the lockfile in effect), then as a ``kernels.lock`` beside the project's pyproject.toml
(the nearest one from the working directory upwards).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple

from ..errors import LockfileError, LockMismatchError
from ..files import file_digest
from ..project import nearest
from ..repo import is_bytecode
from . import lockfile

KERNELS_LOCK_NAME = "kernels.lock"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_VARIANT_HASH = re.compile(r"sha256-([0-9a-f]{64})")


class KernelPin(NamedTuple):
    """One kernel as a lock pins it."""

    repo_id: str
    commit: str
    revision: str | None  # what it was locked from ("v1", a branch), when the lock says
    source: str  # where the lock was read, for messages
    files: lockfile.LockedKernel | None = None  # kernelhook.lock: every file's hash, per variant
    variant_hashes: dict | None = None  # early kernels.lock: {variant: sha256 hex of the variant}

    @property
    def checks(self) -> str:
        """What is hashed before the variant executes, in words."""
        if self.files is not None:
            return "every file against its hash in the lock"
        if self.variant_hashes is not None:
            return "every file, against the variant's hash in the lock"
        return "every file against the Hub's listing of the locked commit"


# -- reading ------------------------------------------------------------------------------------------


def read_pins(path: Path) -> dict[str, KernelPin]:
    """Every kernel a lockfile pins, whichever format it is in (kernelhook.lock or either kernels.lock).

    Returns:
        {repo id: KernelPin}.

    Raises:
        LockfileError: the file cannot be read or is in no known format.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LockfileError(f"{path}: cannot read it ({exc.strerror or exc}). Fix: check the lockfile= path.") from exc
    return parse_pins(text, str(path), path)


def parse_pins(text: str, source: str, path: Path | None = None) -> dict[str, KernelPin]:
    """The pins in a lockfile's text; ``source`` names it in messages. Raises LockfileError like ``read_pins``."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and path is not None:  # kernelhook.lock
            return pins_of(lockfile.read_lock(path))
        if not isinstance(data, list):
            raise ValueError("neither a kernelhook.lock object nor a kernels.lock list")
        pins = [_kernels_entry(entry, source) for entry in data]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LockfileError(f"{source}: not a lockfile kernelhook reads ({exc}). Fix: regenerate it with "
                            f"`kernels lock` or `kernelhook lock`.") from exc
    return {pin.repo_id: pin for pin in pins}


def pins_of(lock: lockfile.Lock) -> dict[str, KernelPin]:
    """A kernelhook.lock's kernels as pins: {repo id: KernelPin}."""
    return {k.repo_id: KernelPin(k.repo_id, k.commit, k.revision, str(lock.path), files=k) for k in lock.kernels.values()}


def _kernels_entry(entry: dict, source: str) -> KernelPin:
    if "dependency" in entry:  # kernels 0.17 and later
        dependency, commit = entry["dependency"], entry["lock"]["commit"]
        repo_id = dependency["repo-id"]
        revision = f"v{int(dependency['version'])}" if "version" in dependency else dependency.get("revision")
        return KernelPin(repo_id, _checked_commit(commit), revision, source)
    hashes = {}
    for variant, lock in entry["variants"].items():
        match = _VARIANT_HASH.fullmatch(lock["hash"])
        if lock.get("hash_type", "git_lfs_concat") != "git_lfs_concat" or match is None:
            raise ValueError(f"{entry['repo_id']} {variant}: unknown variant hash {lock!r}")
        hashes[variant] = match.group(1)
    return KernelPin(entry["repo_id"], _checked_commit(entry["sha"]), None, source, variant_hashes=hashes)


def _checked_commit(commit) -> str:
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise ValueError(f"{commit!r} is not a commit sha")
    return commit


def find_pin(repo_id: str, lockfile_path=None, caller: str | None = None) -> KernelPin:
    """The pin of ``repo_id``: from ``lockfile_path`` when given, else from the first place that has it
    (the caller's distribution's kernels.lock, the kernelhook lockfile in effect, the nearest kernels.lock).

    Args:
        caller: the top-level package of the code that asked (its distribution's metadata is searched).

    Returns:
        The pin.

    Raises:
        LockfileError: no lock pins ``repo_id`` (the message lists where it looked), or one cannot be read.
    """
    if lockfile_path is not None:
        places = [(str(lockfile_path), lambda: read_pins(Path(lockfile_path).expanduser()))]
    else:
        places = _default_places(caller)
    looked = []
    for where, pins in places:
        found = pins()
        if found is None:
            continue
        if repo_id in found:
            return found[repo_id]
        looked.append(f"{where} (locks {', '.join(sorted(found)) or 'nothing'})")
    raise LockfileError(
        f"{repo_id} is not locked: looked in {'; '.join(looked) or 'no lockfile (none named, none found)'}. "
        f"Fix: add it to [tool.kernels.dependencies] and run `kernels lock`, or to [tool.kernelhook.kernels] and "
        f"run `kernelhook lock`; or pass lockfile= the lock that pins it."
    )


def _default_places(caller: str | None) -> list:
    def in_effect():
        lock = lockfile.lock_in_effect()
        return None if lock is None else pins_of(lock)

    def beside_project():
        path = nearest(KERNELS_LOCK_NAME)
        return None if path is None else read_pins(path)

    return [*_distribution_places(caller), ("the kernelhook lockfile in effect", in_effect),
            (f"the nearest {KERNELS_LOCK_NAME}", beside_project)]


def _distribution_places(caller: str | None) -> list:
    """(where, read) for each installed distribution of the caller's package with a kernels.lock in its metadata."""
    if not caller:
        return []
    import importlib.metadata

    places = []
    for dist_name in importlib.metadata.packages_distributions().get(caller, []):
        text = importlib.metadata.distribution(dist_name).read_text(KERNELS_LOCK_NAME)
        if text is not None:
            where = f"{KERNELS_LOCK_NAME} in the metadata of {dist_name}"
            places.append((where, lambda text=text, where=where: parse_pins(text, where)))
    return places


# -- checking -----------------------------------------------------------------------------------------


def check_variant(pin: KernelPin, variant: str, tree: Path, listed: dict) -> None:
    """Hash a locked variant's files before any of them executes.

    Args:
        pin: the lock's pin (its commit is the one ``tree`` was fetched at).
        variant: the variant folder's name.
        tree: the variant's files in the cache.
        listed: the Hub's listing of the variant at the locked commit: {path below the variant:
            {"size", "sha256" | "git_sha1"}} (``lockfile.variants_from_listing``), which says which
            files are LFS files.

    Raises:
        LockMismatchError: a file, or the variant's hash, does not match; or the lock has no hash for this variant.
    """
    if pin.files is not None:
        lockfile.check_tree(pin.files, variant, tree)
    elif pin.variant_hashes is not None:
        _check_variant_hash(pin, variant, tree, listed)
    else:
        try:
            lockfile.check_tree(lockfile.LockedKernel(pin.repo_id, "", "", pin.commit, {variant: listed}), variant, tree)
        except LockMismatchError as exc:
            raise LockMismatchError(f"{pin.source} pins {pin.repo_id} to commit {pin.commit}, whose files are "
                                    f"checked against the Hub's listing of that commit: {exc}") from None


def _check_variant_hash(pin: KernelPin, variant: str, tree: Path, listed: dict) -> None:
    where = f"{pin.repo_id}@{pin.commit[:12]} [{variant}]"
    expected = pin.variant_hashes.get(variant)
    if expected is None:
        raise LockMismatchError(
            f"{where}: {pin.source} has no hash for this variant; nothing was imported. Fix: relock on a "
            f"machine that can see it, or load a variant the lock lists ({', '.join(sorted(pin.variant_hashes))})."
        )
    actual = variant_hash(tree, listed)
    if actual != expected:
        raise LockMismatchError(
            f"{where}: the variant's files do not match {pin.source}: expected variant hash sha256-{expected}, got "
            f"sha256-{actual}. Nothing from this variant was imported. Fix: `kernelhook cache verify --repair`, then "
            f"load again; if it persists, the lock was made from other files."
        )


def variant_hash(tree: Path, listed: dict) -> str:
    """The early kernels.lock hash of a variant folder: sha256 over its files' paths in byte order,
    each followed by the file's digest bytes (sha256 for an LFS file, git blob sha1 otherwise).

    Returns:
        The hash as lower-case hex, without the ``sha256-`` prefix.
    """
    entries = []
    for path in tree.rglob("*"):
        relative = path.relative_to(tree).as_posix()
        if path.is_file() and not is_bytecode(relative):
            kind = "sha256" if "sha256" in listed.get(relative, {}) else "git_sha1"
            entries.append((relative.encode("utf-8"), bytes.fromhex(file_digest(path, kind))))
    digest = hashlib.sha256()
    for name, file_hash in sorted(entries):
        digest.update(name)
        digest.update(file_hash)
    return digest.hexdigest()
