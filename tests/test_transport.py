"""Security and transport of the requests kernelhook sends itself (refs, revision, the build/ listing).

They go over urllib when that takes the route huggingface_hub's client would take, else
through that client's session; either way they must be at least as careful as it is: the
token never leaves HF_ENDPOINT's origin, ALL_PROXY, SOCKS proxies and a client factory are
honoured, a request that gets no HTTP answer is asked again through huggingface_hub, a spent
rate limit is waited out, and mirrors' Link URLs on huggingface.co are asked of the mirror.

Each test has a LocalHub of its own (a stalled answer, logged late, must not reach another
test's request log; stopping the hub ends it) and uses the real huggingface_hub client; proxies and other hosts are the small
loopback servers in tests/servers.py.
"""

from __future__ import annotations

import logging
import math
import types
from urllib.parse import urlsplit

import pytest

import kernelhook
import kernelhook.hub.client
from kernelhook.errors import HubUnreachableError
from kernelhook.hub.client import MAX_RATE_LIMIT_WAIT_S, plain_http_carries
from kernelhook.testing import LocalHub

from .conftest import run_python
from .servers import Forwarder, Socks5Proxy

REPO = "acme/transport"
REFS = f"/api/models/{REPO}/refs"
TREE = f"/api/models/{REPO}/tree/"
FILES = {f"build/torch-universal/part{i}.py": f"N = {i}\n" for i in range(7)}
FILES["build/torch-universal/__init__.py"] = "from . import " + ", ".join(f"part{i}" for i in range(7)) + "\nVERSION = '1.0'\n"
TOKEN = "hf_transport_secret"
PROXY_VARIABLES = ("ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                   "NO_PROXY", "no_proxy")


@pytest.fixture
def thub(tmp_path):
    """A Hub of this test's own, holding REPO on main and v1."""
    with LocalHub(tmp_path / "hub") as local_hub:
        local_hub.create_repo(REPO)
        local_hub.sha = local_hub.commit(REPO, FILES)
        local_hub.set_branch(REPO, "v1", "main")
        yield local_hub


@pytest.fixture
def tenv(thub, tmp_path, monkeypatch, system):
    """kernelhook pointed at thub with a fresh cache and no proxy variables; the same for a child's environment."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", thub.url)
    monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
    thub.clear_requests()
    return {"HF_ENDPOINT": thub.url, "KERNELHOOK_CACHE": str(tmp_path / "cache")}  # children copy os.environ


@pytest.fixture
def sleeps(monkeypatch):
    """kernelhook's retry waits, recorded instead of slept (its own retry loop still runs)."""
    waited: list[float] = []
    monkeypatch.setattr(kernelhook.hub.client, "time", types.SimpleNamespace(sleep=waited.append))
    return waited


@pytest.fixture
def hf_factory():
    """Give huggingface_hub a client factory of one's own (its client marks requests); its default after."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    def marking_factory():
        client = default_client_factory()
        client.headers["X-Kernelhook-Test"] = "through-the-factory"
        return client

    yield lambda: set_client_factory(marking_factory)
    set_client_factory(default_client_factory)


@pytest.fixture(params=["plain", "huggingface_hub"])
def transport(request, hf_factory):
    """Each test twice: kernelhook's own urllib request, and huggingface_hub's session (a factory is set)."""
    if request.param == "huggingface_hub":
        hf_factory()
    return request.param


@pytest.fixture
def other(thub):
    """Another origin on loopback (another port) that relays to thub and records what it was sent."""
    with Forwarder(thub.url) as forwarder:
        yield forwarder


def _load():
    return kernelhook.get_kernel(REPO, revision="v1")


# -- 1. the token stays on HF_ENDPOINT's origin ------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_another_origin_is_followed_without_the_token(tenv, thub, other, monkeypatch, transport,
                                                                    status):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    redirect = thub.redirect(REFS, other.url, status=status, times=1)
    assert _load().VERSION == "1.0"
    assert redirect.used == 1
    refs = [r for r in thub.requests if r.path == REFS]
    assert [(r.status, r.authorization) for r in refs] == [(status, f"Bearer {TOKEN}"), (200, None)]
    assert [(s.path, s.authorization) for s in other.seen] == [(REFS, None)]  # the other port never saw it
    assert all(r.authorization == f"Bearer {TOKEN}" for r in thub.requests if r.path != REFS)


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_within_the_origin_keeps_the_token(tenv, thub, monkeypatch, transport, status):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    thub.redirect(REFS, thub.url, status=status, times=1)
    assert _load().VERSION == "1.0"
    refs = [r for r in thub.requests if r.path == REFS]
    assert [(r.status, r.authorization) for r in refs] == [(status, f"Bearer {TOKEN}"), (200, f"Bearer {TOKEN}")]


def test_a_next_page_on_another_origin_is_asked_without_the_token(tenv, thub, other, monkeypatch, transport):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    thub.page_tree_listings(3, link_base=other.url)
    assert _load().VERSION == "1.0"
    first, *_ = [r for r in thub.requests if r.path.startswith(TREE)]
    assert first.authorization == f"Bearer {TOKEN}"
    pages = [s for s in other.seen if s.path.startswith(TREE)]
    assert len(pages) == 2 and {s.authorization for s in pages} == {None}  # 9 entries (a folder, 8 files), 3 a page


# -- 4. mirrors' Link URLs on huggingface.co ---------------------------------------------------------------


def test_link_urls_on_huggingface_co_are_asked_of_the_configured_endpoint(tenv, thub, transport):
    thub.page_tree_listings(2, link_base="https://huggingface.co")
    module = _load()
    assert module.VERSION == "1.0" and module.part6.N == 6  # every page's files, so every page
    pages = [r for r in thub.requests if r.path.startswith(TREE)]
    assert len(pages) == math.ceil((1 + len(FILES)) / 2) and {r.status for r in pages} == {200}  # folder + files


# -- 2. the transport huggingface_hub is configured with ----------------------------------------------------


@pytest.mark.parametrize("direct", ["name only the proxy resolves", "direct route blocked"])
def test_all_proxy_carries_every_request_when_it_is_the_only_route(tenv, thub, tmp_path, direct):
    with Forwarder(thub.url) as proxy, Forwarder(None) as blocked:
        # Either the endpoint's name means nothing outside the proxy, or its direct route is a
        # firewall answering 403 (an HTTP answer: nothing to fall back from).
        port = urlsplit(thub.url).port
        endpoint = f"http://hub.kernelhook.invalid:{port}" if direct.startswith("name") else blocked.url
        env = dict(tenv, HF_ENDPOINT=endpoint, ALL_PROXY=proxy.url)
        result = run_python("""
            import importlib, kernelhook
            module = importlib.import_module("kernels_hub.acme.transport@v1")
            print(module.VERSION, kernelhook.origin(module).commit)
            """, env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["1.0", thub.sha]
        assert blocked.seen == []
        assert [s.target for s in proxy.seen] and all(s.target.startswith(endpoint + "/") for s in proxy.seen)
        assert [s.path for s in proxy.seen] == [r.path for r in thub.requests]  # nothing reached the hub directly


@pytest.mark.parametrize("variable", ["ALL_PROXY", "HTTP_PROXY"])
def test_a_socks_proxy_carries_every_request_when_it_is_the_only_route(tenv, thub, variable):
    """Through a real SOCKS5 proxy (socks5h: it resolves the endpoint's name, which means nothing elsewhere),
    with httpx's SOCKS support (socksio) installed as a user of such a proxy has it."""
    port = urlsplit(thub.url).port
    endpoint = f"http://hub.kernelhook.invalid:{port}"
    with Socks5Proxy({"hub.kernelhook.invalid": "127.0.0.1"}) as proxy:
        env = dict(tenv, HF_ENDPOINT=endpoint, **{variable: proxy.url})
        result = run_python("""
            import importlib, kernelhook
            module = importlib.import_module("kernels_hub.acme.transport@v1")
            print(module.VERSION, kernelhook.origin(module).commit)
            """, env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["1.0", thub.sha]
        assert proxy.targets and set(proxy.targets) == {f"hub.kernelhook.invalid:{port}"}
        assert [r.path for r in thub.requests]  # the Hub answered, and only the proxy could reach it by that name


def test_a_client_factory_given_to_huggingface_hub_carries_every_request(tenv, thub):
    result = run_python("""
        import importlib
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory

        def factory():
            client = default_client_factory()
            client.headers["X-Kernelhook-Test"] = "through-the-factory"
            return client

        set_client_factory(factory)
        print(importlib.import_module("kernels_hub.acme.transport@v1").VERSION)
        """, tenv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1.0"]
    assert any(r.path == REFS for r in thub.requests)  # the one request a warm branch import sends
    assert {r.headers.get("x-kernelhook-test") for r in thub.requests} == {"through-the-factory"}


@pytest.mark.parametrize("variables, carries", [
    ({}, True),
    ({"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}, True),  # urllib honours these
    ({"ALL_PROXY": "http://127.0.0.1:9"}, False),  # urllib knows no ALL_PROXY
    ({"all_proxy": "socks5://127.0.0.1:9"}, False),
    ({"ALL_PROXY": " "}, True),  # set, but to nothing: no proxy
    ({"HTTPS_PROXY": "socks5h://127.0.0.1:9"}, False),  # urllib would speak HTTP to a SOCKS proxy
    ({"http_proxy": "SOCKS4://127.0.0.1:9"}, False),
    ({"NO_PROXY": "socks.example"}, True),  # not a proxy
])
def test_plain_http_is_used_only_where_it_takes_huggingface_hubs_route(monkeypatch, variables, carries):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert plain_http_carries("http://127.0.0.1:1/api/models/a/b/refs") is carries


def test_plain_http_is_not_used_once_huggingface_hub_has_a_client_factory(monkeypatch, hf_factory):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    import huggingface_hub.utils._http  # noqa: F401  (imported: its default factory leaves plain HTTP in use)

    assert plain_http_carries("http://127.0.0.1:1/") is True
    hf_factory()
    assert plain_http_carries("http://127.0.0.1:1/") is False


# -- 2. no HTTP answer over plain HTTP: huggingface_hub's session is asked once, and its answer stands -------


def _through_huggingface_hub(record) -> bool:
    return "x-amzn-trace-id" in record.headers  # huggingface_hub's session marks every request it sends


def test_a_plain_request_with_no_answer_in_time_is_asked_again_through_huggingface_hub(tenv, thub, monkeypatch,
                                                                                     sleeps):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    stall = thub.inject(REFS, delay_s=20, times=1)  # accepted, then no status line within the timeout
    assert _load().VERSION == "1.0"
    assert stall.used == 1 and sleeps == []  # no retry loop: the fallback, at once
    answered = [r for r in thub.requests if r.path == REFS and r.status == 200]
    assert len(answered) == 1 and _through_huggingface_hub(answered[0])


def test_a_plain_request_whose_connect_times_out_is_asked_again_through_huggingface_hub(
        thub, tenv, monkeypatch, sleeps, caplog):
    # The endpoint's accept queue is full: the plain connect times out. The fallback is logged
    # before huggingface_hub connects; only then does the endpoint start accepting, so its
    # first connection, and every request it relays, comes after the timeout.
    with Forwarder(thub.url, closed=True) as front:
        opener = _OnMessage("asking through huggingface_hub", front.open)
        logger = logging.getLogger("kernelhook")
        caplog.set_level(logging.DEBUG, logger="kernelhook")
        logger.addHandler(opener)
        try:
            monkeypatch.setenv("HF_ENDPOINT", front.url)
            monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
            assert _load().VERSION == "1.0"
        finally:
            logger.removeHandler(opener)
        assert opener.fired and sleeps == []
        assert front.seen and _through_huggingface_hub(front.seen[0])


class _OnMessage(logging.Handler):
    """Calls `action` once, on the first log record whose message contains `text`."""

    def __init__(self, text: str, action) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.action, self.fired = text, action, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and self.text in record.getMessage():
            self.fired = True
            self.action()


def test_the_fallbacks_answer_is_final(tenv, thub, monkeypatch, sleeps):
    monkeypatch.setattr(kernelhook.hub.client, "RETRIES", 0)  # one try: what the fallback does within it
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    stall = thub.inject(REFS, delay_s=20, times=None)  # the plain request and huggingface_hub's: unanswered
    with pytest.raises(HubUnreachableError, match="(?i)timed out"):
        _load()
    assert stall.used == 2  # plain, then huggingface_hub once; no third way


# -- 3. a spent rate limit ------------------------------------------------------------------------------------


RATE_LIMITED = {"RateLimit": '"api";r=0;t={t}', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}


@pytest.mark.parametrize("reset, waited", [
    (7, 8.0),  # t + 1 s, as huggingface_hub waits
    (55, 56.0),  # longer than any Retry-After kernelhook honours (MAX_WAIT_S): still waited out
    (86400, MAX_RATE_LIMIT_WAIT_S),  # a broken header: capped
])
def test_a_spent_rate_limit_is_waited_out_then_the_load_succeeds(tenv, thub, sleeps, transport, reset, waited):
    headers = {name: value.format(t=reset) for name, value in RATE_LIMITED.items()}
    limited = thub.inject(REFS, status=429, headers=headers, times=2)
    assert _load().VERSION == "1.0"
    assert limited.used == 2 and sleeps == [waited, waited]
    assert [r.status for r in thub.requests if r.path == REFS] == [429, 429, 200]


def test_a_rate_limit_with_requests_left_is_not_a_reset_to_wait_for(tenv, thub, sleeps):
    thub.inject(REFS, status=429, headers={"RateLimit": '"api";r=3;t=55'}, retry_after=2, times=1)
    assert _load().VERSION == "1.0"
    assert sleeps == [2.0]  # the Retry-After, not t + 1


def test_a_rate_limit_that_outlasts_the_retries_names_it(tenv, thub, sleeps, monkeypatch):
    monkeypatch.setattr(kernelhook.hub.client, "RETRIES", 1)
    thub.inject(REFS, status=429, headers={name: value.format(t=55) for name, value in RATE_LIMITED.items()},
                times=None)
    with pytest.raises(HubUnreachableError, match="rate limit is spent; it resets in 55 s"):
        _load()
    assert sleeps == [56.0]
