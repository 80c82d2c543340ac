"""``kernelhook publish DIR --repo ORG/NAME --version N``: check a kernel repo folder, then upload it.

Nothing goes up that ``kernelhook check`` refuses. The folder becomes one commit
on the branch ``vN`` (by the kernels convention, major version N), creating the
repo and the branch as needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .. import hub
from ..errors import KernelHookError
from ..loading.names import parse_repo_id
from ..repo import RepoAddress
from .check import check_repo


class Published(NamedTuple):
    repo: RepoAddress
    branch: str
    commit: str


def publish(folder: Path, repo_id: str, version: int, repo_type: str = "model") -> Published:
    """Check ``folder``, then upload it as one commit on the branch ``v{version}`` of ``repo_id``.

    Returns:
        The repo, the branch and the new commit's sha.

    Raises:
        KernelHookError: the folder fails ``kernelhook check`` (nothing is uploaded).
        InvalidKernelName: ``repo_id`` is not ``org/name``.
        HubError: the Hub refused the upload or could not be reached (the message names the folder,
            the repo and branch, the Hub and the fix).
    """
    name = parse_repo_id(repo_id)  # validates the id before any work
    problems, _ = check_repo(Path(folder), name.repo)
    if problems:
        raise KernelHookError(f"{folder} fails `kernelhook check` ({problems[0]}, and {len(problems) - 1} more); "
                              f"nothing was uploaded. Fix: run `kernelhook check {folder}` and mend what it lists.")
    repo = RepoAddress(f"{name.org}/{name.repo}", repo_type)
    branch = f"v{version}"
    try:
        commit = hub.publish_folder(repo, str(folder), branch, f"Publish version {version} of {repo.repo_id}")
    except hub.HubError as exc:
        fix = ("unset HF_HUB_OFFLINE: publishing needs the Hub" if hub.offline() else
               "check HF_ENDPOINT, and that HF_TOKEN is a token with write access to the repo")
        raise hub.HubError(f"could not publish {folder} to {repo} (branch {branch}) at {hub.endpoint()}: "
                           f"{hub.explain(exc)}. Nothing was uploaded. Fix: {fix}.", exc.url) from exc
    return Published(repo, branch, commit)
