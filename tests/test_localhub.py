"""The loopback Hub against the real huggingface_hub client (no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from kernelhook.testing import LocalHub, RequestRecord

SMALL = b"print('hello from the hub')\n"
BIG = bytes(range(256)) * 300  # 76800 bytes, stored through LFS as *.so


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with LocalHub(tmp_path / "hub") as running:
        yield running


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "hf_cache")


def seed(hub: LocalHub, repo_type: str = "model", repo_id: str = "acme/demo") -> str:
    hub.create_repo(repo_id, repo_type=repo_type)
    return hub.commit(repo_id, {"README.md": "# demo\n", "build/cpu/lib.py": SMALL, "build/cpu/_ops.so": BIG},
                      repo_type=repo_type, message="first")


def download(hub, cache_dir, filename, repo_type="model", repo_id="acme/demo", revision=None) -> bytes:
    path = hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                           endpoint=hub.url, cache_dir=cache_dir)
    with open(path, "rb") as f:
        return f.read()


def raw_get(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


# -- refs and revisions --------------------------------------------------------

def test_refs_list_branches_and_tags(hub, api):
    first = seed(hub)
    hub.set_branch("acme/demo", "v1", first)
    hub.create_tag("acme/demo", "release", "v1")
    refs = api.list_repo_refs("acme/demo", include_pull_requests=True)
    assert {(b.name, b.ref, b.target_commit) for b in refs.branches} == {
        ("main", "refs/heads/main", first), ("v1", "refs/heads/v1", first)}
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("release", "refs/tags/release", first)]
    assert refs.pull_requests == [] and refs.converts == []


@pytest.mark.parametrize("repo_type", ["model", "kernel"])
def test_repo_info_resolves_every_kind_of_revision(hub, api, repo_type):
    first = seed(hub, repo_type)
    second = hub.commit("acme/demo", {"README.md": "changed"}, repo_type=repo_type)
    hub.create_tag("acme/demo", "t1", first, repo_type=repo_type)
    hub.set_branch("acme/demo", "feature/x", first, repo_type=repo_type)  # a "/" travels as %2F
    for revision, expected in [(None, second), ("main", second), ("t1", first), ("feature/x", first),
                               (first, first), (first[:7], first), (second[:12], second)]:
        info = api.repo_info("acme/demo", repo_type=repo_type, revision=revision)
        assert (info.id, info.sha, info.private) == ("acme/demo", expected, False), revision
    files = api.repo_info("acme/demo", repo_type=repo_type, revision=first).siblings
    names = [s.rfilename if hasattr(s, "rfilename") else s["rfilename"] for s in files]
    assert names == ["README.md", "build/cpu/_ops.so", "build/cpu/lib.py"]


def test_model_info_with_blobs_describes_lfs(hub, api):
    seed(hub)
    siblings = {s.rfilename: s for s in api.model_info("acme/demo", files_metadata=True).siblings}
    assert siblings["build/cpu/lib.py"].size == len(SMALL) and siblings["build/cpu/lib.py"].lfs is None
    assert siblings["build/cpu/_ops.so"].lfs.sha256 == hashlib.sha256(BIG).hexdigest()


# -- tree and commits ----------------------------------------------------------

def test_tree_recursive_carries_git_oids_and_lfs(hub, api):
    seed(hub)
    entries = {e.path: e for e in api.list_repo_tree("acme/demo", recursive=True)}
    assert sorted(entries) == ["README.md", "build", "build/cpu", "build/cpu/_ops.so", "build/cpu/lib.py"]
    assert entries["build/cpu/lib.py"].blob_id == git_blob_sha1(SMALL)
    assert entries["build/cpu/lib.py"].size == len(SMALL) and entries["build/cpu/lib.py"].lfs is None
    lfs_file = entries["build/cpu/_ops.so"]
    assert lfs_file.size == len(BIG)
    assert (lfs_file.lfs.sha256, lfs_file.lfs.size) == (hashlib.sha256(BIG).hexdigest(), len(BIG))
    pointer = (b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
               % (hashlib.sha256(BIG).hexdigest().encode(), len(BIG)))
    assert lfs_file.blob_id == git_blob_sha1(pointer)  # the git blob is the pointer, as on the Hub
    assert lfs_file.lfs.pointer_size == len(pointer)


def test_tree_of_a_folder_and_missing_paths(hub, api):
    seed(hub)
    assert [e.path for e in api.list_repo_tree("acme/demo", path_in_repo="build")] == ["build/cpu"]
    assert [e.path for e in api.list_repo_tree("acme/demo")] == ["build", "README.md"]  # folders first
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("acme/demo", path_in_repo="nope"))
    with pytest.raises(EntryNotFoundError):  # a file is not a folder: HfFileSystem relies on this
        list(api.list_repo_tree("acme/demo", path_in_repo="README.md"))


def test_tree_pages_when_asked(hub):
    seed(hub)
    url = f"{hub.url}/api/models/acme/demo/tree/main?recursive=true&limit=2"
    paths = []
    while url:
        request = urllib.request.Request(url)
        with urllib.request.urlopen(request, timeout=10) as response:
            paths += [e["path"] for e in json.loads(response.read())]
            link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert len(paths) == 5 and len(set(paths)) == 5


def test_commits_newest_first(hub, api):
    first = seed(hub)
    second = hub.commit("acme/demo", {"a.txt": "a"}, message="add a\n\nwith a body")
    commits = api.list_repo_commits("acme/demo")
    assert [c.commit_id for c in commits] == [second, first]
    assert (commits[0].title, commits[0].message, commits[1].title) == ("add a", "with a body", "first")
    assert commits[0].created_at > commits[1].created_at


# -- downloads -----------------------------------------------------------------

@pytest.mark.parametrize("repo_type", ["model", "kernel"])
def test_download_normal_and_lfs_files(hub, cache_dir, repo_type):
    sha = seed(hub, repo_type)
    assert download(hub, cache_dir, "build/cpu/lib.py", repo_type) == SMALL
    assert download(hub, cache_dir, "build/cpu/_ops.so", repo_type) == BIG
    url = hf_hub_url("acme/demo", "build/cpu/_ops.so", repo_type=repo_type, endpoint=hub.url)
    meta = get_hf_file_metadata(url)
    assert (meta.commit_hash, meta.etag, meta.size) == (sha, hashlib.sha256(BIG).hexdigest(), len(BIG))
    url = hf_hub_url("acme/demo", "build/cpu/lib.py", repo_type=repo_type, endpoint=hub.url)
    assert get_hf_file_metadata(url).etag == git_blob_sha1(SMALL)


def test_range_requests_resume(hub):
    seed(hub)
    url = f"{hub.url}/acme/demo/resolve/main/build/cpu/_ops.so"
    status, headers, body = raw_get(url, {"Range": "bytes=1000-"})
    assert (status, body) == (206, BIG[1000:])
    assert headers["Content-Range"] == f"bytes 1000-{len(BIG) - 1}/{len(BIG)}"
    assert headers["Content-Length"] == str(len(BIG) - 1000)
    with pytest.raises(urllib.error.HTTPError) as err:
        raw_get(url, {"Range": f"bytes={len(BIG)}-"})
    assert err.value.code == 416


def test_concurrent_snapshot_download(hub, tmp_path):
    hub.create_repo("acme/many")
    files = {f"build/cpu/m{i:02d}.py": f"N = {i}\n" for i in range(40)}
    files.update({f"build/cpu/w{i}.bin": bytes([i]) * 5000 for i in range(4)})
    sha = hub.commit("acme/many", files)
    folder = HfApi(endpoint=hub.url).snapshot_download("acme/many", cache_dir=str(tmp_path / "c"), max_workers=8)
    assert folder.endswith(sha)
    for path, data in files.items():
        with open(os.path.join(folder, path), "rb") as f:
            assert f.read() == data.encode() if isinstance(data, str) else data


# -- errors --------------------------------------------------------------------

def test_errors_map_to_the_clients_exceptions(hub, api, cache_dir):
    seed(hub)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing")
    with pytest.raises(RepositoryNotFoundError):  # same id, other repo type
        api.kernel_info("acme/demo")
    with pytest.raises(RepositoryNotFoundError):
        download(hub, cache_dir, "README.md", repo_id="acme/missing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/demo", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/demo", revision="deadbeef")  # hex, but no such commit
    with pytest.raises(RevisionNotFoundError):
        download(hub, cache_dir, "README.md", revision="v9")
    with pytest.raises(EntryNotFoundError):
        download(hub, cache_dir, "no/such/file.py")
    with pytest.raises(EntryNotFoundError):
        download(hub, cache_dir, "build")  # a folder is not a file
    missing = [r for r in hub.requests if r.path.endswith("/no/such/file.py")]
    assert missing and all(r.status == 404 for r in missing)


def test_same_repo_id_lives_in_both_types_independently(hub, api, cache_dir):
    hub.create_repo("acme/both")
    hub.create_repo("acme/both", repo_type="kernel")
    hub.commit("acme/both", {"who.txt": "model"})
    hub.commit("acme/both", {"who.txt": "kernel"}, repo_type="kernel")
    assert download(hub, cache_dir, "who.txt", repo_id="acme/both") == b"model"
    assert download(hub, cache_dir, "who.txt", "kernel", repo_id="acme/both") == b"kernel"
    hub.delete_repo("acme/both")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/both")
    assert api.kernel_info("acme/both").sha


# -- history and commit semantics ----------------------------------------------

def test_history_is_real_git(hub, api, cache_dir, tmp_path):
    old = seed(hub)
    new = hub.commit("acme/demo", {"build/cpu/lib.py": b"v2\n"}, message="v2")
    assert download(hub, cache_dir, "build/cpu/lib.py") == b"v2\n"
    assert download(hub, cache_dir, "build/cpu/lib.py", revision=old) == SMALL
    hub.set_branch("acme/demo", "main", old)  # move the branch back; the new commit stays reachable by sha
    assert api.model_info("acme/demo").sha == old
    assert api.model_info("acme/demo", revision=new).sha == new
    git_dir = tmp_path / "hub" / "models" / "acme" / "demo.git"
    env = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "PATH": os.environ["PATH"]}
    log = subprocess.run(["git", "--git-dir", str(git_dir), "log", "--format=%H %s", new],
                         env=env, capture_output=True, text=True, check=True, timeout=30).stdout
    assert log.splitlines() == [f"{new} v2", f"{old} first"]


def test_commit_add_delete_replace(hub, api):
    seed(hub)
    hub.commit("acme/demo", {"extra.txt": "x"}, delete=["build"])
    assert sorted(e.path for e in api.list_repo_tree("acme/demo", recursive=True)) == ["README.md", "extra.txt"]
    hub.commit("acme/demo", {"only.txt": "y"}, replace=True)
    assert [e.path for e in api.list_repo_tree("acme/demo", recursive=True)] == ["only.txt"]
    with pytest.raises(ValueError):
        hub.commit("acme/demo", {}, delete=["not-there"])
    with pytest.raises(LookupError):
        hub.commit("acme/nope", {"a": "b"})


def test_commits_are_deterministic(tmp_path):
    shas = []
    for name in ("one", "two"):
        other = LocalHub(tmp_path / name)  # never started: writing needs no server
        shas.append((seed(other), other.commit("acme/demo", {"a": "b"})))
    assert shas[0] == shas[1]


def test_commit_dir_skips_bytecode(hub, api, tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("X = 1\n")
    (src / "pkg" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"junk")
    (src / "pkg" / "stale.pyc").write_bytes(b"junk")
    (src / "pkg" / "_ops.so").write_bytes(BIG)
    hub.create_repo("acme/dir", repo_type="kernel")
    sha = hub.commit_dir("acme/dir", src, repo_type="kernel")
    files = {e.path: e for e in api.list_repo_tree("acme/dir", repo_type="kernel", revision=sha, recursive=True)
             if e.__class__.__name__ == "RepoFile"}
    assert sorted(files) == ["pkg/__init__.py", "pkg/_ops.so"] and files["pkg/_ops.so"].lfs is not None


def test_a_new_hub_on_the_same_root_sees_old_repos(hub, tmp_path):
    sha = seed(hub)
    with LocalHub(tmp_path / "hub") as again:
        assert HfApi(endpoint=again.url).model_info("acme/demo").sha == sha


# -- bookkeeping and lifecycle -------------------------------------------------

def test_requests_are_recorded_and_counted(hub, api, cache_dir):
    seed(hub)
    hub.clear_requests()
    api.list_repo_refs("acme/demo")
    download(hub, cache_dir, "README.md")
    assert hub.count() == len(hub.requests) == 3
    assert hub.count("HEAD") == 1 and hub.count("get", "/resolve/") == 1
    assert hub.requests[0] == RequestRecord("GET", "/api/models/acme/demo/refs", "", 200)
    hub.clear_requests()
    assert hub.count() == 0


def test_side_endpoints(hub, api):
    assert raw_get(f"{hub.url}/api/agent-harnesses")[2] == b'{"standardEnvVars":[],"harnesses":{}}'
    assert api.get_organization_overview("acme").trustedKernelPublisher is True
    assert hub.env() == {"HF_ENDPOINT": hub.url}


def test_stop_is_prompt_and_idempotent(tmp_path):
    hub = LocalHub(tmp_path / "hub").start()
    seed(hub)
    HfApi(endpoint=hub.url).model_info("acme/demo")  # leaves a keep-alive connection in the pool
    hub.stop()  # must not hang on that connection (pytest's timeout-free run would stall here)
    hub.stop()
    with pytest.raises(OSError):
        raw_get(f"{hub.url}/api/agent-harnesses")


def test_keep_alive_connections_send_without_nagle_delay(hub, api):
    from kernelhook.testing.server import RequestHandler as _Handler

    # Nagle plus delayed ACKs would add ~40 ms to every keep-alive request (DESIGN.md).
    assert _Handler.disable_nagle_algorithm is True and _Handler.protocol_version == "HTTP/1.1"
    seed(hub)
    for _ in range(3):
        api.list_repo_refs("acme/demo")
    assert hub.count(path_contains="/refs") == 3


# -- the public `kernels` package ----------------------------------------------

KERNEL_METADATA = {"name": "relu", "id": "relu", "version": 1, "license": "Apache-2.0",
                   "python-depends": [], "backend": {"type": "cpu"}}
KERNEL_SCRIPT = """
import kernels
relu = kernels.get_kernel("acme/relu", version=1, trust_remote_code=True)
print(relu.relu(-3.0), relu.relu(2.0))
# Without trust_remote_code it asks the organization overview for trustedKernelPublisher.
print(kernels.has_kernel("acme/relu", version=1))
"""


def test_public_kernels_package_loads_from_the_hub(hub, tmp_path):
    pytest.importorskip("kernels")
    hub.create_repo("acme/relu", repo_type="kernel")
    hub.commit("acme/relu", {
        "build/torch-universal/relu/__init__.py": "def relu(x):\n    return x if x > 0 else 0.0\n",
        "build/torch-universal/metadata.json": json.dumps(KERNEL_METADATA),
    }, repo_type="kernel", branch="v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "KERNELS_"))}
    env.update(hub.env(), HF_HOME=str(tmp_path / "kernels_home"))  # HF_HUB_DISABLE_TELEMETRY stays unset
    proc = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["0.0", "2.0", "True"]
    assert hub.count("GET", "/api/kernels/acme/relu/refs") >= 1
    assert hub.count("GET", "/api/organizations/acme/overview") == 1
    assert hub.count("GET", "/kernels/acme/relu/resolve/") >= 2
