"""Files by content: the digests the Hub and the cache name them by, and writes no reader sees half done.

The Hub names a small file by its git blob sha1 (``sha1(b"blob <size>\\0" + content)``)
and an LFS file by the sha256 of its content; the cache names every object by
its sha256. One read gives all three.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``target`` through a temporary file in its folder and a rename: readers see the old
    file or the new one, never a part. Raises OSError (the temporary file is removed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
