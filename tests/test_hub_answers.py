"""How kernelhook reads the Hub's refusals: bad tokens, gated repos, mirrors, pull requests.

The answers come from LocalHub's switches (tests/test_localhub_access.py checks them
against huggingface_hub), over both of kernelhook's ways of asking: plain HTTP, and
huggingface_hub's session when plain HTTP cannot connect (`transport`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import pytest

import kernelhook
from kernelhook.errors import (
    DownloadError,
    GatedKernelError,
    HubUnreachableError,
    InvalidTokenError,
    KernelNotFoundError,
    RevisionNotFoundError,
)
from kernelhook.hub import client as hub_client
from kernelhook.hub import errors as hub_errors
from kernelhook.testing import LocalHub

from .repos import new_layout

GOOD = "hf_good_token"
VARIANT = "torch-universal"


@pytest.fixture(scope="module")
def strict_hub(tmp_path_factory):
    """A Hub that checks tokens and answers unknown repos with 401 to anonymous clients, as the real one does."""
    with LocalHub(tmp_path_factory.mktemp("strict-hub"), accepted_tokens={GOOD},
                  anonymous_unknown_repo_status=401) as hub:
        hub.shas = {}
        hub.create_repo("acme/relu-pub", repo_type="kernel")
        hub.shas["v1"] = hub.commit("acme/relu-pub", new_layout(VARIANT, "1.0"), repo_type="kernel", branch="v1")
        hub.shas["next"] = hub.commit("acme/relu-pub", new_layout(VARIANT, "next"), repo_type="kernel", branch="next")
        hub.create_repo("mirror-org/relu-kernel")  # an older kernel: a plain model repo
        hub.shas["model"] = hub.commit("mirror-org/relu-kernel", new_layout(VARIANT, "model"), branch="v1")
        hub.create_repo("acme/gated", repo_type="kernel")
        hub.shas["gated"] = hub.commit("acme/gated", new_layout(VARIANT, "gated"), repo_type="kernel", branch="v1")
        hub.gate("acme/gated", repo_type="kernel", granted_tokens={GOOD})
        hub.create_repo("acme/relu-pr", repo_type="kernel")
        hub.shas["main"] = hub.commit("acme/relu-pr", new_layout(VARIANT, "main"), repo_type="kernel")
        hub.shas["pr"] = hub.create_pull_request("acme/relu-pr", new_layout(VARIANT, "pr"), repo_type="kernel")[1]
        yield hub


@pytest.fixture
def hub(strict_hub, tmp_path, monkeypatch, system):
    """The strict hub with a fresh cache, its mirror mode and faults reset afterwards."""
    monkeypatch.setenv("HF_ENDPOINT", strict_hub.url)
    monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_client, "BACKOFF_S", 0.01)
    strict_hub.clear_requests()
    try:
        yield strict_hub
    finally:
        strict_hub.mirror_mode(None)
        strict_hub.clear_faults()


@pytest.fixture(params=["plain", "huggingface_hub"])
def transport(request, monkeypatch):
    """Plain HTTP, or huggingface_hub's session (as when only its proxy or CA settings can connect)."""
    if request.param == "huggingface_hub":
        def no_answer(url):
            raise hub_client._NoAnswer("connection refused")

        monkeypatch.setattr(hub_client, "_get_json_plain", no_answer)
    return request.param


def _objects(cache: str) -> list[Path]:
    return [p for p in Path(cache, "v1", "objects").rglob("*") if p.is_file()] if Path(cache).exists() else []


# -- a token the Hub refuses -----------------------------------------------------------------------

def test_a_refused_token_is_an_invalid_token_error_naming_the_fix_not_a_missing_repo(hub, transport, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(InvalidTokenError) as info:
        kernelhook.get_kernel("acme/relu-pub", version=1)
    message = str(info.value)
    assert "acme/relu-pub" in message and "HF_TOKEN" in message and "hf auth login" in message
    assert "Invalid credentials in Authorization header" in message and "No Hub repo answers" not in message
    assert isinstance(info.value, HubUnreachableError)  # the Hub could not be asked, as in an outage
    # The token is refused for every repo: one candidate is enough to know.
    assert hub.count(path_contains="/refs") == 1


@pytest.mark.parametrize("revision", [{"version": 1}, {}], ids=["branch", "unpinned"])
def test_a_refused_token_keeps_using_the_commit_resolved_before(hub, transport, monkeypatch, caplog, revision):
    first = kernelhook.get_kernel("acme/relu-pub", **revision)
    assert kernelhook.origin(first).commit == hub.shas["v1"]
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with caplog.at_level(logging.WARNING, logger="kernelhook"):
        again = kernelhook.get_kernel("acme/relu-pub", **revision)
    assert again is first
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "Invalid credentials" in warning and "HF_TOKEN" in warning and hub.shas["v1"] in warning


def test_a_refused_token_on_the_build_listing_is_an_invalid_token_error(hub, monkeypatch):
    kernelhook.get_kernel("acme/relu-pub", version=1)  # the name is known here now
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(InvalidTokenError) as info:  # a full sha pin asks nothing before the listing
        kernelhook.get_kernel("acme/relu-pub", revision=hub.shas["next"])
    assert "could not list build/" in str(info.value) and "hf auth login" in str(info.value)
    assert hub.count(path_contains=f"/tree/{hub.shas['next']}/build") == 1


def test_a_valid_token_is_not_mistaken_for_an_invalid_one(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    assert kernelhook.get_kernel("acme/relu-pub", version=1).VERSION == "1.0"


# -- gated repos -----------------------------------------------------------------------------------

def test_a_gated_repo_says_how_to_get_access_and_caches_nothing(hub, tmp_path):
    before = set(sys.modules)
    with pytest.raises(GatedKernelError) as info:
        kernelhook.get_kernel("acme/gated", version=1)
    message = str(info.value)
    assert "gated" in message and f"{hub.url}/kernels/acme/gated" in message
    assert "accept the conditions" in message and "HF_TOKEN" in message
    assert isinstance(info.value, DownloadError)
    assert _objects(str(tmp_path / "cache")) == []
    assert {name for name in set(sys.modules) - before if name.startswith(("_kernelhook_", "kernels_hub."))} == set()


def test_a_gated_repo_loads_with_a_token_granted_access(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    assert kernelhook.get_kernel("acme/gated", version=1).VERSION == "gated"


# -- mirrors and anonymous 401s during name discovery ------------------------------------------------

MODES = {
    "anonymous-401": (None, "401 Invalid username or password."),  # the strict hub's own answer
    "bare-404": ("bare-404", "404 Not Found"),
    "refs-not-cached": ("refs-not-cached", "404 EntryNotFound"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_not_here_answers_move_discovery_on_to_the_next_spelling_and_repo_type(hub, transport, mode):
    hub.mirror_mode(MODES[mode][0])
    # Tried: mirror_org/relu_kernel, mirror_org/relu-kernel, mirror-org/relu_kernel as kernel and model
    # repos, then mirror-org/relu-kernel as a kernel repo: all not here; the model repo is.
    module = kernelhook.get_kernel("mirror_org/relu_kernel", version=1)
    assert module.VERSION == "model" and kernelhook.origin(module).commit == hub.shas["model"]
    assert hub.count(path_contains="/refs") == 8


@pytest.mark.parametrize("mode", list(MODES))
def test_when_every_candidate_says_not_here_the_error_lists_each_with_its_answer(hub, transport, mode):
    mode_switch, answer = MODES[mode]
    hub.mirror_mode(mode_switch)
    with pytest.raises(KernelNotFoundError) as info:
        importlib.import_module("kernels_hub.nobody_here.nothing")
    message = str(info.value)
    for candidate in ("nobody_here/nothing (kernel repo)", "nobody_here/nothing (model repo)",
                      "nobody-here/nothing (kernel repo)", "nobody-here/nothing (model repo)"):
        assert f"{candidate}: {answer}" in message
    assert "kernels_hub.nobody_here.nothing" in message and "HF_TOKEN" in message


def test_any_other_refusal_of_one_candidate_moves_discovery_on(hub, transport):
    # A mirror without kernel repos may refuse their API paths outright rather than say "not found".
    hub.inject("/api/kernels/", status=403, times=None, headers={"X-Error-Message": "kernel repos are not mirrored"})
    assert kernelhook.get_kernel("mirror-org/relu-kernel", version=1).VERSION == "model"


def test_a_server_error_still_stops_discovery_as_an_outage(hub, transport):
    hub.mirror_mode("bare-404")
    hub.inject("/api/models/mirror_org/relu_kernel/refs", status=503, times=None)
    with pytest.raises(HubUnreachableError) as info:
        kernelhook.get_kernel("mirror_org/relu_kernel", version=1)
    assert not isinstance(info.value, KernelNotFoundError) and "503" in str(info.value)


# -- pull requests -----------------------------------------------------------------------------------

def test_a_pull_request_revision_loads_the_pull_requests_commit(hub, transport):
    module = kernelhook.get_kernel("acme/relu-pr", revision="refs/pr/1")
    assert module.VERSION == "pr" and kernelhook.origin(module).commit == hub.shas["pr"]
    # Resolved on the revision endpoint, the ref quoted as one path segment.
    assert hub.count(path_contains="/api/kernels/acme/relu-pr/revision/refs%2Fpr%2F1") == 1
    assert kernelhook.get_kernel("acme/relu-pr").VERSION == "main"  # the branch did not move


def test_a_pull_request_is_remembered_for_offline_use_like_a_branch(hub, monkeypatch, caplog):
    first = kernelhook.get_kernel("acme/relu-pr", revision="refs/pr/1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.clear_requests()
    with caplog.at_level(logging.WARNING, logger="kernelhook"):
        again = kernelhook.get_kernel("acme/relu-pr", revision="refs/pr/1")
    assert again is first and hub.requests == []
    assert any("refs/pr/1" in r.getMessage() and hub.shas["pr"] in r.getMessage() for r in caplog.records)


def test_a_pull_request_also_loads_through_importlib(hub):
    module = importlib.import_module("kernels_hub.acme.relu-pr@refs/pr/1")
    assert module.VERSION == "pr"
    assert importlib.import_module("kernels_hub.acme.relu-pr@refs/pr/1.layers").ReLU().forward(-1) == 0


def test_a_pull_request_the_repo_does_not_have_is_revision_not_found(hub):
    with pytest.raises(RevisionNotFoundError) as info:
        kernelhook.get_kernel("acme/relu-pr", revision="refs/pr/7")
    assert "refs/pr/7" in str(info.value) and "main" in str(info.value)


# -- the mapping itself, as a table ------------------------------------------------------------------

@pytest.mark.parametrize(
    "status, headers, body, kind",
    [
        (404, {"X-Error-Code": "RepoNotFound"}, b"", hub_errors.RepoMissing),
        (401, {"X-Error-Message": "Invalid username or password."}, b"", hub_errors.RepoMissing),  # anonymous
        (401, {}, b"", hub_errors.RepoMissing),  # a 401 that says nothing: "not found", as huggingface_hub reads it
        (401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b"", hub_errors.TokenRejected),
        (401, {}, b'{"error":"Invalid credentials in Authorization header"}', hub_errors.TokenRejected),  # body only
        (404, {}, b"Not Found", hub_errors.RepoMissing),  # a mirror's web server: no X-Error-Code
        (404, {}, b"<html><body>404</body></html>", hub_errors.RepoMissing),
        (404, {"X-Error-Code": "EntryNotFound"}, b"", hub_errors.EntryMissing),  # the client decides what is missing
        (404, {"X-Error-Code": "RevisionNotFound"}, b"", hub_errors.RevisionMissing),
        (403, {"X-Error-Code": "GatedRepo"}, b"", hub_errors.RepoGated),
        (403, {}, b'{"error":"forbidden"}', hub_errors.HubError),
        (503, {}, b'{"error":"down for maintenance"}', hub_errors.HubUnavailable),
        (429, {}, b"", hub_errors.HubUnavailable),
    ],
)
def test_error_answers_map_to_the_hub_error_family(status, headers, body, kind):
    error = hub_errors.error_for_status(status, headers, "http://hub/api/models/a/b/refs", body)
    assert type(error) is kind and error.status == status
    assert str(status) in error.answer
    if kind is hub_errors.TokenRejected:
        assert "hf auth login" in str(error)
    if kind is hub_errors.HubUnavailable:
        assert error.retryable and str(error).startswith(f"HTTP {status}")
