"""Which orgs may supply kernels nobody asked for by name.

Importing kernel code runs it. An explicit ``import kernels_hub.org.repo``, a
``get_kernel`` call or a mapping the user registers is the user's own choice.
A kernel reached implicitly, through a mapping a library offers on the user's
behalf (kernelhook's defaults, or an integration's table: mapping.offer_kernel_mapping),
is loaded only from a trusted org: the list below, extended with
``KERNELHOOK_TRUSTED_ORGS`` (comma- or space-separated) or ``trusted-orgs``
under ``[tool.kernelhook]`` in the nearest pyproject.toml. A lockfile pins the
exact bytes of whatever it names.
"""

from __future__ import annotations

import os
import re

from ..errors import LockfileError
from ..project import kernelhook_table, nearest

DEFAULT_TRUSTED_ORGS = ("kernels-community", "kernels-ext-npu")


def trusted_orgs() -> frozenset[str]:
    """The orgs implicit kernels may come from: the defaults, KERNELHOOK_TRUSTED_ORGS and pyproject's list."""
    extra = re.split(r"[,\s]+", os.environ.get("KERNELHOOK_TRUSTED_ORGS", "").strip())
    return frozenset(DEFAULT_TRUSTED_ORGS) | {org for org in extra if org} | _from_pyproject()


def is_trusted(repo_id: str) -> bool:
    """Whether an implicit mapping may load ``org/repo``: its org is trusted."""
    return repo_id.split("/", 1)[0] in trusted_orgs()


def _from_pyproject() -> set[str]:
    pyproject = nearest("pyproject.toml")
    if pyproject is None:
        return set()
    try:
        orgs = kernelhook_table(pyproject).get("trusted-orgs", [])
    except LockfileError:  # an unreadable pyproject adds no trust
        return set()
    return {o for o in orgs if isinstance(o, str)} if isinstance(orgs, list) else set()
