"""The content-addressed cache: the only module that writes under KERNELHOOK_CACHE.

Layout (``v1/`` is the format version)::

    objects/ab/cdef...                 file contents, named by sha256, read-only, immutable
    index/git-sha1/<oid>               sha256 of the blob a git oid names (small files)
    trees/<digest>/...                 a variant's files as hard links to objects
    manifests/<digest>.json            {path: sha256} of that tree, written before the tree appears
    refs/<type>/<org>/<name>/
        revisions/<quoted rev>.json    (repo, revision) -> commit, and when it was resolved
        commits/<sha>/listing.json     the build/ listing at that commit (immutable)
        commits/<sha>/variants/<v>     (repo, commit, variant) -> tree digest
        commits/<sha>/chosen/<system>  the variant chosen there for a system (platform.choice_key), so a
                                       warm load neither reads the listing nor ranks its variants again
    names/<typed org>/<typed repo>.json  how a typed name mapped to a Hub repo
    verified/<digest>/<key>.json       that tree's files and folders as they were (stat) when
                                       they last matched the lock entry <key> names
    decisions/<key digest>.json        kernelize(measure=True): whether a kernel beat a class's own
                                       forward on one device, dtype and shape class (binding/measure.py)
    input-plans/<key digest>.json      the inputs a model's run on a sample_input gave each class it
                                       measured, so that decisions are recalled without the run
    locks/, tmp/

Revision refs are the roots ``kernelhook cache prune`` keeps. Every pin leaves
one: a branch, tag or unpinned name the commit it resolved to, a commit pin
itself. A lockfile pin (a load, or ``kernelhook download`` of a lockfile) leaves
the ref a commit pin of its commit leaves, so prune keeps what a lockfile
fetched even where that lockfile is not in effect, and the ref of the locked
revision (``v1``, say) unless that revision has one already, so the revision
also imports offline by name.

Correctness never depends on the locks (NFS and Lustre lie about them): every
entry is written to a temporary name in the same filesystem and renamed into
place, entries are immutable and named by their digest, and a rename that
finds its target present counts as success. The locks only save duplicate
downloads. Reading never writes, so a read-only cache can be loaded from.

Sharing: files and folders get the modes ``open`` and ``mkdir`` give under the
process umask (objects and trees read-only: 0o444 less the umask), so a cache
filled with umask 022 is readable by every user, one filled with 077 by its
owner only. A read that permissions refuse is a CacheError, never a miss: a
miss would send the request the cache was filled to avoid, then fail to write.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from ..errors import CacheError
from ..repo import RepoAddress

logger = logging.getLogger("kernelhook")

FORMAT = "v1"
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)  # O_BINARY: Windows
_CHUNK = 1 << 16


def _default_cache_text() -> str:
    """KERNELHOOK_CACHE, else kernelhook/ under XDG_CACHE_HOME or ~/.cache: a str, as Store keeps it."""
    if os.environ.get("KERNELHOOK_CACHE"):
        return os.path.expanduser(os.environ["KERNELHOOK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kernelhook")


def tree_digest(files: dict[str, str]) -> str:
    """Digest of a variant tree: its relative paths and their contents' sha256."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path}\0{files[path]}\n".encode())
    return h.hexdigest()


def check_relative_path(path: str) -> str:
    """A path from a Hub listing, refused unless it stays inside its folder and is a plain name."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or any(ord(c) < 32 or ord(c) == 127 for c in path)  # NUL, newlines, escapes: no honest kernel needs them
        or not _encodable(path)
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise CacheError(f"refusing the path {path!r} from the Hub listing: it would leave its variant folder "
                         f"or is not a plain file name")
    return path


def _encodable(path: str) -> bool:
    try:
        path.encode("utf-8")  # lone surrogates (from undecodable names) cannot be file names here
    except UnicodeEncodeError:
        return False
    return True


class Store:
    def __init__(self, root: str | os.PathLike | None = None):
        # str paths here, Paths made when first asked for: a warm load and a remembered kernelize(measure=True)
        # make a Store, read a few small entries by str path (_read) and never need a Path
        self._top_text = os.fspath(root) if root is not None else _default_cache_text()
        self._root_text = os.path.join(self._top_text, FORMAT)

    @functools.cached_property
    def top(self) -> Path:
        """The folder KERNELHOOK_CACHE names (the format's folder is under it)."""
        return Path(self._top_text)

    @functools.cached_property
    def root(self) -> Path:
        """``top``'s folder for this format (``v1``): every entry is under it."""
        return self.top / FORMAT

    # -- reading (never writes) ------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256[2:]

    def tree_path(self, digest: str) -> Path:
        return self.root / "trees" / digest

    def manifest_path(self, digest: str) -> Path:
        return self.root / "manifests" / f"{digest}.json"

    def read_json(self, relative: str):
        """A small entry's JSON; None when absent or damaged (a miss: it is rewritten on the next resolve).

        Raises:
            CacheError: permissions keep this user from reading it.
        """
        data = self._read(relative)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def read_text(self, relative: str) -> str | None:
        """A small entry's text, stripped; None when absent, empty or undecodable.

        Raises:
            CacheError: permissions keep this user from reading it.
        """
        data = self._read(relative)
        try:
            return None if data is None else data.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            return None

    def _read(self, relative: str) -> bytes | None:
        """A small entry's bytes, or None when it is absent or not a file.

        A warm load and a remembered kernelize(measure=True) read several of these and little else, so this
        joins a str and reads with os.open/os.read: a third of the time of Path's join and read_bytes.
        """
        path = f"{self._root_text}/{relative}"
        try:
            fd = os.open(path, _READ_FLAGS)
        except PermissionError as exc:
            raise unreadable(self.top, Path(path), exc) from exc
        except OSError:
            return None
        try:
            chunks = []
            while chunk := os.read(fd, _CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError:  # a folder where a file belongs, or a read error: a miss, as a damaged entry is
            return None
        finally:
            os.close(fd)

    def has_object(self, sha256: str) -> bool:
        """Returns whether the object is present.

        Raises:
            CacheError: permissions keep this user from seeing it.
        """
        return self._is(self.object_path(sha256), stat.S_ISREG)

    def has_tree(self, digest: str) -> bool:
        """Returns whether the variant tree is present.

        Raises:
            CacheError: permissions keep this user from seeing it.
        """
        return self._is(self.tree_path(digest), stat.S_ISDIR)

    def _is(self, path: Path, kind) -> bool:
        try:
            return kind(os.stat(path).st_mode)
        except PermissionError as exc:
            raise unreadable(self.top, path, exc) from exc
        except OSError:
            return False

    def sha256_of_git_blob(self, oid: str) -> str | None:
        return self.read_text(f"index/git-sha1/{oid}")

    # -- refs: tiny files naming commits and trees -------------------------------------

    @staticmethod
    def _repo_dir(repo: RepoAddress) -> str:
        return f"refs/{repo.repo_type}/{repo.repo_id}"

    @staticmethod
    def _revision_file(repo: RepoAddress, revision: str | None) -> str:
        # None is the unpinned choice (highest vN, else main); quoting keeps '/' out of file names.
        name = "default" if revision is None else "rev-" + quote(revision, safe="")
        return f"{Store._repo_dir(repo)}/revisions/{name}.json"

    def recall_name(self, typed_key: str) -> RepoAddress | None:
        found = self.read_json(f"names/{typed_key}.json")
        if isinstance(found, dict) and {"repo_id", "repo_type"} <= found.keys():
            return RepoAddress(found["repo_id"], found["repo_type"])
        return None

    def remember_name(self, typed_key: str, repo: RepoAddress) -> None:
        self.write_json(f"names/{typed_key}.json", {"repo_id": repo.repo_id, "repo_type": repo.repo_type})

    def recall_revision(self, repo: RepoAddress, revision: str | None) -> dict | None:
        """{"commit", "revision", "resolved_at"} as last resolved online, or None."""
        found = self.read_json(self._revision_file(repo, revision))
        return found if isinstance(found, dict) and isinstance(found.get("commit"), str) else None

    def remember_revision(self, repo: RepoAddress, revision: str | None, resolved: str, commit: str,
                          resolved_at: float | None = None) -> None:
        """Record what a revision resolved to (now, unless ``resolved_at`` says when)."""
        when = time.time() if resolved_at is None else resolved_at
        record = {"revision": resolved, "commit": commit, "resolved_at": when}
        self.write_json(self._revision_file(repo, revision), record)

    def known_commits(self, repo: RepoAddress) -> set[str]:
        """Every commit of this repo the cache has seen (for short-sha pins).

        Raises:
            CacheError: permissions keep this user from reading the repo's refs.
        """
        base = self.root / self._repo_dir(repo)
        commits = {p.name for p in self._entries(base / "commits")}
        for ref in self._entries(base / "revisions"):
            found = self.read_json(str(ref.relative_to(self.root)))
            if isinstance(found, dict) and isinstance(found.get("commit"), str):
                commits.add(found["commit"])
        return commits

    def _entries(self, folder: Path) -> list[Path]:
        try:
            return list(folder.iterdir())
        except PermissionError as exc:
            raise unreadable(self.top, folder, exc) from exc
        except OSError:
            return []

    def load_listing(self, repo: RepoAddress, commit: str) -> list | None:
        found = self.read_json(f"{self._repo_dir(repo)}/commits/{commit}/listing.json")
        return found if isinstance(found, list) else None

    def save_listing(self, repo: RepoAddress, commit: str, listing: list) -> None:
        self.write_json(f"{self._repo_dir(repo)}/commits/{commit}/listing.json", listing)

    def variant_tree(self, repo: RepoAddress, commit: str, variant: str) -> str | None:
        digest = self.read_text(f"{self._repo_dir(repo)}/commits/{commit}/variants/{variant}")
        return digest if digest and self.has_tree(digest) else None

    def remember_variant_tree(self, repo: RepoAddress, commit: str, variant: str, digest: str) -> None:
        self.write_text(f"{self._repo_dir(repo)}/commits/{commit}/variants/{variant}", digest)

    def chosen_variant(self, repo: RepoAddress, commit: str, system_key: str) -> str | None:
        """The variant ``remember_chosen_variant`` kept for this commit and system key, or None."""
        return self.read_text(self._choice_file(repo, commit, system_key))

    def remember_chosen_variant(self, repo: RepoAddress, commit: str, system_key: str, variant: str) -> None:
        self.write_text(self._choice_file(repo, commit, system_key), variant)

    @staticmethod
    def _choice_file(repo: RepoAddress, commit: str, system_key: str) -> str:
        return f"{Store._repo_dir(repo)}/commits/{commit}/chosen/{quote(system_key, safe='')}"

    def verification(self, digest: str, key: str) -> dict | None:
        """What ``remember_verification`` kept for the tree ``digest`` and the lock entry ``key``, or None."""
        found = self.read_json(f"verified/{digest}/{key}.json")
        return found if isinstance(found, dict) else None

    def remember_verification(self, digest: str, key: str, record: dict) -> None:
        """Keep a record that the tree ``digest`` matched the lock entry ``key`` (lockfile.py says what
        it holds). A cache that cannot be written keeps none: each process then hashes again."""
        self.write_json(f"verified/{digest}/{key}.json", record)

    def verifications_path(self, digest: str) -> Path:
        return self.root / "verified" / digest

    def recall_decision(self, key: str) -> dict | None:
        """The measured decision kept under ``key`` (a hex digest), or None when there is none.

        Returns:
            The record ``remember_decision`` wrote, or None (absent or damaged: measured again).

        Raises:
            CacheError: permissions keep this user from reading it.
        """
        found = self.read_json(f"decisions/{key}.json")
        return found if isinstance(found, dict) and isinstance(found.get("bound"), bool) else None

    def remember_decision(self, key: str, record: dict) -> None:
        """Keep a measured decision under ``key`` (a hex digest); a cache that cannot be written keeps none."""
        self.write_json(f"decisions/{key}.json", record)

    def decisions(self) -> list[dict]:
        """Every measured decision in the cache, in file-name order (for ``kernelhook bench``).

        Returns:
            The records, damaged ones left out.

        Raises:
            CacheError: permissions keep this user from reading the folder or a record.
        """
        found = (self.recall_decision(p.stem) for p in sorted(self._entries(self.root / "decisions"))
                 if p.suffix == ".json")
        return [record for record in found if record is not None]

    def recall_input_plan(self, key: str) -> dict | None:
        """The input plan kept under ``key`` (a hex digest): the inputs a run on sample_input gave each class
        kernelize(measure=True) measured (binding/measure.py says what it holds).

        Returns:
            The record ``remember_input_plan`` wrote, or None (absent or damaged: the model runs again).

        Raises:
            CacheError: permissions keep this user from reading it.
        """
        found = self.read_json(f"input-plans/{key}.json")
        return found if isinstance(found, dict) and isinstance(found.get("classes"), list) else None

    def remember_input_plan(self, key: str, record: dict) -> None:
        """Keep an input plan under ``key`` (a hex digest); a cache that cannot be written keeps none."""
        self.write_json(f"input-plans/{key}.json", record)

    # -- writing (atomic) ------------------------------------------------------------

    def write_json(self, relative: str, value) -> None:
        self._remember(relative, json.dumps(value, indent=1, sort_keys=True).encode())

    def write_text(self, relative: str, text: str) -> None:
        self._remember(relative, text.encode())

    def _remember(self, relative: str, data: bytes) -> None:
        """Refs and indexes only save work later: a cache we cannot write (a read-only,
        pre-filled mount) still loads, it just remembers nothing new."""
        try:
            self._write_atomic(self.root / relative, data)
        except CacheError as exc:
            logger.debug("not remembered: %s", exc)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        from ..files import write_atomic  # here, not at the top: a warm load writes nothing

        try:
            write_atomic(target, data)
        except OSError as exc:
            raise cache_error("write", target, exc) from exc

    def temp_file(self):
        """A new file under tmp/ (same filesystem as objects/, so a rename is atomic)."""
        tmp = self.root / "tmp"
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=tmp, prefix="download-")
        except OSError as exc:
            raise cache_error("create a file in", tmp, exc) from exc
        return os.fdopen(fd, "w+b"), Path(path)

    def add_object(self, temp_path: Path, sha256: str) -> Path:
        """Move a verified temp file into objects/ under its sha256."""
        from ..files import file_mode  # here, not at the top, as in every writing method: a warm load writes nothing

        target = self.object_path(sha256)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temp_path, file_mode(read_only=True))  # immutable; the hard links in trees share this
            os.replace(temp_path, target)  # same content either way: a concurrent writer is harmless
        except OSError as exc:
            _unlink_quietly(temp_path)
            raise cache_error("store", target, exc) from exc
        return target

    def copy_in(self, source) -> str:
        """Copy an open file from outside the cache (a local kernel folder's) into objects/.

        The object is named by the digest of the bytes copied, never of bytes read before, so a file
        edited while it is copied is stored as what was copied.

        Returns:
            The sha256 the object is stored under.

        Raises:
            CacheError: the cache cannot be written (nothing half-written is left).
            OSError: reading ``source`` failed (nothing is left either).
        """
        from ..files import CHUNK, hash_stream

        handle, temp = self.temp_file()
        try:
            with handle:
                while chunk := source.read(CHUNK):
                    try:
                        handle.write(chunk)
                    except OSError as exc:  # this cache's disk, not the source
                        raise cache_error("write", temp, exc) from exc
                _, sha256, _ = hash_stream(handle)
        except BaseException:
            _unlink_quietly(temp)
            raise
        if self.has_object(sha256):
            _unlink_quietly(temp)
            return sha256
        self.add_object(temp, sha256)
        return sha256

    def remember_git_blob(self, oid: str, sha256: str) -> None:
        self.write_text(f"index/git-sha1/{oid}", sha256)

    def make_tree(self, files: dict[str, str]) -> tuple[str, Path]:
        """Materialise a variant tree ({relative path: sha256}) from objects; returns (digest, dir)."""
        from ..files import folder_mode

        digest = tree_digest(files)
        final = self.tree_path(digest)
        if final.is_dir():
            return digest, final
        self._write_atomic(self.manifest_path(digest), json.dumps(files, sort_keys=True).encode())
        try:
            staging = Path(tempfile.mkdtemp(dir=self._mkdir("tmp"), prefix="tree-"))
            try:
                os.chmod(staging, folder_mode())  # mkdtemp's 0700 would hide the tree from other users
                for relative, sha256 in files.items():
                    dest = staging / check_relative_path(relative)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(self.object_path(sha256), dest)
                self._mkdir("trees")
                os.rename(staging, final)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if not (exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.is_dir()):
                    raise  # another process renaming the same digest first is success
        except OSError as exc:
            raise cache_error("build the tree", final, exc) from exc
        return digest, final

    def _mkdir(self, relative: str) -> Path:
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- removing (kernelhook cache verify --repair / prune) -----------------------------

    def remove_file(self, path: Path) -> None:
        """Drop one entry file (a ref, an object, a manifest); already gone is fine."""
        _unlink_quietly(path)

    def remove_tree(self, path: Path) -> None:
        """Make a folder disappear at once (a rename), then delete it at leisure."""
        try:
            doomed = Path(tempfile.mkdtemp(dir=self._mkdir("tmp"), prefix="doomed-"))
            os.replace(path, doomed / "x")
        except OSError:
            return  # already gone, or another process is removing it
        shutil.rmtree(doomed, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float = 600.0):
        """Advisory lock that saves duplicate work; never needed for correctness.

        A cache we cannot write to (a read-only mount) simply runs unlocked, and so does
        one with KERNELHOOK_DISABLE_LOCKS=1 (for network filesystems whose locks hang).
        """
        if os.environ.get("KERNELHOOK_DISABLE_LOCKS") == "1":
            yield
            return
        import filelock

        from ..files import file_mode

        try:
            # An explicit mode: some filelock releases make lock files 0644 whatever the umask.
            lock = filelock.FileLock(str(self._mkdir("locks") / f"{key}.lock"), timeout=timeout, mode=file_mode())
            lock.acquire()
        except (OSError, filelock.Timeout):
            yield
            return
        try:
            yield
        finally:
            lock.release()


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        from ..files import file_mode

        shutil.copyfile(source, dest)  # filesystems without hard links
        os.chmod(dest, file_mode(read_only=True))  # as read-only as the object it copies


def _unlink_quietly(path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def unreadable(top: Path, path: Path, exc: OSError) -> CacheError:
    """Returns the error for a cache entry that permissions keep this user from reading: not a miss."""
    return CacheError(
        f"could not read {path}: {exc.strerror or exc}. Permissions keep this user out of the cache at {top} "
        f"(one filled under umask 077 is its owner's alone), so kernelhook cannot tell what it holds and does "
        f"not go to the Hub instead. Fix: its owner runs `chmod -R a+rX {top}` and fills it under umask 022 "
        f"from then on, or point KERNELHOOK_CACHE at a cache of your own."
    )


def cache_error(action: str, path: Path, exc: OSError) -> CacheError:
    fix = {
        errno.ENOSPC: "free disk space or point KERNELHOOK_CACHE at a larger disk",
        errno.EACCES: "make the cache writable or point KERNELHOOK_CACHE at a writable folder",
        errno.EROFS: "the cache is read-only: pre-fill it where it is writable, or point KERNELHOOK_CACHE elsewhere",
    }.get(exc.errno, "check the cache folder (KERNELHOOK_CACHE)")
    return CacheError(f"could not {action} {path}: {exc.strerror or exc}; {fix}")
