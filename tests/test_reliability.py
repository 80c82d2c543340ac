"""Reliability: concurrent importers, killed importers, a full or unwritable disk, a failing Hub,
hostile or broken repos, and fuzzed parsers.

Every fault comes from the real loopback Hub (LocalHub.inject), never from a mocked client.
Tests that use the session `hub` give their repos unique names and clear their faults afterwards
(the `faults` fixture); retries back off 10 ms (`fast_retries`, or the variable in children).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kernelhook
import kernelhook.hub.client
from kernelhook.cache import admin as cache_admin
from kernelhook.cache.store import Store, check_relative_path
from kernelhook.cli import main as cli
from kernelhook.errors import (
    CacheError,
    DownloadError,
    HubUnreachableError,
    InvalidKernelName,
    InvalidRevision,
    KernelHookError,
    KernelLoadError,
)
from kernelhook.loading.names import parse_module_name, parse_repo_id
from kernelhook.platform import (
    NoarchVariant,
    StableAbiVariant,
    StrictVariant,
    SystemInfo,
    choose_variant,
    parse_variant,
    rank_variants,
)
from kernelhook.testing import LocalHub

from .conftest import child_env

VARIANT = "torch-universal"
BACKOFF_S = 0.01
WAIT_S = 60  # bound on every wait for a child or thread; far above what a healthy run needs

# A kernel that says which version it is and, when asked, logs each execution (pid per line).
INIT = """\
import os as _os
_log = _os.environ.get("RELIABILITY_EXEC_LOG")
if _log:
    with open(_log, "a") as _f:
        _f.write(f"{{_os.getpid()}}\\n")
from . import _ops, layers
VERSION = {version!r}
"""


def _kernel_files(version: str, blob: bytes | None = None, variant: str = VARIANT) -> dict:
    base = f"build/{variant}"
    files = {
        f"{base}/__init__.py": INIT.format(version=version),
        f"{base}/_ops.py": f"OPS = {version!r}\n",
        f"{base}/layers.py": f"class ReLU:\n    VERSION = {version!r}\n",
        f"{base}/metadata.json": json.dumps({"id": "rel", "python-depends": [], "version": version}),
    }
    if blob is not None:
        files[f"{base}/weights.bin"] = blob  # *.bin: an LFS file
    return files


def _publish(hub: LocalHub, repo: str, files: dict, **kwargs) -> str:
    hub.create_repo(repo)
    return hub.commit(repo, files, **kwargs)


def _blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _kernel_modules() -> set[str]:
    return {name for name in sys.modules if name.startswith(("_kernelhook_", "kernels_hub."))}


def _assert_whole(cache) -> cache_admin.VerifyReport:
    """The cache verifies clean and every file under objects/ is named by the sha256 of its bytes."""
    report = cache_admin.verify(Store(cache))
    assert report.damaged == []
    objects = Path(cache, "v1", "objects")
    for path in objects.rglob("*") if objects.is_dir() else ():
        if path.is_file():
            assert _sha256(path.read_bytes()) == path.parent.name + path.name, f"half-written object {path}"
    return report


def _object_shas(cache) -> set[str]:
    objects = Path(cache, "v1", "objects")
    return {p.parent.name + p.name for p in objects.rglob("*") if p.is_file()} if objects.is_dir() else set()


def _temp_downloads(cache) -> list[Path]:
    return list(Path(cache, "v1", "tmp").glob("download-*"))


def _cli_verify() -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(["cache", "verify", "--json"])
    return code, json.loads(out.getvalue())


def _kill_all(children) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=WAIT_S)


@pytest.fixture
def faults(hub):
    """The session hub, with every fault this test injects cleared afterwards."""
    try:
        yield hub
    finally:
        hub.clear_faults()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(kernelhook.hub.client, "BACKOFF_S", BACKOFF_S)
    monkeypatch.setenv("KERNELHOOK_RETRY_BACKOFF_S", str(BACKOFF_S))


@pytest.fixture
def hub_sleeps(monkeypatch):
    """kernelhook's retry waits, recorded instead of slept (its own retry loop still runs)."""
    sleeps: list[float] = []
    monkeypatch.setattr(kernelhook.hub.client, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


# -- 1. many importers at once into an empty cache ---------------------------------------------------

RACE_CHILD = r"""
import importlib, os, sys, time
import huggingface_hub.file_download, huggingface_hub.hf_api, kernelhook.loading.api, kernels_hub  # before the race
ready, go, name = sys.argv[1:4]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.002)
print(importlib.import_module(name).VERSION)
"""


def test_16_processes_importing_at_once_fetch_every_object_once_and_leave_a_clean_cache(env, faults, tmp_path):
    hub, repo = faults, "acme/rel-race-procs"
    blob = _blob(64 * 1024, seed=1)
    files = _kernel_files("1.0", blob)
    sha = _publish(hub, repo, files, branch="v1")
    hub.inject(f"/{repo}/resolve/", times=None, delay_s=0.05)  # keeps every download open while the others queue
    hub.clear_requests()
    log, go = tmp_path / "exec.log", tmp_path / "go"
    names = ["kernels_hub.acme.rel_race_procs", "kernels_hub.acme.rel_race_procs@v1"]
    children = []
    try:
        for i in range(16):
            argv = [sys.executable, "-c", RACE_CHILD, str(tmp_path / f"ready-{i}"), str(go), names[i % 2]]
            children.append(subprocess.Popen(argv, env=child_env({**env, "RELIABILITY_EXEC_LOG": str(log)}),
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + WAIT_S
        while len(list(tmp_path.glob("ready-*"))) < 16:  # all 16 have imported their tools: start them together
            assert time.monotonic() < deadline and all(c.poll() is None for c in children), "a child never got ready"
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=WAIT_S) for child in children]
    finally:
        _kill_all(children)
    assert [out.strip() for out, _ in outputs] == ["1.0"] * 16, [err[-2000:] for _, err in outputs if err]
    assert len(set(log.read_text().split())) == 16  # each process executed the kernel once
    downloads = Counter(r.path for r in hub.requests if f"/{repo}/resolve/" in r.path)
    assert downloads == Counter({f"/{repo}/resolve/{sha}/{path}": 1 for path in files})
    assert hub.count(path_contains=f"/api/models/{repo}/tree/") == 1  # build/ listed once for all 16
    code, report = _cli_verify()
    assert code == 0 and report["damaged"] == [] and (report["objects"], report["trees"]) == (len(files), 1)
    _assert_whole(env["KERNELHOOK_CACHE"])


def test_16_threads_importing_at_once_execute_the_kernel_once_and_fetch_every_object_once(
        env, system, hub, tmp_path, monkeypatch):
    repo = "acme/rel-race-threads"
    files = _kernel_files("1.0", _blob(64 * 1024, seed=2))
    sha = _publish(hub, repo, files, branch="v1")
    hub.set_branch(repo, "main", sha)
    hub.create_tag(repo, "stable", sha)
    hub.clear_requests()
    log = tmp_path / "exec.log"
    monkeypatch.setenv("RELIABILITY_EXEC_LOG", str(log))
    typed, literal = "kernels_hub.acme.rel_race_threads", "kernels_hub.acme.rel-race-threads"
    spellings = [typed, f"{typed}@v1", f"{typed}@main", f"{typed}@stable", f"{typed}@{sha}", f"{typed}@{sha[:7]}",
                 literal, f"{literal}@v1"]
    barrier = threading.Barrier(16, timeout=WAIT_S)
    results: list = [None] * 16

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = importlib.import_module(spellings[i % len(spellings)])
        except BaseException as exc:  # reported below, with the rest
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len({id(module) for module in results}) == 1 and results[0].VERSION == "1.0"
    assert results[0].__name__.startswith("_kernelhook_")
    assert log.read_text().split() == [str(os.getpid())]  # executed once, by one thread
    downloads = Counter(r.path for r in hub.requests if f"/{repo}/resolve/" in r.path)
    assert downloads == Counter({f"/{repo}/resolve/{sha}/{path}": 1 for path in files})
    assert hub.count(path_contains=f"/api/models/{repo}/tree/") == 1
    code, report = _cli_verify()
    assert code == 0 and report["damaged"] == [] and (report["objects"], report["trees"]) == (len(files), 1)


# -- 2. importers killed mid-download ---------------------------------------------------------------

KILLS = 20


def test_importers_killed_at_random_points_of_a_slow_cold_download_never_leave_a_broken_cache(tmp_path):
    """A child that finishes before its kill (a loaded machine) is not counted, and the branch moves on to
    new bytes so that the next imports download cold again, into the same cache."""
    with LocalHub(tmp_path / "hub") as hub:  # its own: the branch moves
        repo, weights = "acme/rel-killed", f"build/{VARIANT}/weights.bin"
        hub.create_repo(repo)
        commits = [hub.commit(repo, _kernel_files("1.0", _blob(256 * 1024, seed=3)))]
        # 16 KiB chunks 40 ms apart: the LFS file takes ~0.6 s; every file waits 20 ms for its first byte.
        hub.inject(f"/{repo}/resolve/", times=None, delay_s=0.02, chunk_size=16 * 1024, chunk_delay_s=0.04)
        cache = tmp_path / "cache"
        env = {"HF_ENDPOINT": hub.url, "KERNELHOOK_CACHE": str(cache)}
        argv = [sys.executable, "-c", "import kernels_hub.acme.rel_killed as k; print(k.VERSION)"]
        started = time.monotonic()  # how long one cold import takes over this server: the kills' time scale
        probe = subprocess.run(argv, env=child_env({**env, "KERNELHOOK_CACHE": str(tmp_path / "probe-cache")}),
                               capture_output=True, text=True, timeout=WAIT_S)
        expected_s = time.monotonic() - started
        assert probe.stdout.strip() == "1.0", probe.stderr
        hub.clear_requests()
        rng = random.Random(20240611)
        killed = tries = 0
        while killed < KILLS and tries < 2 * KILLS:
            tries += 1
            child = subprocess.Popen(argv, env=child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                child.wait(timeout=rng.uniform(0.02, 0.85) * expected_s)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                killed += 1
            else:  # it finished first: it must have succeeded; new bytes make the next download cold again
                assert child.returncode == 0, child.stderr.read()[-3000:]
                commits.append(hub.commit(repo, {weights: _blob(256 * 1024, seed=3 + len(commits))}))
            finally:
                _kill_all([child])
                child.stderr.close()
            _assert_whole(cache)  # after every kill: nothing damaged, no object half-written
        assert killed == KILLS
        # Some kills cut the LFS file mid-transfer: once whole it is cached, so a second request means a cut one.
        assert max(Counter(r.path for r in hub.requests if r.path.endswith(weights)).values()) >= 2
        hub.clear_faults()
        after = subprocess.run(argv, env=child_env(env), capture_output=True, text=True, timeout=WAIT_S)
        assert after.returncode == 0 and after.stdout.strip() == "1.0", after.stderr
        report = _assert_whole(cache)
        assert report.trees >= 1 and report.objects >= 5
        final = _kernel_files("1.0", _blob(256 * 1024, seed=3 + len(commits) - 1))
        assert {_sha256(d.encode() if isinstance(d, str) else d) for d in final.values()} <= _object_shas(cache)


# -- 3. a full or unwritable disk ---------------------------------------------------------------------

def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def disk_full(hub, tmp_path_factory):
    """One import into a 64 KiB tmpfs cache (in a private mount namespace) of a repo with a 200 KiB file."""
    if shutil.which("unshare") is None or not _succeeds(["unshare", "-m", "true"]):
        pytest.skip("needs unshare -m (root) to mount a small tmpfs")
    root = tmp_path_factory.mktemp("disk-full")
    repo, blob = "acme/rel-disk-full", _blob(200 * 1024, seed=4)
    sha = _publish(hub, repo, _kernel_files("1.0", blob))
    cache, copy = root / "cache", root / "after"
    cache.mkdir()
    copy.mkdir()
    env = {"HF_ENDPOINT": hub.url, "KERNELHOOK_CACHE": str(cache), "KERNELHOOK_RETRY_BACKOFF_S": str(BACKOFF_S)}
    code = "import kernels_hub.acme.rel_disk_full"
    # The tmpfs vanishes with the namespace: copy what the import left for the checks outside.
    script = (f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(cache))} && "
              f"{{ {shlex.quote(sys.executable)} -c {shlex.quote(code)}; rc=$?; "
              f"cp -a {shlex.quote(str(cache))}/. {shlex.quote(str(copy))}/; exit $rc; }}")
    hub.clear_requests()
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=child_env(env), capture_output=True, text=True,
                            timeout=WAIT_S)
    weights = hub.count(path_contains=f"/{repo}/resolve/{sha}/build/{VARIANT}/weights.bin")
    return types.SimpleNamespace(result=result, cache=copy, blob=blob, weight_requests=weights)


def test_a_full_disk_fails_the_import_and_leaves_nothing_half_written(disk_full):
    result = disk_full.result
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("kernelhook.errors.")  # a typed ImportError
    assert (disk_full.cache / "v1" / "objects").is_dir()  # the small files did fit
    _assert_whole(disk_full.cache)
    assert _sha256(disk_full.blob) not in _object_shas(disk_full.cache)
    assert _temp_downloads(disk_full.cache) == []


def test_a_full_disk_is_a_cache_error_that_says_to_free_space_without_retrying_the_hub(disk_full):
    stderr = disk_full.result.stderr
    assert "kernelhook.errors.CacheError" in stderr and "free disk space" in stderr, stderr[-3000:]
    assert disk_full.weight_requests == 1  # a full disk is not a Hub outage: nothing to retry


def _setpriv_works() -> bool:
    return (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv") is not None
            and _succeeds([*_AS_NOBODY, "true"]))


# uid/gid 65534 (nobody) may read and search everything (CAP_DAC_READ_SEARCH: the venv, HF_HOME, the
# tests' 0700 folders) but writes only where the permission bits let it.
_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


@pytest.mark.parametrize("unwritable", ["cache", "objects"])
def test_permission_denied_on_the_cache_is_a_cache_error_naming_the_path_and_the_fix(env, hub, tmp_path, unwritable):
    if not _setpriv_works():
        pytest.skip("needs root and setpriv with ambient capabilities, to import as an unprivileged user")
    repo = f"acme/rel-denied-{unwritable}"
    blob = _blob(32 * 1024, seed=5)
    _publish(hub, repo, _kernel_files("1.0", blob))
    cache = Path(env["KERNELHOOK_CACHE"])
    cache.mkdir()
    if unwritable == "objects":  # everything may be written but the objects: the download itself succeeds
        (cache / "v1" / "objects").mkdir(parents=True)
        os.chmod(cache, 0o777)
        os.chmod(cache / "v1", 0o777)
    before = {str(p) for p in cache.rglob("*")}
    code = f"import kernels_hub.acme.{repo.split('/')[1].replace('-', '_')}"
    result = subprocess.run([*_AS_NOBODY, sys.executable, "-c", code],
                            env=child_env({**env, "KERNELHOOK_RETRY_BACKOFF_S": str(BACKOFF_S)}),
                            capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kernelhook.errors.CacheError:"), result.stderr[-3000:]
    assert str(cache / "v1" / unwritable if unwritable == "objects" else cache) in last
    assert "Permission denied" in last and "make the cache writable" in last and "KERNELHOOK_CACHE" in last
    if unwritable == "cache":
        assert {str(p) for p in cache.rglob("*")} == before  # nothing written at all
    assert _object_shas(cache) == set() and _temp_downloads(cache) == []



def test_small_entries_are_read_whole_and_what_is_not_a_file_is_a_miss(tmp_path):
    store = Store(tmp_path / "cache")
    big = {"inputs": ["x" * 1000] * 200}  # more than one read's 64 KiB
    store.write_json("input-plans/big.json", big)
    assert store.read_json("input-plans/big.json") == big
    (store.root / "decisions" / "folder.json").mkdir(parents=True)  # a folder where a file belongs
    assert store.read_json("decisions/folder.json") is None and store.read_text("decisions/folder.json") is None
    assert store.read_json("decisions/absent.json") is None
    (store.root / "decisions" / "garbage.json").write_bytes(b"\xff{")
    assert store.read_json("decisions/garbage.json") is None and store.read_text("decisions/garbage.json") is None
    assert Store(str(tmp_path / "cache")).root == store.root == tmp_path / "cache" / "v1"


# -- 4. a failing Hub -------------------------------------------------------------------------------

def _failing_hub_repo(hub: LocalHub, name: str) -> types.SimpleNamespace:
    """A repo with a small git file and an LFS file, and the request paths a test aims faults at."""
    repo = f"acme/rel-{name}"
    blob = _blob(256 * 1024, seed=len(name))
    files = _kernel_files("1.0", blob)
    sha = _publish(hub, repo, files)
    hub.clear_requests()
    return types.SimpleNamespace(
        repo=repo, sha=sha, blob=blob, files=files,
        refs=f"/api/models/{repo}/refs", revision=f"/api/models/{repo}/revision/",
        weights=f"/{repo}/resolve/{sha}/build/{VARIANT}/weights.bin",
        layers=f"/{repo}/resolve/{sha}/build/{VARIANT}/layers.py",
    )


def _seen(hub: LocalHub, path: str) -> list[tuple[int, bool]]:
    return [(r.status, r.fault) for r in hub.requests if r.path.startswith(path)]


@pytest.mark.parametrize("endpoint", ["refs", "revision"])
def test_server_errors_while_resolving_are_retried_with_backoff_then_succeed(
        env, system, faults, fast_retries, hub_sleeps, endpoint):
    r = _failing_hub_repo(faults, f"flaky-{endpoint}")
    path = r.refs if endpoint == "refs" else r.revision
    faults.inject(path, status=500, times=2)
    module = kernelhook.get_kernel(r.repo, revision=None if endpoint == "refs" else r.sha[:10])
    assert module.VERSION == "1.0"
    assert _seen(faults, path) == [(500, True), (500, True), (200, False)]
    assert hub_sleeps == [BACKOFF_S, 2 * BACKOFF_S]  # exponential backoff
    _assert_whole(env["KERNELHOOK_CACHE"])


@pytest.mark.parametrize("target, status, retry_after, waited", [
    ("refs", 503, 2, 2.0),
    ("refs", 429, 1, 1.0),
    ("refs", 503, 3600, kernelhook.hub.client.MAX_WAIT_S),  # capped
    ("weights", 503, 2, 2.0),
])
def test_retry_after_is_waited_for_then_the_request_is_sent_again(
        env, system, faults, fast_retries, hub_sleeps, target, status, retry_after, waited):
    r = _failing_hub_repo(faults, f"retry-after-{target}-{status}-{retry_after}")
    path = getattr(r, target)
    faults.inject(path, status=status, retry_after=retry_after, times=1)
    assert kernelhook.get_kernel(r.repo).VERSION == "1.0"
    assert hub_sleeps == [waited]  # the server's Retry-After, not the 10 ms backoff
    assert _seen(faults, path) == [(status, True), (200, False)]


def test_a_hub_that_keeps_failing_is_tried_1_plus_retries_times_then_named_in_the_error(
        env, system, faults, fast_retries, hub_sleeps):
    r = _failing_hub_repo(faults, "down")
    faults.inject(r.refs, status=500, times=None)
    before = _kernel_modules()
    with pytest.raises(HubUnreachableError) as info:
        importlib.import_module("kernels_hub.acme.rel_down")
    message = str(info.value)
    assert faults.url in message and "500" in message and "Fix:" in message
    assert f"{faults.url}{r.refs}" in message  # the very URL that failed, not only the endpoint
    assert _seen(faults, r.refs) == [(500, True)] * (1 + kernelhook.hub.client.RETRIES)
    assert len(hub_sleeps) == kernelhook.hub.client.RETRIES
    assert _kernel_modules() - before == set()
    assert _object_shas(env["KERNELHOOK_CACHE"]) == set()


def test_a_hub_that_keeps_failing_falls_back_to_the_commit_cached_here(
        env, system, faults, fast_retries, hub_sleeps, caplog):
    r = _failing_hub_repo(faults, "down-cached")
    first = kernelhook.get_kernel(r.repo)
    faults.inject(r.refs, status=500, times=None)
    faults.clear_requests()
    again = kernelhook.get_kernel(r.repo)
    assert again is first and kernelhook.origin(again).commit == r.sha
    assert _seen(faults, r.refs) == [(500, True)] * (1 + kernelhook.hub.client.RETRIES)
    assert "using commit" in caplog.text and r.sha in caplog.text
    assert [req.path for req in faults.requests if not req.path.startswith(r.refs)] == []  # nothing else asked


def test_a_file_that_keeps_failing_is_a_download_error_naming_its_url_and_nothing_is_cached(
        env, system, faults, fast_retries, hub_sleeps):
    r = _failing_hub_repo(faults, "file-down")
    faults.inject(r.weights, status=500, times=None)
    before = _kernel_modules()
    with pytest.raises(DownloadError) as info:
        kernelhook.get_kernel(r.repo)
    message = str(info.value)
    assert faults.url + r.weights in message and "500" in message and "weights.bin" in message
    assert _seen(faults, r.weights) == [(500, True)] * (1 + kernelhook.hub.client.RETRIES)
    assert _kernel_modules() - before == set()
    cache = env["KERNELHOOK_CACHE"]
    _assert_whole(cache)
    assert _sha256(r.blob) not in _object_shas(cache) and _temp_downloads(cache) == []
    assert not Path(cache, "v1", "trees").exists()


@pytest.mark.parametrize("cut", ["reset_after", "truncate_to"])
def test_a_transfer_cut_short_is_fetched_again_and_cached_whole(env, system, faults, fast_retries, cut):
    r = _failing_hub_repo(faults, f"cut-{cut}")
    faults.inject(r.weights, times=1, **{cut: 100_000})  # a TCP reset, or a clean close, after 100 kB
    module = kernelhook.get_kernel(r.repo)
    assert module.VERSION == "1.0"
    assert _seen(faults, r.weights)[0] == (200, True) and len(_seen(faults, r.weights)) == 2
    cache = env["KERNELHOOK_CACHE"]
    _assert_whole(cache)
    assert (kernelhook.origin(module).tree / "weights.bin").read_bytes() == r.blob
    assert _temp_downloads(cache) == []


def _corrupt(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]  # same size, other bytes


@pytest.mark.parametrize("which", ["weights", "layers"])  # an LFS file (sha256) and a git file (blob sha1)
def test_bytes_that_do_not_match_the_listing_once_are_fetched_again(env, system, faults, fast_retries, which):
    r = _failing_hub_repo(faults, f"mismatch-once-{which}")
    good = r.blob if which == "weights" else r.files[f"build/{VARIANT}/layers.py"].encode()
    faults.inject(getattr(r, which), body=_corrupt(good), times=1)
    assert kernelhook.get_kernel(r.repo).VERSION == "1.0"
    assert _seen(faults, getattr(r, which)) == [(200, True), (200, False)]
    cache = env["KERNELHOOK_CACHE"]
    _assert_whole(cache)
    assert _sha256(good) in _object_shas(cache) and _sha256(_corrupt(good)) not in _object_shas(cache)


@pytest.mark.parametrize("which", ["weights", "layers"])
def test_bytes_that_never_match_are_a_download_error_naming_the_file_and_both_hashes(
        env, system, faults, fast_retries, which):
    r = _failing_hub_repo(faults, f"mismatch-always-{which}")
    good = r.blob if which == "weights" else r.files[f"build/{VARIANT}/layers.py"].encode()
    bad = _corrupt(good)
    faults.inject(getattr(r, which), body=bad, times=None)
    before = _kernel_modules()
    with pytest.raises(DownloadError) as info:
        kernelhook.get_kernel(r.repo)
    message = str(info.value)
    expected, got = (_sha256(good), _sha256(bad)) if which == "weights" else (_git_oid(good), _git_oid(bad))
    assert f"build/{VARIANT}/{which}." in message and expected in message and got in message
    assert "not cached" in message
    assert len(_seen(faults, getattr(r, which))) == 2  # one more try, then refused
    assert _kernel_modules() - before == set()
    cache = env["KERNELHOOK_CACHE"]
    _assert_whole(cache)
    assert not {_sha256(good), _sha256(bad)} & _object_shas(cache) and _temp_downloads(cache) == []


def test_a_body_longer_than_listed_is_never_cached(env, system, faults, fast_retries):
    r = _failing_hub_repo(faults, "oversize-body")
    faults.inject(r.weights, body=r.blob + bytes(4096), times=None)
    with pytest.raises(DownloadError, match="weights.bin"):
        kernelhook.get_kernel(r.repo)
    cache = env["KERNELHOOK_CACHE"]
    _assert_whole(cache)
    assert _sha256(r.blob) not in _object_shas(cache) and _temp_downloads(cache) == []


# A Hub that accepts the connection and then says nothing for STALL_S, with every timeout set to 1 s.
STALL_S = 6
STALL_STAGES = {"refs": "/api/models/{repo}/refs", "tree": "/api/models/{repo}/tree/", "file": "/{repo}/resolve/"}


@pytest.fixture(scope="module")
def stalled(tmp_path_factory):
    """One child per stage, run at once, each against a Hub that stalls that stage's requests."""
    root = tmp_path_factory.mktemp("stall")
    with LocalHub(root / "hub") as slow:
        children = {}
        try:
            for stage, path in STALL_STAGES.items():
                repo = f"acme/stall-{stage}"
                _publish(slow, repo, _kernel_files("1.0"))
                slow.inject(path.format(repo=repo), times=None, delay_s=STALL_S)
                env = {"HF_ENDPOINT": slow.url, "KERNELHOOK_CACHE": str(root / f"cache-{stage}"),
                       "HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "1", "KERNELHOOK_RETRIES": "0"}
                children[stage] = subprocess.Popen(
                    [sys.executable, "-c", f"import kernels_hub.acme.stall_{stage} as k; print(k.VERSION)"],
                    env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            results = {}
            for stage, child in children.items():
                try:
                    out, err = child.communicate(timeout=45)  # the bound: 1 s timeouts, and their retries
                except subprocess.TimeoutExpired:
                    child.kill()
                    out, err = child.communicate(timeout=WAIT_S)
                    err += "\n(still running after 45 s: killed)"
                results[stage] = types.SimpleNamespace(returncode=child.returncode, stdout=out, stderr=err,
                                                       url=slow.url)
        finally:
            _kill_all(children.values())
    return results


def test_a_stalled_file_download_times_out_with_an_error_naming_the_url(stalled):
    result = stalled["file"]
    assert result.returncode != 0 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kernelhook.errors.DownloadError:") and "timed out" in last.lower()
    assert f"{result.url}/acme/stall-file/resolve/" in last


def test_a_stalled_listing_times_out_instead_of_hanging(stalled):
    result = stalled["tree"]
    assert result.returncode != 0, "the import waited out the stall"
    assert "HubUnreachableError" in result.stderr and "timed out" in result.stderr.lower()


def test_a_stalled_refs_request_times_out_instead_of_hanging(stalled):
    result = stalled["refs"]
    assert result.returncode != 0, "the import waited out the stall"
    assert "HubUnreachableError" in result.stderr and "timed out" in result.stderr.lower()
    assert result.url in result.stderr


# -- 5. hostile or broken repos -------------------------------------------------------------------

def _listing(hub: LocalHub, repo: str, sha: str) -> list[dict]:
    with urllib.request.urlopen(f"{hub.url}/api/models/{repo}/tree/{sha}/build?recursive=true", timeout=10) as resp:
        return json.load(resp)


def _outside(tmp_path: Path) -> set[str]:
    """Every path under tmp_path but the cache's own."""
    cache = tmp_path / "cache"
    return {str(p) for p in tmp_path.rglob("*") if p != cache and cache not in p.parents}


EVIL = "kernelhook-reliability-evil.py"
HOSTILE_PATHS = {
    "dot-dot": f"build/{VARIANT}/../../../{EVIL}",
    "dot-dot-deep": f"build/{VARIANT}/sub/../../../../../../../../{EVIL}",
    "absolute": f"build/{VARIANT}/",  # + an absolute path under tmp_path, so build/torch-universal//tmp/...
    "backslash": f"build/{VARIANT}/..\\..\\..\\{EVIL}",
    "bell": f"build/{VARIANT}/\u0007{EVIL}",
    "newline": f"build/{VARIANT}/evil\n.py",
    "nul": f"build/{VARIANT}/evil\x00.py",
    "lone-surrogate": f"build/{VARIANT}/\udcff{EVIL}",  # an undecodable name, as JSON "\udcff"
}


def _serve_listing(hub: LocalHub, repo: str, listing) -> None:
    hub.inject(f"/api/models/{repo}/tree/", body=json.dumps(listing).encode(), times=None)


@pytest.mark.parametrize("label", list(HOSTILE_PATHS))
def test_listing_paths_that_leave_the_variant_are_refused_before_any_download(
        env, system, faults, tmp_path, label):
    repo = f"acme/rel-hostile-{label}"
    sha = _publish(faults, repo, _kernel_files("1.0"))
    path = HOSTILE_PATHS[label] + (str(tmp_path / EVIL) if label == "absolute" else "")
    listing = _listing(faults, repo, sha) + [{"type": "file", "oid": "ab" * 20, "size": 10, "path": path}]
    _serve_listing(faults, repo, listing)
    faults.clear_requests()
    outside, before = _outside(tmp_path), _kernel_modules()
    with pytest.raises(CacheError, match="refusing the path") as info:
        kernelhook.get_kernel(repo)
    assert isinstance(info.value, ImportError)
    assert not [r for r in faults.requests if "/resolve/" in r.path]  # refused unread: not one file fetched
    assert _outside(tmp_path) == outside and not list(tmp_path.rglob(EVIL)) and not os.path.exists(EVIL)
    assert _kernel_modules() - before == set()
    _assert_whole(env["KERNELHOOK_CACHE"])


def test_listing_entries_outside_build_variants_and_unknown_types_are_never_written(env, system, faults, tmp_path):
    repo = "acme/rel-hostile-contained"
    sha = _publish(faults, repo, _kernel_files("1.0"))
    evil = tmp_path / "outside" / EVIL
    listing = _listing(faults, repo, sha) + [
        {"type": "file", "oid": "ab" * 20, "size": 10, "path": str(evil)},  # an absolute path, in no variant
        {"type": "file", "oid": "ab" * 20, "size": 10, "path": f"build/../{EVIL}"},  # '..' as the variant
        {"type": "symlink", "oid": "ab" * 20, "size": 10, "path": f"build/{VARIANT}/link.py", "target": "/etc"},
    ]
    _serve_listing(faults, repo, listing)
    outside = _outside(tmp_path)
    module = kernelhook.get_kernel(repo)
    assert module.VERSION == "1.0"
    tree = kernelhook.origin(module).tree
    assert sorted(p.name for p in tree.iterdir()) == ["__init__.py", "_ops.py", "layers.py", "metadata.json"]
    assert not any(p.is_symlink() for p in Path(env["KERNELHOOK_CACHE"]).rglob("*"))
    assert _outside(tmp_path) == outside and not evil.exists()


def test_a_file_listed_gigantic_is_refused_unread(env, system, faults, tmp_path):
    repo = "acme/rel-hostile-gigantic"
    sha = _publish(faults, repo, _kernel_files("1.0"))
    size = 10**15
    listing = _listing(faults, repo, sha) + [{
        "type": "file", "oid": "ab" * 20, "size": size, "path": f"build/{VARIANT}/huge.bin",
        "lfs": {"oid": "cd" * 32, "size": size, "pointerSize": 134}}]
    _serve_listing(faults, repo, listing)
    faults.clear_requests()
    before = _kernel_modules()
    with pytest.raises(DownloadError) as info:
        kernelhook.get_kernel(repo)
    message = str(info.value)
    assert "huge.bin" in message and str(size) in message and "KERNELHOOK_MAX_FILE_BYTES" in message
    assert not [r for r in faults.requests if "huge.bin" in r.path]
    assert _kernel_modules() - before == set()
    cache = env["KERNELHOOK_CACHE"]
    _assert_whole(cache)
    assert _temp_downloads(cache) == [] and not Path(cache, "v1", "trees").exists()


@pytest.mark.parametrize("field", ["oid", "lfs"])
def test_listing_hashes_that_are_paths_are_refused_and_nothing_is_written_outside_the_cache(
        env, system, faults, tmp_path, field):
    repo = f"acme/rel-hostile-hash-{field}"
    sha = _publish(faults, repo, _kernel_files("1.0", _blob(4096, seed=6)))
    listing = _listing(faults, repo, sha)
    target = "weights.bin" if field == "lfs" else "layers.py"
    entry = next(e for e in listing if e["path"].endswith(target))
    if field == "lfs":
        entry["lfs"]["oid"] = "../../../escaped-lfs"
    else:
        entry["oid"] = "../../../escaped-oid"
    _serve_listing(faults, repo, listing)
    outside = _outside(tmp_path)
    with pytest.raises(KernelHookError):
        kernelhook.get_kernel(repo)
    assert _outside(tmp_path) == outside  # e.g. no tmp_path/escaped-oid.lock


@pytest.mark.parametrize("label", ["no-oid", "size-not-a-number", "size-null", "path-not-a-string", "not-a-list"])
def test_a_malformed_listing_is_a_kernelhook_error(env, system, faults, label):
    repo = f"acme/rel-malformed-{label}"
    sha = _publish(faults, repo, _kernel_files("1.0"))
    listing = _listing(faults, repo, sha)
    bad = {"type": "file", "oid": "ab" * 20, "size": 10, "path": f"build/{VARIANT}/extra.py"}
    if label == "no-oid":
        del bad["oid"]
    elif label == "size-not-a-number":
        bad["size"] = "ten"
    elif label == "size-null":
        bad["size"] = None
    elif label == "path-not-a-string":
        bad["path"] = 7
    _serve_listing(faults, repo, {"error": "x"} if label == "not-a-list" else listing + [bad])
    before = _kernel_modules()
    with pytest.raises(KernelHookError):
        importlib.import_module(f"kernels_hub.acme.rel_malformed_{label.replace('-', '_')}")
    assert _kernel_modules() - before == set()


@pytest.mark.parametrize("layout", ["metadata", "package-folder"])
def test_a_repo_cannot_claim_a_real_modules_name(env, system, hub, layout):
    import os as real_os

    repo = f"acme/rel-claims-{layout}"
    # metadata.json names real modules (the newer layout), or the package folder is named like one (build/<variant>/<Name>/)
    base = f"build/{VARIANT}" if layout == "metadata" else f"build/{VARIANT}/os"
    files = {
        f"build/{VARIANT}/metadata.json": json.dumps({"id": "os", "name": "torch", "module": "os", "package": "torch"}),
        f"{base}/__init__.py": "import os as _os\nfrom . import torch as _torch_submodule\nGETCWD = _os.getcwd\n"
                               "NAME = 'claims'\n",
        f"{base}/torch.py": "FAKE = 1\n",  # a submodule named like a real module
    }
    _publish(hub, repo, files)
    before = {name: sys.modules.get(name) for name in ("os", "torch", "os.path")}
    module = kernelhook.get_kernel(repo)
    assert module.NAME == "claims" and module.GETCWD is real_os.getcwd
    assert module.__name__.startswith("_kernelhook_") and module._torch_submodule.__name__ == module.__name__ + ".torch"
    assert {name: sys.modules.get(name) for name in before} == before
    cache = str(Path(env["KERNELHOOK_CACHE"]).resolve())
    from_cache = [name for name, m in list(sys.modules.items())
                  if str(Path(getattr(m, "__file__", None) or "/").resolve()).startswith(cache)]
    assert from_cache and all(name.startswith("_kernelhook_") for name in from_cache), from_cache


@pytest.mark.parametrize("layout", ["no-package", "two-packages"])
def test_a_variant_without_a_single_python_package_is_a_kernel_load_error(env, system, hub, layout):
    repo = f"acme/rel-nopkg-{layout}"
    base = f"build/{VARIANT}"
    files = {f"{base}/README.txt": "no python here\n", f"{base}/data/table.txt": "1 2 3\n"}
    if layout == "two-packages":
        files.update({f"{base}/alpha/__init__.py": "A = 1\n", f"{base}/beta/__init__.py": "B = 1\n"})
    _publish(hub, repo, files)
    before = _kernel_modules()
    with pytest.raises(KernelLoadError) as info:
        importlib.import_module(f"kernels_hub.acme.rel_nopkg_{layout.replace('-', '_')}")
    message = str(info.value)
    assert "no single Python package" in message and "Fix" in message
    assert ("alpha, beta" in message) if layout == "two-packages" else ("none" in message)
    assert _kernel_modules() - before == set()
    assert "kernels_hub.acme" not in sys.modules or sys.modules["kernels_hub.acme"].__dict__.get(
        f"rel_nopkg_{layout.replace('-', '_')}") is None
    _assert_whole(env["KERNELHOOK_CACHE"])


RAISING_INITS = {
    # after importing submodules (one of which imports another), __init__ fails: all of them must go
    "after-submodules": ("from . import a, b\nraise ValueError('init failed')\n", KernelLoadError),
    "in-a-submodule": ("from . import a\nfrom . import bad\n", KernelLoadError),
    "import-error": ("import kernelhook_reliability_missing_dependency\n", KernelLoadError),
    # not an Exception: propagates as itself (never swallowed), with the same clean-up
    "keyboard-interrupt": ("from . import a\nraise KeyboardInterrupt\n", KeyboardInterrupt),
}


@pytest.mark.parametrize("label", list(RAISING_INITS))
def test_a_kernel_whose_init_raises_leaves_nothing_imported_and_fails_again_the_same_way(env, system, hub, label):
    code, error = RAISING_INITS[label]
    repo = f"acme/rel-raising-{label}"
    base = f"build/{VARIANT}"
    _publish(hub, repo, {f"{base}/__init__.py": code, f"{base}/a.py": "from . import b\nA = 1\n",
                         f"{base}/b.py": "B = 1\n", f"{base}/bad.py": "raise RuntimeError('submodule failed')\n"})
    name = f"kernels_hub.acme.rel_raising_{label.replace('-', '_')}"
    before = _kernel_modules()
    for attempt in (1, 2):  # the second time from the cache: the same failure, not a half-built module
        with pytest.raises(error) as info:
            importlib.import_module(name)
        if error is KernelLoadError:
            assert "Nothing was left in sys.modules" in str(info.value) and repo in str(info.value)
        assert _kernel_modules() - before == set(), attempt
    assert "kernels_hub.acme" not in sys.modules or not hasattr(sys.modules["kernels_hub.acme"],
                                                                f"rel_raising_{label.replace('-', '_')}")
    _assert_whole(env["KERNELHOOK_CACHE"])


# -- 6. fuzzing the parsers -----------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Characters the grammars care about, so that random text often comes close to valid.
NEAR = st.sampled_from(list("aZ09_-.@/\\ \n\x00\x7fé\u0301\udcff:~^") + ["..", "kernels_hub", "v1", "//", ".lock"])


def _near_text(prefix: str = "") -> st.SearchStrategy[str]:
    return st.lists(st.one_of(NEAR, st.text(max_size=3)), max_size=12).map(lambda parts: prefix + "".join(parts))


def _module_part_ok(part: str) -> bool:
    """An org or repo as a module name part: letters, digits, '-', '_'; starts alnum, ends alnum or '_'; <= 96."""
    return (0 < len(part) <= 96 and part[0] in ALNUM and part[-1] in ALNUM + "_"
            and all(c in ALNUM + "-_" for c in part))


def _hub_part_ok(part: str) -> bool:
    """An org or repo in an id: as above plus '.', and neither '..' nor '--'."""
    return (0 < len(part) <= 96 and part[0] in ALNUM and part[-1] in ALNUM + "_"
            and all(c in ALNUM + "-_." for c in part) and ".." not in part and "--" not in part)


def _revision_ok(rev: str) -> bool:
    """A git ref as far as it matters here (see names.py)."""
    return (0 < len(rev) <= 255 and all(c in ALNUM + "._/-" for c in rev) and rev[0] not in "-/"
            and ".." not in rev and "//" not in rev and not rev.endswith(("/", ".lock")))


MODULE_PART = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,20}[A-Za-z0-9_])?", fullmatch=True)
MODULE_REVISION = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,12}(/[A-Za-z0-9_-]{1,8})?", fullmatch=True)
# Any text, and text that starts out grammatical (kernels_hub.<org>.<repo>) and then goes anywhere.
MODULE_NAME_TEXT = st.one_of(
    st.text(), _near_text("kernels_hub."), _near_text("kernels_hub"),
    st.builds("kernels_hub.{}.{}{}".format, MODULE_PART, MODULE_PART, _near_text()),
)


@FUZZ
@given(MODULE_NAME_TEXT)
def test_fuzz_module_names_parse_to_grammatical_names_or_raise_the_typed_errors(text):
    try:
        parsed = parse_module_name(text)
    except (InvalidKernelName, InvalidRevision) as exc:
        assert isinstance(exc, ImportError) and str(exc)
        return
    if text != "kernels_hub" and not text.startswith("kernels_hub."):
        assert parsed is None
        return
    assert parsed is not None
    if parsed.org is not None:
        assert _module_part_ok(parsed.org) and text.split(".")[1] == parsed.org
    if parsed.kernel is not None:
        kernel = parsed.kernel
        assert _module_part_ok(kernel.repo) and kernel.typed == text and kernel.org == parsed.org
        assert kernel.revision is None or _revision_ok(kernel.revision)
        revision = "" if kernel.revision is None else "@" + kernel.revision
        assert parsed.kernel_module == f"kernels_hub.{kernel.org}.{kernel.repo}{revision}"
        assert text == parsed.kernel_module or text.startswith(parsed.kernel_module + ".")
        assert kernel.repo_id_candidates()[0] == f"{kernel.org}/{kernel.repo}"


@FUZZ
@example("kernels_hub.acme.relu.")
@example("kernels_hub.acme.relu..layers")
@example("kernels_hub.acme.relu@v1.")
@given(MODULE_NAME_TEXT)
def test_fuzz_submodule_parts_of_module_names_are_identifiers(text):
    try:
        parsed = parse_module_name(text)
    except (InvalidKernelName, InvalidRevision):
        return
    if parsed is not None and parsed.kernel is not None:
        rest = text[len(parsed.kernel_module):]
        assert rest == ("" if parsed.submodule is None else "." + parsed.submodule)
        assert parsed.submodule is None or all(part.isidentifier() for part in parsed.submodule.split("."))


@FUZZ
@given(MODULE_PART, MODULE_PART, st.none() | MODULE_REVISION, st.none() | st.sampled_from(["layers", "_ops.x"]))
def test_fuzz_every_grammatical_module_name_parses_back_to_its_parts(org, repo, revision, submodule):
    text = f"kernels_hub.{org}.{repo}" + (f"@{revision}" if revision else "") + (f".{submodule}" if submodule else "")
    parsed = parse_module_name(text)
    assert (parsed.org, parsed.kernel.org, parsed.kernel.repo, parsed.kernel.revision, parsed.submodule) == (
        org, org, repo, revision, submodule)


@FUZZ
@given(st.one_of(st.text(), _near_text(), _near_text("acme/")),
       st.one_of(st.none(), st.text(), _near_text(), st.integers()),
       st.one_of(st.none(), st.integers(-3, 10**6), st.booleans(), st.floats(allow_nan=True)))
def test_fuzz_repo_ids_parse_to_grammatical_names_or_raise_the_typed_errors(repo_id, revision, version):
    try:
        kernel = parse_repo_id(repo_id, revision, version)
    except (InvalidKernelName, InvalidRevision) as exc:
        assert isinstance(exc, ImportError) and str(exc)
        return
    assert repo_id.count("/") == 1 and f"{kernel.org}/{kernel.repo}" == repo_id
    assert _hub_part_ok(kernel.org) and _hub_part_ok(kernel.repo)
    if version is not None:
        assert revision is None and kernel.revision == f"v{version}" and not isinstance(version, bool)
    else:
        assert kernel.revision == revision and (revision is None or _revision_ok(revision))


SYSTEMS = [SystemInfo.parse(s) for s in (
    "torch213-cxx11-cpu-x86_64-linux", "torch27-cxx11-cann82-aarch64-linux", "torch28-cxx11-cu126-x86_64-linux",
    "torch27-cxx98-rocm64-x86_64-linux", "torch29-metal-aarch64-darwin", "torch28-cxx11-xpu20251-x86_64-linux")]
COMPUTE_TAG = st.one_of(st.sampled_from(["cpu", "metal", "mps", "cu126", "cu118", "cu1", "cu", "rocm64", "rocm6",
                                         "cann82", "cann100", "cann8", "xpu20251", "xpu2025", "npu", "0"]),
                        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
VARIANT_NAME = st.one_of(
    st.text(max_size=40),
    _near_text("torch"),
    st.builds("torch{}{}-{}-{}-{}".format, st.integers(0, 9), st.integers(0, 20), COMPUTE_TAG,
              st.sampled_from(["x86_64", "aarch64", "x86-64", ""]), st.sampled_from(["linux", "darwin", "Linux"])),
    st.builds("torch{}{}-{}-{}-{}-{}".format, st.integers(0, 9), st.integers(0, 20),
              st.sampled_from(["cxx11", "cxx98", "cxx03"]), COMPUTE_TAG, st.sampled_from(["x86_64", "aarch64"]),
              st.just("linux")),
    st.builds("torch-stable-abi{}{}-{}-x86_64-linux".format, st.integers(0, 9), st.integers(0, 20), COMPUTE_TAG),
    st.builds("torch-{}".format, st.one_of(COMPUTE_TAG, st.sampled_from(["universal", "npu", "cuda", ""]))),
)


@FUZZ
@given(VARIANT_NAME)
def test_fuzz_variant_names_are_parsed_or_rejected_with_a_reason(name):
    try:
        variant = parse_variant(name)
    except ValueError as exc:
        assert type(exc) is ValueError and repr(name) in str(exc)  # the reason names what was rejected
        return
    assert isinstance(variant, (StrictVariant, StableAbiVariant, NoarchVariant)) and variant.name == name


@FUZZ
@given(st.lists(VARIANT_NAME, max_size=8), st.sampled_from(SYSTEMS))
def test_fuzz_ranking_any_variant_names_gives_every_name_one_verdict_and_never_raises(names, system):
    decisions = rank_variants(names, system)
    assert sorted(d.name for d in decisions) == sorted(set(names))
    verdicts = [d.accepted for d in decisions]
    assert verdicts == sorted(verdicts, reverse=True)  # accepted first
    for decision in decisions:
        assert isinstance(decision.reason, str) and decision.reason
        if decision.accepted:
            variant = parse_variant(decision.name)
            if isinstance(variant, StrictVariant):
                assert variant.torch_version == system.torch_version
            if isinstance(variant, (StrictVariant, StableAbiVariant)):
                assert (variant.arch, variant.os, variant.compute.backend) == (
                    system.arch, system.os, system.compute.backend)
    chosen = choose_variant(names, system)
    assert chosen == (decisions[0].name if decisions and decisions[0].accepted else None)


PATH_PART = st.sampled_from(["..", ".", "", "a", "b.py", "__init__.py", " ", "é", "\\", "\x00", "\n", "\udcff", "~"])


@FUZZ
@given(st.one_of(st.text(), st.lists(st.one_of(PATH_PART, st.text(max_size=4)), max_size=6).map("/".join)))
def test_fuzz_relative_paths_are_refused_or_stay_inside_their_folder(path):
    try:
        checked = check_relative_path(path)
    except CacheError as exc:
        assert isinstance(exc, ImportError) and "refusing the path" in str(exc)
        return
    assert checked == path and not os.path.isabs(path) and "\\" not in path
    assert all(part not in ("", ".", "..") for part in path.split("/"))
    assert all(ord(c) >= 32 and ord(c) != 127 for c in path)
    path.encode("utf-8")  # a name the filesystem can hold
    base = os.path.join(os.sep, "cache", "trees", "digest")
    joined = os.path.normpath(os.path.join(base, path))
    assert joined.startswith(base + os.sep) and Path(base, path).parts[:4] == Path(base).parts
