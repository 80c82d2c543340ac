"""Files by content: the digests the Hub and the cache name them by, and writes no reader sees half done.

The Hub names a small file by its git blob sha1 (``sha1(b"blob <size>\\0" + content)``)
and an LFS file by the sha256 of its content; the cache names every object by
its sha256. One read gives all three.

New files and folders get the modes a plain ``open`` or ``mkdir`` would give under
the process umask (``mkstemp`` and ``mkdtemp`` alone give 0600 and 0700), so a
cache filled by one user is readable by every user the umask admits.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024
DIGEST_KINDS = ("sha256", "git_sha1")


def hash_stream(handle: BinaryIO) -> tuple[int, str, str]:
    """Size, sha256 and git blob sha1 of an open file's whole content, in one read from its start."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size)
    while chunk := handle.read(CHUNK):
        sha256.update(chunk)
        git.update(chunk)
    return size, sha256.hexdigest(), git.hexdigest()


def file_digest(path: Path, kind: str) -> str:
    """The ``"sha256"`` or ``"git_sha1"`` (git blob) digest of a file, as lower-case hex.

    Only the digest asked for is computed: checking a large locked file costs one hash, not two.
    """
    if kind not in DIGEST_KINDS:
        raise ValueError(f"unknown digest kind {kind!r}: use one of {', '.join(DIGEST_KINDS)}")
    with open(path, "rb") as f:
        digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % os.fstat(f.fileno()).st_size)
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


_umask_lock = threading.Lock()
_umask: int | None = None


def process_umask() -> int:
    """The process umask, read once (the first call) and remembered.

    Returns:
        The umask bits, e.g. ``0o022``.
    """
    global _umask
    if _umask is None:
        with _umask_lock:
            if _umask is None:
                _umask = _read_umask()
    return _umask


def _read_umask() -> int:
    # Linux reports it without changing it; elsewhere os.umask must set it to read it, which is
    # process-wide, so that happens once, under the lock, and is put back at once.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(read_only: bool = False) -> int:
    """Mode bits for a new file: 0o666 (0o444 when read-only) less the umask.

    Returns:
        The mode to chmod a ``mkstemp`` file to.
    """
    return (0o444 if read_only else 0o666) & ~process_umask()


def folder_mode() -> int:
    """Mode bits for a new folder: 0o777 less the umask, as ``mkdir`` gives.

    Returns:
        The mode to chmod a ``mkdtemp`` folder to.
    """
    return 0o777 & ~process_umask()


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``target`` through a temporary file in its folder and a rename: readers see the old
    file or the new one, never a part. The file gets ``file_mode()``, as a plain write would.

    Raises:
        OSError: the folder or file could not be written (the temporary file is removed).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, file_mode())
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
