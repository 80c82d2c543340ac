"""The kernels loaded in this process, as the ``kernels`` package's ``get_loaded_kernels`` lists them.

Every kernel module carries its origin (``kernelhook.origin``), so the list is read from
``sys.modules`` when asked: loading keeps no registry of its own.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .local import LOCAL_REPO_TYPE
from .names import CONTENT_PREFIX


@dataclass(frozen=True)
class RepoInfo:
    """Where a Hub kernel came from: the repo and the commit it was loaded at."""

    repo_id: str
    revision: str


@dataclass(frozen=True)
class LoadedKernel:
    """One loaded kernel. ``metadata``, ``module`` and ``repo_info`` are the ``kernels`` package's fields
    (``metadata`` as the parsed ``metadata.json`` of the variant, or None when it has none; ``repo_info``
    None for a kernel loaded from a local folder, as there); the rest say where it runs from."""

    metadata: dict | None
    module: ModuleType
    repo_info: RepoInfo | None
    repo_id: str  # the Hub repo, or for a local folder the repo id LOCAL_KERNELS gave it, or the folder
    commit: str | None  # None for a local folder
    variant: str
    variant_path: Path  # the variant's files in the cache


def get_loaded_kernels() -> list[LoadedKernel]:
    """Every kernel loaded in this process, in the order they were loaded.

    Returns:
        A new list of ``LoadedKernel``: one per kernel module (repo, commit and variant, or local content).
    """
    records = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__kernelhook__", None) if name.startswith(CONTENT_PREFIX) and "." not in name else None
        if origin is None:
            continue
        local = origin.repo_type == LOCAL_REPO_TYPE
        records.append(LoadedKernel(
            metadata=_metadata(origin.tree), module=module,
            repo_info=None if local else RepoInfo(origin.repo_id, origin.commit),
            repo_id=origin.repo_id, commit=None if local else origin.commit, variant=origin.variant,
            variant_path=origin.tree,
        ))
    return records


def _metadata(tree: Path) -> dict | None:
    try:
        data = json.loads((tree / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
