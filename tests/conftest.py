"""Shared fixtures: a loopback Hub with real git history, a fresh cache per test,
and clean sys.modules between tests.

HF_HOME is set before huggingface_hub is imported anywhere, with the agent
harness registry already cached, so the client makes no request of its own.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

_HF_HOME = tempfile.mkdtemp(prefix="kernelhook-hf-home-")
Path(_HF_HOME, ".agent_harnesses.json").write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
os.environ["HF_HOME"] = _HF_HOME
for variable in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "KERNELHOOK_SYSTEM", "KERNELHOOK_CACHE",
                 "KERNELHOOK_RETRIES", "KERNELHOOK_RETRY_BACKOFF_S", "KERNELHOOK_MAX_FILE_BYTES",
                 "KERNELHOOK_DIST_WAIT_S", "KERNELHOOK_DEBUG"):
    os.environ.pop(variable, None)

from kernelhook.platform import SystemInfo, set_system  # noqa: E402
from kernelhook.testing import LocalHub  # noqa: E402

from . import repos  # noqa: E402

CPU = "torch213-cxx11-cpu-x86_64-linux"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASCEND = "torch27-cxx11-cann82-aarch64-linux"


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """One Hub for the session, holding the repos in tests/repos.py (tests that change a repo make their own)."""
    with LocalHub(tmp_path_factory.mktemp("hub")) as local_hub:
        local_hub.shas = repos.publish_world(local_hub)
        yield local_hub


@pytest.fixture
def env(hub, tmp_path, monkeypatch):
    """Point kernelhook at the session Hub and a fresh, empty cache."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
    hub.clear_requests()
    return {"HF_ENDPOINT": hub.url, "KERNELHOOK_CACHE": str(tmp_path / "cache"), "HF_HOME": _HF_HOME}


@pytest.fixture(scope="session")
def layer_hub(tmp_path_factory):
    """A Hub with torch layer repos for kernelize, and examples/kernels/RMSNorm as kernels-ext-npu/RMSNorm."""
    with LocalHub(tmp_path_factory.mktemp("layer-hub")) as local_hub:
        local_hub.shas = repos.publish_layers(local_hub, EXAMPLES)
        yield local_hub


@pytest.fixture
def kenv(layer_hub, tmp_path, monkeypatch, system):
    """Point kernelhook at the layer Hub and a fresh cache, on an injected CPU system."""
    monkeypatch.setenv("HF_ENDPOINT", layer_hub.url)
    monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
    layer_hub.clear_requests()
    return layer_hub


@pytest.fixture
def system():
    """Inject a system description; restored afterwards. Defaults to a CPU box."""
    previous = set_system(SystemInfo.parse(CPU))

    def use(description: str) -> SystemInfo:
        info = SystemInfo.parse(description)
        set_system(info)
        return info

    yield use
    set_system(previous)


@pytest.fixture(autouse=True)
def clean_modules():
    """Kernels loaded by one test are not seen by the next."""
    before = set(sys.modules)
    yield
    from kernelhook.binding.layers import forget_loaded_layers

    forget_loaded_layers()  # layer classes are memoised per process; each test has its own Hub and cache
    for name in set(sys.modules) - before:
        if name.startswith(("kernels_hub.", "_kernelhook_")):
            del sys.modules[name]
    root = sys.modules.get("kernels_hub")
    if root is not None:
        for attribute in [a for a, v in vars(root).items() if type(v).__name__ == "module" and a != "__builtins__"]:
            if f"kernels_hub.{attribute}" not in sys.modules:
                delattr(root, attribute)


def child_env(env: dict, system: str | None = CPU) -> dict:
    """The environment of a fresh interpreter that uses the given Hub and cache."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "KERNELHOOK_"))}
    full_env.update(env)
    full_env["HF_HOME"] = full_env.pop("HF_HOME_OVERRIDE", _HF_HOME)
    if system:
        full_env["KERNELHOOK_SYSTEM"] = system
    return full_env


def run_python(code: str, env: dict, *, system: str | None = CPU, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (nothing imported yet), with the given Hub and cache."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=child_env(env, system), capture_output=True, text=True,
        timeout=timeout,
    )
