"""One cache, several users: what one user fills, another loads, as far as the filler's umask allows.

The second user is uid/gid 65534 (nobody) without capabilities, so only the permission bits
decide what it may read; the tests skip where root and setpriv are not available.
"""

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from .conftest import child_env
from .repos import RELU, SEED

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NAME = "kernels_hub.kernels_ext_npu.RMSNorm"


@functools.lru_cache(maxsize=1)
def _nobody_can_run_python() -> bool:
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv")):
        return False
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import kernelhook"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture
def shared(env):
    """A cache path and an HF_HOME in a folder every user may enter (pytest's tmp_path is root's alone)."""
    if not _nobody_can_run_python():
        pytest.skip("needs root and setpriv, to load as a second, unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="kernelhook-shared-"))
    try:
        os.chmod(folder, 0o755)
        hf_home = folder / "hf-home"
        shutil.copytree(env["HF_HOME"], hf_home)
        os.chmod(hf_home, 0o755)
        cache = folder / "cache"
        yield types.SimpleNamespace(
            folder=folder, cache=cache,
            env=dict(env, KERNELHOOK_CACHE=str(cache), HF_HOME_OVERRIDE=str(hf_home)),
        )
    finally:
        shutil.rmtree(folder)


def _fill_as_root(shared, umask: int, sha: str) -> None:
    code = f"import importlib\nfor rev in ('@v1', '', '@{sha}'):\n    importlib.import_module({NAME!r} + rev)\n"
    filled = subprocess.run([sys.executable, "-c", code], env=child_env(shared.env), umask=umask, cwd=shared.folder,
                            capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr


def _run_as_nobody(shared, code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*AS_NOBODY, sys.executable, "-c", code], env=child_env({**shared.env, **env}),
                          umask=0o022, cwd=shared.folder, capture_output=True, text=True, timeout=120)


def test_a_cache_filled_under_umask_022_loads_for_another_user_offline(hub, shared):
    sha = hub.shas["seed_v1"]
    _fill_as_root(shared, 0o022, sha)
    hub.clear_requests()
    code = (f"import importlib, os\nprint(os.getuid())\n"
            f"for rev in ('@v1', '', '@{sha}'):\n    print(importlib.import_module({NAME!r} + rev).VERSION)\n")
    result = _run_as_nobody(shared, code, HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["65534", "1.0", "2.0", "1.0"]
    assert hub.requests == []


def test_a_cache_filled_under_umask_077_is_a_cache_error_for_another_user_not_a_trip_to_the_hub(hub, shared):
    _fill_as_root(shared, 0o077, hub.shas["seed_v1"])
    hub.clear_requests()
    result = _run_as_nobody(shared, f"import {NAME}")  # online: a cache miss would ask the Hub
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kernelhook.errors.CacheError:"), result.stderr[-3000:]
    assert str(shared.cache) in last and "Permission denied" in last
    assert "umask" in last and f"chmod -R a+rX {shared.cache}" in last and "KERNELHOOK_CACHE" in last
    assert hub.requests == []


def test_the_cache_gives_its_files_and_folders_the_modes_the_umask_allows(env, tmp_path):
    cache = tmp_path / "cache"
    filled = subprocess.run([sys.executable, "-m", "kernelhook", "download", f"{SEED}@v1", RELU],
                            env=child_env(dict(env, KERNELHOOK_CACHE=str(cache))), umask=0o027,
                            capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr
    modes, entry_kinds = {}, set()
    for path in cache.rglob("*"):
        parts = path.relative_to(cache).parts  # ("v1", "objects", ...)
        top = parts[1] if len(parts) > 1 else None
        kind = "folder" if path.is_dir() else "object" if top in ("objects", "trees") else "file"
        modes.setdefault(kind, set()).add(stat.S_IMODE(path.lstat().st_mode))
        if kind != "folder":
            entry_kinds.add(top)
    # objects and the trees linking to them are read-only; refs, listings, indexes, manifests, names are not
    shown = {kind: sorted(map(oct, found)) for kind, found in modes.items()}
    assert modes == {"folder": {0o750}, "object": {0o440}, "file": {0o640}}, shown
    assert {"objects", "trees", "refs", "index", "manifests", "names"} <= entry_kinds
    assert not list((cache / "v1" / "tmp").iterdir())


def test_the_umask_is_read_without_being_changed():
    code = ("import os\nos.umask(0o027)\nfrom kernelhook.files import file_mode, folder_mode, process_umask\n"
            "print(oct(process_umask()), oct(file_mode()), oct(file_mode(read_only=True)), oct(folder_mode()), "
            "oct(os.umask(0o022)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["0o27", "0o640", "0o440", "0o750", "0o27"], result.stderr
