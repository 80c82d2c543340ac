"""The shape of a kernel repo, in the terms every step of the data path uses.

``RepoAddress`` is a repo as the Hub knows it (id and type), ``Resolved``
that repo at a commit, and ``ListingEntry`` one file of its build/ listing.
A repo's builds live under ``build/<variant>/``: ``split_build_path`` reads
listing paths in those terms, ``is_bytecode`` says which of them are never
fetched, and ``find_package`` says which folder of a variant is its Python
package, by one rule for loading a kernel and for checking one before it is
published.
"""

from __future__ import annotations

from pathlib import Path

from .errors import KernelLoadError
from .records import Record

BUILD_DIR = "build"


class RepoAddress(Record, fields="repo_id repo_type"):
    """A Hub repo as the Hub knows it: ``repo_id`` (``"org/name"``) and ``repo_type`` (``"kernel"`` or ``"model"``)."""

    __slots__ = ()

    def __str__(self) -> str:
        return self.repo_id if self.repo_type == "model" else f"{self.repo_id} (kernel repo)"


class ListingEntry(Record, fields="path size git_oid lfs_sha256"):
    """A file under build/ as the Hub lists it: ``path`` from the repo root, ``size``, ``git_oid``
    (the git blob sha1; of the LFS pointer, for LFS files) and ``lfs_sha256`` (the sha256 of the
    real content, for LFS files; else None). The cache keeps each commit's listing."""

    __slots__ = ()

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "oid": self.git_oid, "lfs_sha256": self.lfs_sha256}

    @classmethod
    def from_json(cls, data: dict) -> "ListingEntry":
        return cls(data["path"], int(data["size"]), data["oid"], data.get("lfs_sha256"))


class Resolved(Record, fields="repo commit how"):
    """A ``repo`` (RepoAddress) at the ``commit`` a revision named; ``how`` is for logs and reports:
    "commit pin", "branch v2", "cached (offline)", ..."""

    __slots__ = ()


def split_build_path(path: str) -> tuple[str, str] | None:
    """``"build/<variant>/<rest>"`` -> ``(variant, rest)``; None for a path outside a variant folder."""
    parts = path.split("/", 2)
    if len(parts) < 3 or parts[0] != BUILD_DIR or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def is_bytecode(path: str) -> bool:
    """True for compiled Python (``*.pyc``, ``*.pyo``, anything under ``__pycache__/``) in a listing path.

    Kernels run from their source only: bytecode is never fetched, locked or
    executed, since nothing ties it to the source beside it (the public
    ``kernels`` package refuses it too).
    """
    parts = path.split("/")
    return "__pycache__" in parts or parts[-1].endswith((".pyc", ".pyo"))


def find_package(tree: Path, repo_name: str, where: str) -> Path:
    """The folder holding a variant's ``__init__.py``.

    Args:
        tree: the variant folder (``build/<variant>/`` as files on disk).
        repo_name: the repo's name, which picks the package when there are several.
        where: how error messages name the variant (a repo, commit and variant; or a folder).

    Returns:
        The variant folder itself (the layout with ``metadata.json``), or the one
        package folder inside it (``build/<variant>/<Name>/__init__.py``); with
        several, the one named like the repo (``-`` read as ``_``, any case).

    Raises:
        KernelLoadError: no package, or several and none named like the repo.
    """
    if (tree / "__init__.py").is_file():
        return tree
    packages = sorted(p for p in tree.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    if len(packages) == 1:
        return packages[0]
    wanted = repo_name.replace("-", "_").lower()
    named = [p for p in packages if p.name.lower() == wanted]
    if len(named) == 1:
        return named[0]
    found = ", ".join(p.name for p in packages) or "none"
    raise KernelLoadError(
        f"{where} holds no single Python package: it needs __init__.py, or exactly one package folder "
        f"(found: {found}), or one named like the repo ({wanted}). Fix (kernel authors): put __init__.py at "
        f"build/<variant>/ or in one folder below it."
    )
