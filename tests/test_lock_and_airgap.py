"""Reproducible and air-gapped: lockfiles with verified hashes, prefetch, offline and
read-only caches. Each test has its own Hub, since it moves branches."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import kernelhook
from kernelhook.cli import main as cli
from kernelhook.testing import LocalHub

from .conftest import ASCEND, child_env, run_python
from .repos import SEED, new_layout

REPO = "acme/locked"
BLOB = bytes(range(256)) * 16  # an LFS file: locked by sha256


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with [tool.kernelhook.kernels], its own Hub and an empty cache."""
    with LocalHub(tmp_path / "hub") as hub:
        hub.create_repo(REPO)
        hub.shas = {"v1": hub.commit(REPO, _variants("1.0"), branch="v1")}
        folder = tmp_path / "project"
        folder.mkdir()
        (folder / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.kernelhook.kernels]\n"{REPO}" = "v1"\n')
        monkeypatch.chdir(folder)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
        hub.folder, hub.cache = folder, tmp_path / "cache"
        yield hub


def _variants(version: str) -> dict:
    files = new_layout("torch-universal", version, {"build/torch-universal/table.bin": BLOB})
    files.update(new_layout("torch27-cxx11-cann82-aarch64-linux", version))
    return files


def _cli(*args) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(list(args))
    return code, out.getvalue()


def test_lock_records_every_variants_files_and_hashes_and_downloads_nothing(project, system):
    project.clear_requests()
    code, _ = _cli("lock")
    assert code == 0
    assert not [r for r in project.requests if "/resolve/" in r.path]  # locking downloads nothing
    lock = json.loads((project.folder / "kernelhook.lock").read_text())
    entry = lock["kernels"][REPO]
    assert (entry["commit"], entry["revision"], entry["repo_type"]) == (project.shas["v1"], "v1", "model")
    assert set(entry["variants"]) == {"torch-universal", "torch27-cxx11-cann82-aarch64-linux"}
    universal = entry["variants"]["torch-universal"]
    init = _variants("1.0")["build/torch-universal/__init__.py"].encode()
    assert universal["__init__.py"] == {"size": len(init), "git_sha1": hashlib.sha1(b"blob %d\0" % len(init) + init).hexdigest()}
    assert universal["table.bin"] == {"size": len(BLOB), "sha256": hashlib.sha256(BLOB).hexdigest()}


def test_relocking_an_unchanged_hub_rewrites_the_same_bytes(project, system):
    _cli("lock")
    first = (project.folder / "kernelhook.lock").read_bytes()
    _cli("lock")
    assert (project.folder / "kernelhook.lock").read_bytes() == first


def test_the_lock_holds_when_the_hub_moves_on(project, system):
    _cli("lock")
    project.commit(REPO, _variants("1.1"), branch="v1")  # the branch moves
    project.commit(REPO, _variants("2.0"), branch="v2")  # and a new major version appears
    env = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache)}
    code = "import kernels_hub.acme.locked as k, kernelhook; print(k.VERSION, kernelhook.origin(k).how)"
    result = subprocess.run([sys.executable, "-c", code], cwd=project.folder, env=child_env(env),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[:2] == ["1.0", "lockfile"], result.stderr
    # LayerRepository entries without a revision follow the lock too
    assert kernelhook.get_kernel(REPO).VERSION == "1.0"
    assert kernelhook.LayerRepository(REPO, "ReLU").kernel_name.revision is None


def test_a_tampered_cached_file_is_refused_before_it_runs(project, system):
    _cli("lock")
    module = kernelhook.get_kernel(REPO)
    target = kernelhook.origin(module).tree / "__init__.py"
    for name in [n for n in sys.modules if n.startswith("_kernelhook_")]:
        del sys.modules[name]
    os.chmod(target, 0o644)
    target.write_text("import os\nos.environ['PWNED'] = '1'\n")
    with pytest.raises(kernelhook.errors.LockMismatchError) as info:
        kernelhook.get_kernel(REPO)
    message = str(info.value)
    expected = json.loads((project.folder / "kernelhook.lock").read_text())["kernels"][REPO]["variants"]
    assert "__init__.py" in message and expected["torch-universal"]["__init__.py"]["git_sha1"] in message
    assert "PWNED" not in os.environ and not [n for n in sys.modules if n.startswith("_kernelhook_")]
    code, out = _cli("cache", "verify")
    assert code == 1 and ": 2 damaged" in out  # the object and the tree that links to it
    assert _cli("cache", "verify", "--repair")[0] == 0
    assert kernelhook.get_kernel(REPO).VERSION == "1.0"  # fetched again, verified again


def test_a_cache_filled_online_loads_on_an_offline_machine(project, tmp_path):
    _cli("lock")
    env = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache)}
    filled = subprocess.run([sys.executable, "-m", "kernelhook", "download", "--all-variants"], cwd=project.folder,
                            env=child_env(env), capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr
    copied = tmp_path / "copied-cache"
    shutil.copytree(project.cache, copied)  # "copied onto an offline machine"
    project.clear_requests()
    offline = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(copied), "HF_HUB_OFFLINE": "1"}
    for system in (None, ASCEND):  # this machine, and an Ascend box served by the same copied cache
        code = "import kernels_hub.acme.locked as k; print(k.VERSION, k.VARIANT)"
        result = subprocess.run([sys.executable, "-c", code], cwd=project.folder, env=child_env(offline, system),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == "1.0"
    assert project.requests == []  # zero network attempts


@pytest.mark.parametrize("cache_at, offline_by", [
    ("where it was filled", "HF_HUB_OFFLINE"),
    ("copied elsewhere", "HF_HUB_OFFLINE"),
    ("copied elsewhere", "no Hub at HF_ENDPOINT"),
])
def test_a_cli_download_imports_offline_by_module_name_with_no_request(env, hub, tmp_path, cache_at, offline_by):
    """`kernelhook download` records revisions, not which repo a Python spelling means: offline, every
    spelling of the typed name is looked for in the cache."""
    filled = subprocess.run([sys.executable, "-m", "kernelhook", "download", f"{SEED}@v2", SEED],
                            env=child_env(env), capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr
    cache = Path(env["KERNELHOOK_CACHE"])
    if cache_at == "copied elsewhere":
        cache = shutil.copytree(cache, tmp_path / "cluster-cache")
        shutil.rmtree(env["KERNELHOOK_CACHE"])
    hub.clear_requests()
    sha = hub.shas["seed_v2"]
    offline = dict(env, KERNELHOOK_CACHE=str(cache))
    if offline_by == "HF_HUB_OFFLINE":
        offline["HF_HUB_OFFLINE"] = "1"
    else:
        offline["HF_ENDPOINT"] = _closed_port()
    for revision in ("@v2", "", f"@{sha}"):  # each in a fresh interpreter: nothing learnt from the one before
        code = ("import importlib, kernelhook\n"
                f"k = importlib.import_module('kernels_hub.kernels_ext_npu.RMSNorm{revision}')\n"
                "print(k.VERSION, kernelhook.origin(k).commit)")
        result = run_python(code, offline)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["2.0", sha]
    assert hub.requests == []


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


def test_a_lockfile_download_imports_offline_by_module_name_outside_the_project(project, system, tmp_path):
    _cli("lock")
    shutil.rmtree(project.cache)  # the lockfile comes with the project; this machine's cache starts empty
    assert _cli("download")[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project.clear_requests()
    offline = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache), "HF_HUB_OFFLINE": "1"}
    code = "import importlib; print(importlib.import_module('kernels_hub.acme.locked@v1').VERSION)"
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=child_env(offline),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "1.0", result.stderr
    assert project.requests == []


@pytest.mark.parametrize("fetched_by", ["kernelhook download", "a locked load"])
def test_prune_where_no_lockfile_is_in_effect_keeps_what_a_lockfile_fetched(project, system, tmp_path, monkeypatch,
                                                                             fetched_by):
    _cli("lock")
    shutil.rmtree(project.cache)  # locked elsewhere: only the lockfile's own fetch fills this cache
    if fetched_by == "kernelhook download":
        assert _cli("download")[0] == 0
    else:
        assert kernelhook.get_kernel(REPO).VERSION == "1.0"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out = _cli("cache", "prune", "--grace", "0", "--json")
    report = json.loads(out)
    assert code == 0 and report["kept_for_lockfile"] == []  # no lockfile in effect here
    assert (report["refs"], report["trees"], report["objects"]) == ([], [], [])
    project.clear_requests()
    offline = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", "import kernels_hub.acme.locked as k; print(k.VERSION)"],
                            cwd=project.folder, env=child_env(offline), capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "1.0", result.stderr
    assert project.requests == []


def _unshare_works() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or not _unshare_works(), reason="needs unshare -m (root)")
def test_a_read_only_cache_loads_without_writing_and_says_so_when_something_is_missing(project, system):
    kernelhook.get_kernel(REPO, revision="v1")  # fill it online
    before = _snapshot(project.cache)
    env = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache)}

    def in_read_only_mount(code: str, system_description=None):
        script = (f"mount --bind -o ro {project.cache} {project.cache} && "
                  f"{sys.executable} -c {json.dumps(code)}")
        return subprocess.run(["unshare", "-m", "sh", "-c", script], env=child_env(env, system_description),
                              capture_output=True, text=True, timeout=120)

    ok = in_read_only_mount("import importlib; print(importlib.import_module('kernels_hub.acme.locked@v1').VERSION)",
                            "torch213-cxx11-cpu-x86_64-linux")
    assert ok.stdout.strip() == "1.0", ok.stderr
    missing = in_read_only_mount("import importlib; importlib.import_module('kernels_hub.acme.locked@v1')", ASCEND)
    assert missing.returncode != 0 and "CacheError" in missing.stderr and "read-only" in missing.stderr
    assert _snapshot(project.cache) == before


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def test_concurrent_writers_without_locks_never_corrupt_the_cache(env, hub):
    """As on a network filesystem whose locks lie: content addressing and renames carry correctness."""
    code = "import kernels_hub.kernels_community.relu as r; print(r.VERSION)"
    children = [subprocess.Popen([sys.executable, "-c", code], env=child_env({**env, "KERNELHOOK_DISABLE_LOCKS": "1"}),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [out.strip() for out, _ in outputs] == ["1.0"] * 4, [err for _, err in outputs]
    code, out = _cli("cache", "verify")
    assert code == 0 and ": 0 damaged" in out
    assert not list(Path(env["KERNELHOOK_CACHE"], "v1", "tmp").glob("download-*"))


# -- verifying a locked tree once: in a process from memory, across processes from a record ----------

LOCKED_FILES = 6  # the universal variant of _variants(): __init__, _ops, layers, lazy, metadata.json, table.bin
# A fresh interpreter that counts the files it hashes (kernelhook.files.file_digest, the real one, wrapped).
COUNT_HASHES = """
import kernelhook.files as files
real, hashed = files.file_digest, []
files.file_digest = lambda path, kind: hashed.append(path) or real(path, kind)
"""


@pytest.fixture
def counted(monkeypatch):
    """Every file hashed in this process, through the real kernelhook.files.file_digest."""
    hashed = []
    real = kernelhook.files.file_digest
    monkeypatch.setattr(kernelhook.files, "file_digest", lambda path, kind: hashed.append(path) or real(path, kind))
    return hashed


def _forget_kernels() -> None:
    for name in [n for n in sys.modules if n.startswith("_kernelhook_")]:
        del sys.modules[name]


def test_a_locked_tree_is_hashed_once_per_process(project, system, counted):
    _cli("lock")
    first = kernelhook.get_kernel(REPO)
    assert len(counted) == LOCKED_FILES
    assert kernelhook.get_kernel(REPO) is first
    _forget_kernels()  # even executing it again needs no second hashing: nothing changed on disk
    assert kernelhook.get_kernel(REPO).VERSION == "1.0"
    assert len(counted) == LOCKED_FILES


def test_a_fresh_process_reuses_what_an_earlier_one_verified(project, system):
    kernelhook.get_kernel(REPO, revision="v1")  # fill the cache while no lockfile is in effect: nothing verified
    _cli("lock")
    env = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache)}
    code = COUNT_HASHES + "import kernels_hub.acme.locked as k\nprint(len(hashed), k.VERSION)\n"
    runs = [subprocess.run([sys.executable, "-c", code], cwd=project.folder, env=child_env(env), capture_output=True,
                           text=True, timeout=120) for _ in range(2)]
    assert [run.stdout.split() for run in runs] == [[str(LOCKED_FILES), "1.0"], ["0", "1.0"]], [r.stderr for r in runs]


def _edit_in_place_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")  # same size, same inode
    os.chmod(path, before.st_mode)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the ctime still tells


def _replace_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    replacement = path.with_name(path.name + ".new")
    replacement.write_bytes(b"Y" + path.read_bytes()[1:])
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, path)  # a new inode


TAMPERING = {
    "edited in place, mtime put back": (lambda tree: _edit_in_place_keeping_size_and_mtime(tree / "table.bin"),
                                        "table.bin does not match the lockfile"),
    "replaced, size and mtime kept": (lambda tree: _replace_keeping_size_and_mtime(tree / "_ops.py"),
                                      "_ops.py does not match the lockfile"),
    "a file added": (lambda tree: (tree / "extra.py").write_text("import os\n"),
                     "extra.py is in the cache but not in the lockfile"),
    "a file removed": (lambda tree: (tree / "lazy.py").unlink(), "lazy.py is locked but missing from the cache"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_a_verified_tree_changed_afterwards_is_hashed_again_and_refused(project, system, how):
    _cli("lock")
    tree = kernelhook.origin(kernelhook.get_kernel(REPO)).tree  # verified: in memory, and on record in the cache
    _forget_kernels()
    tamper, message = TAMPERING[how]
    tamper(tree)
    env = {"HF_ENDPOINT": project.url, "KERNELHOOK_CACHE": str(project.cache)}
    fresh = subprocess.run([sys.executable, "-c", "import kernels_hub.acme.locked"], cwd=project.folder,
                           env=child_env(env), capture_output=True, text=True, timeout=120)
    assert fresh.returncode != 0 and "LockMismatchError" in fresh.stderr and message in fresh.stderr, fresh.stderr
    with pytest.raises(kernelhook.errors.LockMismatchError, match=message):  # and in this process
        kernelhook.get_kernel(REPO)
    assert not [n for n in sys.modules if n.startswith("_kernelhook_")]


def test_the_nearest_lockfile_above_the_working_directory_is_the_one_in_effect(tmp_path, monkeypatch):
    from kernelhook.project import lockfile_in_effect

    monkeypatch.delenv("KERNELHOOK_LOCKFILE", raising=False)
    deep = tmp_path / "project" / "src" / "pkg"
    deep.mkdir(parents=True)
    (tmp_path / "kernelhook.lock").write_text("")
    (tmp_path / "project" / "kernelhook.lock").write_text("")
    (tmp_path / "project" / "src" / "kernelhook.lock").mkdir()  # a folder of that name is not a lockfile
    monkeypatch.chdir(deep)
    assert lockfile_in_effect() == tmp_path / "project" / "kernelhook.lock"
    (tmp_path / "project" / "kernelhook.lock").unlink()
    assert lockfile_in_effect() == tmp_path / "kernelhook.lock"
    monkeypatch.setenv("KERNELHOOK_LOCKFILE", str(tmp_path / "named.lock"))
    assert lockfile_in_effect() == tmp_path / "named.lock"
