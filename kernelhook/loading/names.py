"""Step 1 of the data path: what the user typed -> a KernelName.

Pure functions, no I/O. Two spellings reach here:

* module names: ``kernels_hub.<org>.<repo>[@<revision>][.<submodule>...]``
* repo ids: ``"<org>/<repo>"`` with ``revision=`` / ``version=`` (``get_kernel``)

Hub names may hold ``-`` and ``.``; Python identifiers cannot. The rule: try
each part as written first, then with underscores read as hyphens, so
``kernels_ext_npu`` finds the org ``kernels-ext-npu`` while a repo literally
named ``liger_kernels`` is still found (the literal name wins when both exist).
"""

from __future__ import annotations

import itertools
import re

from ..errors import InvalidKernelName, InvalidRevision
from ..records import Record

ROOT = "kernels_hub"
# Kernels execute under names with this prefix and a digest (loader.py), never under repo text.
CONTENT_PREFIX = "_kernelhook_"

# Patterns, compiled on first use (re keeps them): importing kernels_hub compiles none of them,
# and a load compiles only those its name needs (~0.1-0.3 ms each).
# Hub org and repo names: letters, digits, '-', '_', '.'; at most 96 characters.
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
# Inside a dotted module name a part cannot hold '.', so it is narrower.
_MODULE_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,94}[A-Za-z0-9_])?"
# Git ref names, as far as they matter here: no spaces, no '..', no control or
# special characters, no leading '-' or '/', no trailing '/' or '.lock'.
_REVISION = r"(?!-)(?!/)(?!.*\.\.)(?!.*//)(?!.*/$)(?!.*\.lock$)[A-Za-z0-9._/-]{1,255}"
_HEX = "0123456789abcdef"  # commit shas: lower-case hex only
_PULL_REQUEST_PREFIX = "refs/pr/"  # a Hub pull request's head: how a kernel is tried before it is merged


class KernelName(Record, fields="org repo revision typed"):
    """A kernel as the user named it, before any lookup: ``org``, ``repo``, ``revision`` (or None)
    and ``typed``, the text the user wrote, for error messages."""

    __slots__ = ()

    def repo_id_candidates(self) -> tuple[str, ...]:
        """Hub repo ids to try, in order: each part as written, then hyphenated."""
        orgs = _spellings(self.org)
        repos = _spellings(self.repo)
        return tuple(f"{o}/{r}" for o, r in itertools.product(orgs, repos))

    @property
    def key(self) -> str:
        """Cache key of the name as typed (the name mapping is remembered per key)."""
        return f"{self.org}/{self.repo}"


def _spellings(part: str) -> tuple[str, ...]:
    hyphenated = part.replace("_", "-")
    return (part,) if hyphenated == part else (part, hyphenated)


class ModuleName:
    """A name under ``kernels_hub``: the root, an org namespace, a kernel or a submodule. Each field is
    None when absent: ``org``; ``kernel``, a KernelName; ``kernel_module``, the dotted name of the
    kernel module itself; ``submodule``, the dotted path below the kernel, e.g. ``"layers"``."""

    __slots__ = ("org", "kernel", "kernel_module", "submodule")

    def __init__(self, org: str | None = None, kernel: KernelName | None = None, kernel_module: str | None = None,
                 submodule: str | None = None):
        self.org, self.kernel, self.kernel_module, self.submodule = org, kernel, kernel_module, submodule


def parse_module_name(fullname: str) -> ModuleName | None:
    """Parse a dotted module name; None when it is not under ``kernels_hub``."""
    if fullname != ROOT and not fullname.startswith(ROOT + "."):
        return None
    parts = fullname.split(".")
    if len(parts) == 1:
        return ModuleName()
    org = parts[1]
    if not re.fullmatch(_MODULE_PART, org):
        raise InvalidKernelName(
            f"{fullname!r}: {org!r} is not a Hub org name (letters, digits, '-' and '_'). "
            f"Write kernels_hub.<org>.<repo>, e.g. kernels_hub.kernels_ext_npu.RMSNorm."
        )
    if len(parts) == 2:
        return ModuleName(org=org)
    repo, _, revision = parts[2].partition("@")
    if not re.fullmatch(_MODULE_PART, repo) or "@" in revision or (revision == "" and "@" in parts[2]):
        raise InvalidKernelName(
            f"{fullname!r}: {parts[2]!r} is not <repo> or <repo>@<revision>. "
            f"Example: kernels_hub.{org}.RMSNorm@v1; for revisions with dots use "
            f"kernelhook.get_kernel('{org}/{repo}', revision=...)."
        )
    kernel = KernelName(org, repo, _check_revision(revision or None, fullname), typed=fullname)
    if not all(part.isidentifier() for part in parts[3:]):
        raise InvalidKernelName(f"{fullname!r}: submodules below a kernel are Python identifiers, e.g. .layers")
    submodule = ".".join(parts[3:]) or None
    return ModuleName(org=org, kernel=kernel, kernel_module=".".join(parts[:3]), submodule=submodule)


def parse_repo_id(repo_id: str, revision: str | None = None, version: int | None = None) -> KernelName:
    """Parse ``"org/repo"`` plus an optional revision or major version."""
    typed = repo_id if revision is None and version is None else f"{repo_id} ({_describe(revision, version)})"
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise InvalidKernelName(f"{repo_id!r} is not a Hub repo id: write 'org/repo', e.g. 'kernels-ext-npu/RMSNorm'.")
    org, repo = repo_id.split("/")
    for part in (org, repo):
        if not re.fullmatch(_HUB_PART, part) or ".." in part or "--" in part:
            raise InvalidKernelName(
                f"{repo_id!r}: {part!r} is not a valid Hub name (letters, digits, '-', '_', '.', at most 96)."
            )
    if version is not None:
        if revision is not None:
            raise InvalidRevision(f"{typed}: give revision= or version=, not both.")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise InvalidRevision(f"{typed}: version must be a whole number >= 0 (major version N is branch vN).")
        revision = f"v{version}"
    return KernelName(org, repo, _check_revision(revision, typed), typed=typed)


def _describe(revision: str | None, version: int | None) -> str:
    return f"revision={revision!r}" if version is None else f"version={version!r}"


def _check_revision(revision: str | None, typed: str) -> str | None:
    if revision is None or (isinstance(revision, str) and is_full_sha(revision)):
        return revision  # a commit sha is a valid ref name: no pattern to compile for the commonest pin
    if not isinstance(revision, str) or not re.fullmatch(_REVISION, revision):
        raise InvalidRevision(
            f"{typed}: {revision!r} is not a revision: use a branch, tag, commit sha (7 to 40 hex digits), vN "
            f"or refs/pr/N."
        )
    return revision


def is_full_sha(revision: str) -> bool:
    return len(revision) == 40 and not revision.strip(_HEX)  # nothing left once hex digits are stripped


def is_short_sha(revision: str) -> bool:
    """7 to 39 lower-case hex digits: taken as an abbreviated commit."""
    return 7 <= len(revision) <= 39 and not revision.strip(_HEX)


def is_pull_request(revision: str) -> bool:
    """``refs/pr/<N>``: the head of the Hub's pull request number N."""
    number = revision[len(_PULL_REQUEST_PREFIX):] if revision.startswith(_PULL_REQUEST_PREFIX) else ""
    return number.isascii() and number.isdigit() and not number.startswith("0")
