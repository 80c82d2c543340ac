"""The one write to the Hub: ``kernelhook publish`` uploads a kernel repo folder as one commit."""

from __future__ import annotations

from ..repo import RepoAddress
from .client import checked_sha, endpoint
from .errors import translated

# Bytecode never goes up: kernels run from source, and loaders refuse it.
IGNORED = ["**/__pycache__/**", "**/*.pyc", ".git/**"]


def publish_folder(repo: RepoAddress, folder: str, branch: str, message: str) -> str:
    """Upload a folder as one commit on a branch, creating the repo and the branch as needed.

    Returns:
        The new commit's sha.

    Raises:
        HubError: the Hub refused or could not be reached (HubUnavailable when offline).
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint())
    with translated(repo, branch):
        api.create_repo(repo.repo_id, repo_type=repo.repo_type, exist_ok=True)
        branches = {ref.name for ref in api.list_repo_refs(repo.repo_id, repo_type=repo.repo_type).branches}
        if branch not in branches:
            api.create_branch(repo.repo_id, branch=branch, repo_type=repo.repo_type, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo.repo_id, repo_type=repo.repo_type,
                                 revision=branch, commit_message=message, ignore_patterns=IGNORED)
    return checked_sha(info.oid, repo)
