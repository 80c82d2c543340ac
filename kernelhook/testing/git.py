"""Git plumbing for the loopback Hub: one bare repository per Hub repo.

Everything goes through the `git` CLI so the histories are real git histories
that `git log` (or a curious developer) can inspect. The user's git config is
never read: a config could turn on commit signing or hooks, and would make the
commit ids depend on the machine.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Iterator

# Fixed identity and clock: the same files on the same parent give the same sha.
AUTHOR_NAME = "localhub"
AUTHOR_EMAIL = "localhub@kernelhook.invalid"
EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z, the date of every root commit
GIT_TIMEOUT_S = 60

_BASE_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
    "LC_ALL": "C",
}


class GitError(RuntimeError):
    """A git command failed; the message carries git's stderr."""


@dataclass(frozen=True)
class TreeItem:
    """One line of `git ls-tree -r -t -l`: a blob or a tree inside a commit."""

    mode: str
    kind: str  # "blob" or "tree"
    oid: str
    size: int  # git blob size; 0 for trees
    path: str


@dataclass(frozen=True)
class CommitItem:
    """One commit of `git log`: its sha, author, commit time, first line and the rest of the message."""

    oid: str
    author: str
    timestamp: int
    title: str
    message: str


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_BASE_ENV)
    env.update(extra or {})
    return env


class GitRepo:
    """A bare repository on disk, driven through git plumbing commands.

    Every method that runs git raises GitError when git fails, and subprocess.TimeoutExpired
    when it runs longer than GIT_TIMEOUT_S.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def run(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> bytes:
        """Run `git <args>` on this repository; return its stdout (b"" if it failed and `check` is off)."""
        proc = subprocess.run(
            ["git", "--git-dir", self.path, *args], input=input, env=_env(env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=GIT_TIMEOUT_S,
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout if proc.returncode == 0 else b""

    def init(self) -> None:
        """Create the bare repository; raises subprocess.CalledProcessError if git cannot."""
        # An empty template keeps sample hooks out; HEAD names main like the Hub.
        subprocess.run(
            ["git", "init", "--bare", "--quiet", "--template=", "--initial-branch=main", self.path],
            env=_env(), check=True, timeout=GIT_TIMEOUT_S, capture_output=True,
        )

    # -- writing -------------------------------------------------------------

    def write_blobs(self, contents: list[bytes]) -> list[str]:
        """Store blobs with one `hash-object` call for the whole batch; return their shas, in order."""
        if not contents:
            return []
        with tempfile.TemporaryDirectory(prefix="localhub-blobs-") as tmp:
            names = []
            for i, data in enumerate(contents):
                name = os.path.join(tmp, str(i))
                with open(name, "wb") as f:
                    f.write(data)
                names.append(name)
            out = self.run("hash-object", "-w", "--no-filters", "--stdin-paths",
                           input="\n".join(names).encode() + b"\n")
        return out.decode().split()

    def write_tree(self, files: dict[str, str]) -> str:
        """Build a tree from {path: blob sha} through a throwaway index file; return the tree sha."""
        with tempfile.TemporaryDirectory(prefix="localhub-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            self.run("read-tree", "--empty", env=env)
            lines = b"".join(f"100644 {oid}\t{path}".encode() + b"\0" for path, oid in sorted(files.items()))
            self.run("update-index", "-z", "--index-info", input=lines, env=env)
            return self.run("write-tree", env=env).decode().strip()

    def commit_tree(self, tree: str, parent: str | None, message: str) -> str:
        """Write a commit of `tree` on `parent` (None: a root commit); return its sha. Moves no ref."""
        # One second after the parent keeps dates strictly increasing along history.
        when = self.commit_time(parent) + 1 if parent else EPOCH
        stamp = f"@{when} +0000"
        args = ["commit-tree", tree] + (["-p", parent] if parent else [])
        env = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        return self.run(*args, input=message.encode(), env=env).decode().strip()

    def update_ref(self, ref: str, new: str, old: str | None = None) -> None:
        """Point `ref` at `new`; with `old`, raise GitError unless `ref` still points at `old`."""
        # Passing the old value makes a concurrent move fail instead of being lost.
        self.run("update-ref", ref, new, *([old] if old else []))

    def delete_ref(self, ref: str) -> None:
        """Delete `ref`; returns None."""
        self.run("update-ref", "-d", ref)

    # -- reading -------------------------------------------------------------

    def refs(self) -> dict[str, str]:
        """Return {"refs/heads/main": sha, "refs/tags/v1": sha, ...}, tags peeled to commits."""
        out = self.run("for-each-ref", "--format=%(refname) %(objectname) %(*objectname)")
        refs = {}
        for line in out.decode().splitlines():
            name, oid, peeled = (line.split(" ") + [""])[:3]
            refs[name] = peeled or oid
        return refs

    def resolve_commit(self, rev: str) -> str | None:
        """Full sha of the commit `rev` names (a full or unambiguous short sha), else None; raises nothing."""
        out = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False)
        return out.decode().strip() or None

    def commit_time(self, commit: str) -> int:
        """Return the commit's committer time, in seconds since the epoch."""
        return int(self.run("show", "-s", "--format=%ct", commit).decode().strip())

    def ls_tree(self, commit: str) -> list[TreeItem]:
        """Return every blob and tree of `commit`, recursively, in git's order."""
        out = self.run("ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit)
        items = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, path = record.split(b"\t", 1)
            mode, kind, oid, size = meta.decode().split()
            items.append(TreeItem(mode, kind, oid, 0 if size == "-" else int(size), path.decode()))
        return items

    def cat_blobs(self, oids: Iterable[str]) -> dict[str, bytes]:
        """Read many blobs through one `cat-file --batch` process; return {sha: content}."""
        oids = list(dict.fromkeys(oids))
        if not oids:
            return {}
        out = self.run("cat-file", "--batch", input="".join(f"{o}\n" for o in oids).encode())
        blobs, pos = {}, 0
        for oid in oids:
            header_end = out.index(b"\n", pos)
            _, _, size = out[pos:header_end].decode().split()
            start = header_end + 1
            blobs[oid] = out[start:start + int(size)]
            pos = start + int(size) + 1  # the batch format ends every object with a newline
        return blobs

    def log(self, commit: str) -> list[CommitItem]:
        """Return the history reachable from `commit`, newest first."""
        out = self.run("log", "-z", "--format=%H%x1f%an%x1f%ct%x1f%B", commit)
        items = []
        for record in out.decode().split("\0"):
            if not record:
                continue
            oid, author, ts, body = record.split("\x1f", 3)
            title, _, rest = body.strip("\n").partition("\n")
            items.append(CommitItem(oid, author, int(ts), title, rest.strip("\n")))
        return items


# -- snapshots: what the Hub shows of one commit ---------------------------------

LFS_VERSION_LINE = b"version https://git-lfs.github.com/spec/v1\n"
_MAX_POINTER_SIZE = 1024  # the Git LFS spec caps pointer files below this


@dataclass(frozen=True)
class LfsInfo:
    """What an LFS pointer says: the object's sha256 and size, and the pointer's own size."""

    sha256: str
    size: int
    pointer_size: int


@dataclass(frozen=True)
class Entry:
    """One file or folder of a commit, as the Hub lists it."""

    path: str
    kind: str  # "file" or "directory", the Hub's words
    oid: str  # git blob sha (the pointer's for LFS files) or git tree sha
    size: int  # real content size; 0 for directories
    lfs: LfsInfo | None = None


@dataclass
class Snapshot:
    """Every file and folder of one commit, with a folder -> children index."""

    commit: str
    entries: dict[str, Entry] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    def blob_ids(self) -> dict[str, str]:
        """Return {path: git blob sha} for every file (the pointer's blob for LFS files)."""
        return {p: e.oid for p, e in self.entries.items() if e.kind == "file"}

    def walk(self, folder: str, recursive: bool) -> Iterator[Entry]:
        """Yield the entries in `folder` ("" for the top): folders first, then files, each by name.

        With `recursive`, a folder's subtree follows it. An unknown folder yields nothing.
        """
        for path in self.children.get(folder, ()):
            yield self.entries[path]
            if recursive and self.entries[path].kind == "directory":
                yield from self.walk(path, True)


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the Git LFS pointer file for an object of this sha256 and size."""
    return LFS_VERSION_LINE + f"oid sha256:{sha256}\nsize {size}\n".encode()


def parse_lfs_pointer(data: bytes | None) -> LfsInfo | None:
    """Return what an LFS pointer file says, or None if `data` is not one; raises nothing."""
    if not data or not data.startswith(LFS_VERSION_LINE) or len(data) >= _MAX_POINTER_SIZE:
        return None
    fields = dict(line.split(" ", 1) for line in data.decode(errors="replace").splitlines() if " " in line)
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not oid.startswith("sha256:") or not size.isdigit():
        return None
    return LfsInfo(oid[len("sha256:"):], int(size), len(data))


def build_snapshot(git: GitRepo, commit: str, blob_cache: dict[str, bytes]) -> Snapshot:
    """List a commit and read its small blobs, which is where LFS pointers hide.

    Returns the commit's Snapshot; adds the blobs read to `blob_cache`. Raises GitError if
    `commit` is no commit.
    """
    items = git.ls_tree(commit)
    small = [i.oid for i in items if i.kind == "blob" and i.size < _MAX_POINTER_SIZE]
    missing = [oid for oid in small if oid not in blob_cache]
    blob_cache.update(git.cat_blobs(missing))
    snap = Snapshot(commit)
    for item in items:
        if item.kind == "tree":
            snap.entries[item.path] = Entry(item.path, "directory", item.oid, 0)
        elif item.kind == "blob":
            lfs = parse_lfs_pointer(blob_cache.get(item.oid))
            snap.entries[item.path] = Entry(item.path, "file", item.oid, lfs.size if lfs else item.size, lfs)
    for path, entry in snap.entries.items():
        snap.children.setdefault(path.rpartition("/")[0], []).append(path)
    for paths in snap.children.values():
        paths.sort(key=lambda p: (snap.entries[p].kind != "directory", p))
    return snap
