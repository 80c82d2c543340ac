"""The Hub, as the rest of kernelhook sees it: the only package that talks to it.

    client.py   the reads: refs, revisions, the build/ listing, one file at a time
    errors.py   the Hub's failures as one small family, and the translation into it
    upload.py   the one write: publishing a kernel repo folder

Importing this package never imports huggingface_hub; each request does, when it
needs it, so a warm commit-pinned load never pays for it.
"""

from .client import (
    LARGE_FILE,
    REPO_TYPES,
    ListingEntry,
    Refs,
    download,
    endpoint,
    list_build,
    list_refs,
    resolve_revision,
)
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
