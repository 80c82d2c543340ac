"""Bad input at the boundary: bytecode in a repo, malformed KERNELHOOK_* settings.

Each is refused where it enters (the listing, the environment) with a typed
error or a silent skip, and never reaches the cache or sys.modules.
"""

import contextlib
import importlib
import importlib.util
import io
import json
import marshal
import sys
import uuid
from pathlib import Path

import pytest

import kernelhook
from kernelhook.cli import main as cli
from kernelhook.loading import loader

from .conftest import run_python

BYTECODE_REPO = "acme/with-bytecode"
VARIANT = "torch-universal"
LAYERS_SOURCE = "MARK = 'source'\n"
LAYERS_BYTECODE = "MARK = 'bytecode'\n"  # what a repo's .pyc would run instead of the source
EVIL_BYTECODE = "import builtins\nbuiltins.KERNELHOOK_EVIL_RAN = True\n"
INIT = (
    "from . import layers\n"
    "try:\n"
    "    from . import evil\n"
    "except ImportError:\n"
    "    evil = None\n"
)


def unchecked_pyc(source: str, filename: str) -> bytes:
    """An unchecked hash-based .pyc: a plain SourceFileLoader runs it without looking at the source."""
    flags = (1).to_bytes(4, "little")  # hash-based, check_source off
    code = marshal.dumps(compile(source, filename, "exec"))
    return importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source.encode()) + code


def sourceless_pyc(source: str, filename: str) -> bytes:
    """A timestamp .pyc with no source beside it, as `python -m compileall -b` leaves one."""
    code = marshal.dumps(compile(source, filename, "exec"))
    return importlib.util.MAGIC_NUMBER + bytes(4) + bytes(4) + len(source).to_bytes(4, "little") + code


def bytecode_files(base: str) -> dict:
    cached = importlib.util.cache_from_source("layers.py")  # __pycache__/layers.<this python's tag>.pyc
    return {
        f"{base}/__init__.py": INIT,
        f"{base}/layers.py": LAYERS_SOURCE,
        f"{base}/{cached}": unchecked_pyc(LAYERS_BYTECODE, "layers.py"),
        f"{base}/evil.pyc": sourceless_pyc(EVIL_BYTECODE, "evil.py"),
    }


@pytest.fixture
def bytecode_repo(env, hub):
    hub.create_repo(BYTECODE_REPO)
    sha = hub.commit(BYTECODE_REPO, bytecode_files(f"build/{VARIANT}"), branch="v1")
    hub.clear_requests()
    return sha


@pytest.fixture
def no_evil():
    yield
    import builtins

    ran = getattr(builtins, "KERNELHOOK_EVIL_RAN", False)
    with contextlib.suppress(AttributeError):
        del builtins.KERNELHOOK_EVIL_RAN
    assert not ran, "bytecode from the repo was executed"


def test_bytecode_in_a_repo_is_never_fetched_cached_or_run(env, system, hub, bytecode_repo, no_evil):
    module = importlib.import_module("kernels_hub.acme.with_bytecode")
    assert module.layers.MARK == "source" and module.evil is None
    assert [r.path for r in hub.requests if ".pyc" in r.path or "__pycache__" in r.path] == []
    cache = Path(env["KERNELHOOK_CACHE"])
    assert [p for p in cache.rglob("*") if p.suffix == ".pyc" or p.name == "__pycache__"] == []
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("kernels_hub.acme.with_bytecode.evil")


def test_kernelhook_lock_does_not_lock_bytecode(env, system, bytecode_repo, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(f'[tool.kernelhook.kernels]\n"{BYTECODE_REPO}" = "v1"\n')
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["lock"]) == 0
    locked = json.loads((tmp_path / "kernelhook.lock").read_text())["kernels"][BYTECODE_REPO]
    assert sorted(locked["variants"][VARIANT]) == ["__init__.py", "layers.py"]
    monkeypatch.setenv("KERNELHOOK_LOCKFILE", str(tmp_path / "kernelhook.lock"))
    assert kernelhook.get_kernel(BYTECODE_REPO).layers.MARK == "source"  # the lock admits what was fetched


def test_the_store_loader_never_runs_bytecode_found_in_a_tree(tmp_path, no_evil):
    """Whatever a tree holds (one cached before bytecode was left out, say), only sources are modules."""
    tree = tmp_path / "v1" / "trees" / ("ab" * 32)  # a store tree's path, which the store path hook serves
    for relative, data in bytecode_files(str(tree)).items():
        Path(relative).parent.mkdir(parents=True, exist_ok=True)
        Path(relative).write_bytes(data.encode() if isinstance(data, str) else data)
    name = f"_kernelhook_test_{uuid.uuid4().hex}"
    module = loader.execute_package(name, tree)
    assert module.layers.MARK == "source" and module.evil is None
    assert f"{name}.evil" not in sys.modules
