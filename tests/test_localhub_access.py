"""LocalHub's refusal switches against the real huggingface_hub client (no mocks of the client).

Each switch answers the way the Hub (or a self-hosted mirror) does, so the client
raises the exception type it raises there: tokens it does not accept, unknown
repos asked for anonymously, mirrors that do not hold a repo, gated repos, and
pull request refs.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from kernelhook.testing import LocalHub

GOOD = "hf_good_token"
REPO = "acme/demo"


@pytest.fixture
def hub(tmp_path):
    with LocalHub(tmp_path / "hub", accepted_tokens={GOOD}, anonymous_unknown_repo_status=401) as running:
        running.create_repo(REPO)
        running.shas = {"main": running.commit(REPO, {"README.md": "# demo\n", "w.bin": b"weights"})}
        yield running


def api(hub: LocalHub, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def download(hub: LocalHub, tmp_path, filename: str = "w.bin", token: str | bool = False, **kwargs) -> bytes:
    path = hf_hub_download(REPO, filename, endpoint=hub.url, cache_dir=str(tmp_path / "hf-cache"), token=token,
                           **kwargs)
    with open(path, "rb") as f:
        return f.read()


def raw(hub: LocalHub, path: str, token: str | None = None):
    """(status, headers) of a GET, error or not: the headers are what clients read."""
    request = urllib.request.Request(hub.url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


# -- accepted_tokens -------------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["model_info", "download"])
def test_a_token_the_hub_does_not_accept_is_401_invalid_credentials_even_for_a_public_repo(hub, tmp_path, call):
    with pytest.raises(HfHubHTTPError) as info:
        api(hub, "hf_revoked").model_info(REPO) if call == "model_info" else download(hub, tmp_path, token="hf_bad")
    # Not RepositoryNotFoundError: hf_raise_for_status tells this 401 apart by its message.
    assert not isinstance(info.value, RepositoryNotFoundError)
    assert info.value.response.status_code == 401
    assert info.value.response.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert "X-Error-Code" not in info.value.response.headers
    assert info.value.server_message == "Invalid credentials in Authorization header"


def test_an_accepted_token_and_no_token_both_pass(hub, tmp_path):
    assert api(hub, GOOD).model_info(REPO).sha == hub.shas["main"]
    assert api(hub).model_info(REPO).sha == hub.shas["main"]
    assert download(hub, tmp_path, token=GOOD) == b"weights"
    assert [r.authorization for r in hub.requests][:2] == [f"Bearer {GOOD}", None]


def test_without_accepted_tokens_any_token_passes(tmp_path):
    with LocalHub(tmp_path / "open") as hub:
        hub.create_repo(REPO)
        hub.commit(REPO, {"a.txt": "a"})
        assert api(hub, "anything").model_info(REPO).id == REPO


# -- anonymous_unknown_repo_status ---------------------------------------------------------------

def test_an_unknown_repo_is_401_without_an_error_code_to_anonymous_clients(hub, tmp_path):
    with pytest.raises(HfHubHTTPError) as info:
        api(hub).model_info("acme/nothing")
    # On https URLs hf_raise_for_status reads this 401 as RepositoryNotFoundError (REPO_API_REGEX
    # matches https only); over the loopback's plain http it stays a 401 HfHubHTTPError.
    assert info.value.response.status_code == 401 and "X-Error-Code" not in info.value.response.headers
    assert info.value.server_message != "Invalid credentials in Authorization header"
    with pytest.raises(HfHubHTTPError) as info:
        hf_hub_download("acme/nothing", "w.bin", endpoint=hub.url, cache_dir=str(tmp_path / "c"), token=False)
    assert info.value.response.status_code == 401


def test_an_unknown_repo_is_404_repo_not_found_to_clients_with_a_token(hub):
    with pytest.raises(RepositoryNotFoundError) as info:
        api(hub, GOOD).model_info("acme/nothing")
    assert info.value.response.status_code == 404


def test_only_401_and_404_are_answers_for_unknown_repos(tmp_path):
    with pytest.raises(ValueError, match="401 or 404"):
        LocalHub(tmp_path / "h", anonymous_unknown_repo_status=403)
    with pytest.raises(ValueError, match="set of tokens"):
        LocalHub(tmp_path / "h", accepted_tokens="one-token")


# -- mirror_mode ---------------------------------------------------------------------------------

def test_a_mirror_in_bare_404_mode_answers_unknown_repos_without_an_error_code(hub):
    hub.mirror_mode("bare-404")
    for token in (False, GOOD):
        with pytest.raises(HfHubHTTPError) as info:
            api(hub, token).list_repo_refs("acme/nothing", repo_type="kernel")
        assert not isinstance(info.value, RepositoryNotFoundError)
        assert info.value.response.status_code == 404 and "X-Error-Code" not in info.value.response.headers
        assert info.value.response.text == "Not Found"
    status, headers = raw(hub, "/acme/nothing/resolve/main/w.bin")
    assert status == 404 and "X-Error-Code" not in headers
    assert api(hub).model_info(REPO).sha == hub.shas["main"]  # repos it holds answer as before


def test_a_mirror_in_refs_not_cached_mode_answers_entry_not_found_for_unknown_repos(hub):
    hub.mirror_mode("refs-not-cached")
    with pytest.raises(RemoteEntryNotFoundError) as info:
        api(hub).list_repo_refs("acme/nothing")
    assert info.value.server_message == "Repository refs are not cached locally"
    with pytest.raises(RemoteEntryNotFoundError):
        api(hub, GOOD).model_info("acme/nothing", revision="v1")


def test_mirror_mode_none_answers_as_the_hub_again_and_other_modes_are_refused(hub):
    hub.mirror_mode("bare-404")
    hub.mirror_mode(None)
    with pytest.raises(RepositoryNotFoundError):
        api(hub, GOOD).model_info("acme/nothing")
    with pytest.raises(ValueError, match="bare-404"):
        hub.mirror_mode("teapot")


# -- gate ----------------------------------------------------------------------------------------

def test_a_gated_repo_lists_but_refuses_downloads_with_403_gated_repo(hub, tmp_path):
    hub.gate(REPO, granted_tokens={GOOD})
    info = api(hub).model_info(REPO)
    assert info.gated == "manual" and info.sha == hub.shas["main"]
    assert {f.path for f in api(hub).list_repo_tree(REPO)} == {"README.md", "w.bin"}
    assert [ref.name for ref in api(hub).list_repo_refs(REPO).branches] == ["main"]
    with pytest.raises(GatedRepoError) as refused:
        download(hub, tmp_path)
    assert refused.value.response.status_code == 403
    assert f"{hub.url}/{REPO}" in refused.value.server_message  # where to ask for access
    assert download(hub, tmp_path, token=GOOD) == b"weights"  # a granted token gets the file
    hub.ungate(REPO)
    assert download(hub, tmp_path / "again") == b"weights"
    assert api(hub).model_info(REPO).gated is False


def test_a_gated_kernel_repo_points_at_its_kernel_page(hub):
    hub.create_repo("acme/k", repo_type="kernel")
    hub.commit("acme/k", {"a.txt": "a"}, repo_type="kernel")
    hub.gate("acme/k", repo_type="kernel")
    status, headers = raw(hub, "/kernels/acme/k/resolve/main/a.txt")
    assert status == 403 and headers["X-Error-Code"] == "GatedRepo"
    assert f"{hub.url}/kernels/acme/k" in headers["X-Error-Message"]
    with pytest.raises(ValueError):
        hub.gate("not-a-repo-id")


# -- create_pull_request -------------------------------------------------------------------------

def test_pull_requests_are_refs_pr_n_that_resolve_and_download_without_moving_branches(hub, tmp_path):
    first = hub.create_pull_request(REPO, {"w.bin": b"pr weights"}, message="try new weights")
    second = hub.create_pull_request(REPO, {"extra.txt": "x"})
    assert [n for n, _ in (first, second)] == [1, 2]
    client = api(hub)
    assert client.model_info(REPO, revision="refs/pr/1").sha == first[1]
    assert client.model_info(REPO).sha == hub.shas["main"]  # main did not move
    assert download(hub, tmp_path, revision="refs/pr/1") == b"pr weights"
    assert download(hub, tmp_path, revision="refs/pr/2") == b"weights"  # each starts from main
    refs = client.list_repo_refs(REPO, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", first[1]), ("refs/pr/2", second[1])]
    assert [r.name for r in refs.branches] == ["main"]
    assert client.list_repo_refs(REPO).pull_requests is None  # listed only when asked for
    with pytest.raises(RevisionNotFoundError):
        client.model_info(REPO, revision="refs/pr/3")


def test_a_pull_request_needs_an_existing_base_branch(hub):
    with pytest.raises(ValueError, match="not a branch"):
        hub.create_pull_request(REPO, {"a.txt": "a"}, base="v9")
