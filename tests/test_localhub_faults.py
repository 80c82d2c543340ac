"""LocalHub fault injection against the real huggingface_hub client (no mocks of the client).

The client's retry sleeps are recorded instead of slept where a test lets it
retry (`client_sleeps`): its real retry logic runs, just without the wait.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import _http

from kernelhook.testing import Fault, LocalHub, RequestRecord

from .conftest import child_env

BIG = bytes(range(256)) * 300  # 76800 bytes, served from LFS
FILE = "/acme/demo/resolve/main/w.bin"
WAIT_S = 10.0  # bound on every wait a test does itself; well above what a healthy run needs


@pytest.fixture
def hub(tmp_path):
    with LocalHub(tmp_path / "hub") as running:
        running.create_repo("acme/demo")
        running.commit("acme/demo", {"README.md": "# demo\n", "w.bin": BIG})
        running.clear_requests()
        yield running


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url)


@pytest.fixture
def client_sleeps(monkeypatch):
    """The client's retry sleeps, in order; patched where huggingface_hub calls time.sleep."""
    sleeps: list[float] = []
    fake_time = types.SimpleNamespace(sleep=sleeps.append)
    monkeypatch.setattr(file_download, "time", fake_time)
    monkeypatch.setattr(_http, "time", fake_time)
    return sleeps


def download(hub: LocalHub, tmp_path) -> bytes:
    path = hf_hub_download("acme/demo", "w.bin", endpoint=hub.url, cache_dir=str(tmp_path / "cache"))
    with open(path, "rb") as f:
        return f.read()


def raw_get(url: str, method: str = "GET", timeout: float = WAIT_S):
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def raw_exchange(hub: LocalHub, path: str) -> tuple[bytes, bytes, str]:
    """Headers, body bytes and how the stream ended ("eof" or "reset"), read off a bare socket."""
    host, port = hub.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data, ending = b"", "eof"
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            ending = "reset"
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, ending


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- error statuses ------------------------------------------------------------

def test_error_statuses_reach_the_client_with_retry_after(hub, api):
    hub.inject("/api/models/acme/demo", status=500)
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info("acme/demo")  # repo_info does not retry
    assert err.value.response.status_code == 500
    assert "X-Error-Code" not in err.value.response.headers
    hub.inject("/api/models/acme/demo", status=503, retry_after=7)
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info("acme/demo")
    assert (err.value.response.status_code, err.value.response.headers["Retry-After"]) == (503, "7")
    assert json.loads(err.value.response.content) == {"error": "injected"}
    assert api.model_info("acme/demo").id == "acme/demo"  # both faults are used up
    assert [(r.status, r.fault) for r in hub.requests] == [(500, True), (503, True), (200, False)]
    assert hub.requests[0] == RequestRecord("GET", "/api/models/acme/demo", "", 500, None, True)


def test_client_waits_retry_after_then_gets_the_real_answer(hub, tmp_path, client_sleeps):
    fault = hub.inject("/resolve/", method="HEAD", status=503, retry_after=3, times=2)
    assert download(hub, tmp_path) == BIG
    # hf_hub_download: one HEAD without retries, then HEADs with backoff, which sleeps Retry-After + 1.
    assert client_sleeps == [4.0]
    assert [(r.method, r.status, r.fault) for r in hub.requests] == [
        ("HEAD", 503, True), ("HEAD", 503, True), ("HEAD", 200, False), ("GET", 200, False)]
    assert fault.used == 2


def test_injected_headers_drive_the_clients_error_mapping(hub, api):
    hub.inject("/api/models/acme/demo", status=404, body=b"gone",
               headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "no such repo"})
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/demo")
    hub.inject("/api/models/acme/demo", status=502, body=b"<html>bad gateway</html>")
    with pytest.raises(urllib.error.HTTPError) as err:
        raw_get(f"{hub.url}/api/models/acme/demo")
    assert (err.value.code, err.value.read()) == (502, b"<html>bad gateway</html>")


def test_the_first_matching_fault_with_uses_left_wins(hub):
    first = hub.inject("/api/models/", status=500)
    second = hub.inject("/api/models/acme", status=503, times=2)
    codes = []
    for _ in range(4):
        try:
            codes.append(raw_get(f"{hub.url}/api/models/acme/demo")[0])
        except urllib.error.HTTPError as err:
            codes.append(err.code)
    assert codes == [500, 503, 503, 200]
    assert (first.used, second.used) == (1, 2)


# -- matching: method, times, clearing -----------------------------------------

def test_method_filter(hub):
    hub.inject("/resolve/", method="HEAD", status=500, times=None)
    assert raw_get(hub.url + FILE)[0] == 200  # a GET is not a HEAD
    with pytest.raises(urllib.error.HTTPError):
        raw_get(hub.url + FILE, method="HEAD")
    hub.clear_faults()
    hub.inject("/resolve/", method=None, status=500, times=2)
    for method in ("HEAD", "GET"):
        with pytest.raises(urllib.error.HTTPError):
            raw_get(hub.url + FILE, method=method)
    assert [(r.method, r.status, r.fault) for r in hub.requests] == [
        ("GET", 200, False), ("HEAD", 500, True), ("HEAD", 500, True), ("GET", 500, True)]


def test_times_none_lasts_until_cleared(hub, api):
    fault = hub.inject("/api/models/acme/demo", status=500, times=None)
    for _ in range(3):
        with pytest.raises(HfHubHTTPError):
            api.model_info("acme/demo")
    hub.clear_faults()
    assert api.model_info("acme/demo").id == "acme/demo"
    assert fault.used == 3 and [r.fault for r in hub.requests] == [True, True, True, False]


def test_bad_arguments_are_refused(hub):
    for bad in ({"times": 0}, {"truncate_to": 1, "reset_after": 1}, {"chunk_size": 0}, {"delay_s": -1}):
        with pytest.raises(ValueError):
            hub.inject("/", **bad)
    fault = hub.inject("/never", method="get")
    assert isinstance(fault, Fault) and (fault.method, fault.times, fault.used) == ("GET", 1, 0)


# -- replaced bodies -----------------------------------------------------------

def test_replaced_body_of_the_same_size_is_downloaded_as_is(hub, tmp_path):
    other = bytes(reversed(BIG))
    hub.inject(FILE, body=other)
    assert download(hub, tmp_path) == other  # the client does not check the sha256 it was told
    assert [(r.method, r.status, r.fault) for r in hub.requests] == [("HEAD", 200, False), ("GET", 200, True)]


def test_replaced_body_of_another_size_fails_the_size_check(hub, tmp_path):
    hub.inject(FILE, body=b"short")
    with pytest.raises(OSError, match="Consistency check failed"):
        download(hub, tmp_path)


def test_crafted_tree_listing_reaches_the_caller(hub, api):
    hostile = [{"type": "file", "oid": "0" * 40, "size": 4, "path": "../../evil.py"}]
    crafted = json.dumps(hostile).encode()
    hub.inject("/tree/main", body=crafted)
    assert [e.path for e in api.list_repo_tree("acme/demo")] == ["../../evil.py"]
    hub.inject("/tree/main", body=crafted)
    status, headers, body = raw_get(f"{hub.url}/api/models/acme/demo/tree/main")
    assert (status, body, headers["Content-Length"]) == (200, crafted, str(len(crafted)))
    assert headers["Content-Type"].startswith("application/json")  # the real headers stay


# -- bodies cut short ----------------------------------------------------------

@pytest.mark.parametrize("cut, ending", [("truncate_to", "eof"), ("reset_after", "reset")])
def test_body_cut_after_n_bytes(hub, cut, ending):
    hub.inject(FILE, **{cut: 1000})
    head, body, how = raw_exchange(hub, FILE)
    assert b"Content-Length: %d" % len(BIG) in head  # the full length is promised, then broken
    assert how == ending and BIG[:1000].startswith(body) and (cut == "reset_after" or len(body) == 1000)
    assert hub.requests[-1] == RequestRecord("GET", FILE, "", 200, None, True)


def test_http_get_retries_a_truncated_body(hub, client_sleeps):
    hub.inject(FILE, truncate_to=1000)
    out = io.BytesIO()
    http_get(hub.url + FILE, out)
    assert out.getvalue() == BIG and client_sleeps == [1]
    assert [(r.method, r.fault) for r in hub.requests] == [("GET", True), ("GET", False)]


def test_http_get_gives_up_on_a_body_that_is_always_truncated(hub, client_sleeps):
    hub.inject(FILE, truncate_to=1000, times=None)
    with pytest.raises(httpx2.RemoteProtocolError):
        http_get(hub.url + FILE, io.BytesIO())
    assert client_sleeps == [1] * 5 and hub.count("GET", FILE) == 6  # 5 retries, then it raises


def test_http_get_does_not_retry_a_reset(hub, client_sleeps):
    hub.inject(FILE, reset_after=1000)
    with pytest.raises(httpx2.ReadError):  # a NetworkError, which http_get does not retry
        http_get(hub.url + FILE, io.BytesIO())
    assert client_sleeps == [] and hub.count("GET", FILE) == 1
    assert raw_get(hub.url + FILE)[2] == BIG  # the hub itself is fine afterwards


# -- slow servers --------------------------------------------------------------

def test_delay_holds_back_the_answer(hub):
    hub.inject("/api/models/acme/demo", delay_s=0.3)
    started = time.monotonic()
    assert raw_get(f"{hub.url}/api/models/acme/demo")[0] == 200
    assert time.monotonic() - started >= 0.3
    hub.inject("/api/models/acme/demo", delay_s=30)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        raw_get(f"{hub.url}/api/models/acme/demo", timeout=0.2)
    assert hub.requests[0] == RequestRecord("GET", "/api/models/acme/demo", "", 200, None, True)


def test_slow_body_makes_a_short_read_timeout_give_up(hub):
    hub.inject(FILE, chunk_size=1000, chunk_delay_s=30)
    started = time.monotonic()
    with urllib.request.urlopen(hub.url + FILE, timeout=0.3) as response:
        assert response.read(1000) == BIG[:1000]  # the first chunk comes at once
        with pytest.raises(TimeoutError):
            response.read()
    assert time.monotonic() - started < WAIT_S


def test_slow_body_arrives_whole_in_chunks(hub):
    hub.inject(FILE, chunk_size=len(BIG) // 4, chunk_delay_s=0.05)
    assert raw_get(hub.url + FILE)[2] == BIG


def test_http_get_retries_read_timeouts_then_raises(hub, client_sleeps, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)
    hub.inject(FILE, chunk_size=1000, chunk_delay_s=30, times=None)
    with pytest.raises(httpx2.ReadTimeout):
        http_get(hub.url + FILE, io.BytesIO())
    assert client_sleeps == [1] * 5 and hub.count("GET", FILE) == 6


def test_client_killed_mid_transfer(hub, tmp_path):
    fault = hub.inject(FILE, chunk_size=1000, chunk_delay_s=0.05)
    code = ("from huggingface_hub import hf_hub_download; import sys\n"
            "hf_hub_download('acme/demo', 'w.bin', cache_dir=sys.argv[1])\n")
    cache = str(tmp_path / "cache")
    proc = subprocess.Popen([sys.executable, "-c", code, cache], env=child_env({"HF_ENDPOINT": hub.url}, None),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: fault.used == 1, "the slow GET to start")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(WAIT_S) == -signal.SIGKILL
    finally:
        proc.kill()
    assert download(hub, tmp_path) == BIG  # the hub serves on, and the client recovers from the killed run


@pytest.mark.parametrize("slow", [{"delay_s": 60}, {"chunk_size": 100, "chunk_delay_s": 60}], ids=["delay", "chunks"])
def test_stop_stays_prompt_during_a_slow_fault(tmp_path, slow):
    hub = LocalHub(tmp_path / "hub").start()
    hub.create_repo("acme/demo")
    hub.commit("acme/demo", {"w.bin": BIG})
    fault = hub.inject(FILE, **slow)

    def fetch() -> None:
        try:
            raw_get(hub.url + FILE, timeout=2 * WAIT_S)
        except Exception:
            pass  # the connection is cut by stop(); only the hub's promptness matters here

    client = threading.Thread(target=fetch, daemon=True)
    client.start()
    wait_for(lambda: fault.used == 1, "the slow request to reach the hub")
    stopper = threading.Thread(target=hub.stop, daemon=True)
    stopper.start()
    stopper.join(WAIT_S)
    assert not stopper.is_alive(), "stop() hung on a slow fault"
    client.join(WAIT_S)
    assert not client.is_alive()
