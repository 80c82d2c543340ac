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
from kernelhook import SettingError
from kernelhook.cli import main as cli
from kernelhook.loading import loader
from kernelhook.platform import set_system

from .conftest import CPU, run_python
from .repos import SEED

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


# -- malformed KERNELHOOK_* settings: a typed error on use, naming the variable, value and form ------------

SYSTEM_FORM = "a strict variant name that describes a machine"
WHOLE = "a whole number >= 0"
SECONDS = "a number of seconds >= 0 (no unit)"
BYTES = "a whole number of bytes (no unit)"

BAD_SETTINGS = [  # variable, bad value, the form the message asks for, a good value
    ("KERNELHOOK_SYSTEM", "torch27-cxx11-cann82-aarch64", SYSTEM_FORM, CPU),  # the OS part is missing
    ("KERNELHOOK_SYSTEM", CPU.upper(), SYSTEM_FORM, CPU),  # upper case: variant names are lower case
    ("KERNELHOOK_SYSTEM", "torch-universal", SYSTEM_FORM, CPU),  # a variant, but it names no machine
    ("KERNELHOOK_RETRIES", "three", WHOLE, "3"),  # a word
    ("KERNELHOOK_RETRIES", "-1", WHOLE, "0"),  # negative
    ("KERNELHOOK_RETRY_BACKOFF_S", "500ms", SECONDS, "0.5"),  # a unit: the value is in seconds
    ("KERNELHOOK_MAX_FILE_BYTES", "64GiB", BYTES, str(64 * 1024**3)),  # a unit: the value is in bytes
    ("KERNELHOOK_DIST_WAIT_S", "5m", SECONDS, "300"),  # a unit; read under torch.distributed only
]


def _ids(rows):
    return [f"{variable[len('KERNELHOOK_'):]}={value}" for variable, value, *_ in rows]


@contextlib.contextmanager
def process_group_for(variable: str, tmp_path: Path):
    """KERNELHOOK_DIST_WAIT_S is read where it is used: in a torch.distributed job (here one rank)."""
    if variable != "KERNELHOOK_DIST_WAIT_S":
        yield
        return
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/process-group", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _kernel_modules() -> set:
    return {name for name in sys.modules if name.startswith(("_kernelhook_", "kernels_hub."))}


@pytest.mark.parametrize("variable, value, form, good", BAD_SETTINGS, ids=_ids(BAD_SETTINGS))
def test_a_malformed_setting_is_a_setting_error_naming_it_through_get_kernel(
        env, system, monkeypatch, tmp_path, variable, value, form, good):
    if variable == "KERNELHOOK_SYSTEM":
        set_system(None)  # read the environment, as a fresh process does; the fixture restores the injection
    monkeypatch.setenv(variable, value)
    before = _kernel_modules()
    with process_group_for(variable, tmp_path), pytest.raises(SettingError) as info:
        kernelhook.get_kernel(SEED, version=1)
    error = info.value
    assert isinstance(error, ImportError) and isinstance(error, ValueError)
    assert str(error).startswith(f"{variable}={value!r} is not {form}")
    assert f"e.g. {variable}=" in str(error) and "Fix:" in str(error)
    assert error.__cause__ is None and error.__context__ is None  # no int()/float() traceback behind it
    assert _kernel_modules() == before
    assert not Path(env["KERNELHOOK_CACHE"], "v1", "trees").exists()
    monkeypatch.setenv(variable, good)  # read on use: mended, the next load works in the same process
    with process_group_for(variable, tmp_path):
        assert kernelhook.get_kernel(SEED, version=1).VERSION == "1.0"


@pytest.mark.parametrize("variable, value, form, good", BAD_SETTINGS, ids=_ids(BAD_SETTINGS))
def test_a_malformed_setting_is_a_setting_error_naming_it_through_import(env, tmp_path, variable, value, form, good):
    code = "import kernels_hub.kernels_ext_npu.RMSNorm\n"
    if variable == "KERNELHOOK_DIST_WAIT_S":
        code = (f"import torch.distributed as dist\n"
                f"dist.init_process_group('gloo', init_method='file://{tmp_path}/pg', rank=0, world_size=1)\n" + code)
    system = value if variable == "KERNELHOOK_SYSTEM" else CPU
    result = run_python(code, {**env, variable: value}, system=system)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1].removeprefix("[rank0]: ")  # torch.distributed's prefix
    assert last.startswith(f"kernelhook.errors.SettingError: {variable}={value!r} is not {form}"), result.stderr
    for noise in ("invalid literal", "could not convert", "During handling", "direct cause"):
        assert noise not in result.stderr
