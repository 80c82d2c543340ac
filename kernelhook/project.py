"""The user's project, as kernelhook reads it: files found from the working directory upwards, and TOML.

``pyproject.toml`` holds kernelhook's settings under ``[tool.kernelhook]``
(the kernels to lock, extra trusted orgs); ``kernelhook.lock`` sits beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LockfileError

LOCK_NAME = "kernelhook.lock"


def lockfile_in_effect() -> Path | None:
    """The lockfile KERNELHOOK_LOCKFILE names, else the nearest kernelhook.lock above the working directory;
    None when there is neither. (Whether it can be read is for cache/lockfile.py to say.)"""
    named = os.environ.get("KERNELHOOK_LOCKFILE")
    return Path(named).expanduser() if named else nearest(LOCK_NAME)


def nearest(file_name: str) -> Path | None:
    """The file of that name in the working directory or the closest folder above it, or None.

    Every load asks this (is a lockfile in effect?), so it walks str paths and asks os.access, which answers a
    miss without raising: 20 us nine folders deep here, where pathlib's parents and is_file took 52."""
    folder = os.getcwd()
    while True:
        candidate = os.path.join(folder, file_name)
        if os.access(candidate, os.F_OK) and os.path.isfile(candidate):  # access: no exception for a miss
            return Path(candidate)
        parent = os.path.dirname(folder)
        if parent == folder:  # the root (or a drive's) has been looked in
            return None
        folder = parent


def read_toml(path: Path) -> dict:
    """A TOML file as a dict (tomllib, or tomli on Python 3.10).

    Raises:
        LockfileError: the file cannot be read or is not TOML.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LockfileError(f"{path}: cannot read it as TOML ({exc}).") from exc


def kernelhook_table(pyproject: Path) -> dict:
    """``[tool.kernelhook]`` of a pyproject.toml ({} when absent). Raises LockfileError like read_toml."""
    table = read_toml(pyproject).get("tool", {}).get("kernelhook", {})
    return table if isinstance(table, dict) else {}
