"""Which orgs may supply kernels nobody asked for by name.

Importing kernel code runs it. An explicit ``import kernels_hub.org.repo``, a
``get_kernel`` call or a mapping the user registers is the user's own choice.
A kernel reached implicitly, through the mapping kernelhook ships (its
defaults), is loaded only from a trusted org: the list below, extended with
``KERNELHOOK_TRUSTED_ORGS`` (comma- or space-separated) or ``trusted-orgs``
under ``[tool.kernelhook]`` in the nearest pyproject.toml. A lockfile pins the
exact bytes of whatever it names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_TRUSTED_ORGS = ("kernels-community", "kernels-ext-npu")


def trusted_orgs() -> frozenset[str]:
    extra = re.split(r"[,\s]+", os.environ.get("KERNELHOOK_TRUSTED_ORGS", "").strip())
    return frozenset(DEFAULT_TRUSTED_ORGS) | {org for org in extra if org} | _from_pyproject()


def is_trusted(repo_id: str) -> bool:
    return repo_id.split("/", 1)[0] in trusted_orgs()


def _from_pyproject() -> set[str]:
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            try:
                table = tomllib.loads(candidate.read_text(encoding="utf-8")).get("tool", {}).get("kernelhook", {})
            except (OSError, ValueError):
                return set()
            orgs = table.get("trusted-orgs", [])
            return {o for o in orgs if isinstance(o, str)} if isinstance(orgs, list) else set()
    return set()
