"""LocalHub's mirror switches (redirects to another host, paged listings with foreign Link URLs)
against the real huggingface_hub client, and the headers each served request is recorded with.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from huggingface_hub import HfApi

from kernelhook.testing import LocalHub

from .servers import Forwarder

FILES = {f"build/v/f{i}.py": f"X = {i}\n" for i in range(5)}


@pytest.fixture
def hub(tmp_path):
    with LocalHub(tmp_path / "hub") as running:
        running.create_repo("acme/mirror")
        running.commit("acme/mirror", FILES)
        running.clear_requests()
        yield running


def test_paged_listings_name_the_next_page_on_the_link_base(hub):
    hub.page_tree_listings(2, link_base="https://huggingface.co")
    with urllib.request.urlopen(f"{hub.url}/api/models/acme/mirror/tree/main/build?recursive=true") as resp:
        first, link = resp.read(), resp.headers["Link"]
    assert link.startswith("<https://huggingface.co/api/models/acme/mirror/tree/main/build?") and "cursor=2" in link
    assert link.endswith('>; rel="next"') and first.count(b'"path"') == 2


def test_huggingface_hub_follows_the_paged_listing_to_the_link_base_and_reads_every_page(hub):
    with Forwarder(hub.url) as other:  # the Link host: another port, relaying to the hub
        hub.page_tree_listings(2, link_base=other.url)
        listed = [e.path for e in HfApi(endpoint=hub.url).list_repo_tree("acme/mirror", "build", recursive=True)]
        assert sorted(listed) == sorted(["build/v", *FILES])
        assert hub.count("GET", "/tree/") == 3 and len(other.seen) == 2  # 6 entries, 2 a page: 2 via the Link


def test_paging_stops_when_switched_off_or_cleared(hub):
    url = f"{hub.url}/api/models/acme/mirror/tree/main/build?recursive=true"
    for switch_off in (lambda: hub.page_tree_listings(None), hub.clear_faults):
        hub.page_tree_listings(4)
        switch_off()
        with urllib.request.urlopen(url) as resp:
            assert "Link" not in resp.headers and resp.read().count(b'"path"') == 6


def test_a_redirect_sends_path_and_query_to_the_other_host_and_counts_its_uses(hub):
    with Forwarder(hub.url) as other:
        redirect = hub.redirect("/refs", other.url, status=307, times=1)
        request = urllib.request.Request(f"{hub.url}/api/models/acme/mirror/refs?include_prs=1",
                                         headers={"X-Test": "seen"})
        with urllib.request.urlopen(request) as resp:
            assert resp.status == 200 and resp.geturl() == f"{other.url}/api/models/acme/mirror/refs?include_prs=1"
        assert redirect.used == 1
        assert [(s.method, s.target) for s in other.seen] == [("GET", "/api/models/acme/mirror/refs?include_prs=1")]
        assert [r.status for r in hub.requests] == [307, 200]  # the redirect, then the relayed request
        assert {r.headers.get("x-test") for r in hub.requests} == {"seen"}  # every header, names lower-cased


def test_a_redirect_matches_its_method_and_path_only(hub):
    hub.redirect("/refs", "http://127.0.0.1:9", method="HEAD")
    with urllib.request.urlopen(f"{hub.url}/api/models/acme/mirror/refs") as resp:  # a GET: not redirected
        assert resp.status == 200


@pytest.mark.parametrize("bad", [
    {"status": 200},  # not a redirect
    {"status": 404},
    {"times": 0},  # could never take effect
    {"to": "127.0.0.1:9"},  # not a URL: the Location would be relative
])
def test_a_redirect_that_could_not_work_is_refused(hub, bad):
    arguments = {"to": "http://127.0.0.1:9", **bad}
    with pytest.raises(ValueError):
        hub.redirect("/refs", arguments.pop("to"), **arguments)


def test_a_page_size_below_one_is_refused(hub):
    with pytest.raises(ValueError):
        hub.page_tree_listings(0)


def test_a_redirect_loop_is_the_clients_to_stop(hub):
    hub.redirect("/refs", hub.url)  # every time, to itself
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{hub.url}/api/models/acme/mirror/refs")
    assert info.value.code == 302 and hub.count("GET", "/refs") > 1
