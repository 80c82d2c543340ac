"""The Hub, as the rest of kernelhook sees it: the only package that talks to it.

    client.py   the reads: refs, revisions, the build/ listing, one file at a time
    errors.py   the Hub's failures as one small family, and the translation into it
    upload.py   the one write: publishing a kernel repo folder

Importing this package imports none of them: each name below is imported on
first use, so a warm commit-pinned load, which asks the Hub nothing, never pays
for them. Nor is huggingface_hub imported before a request needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on use
    from ..repo import ListingEntry
    from .client import LARGE_FILE, REPO_TYPES, Refs, download, endpoint, list_build, list_refs, resolve_revision
    from .errors import (
        EntryMissing,
        HubError,
        HubUnavailable,
        RepoGated,
        RepoMissing,
        RevisionMissing,
        TokenRejected,
        explain,
        local_files_only,
        offline,
    )
    from .upload import publish_folder

# public name -> the module of this package that defines it
_LAZY = {
    "LARGE_FILE": "client",
    "ListingEntry": "client",
    "REPO_TYPES": "client",
    "Refs": "client",
    "download": "client",
    "endpoint": "client",
    "list_build": "client",
    "list_refs": "client",
    "resolve_revision": "client",
    "EntryMissing": "errors",
    "HubError": "errors",
    "HubUnavailable": "errors",
    "RepoGated": "errors",
    "RepoMissing": "errors",
    "RevisionMissing": "errors",
    "TokenRejected": "errors",
    "explain": "errors",
    "local_files_only": "errors",
    "offline": "errors",
    "publish_folder": "upload",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kernelhook.hub' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "EntryMissing",
    "HubError",
    "HubUnavailable",
    "LARGE_FILE",
    "ListingEntry",
    "REPO_TYPES",
    "Refs",
    "RepoGated",
    "RepoMissing",
    "RevisionMissing",
    "TokenRejected",
    "download",
    "endpoint",
    "explain",
    "list_build",
    "list_refs",
    "local_files_only",
    "offline",
    "publish_folder",
    "resolve_revision",
]
