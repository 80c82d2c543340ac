"""The warm path is the product: request counts on the server, and loading with the Hub gone.

Each check runs in a fresh interpreter, as a user's next process would.
"""

import importlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import kernelhook
from kernelhook import platform
from kernelhook.errors import HubUnreachableError
from kernelhook.platform import CHOICE_RULES

from .conftest import ASCEND, child_env, run_python
from .repos import SEED

SEED_API = "/api/models/kernels-ext-npu/RMSNorm"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


def test_plain_import_statement_works_in_a_fresh_interpreter(env, hub):
    result = run_python(
        """
        import sys
        import kernels_hub.kernels_ext_npu.RMSNorm
        import kernelhook
        rms = kernels_hub.kernels_ext_npu.RMSNorm
        print(rms.VERSION, kernelhook.origin(rms).commit)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2.0", hub.shas["seed_v2"]]


def test_importing_kernels_hub_loads_neither_torch_nor_huggingface_hub(env):
    result = run_python(
        "import sys, kernels_hub; print('torch' in sys.modules, 'huggingface_hub' in sys.modules)", env, system=None
    )
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_cold_import_lists_once_and_fetches_one_request_per_file(env, system, hub):
    kernelhook.get_kernel(SEED, revision="v1")
    assert [(r.method, r.path) for r in hub.requests] == [
        ("GET", "/api/kernels/kernels-ext-npu/RMSNorm/refs"),  # kernel repo type first: not there
        ("GET", f"{SEED_API}/refs"),
        ("GET", f"{SEED_API}/tree/{hub.shas['seed_v1']}/build"),
        ("GET", f"/kernels-ext-npu/RMSNorm/resolve/{hub.shas['seed_v1']}/build/torch-universal/RMSNorm/__init__.py"),
        ("GET", f"/kernels-ext-npu/RMSNorm/resolve/{hub.shas['seed_v1']}/build/torch-universal/RMSNorm/layers.py"),
    ]


def test_warm_commit_pin_makes_no_request_and_never_imports_huggingface_hub(env, system, hub):
    sha = hub.shas["seed_v1"]
    kernelhook.get_kernel(SEED, revision=sha)
    hub.clear_requests()
    result = run_python(
        f"""
        import importlib, sys
        rms = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{sha}")
        short = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{sha[:7]}")
        print(rms.VERSION, short is rms, "huggingface_hub" in sys.modules)
        """,
        env,
    )
    assert result.stdout.split() == ["1.0", "True", "False"], result.stderr
    assert hub.requests == []


def test_a_warm_commit_pinned_load_imports_only_the_steps_it_uses(env, system, hub):
    """What it needs no module of is never imported: resolving and fetching (the cache answers: recall.py),
    the Hub client, the lockfile code (no lockfile here), torchrun coordination, digests and writes, and typing
    for kernels_hub itself."""
    sha = hub.shas["seed_v1"]
    importlib.import_module(f"kernels_hub.kernels_ext_npu.RMSNorm@{sha}")  # warm: the name is known, the files cached
    result = run_python(
        f"""
        import importlib, sys
        import kernels_hub
        print("typing" in sys.modules)
        importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{sha}")
        print(sorted(name for name in sys.modules if name.startswith("kernelhook")))
        """,
        env,
    )
    typing_imported, modules = result.stdout.splitlines()
    assert typing_imported == "False", result.stderr
    assert eval(modules) == sorted([  # noqa: S307 - a list of module names printed by the child
        "kernelhook", "kernelhook.errors", "kernelhook.records", "kernelhook.loading", "kernelhook.loading.names",
        "kernelhook.loading.finder", "kernelhook.loading.api", "kernelhook.loading.recall", "kernelhook.loading.loader",
        "kernelhook.cache", "kernelhook.cache.store", "kernelhook.platform", "kernelhook.project", "kernelhook.repo",
        "kernelhook.settings",  # settings: KERNELHOOK_SYSTEM is read to choose the variant
    ])


def _choice_files(cache: str, commit: str) -> dict:
    """{system key: variant} as the cache remembers the choices made at this commit of the seed repo."""
    folder = Path(cache, "v1", "refs", "model", SEED, "commits", commit, "chosen")
    return {p.name: p.read_text() for p in folder.iterdir()} if folder.is_dir() else {}


def test_the_variant_chosen_for_a_system_is_remembered_per_system_and_rules(env, system, hub, monkeypatch):
    sha = hub.shas["seed_v1"]
    assert kernelhook.origin(kernelhook.get_kernel(SEED, revision=sha)).variant == "torch-universal"
    system(ASCEND)
    assert kernelhook.origin(kernelhook.get_kernel(SEED, revision=sha)).variant == ASCEND
    assert _choice_files(env["KERNELHOOK_CACHE"], sha) == {
        f"torch2.13-cxx11-cpu-x86_64-linux-rules{CHOICE_RULES}": "torch-universal",
        f"torch2.7-cxx11-cann82-aarch64-linux-rules{CHOICE_RULES}": ASCEND,
    }
    # Other rules: a choice kept under the old number is not taken; the variants are ranked anew and kept.
    monkeypatch.setattr(platform, "CHOICE_RULES", CHOICE_RULES + 1)
    assert kernelhook.origin(kernelhook.get_kernel(SEED, revision=sha)).variant == ASCEND
    assert f"torch2.7-cxx11-cann82-aarch64-linux-rules{CHOICE_RULES + 1}" in _choice_files(env["KERNELHOOK_CACHE"], sha)


def test_a_remembered_choice_spares_the_listing_and_a_missing_tree_is_placed_again(env, system, hub):
    sha = hub.shas["seed_v1"]
    kernelhook.get_kernel(SEED, revision=sha)
    cache = Path(env["KERNELHOOK_CACHE"], "v1")
    listing = cache / "refs" / "model" / SEED / "commits" / sha / "listing.json"
    listing.unlink()  # the choice is remembered: a warm load reads no listing (and could not, offline)
    hub.clear_requests()
    result = run_python(f"""
        import importlib
        print(importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{sha}").VERSION)
        """, {**env, "HF_HUB_OFFLINE": "1"})
    assert result.stdout.split() == ["1.0"], result.stderr
    assert not listing.exists()
    # The remembered variant's tree is gone (pruned, say): the choice alone cannot load it, so the listing is
    # fetched again and the variant placed again.
    digest = (cache / "refs" / "model" / SEED / "commits" / sha / "variants" / "torch-universal").read_text()
    shutil.rmtree(cache / "trees" / digest)
    result = run_python(f"""
        import importlib
        print(importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{sha}").VERSION)
        """, env)
    assert result.stdout.split() == ["1.0"], result.stderr
    assert [r.path for r in hub.requests][0] == f"{SEED_API}/tree/{sha}/build"
    assert (cache / "trees" / digest).is_dir()


def test_a_commit_pin_answered_by_the_cache_leaves_its_ref_for_prune(env, system, hub):
    """Loaded first as @v1 (whose ref names the commit), then by its sha from the cache alone: the sha's own
    ref is left too, so the commit stays a root for `kernelhook cache prune` after v1 moves on."""
    sha = hub.shas["seed_v1"]
    importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")  # as typed below, so the name is known
    revisions = Path(env["KERNELHOOK_CACHE"], "v1", "refs", "model", SEED, "revisions")
    assert not (revisions / f"rev-{sha}.json").exists()
    hub.clear_requests()
    result = run_python(f"""
        import importlib, sys
        importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{sha}")
        print("kernelhook.loading.resolve" in sys.modules)
        """, env)
    assert result.stdout.split() == ["False"], result.stderr  # the cache answered
    assert hub.requests == []
    assert json.loads((revisions / f"rev-{sha}.json").read_text())["commit"] == sha


@pytest.mark.parametrize(
    "spelling, expected_request",
    [
        ("kernels_hub.kernels_ext_npu.RMSNorm@v1", f"{SEED_API}/refs"),
        ("kernels_hub.kernels_ext_npu.RMSNorm@stable", f"{SEED_API}/refs"),
        ("kernels_hub.kernels_ext_npu.RMSNorm", f"{SEED_API}/refs"),
    ],
)
def test_warm_branch_tag_or_unpinned_import_makes_exactly_one_request(env, hub, spelling, expected_request):
    assert run_python(f"import importlib; importlib.import_module({spelling!r})", env).returncode == 0
    hub.clear_requests()
    result = run_python(f"import importlib; importlib.import_module({spelling!r})", env)
    assert result.returncode == 0, result.stderr
    assert [r.path for r in hub.requests] == [expected_request]


ALL_PIN_FORMS = """
import importlib, kernelhook
forms = {{
    "unpinned": lambda: importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm"),
    "vN": lambda: importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1"),
    "branch": lambda: importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@main"),
    "tag": lambda: importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@stable"),
    "full": lambda: importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{full}"),
    "short": lambda: importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@{short}"),
    "dotted": lambda: kernelhook.get_kernel("kernels-ext-npu/RMSNorm", revision="v1.0.0"),
    "version": lambda: kernelhook.get_kernel("kernels-ext-npu/RMSNorm", version=2),
    "kernel-type": lambda: importlib.import_module("kernels_hub.kernels_community.relu"),
}}
print(" ".join(f"{{name}}={{load().VERSION}}" for name, load in forms.items()))
"""
EXPECTED = "unpinned=2.0 vN=1.0 branch=2.0 tag=1.0 full=1.0 short=2.0 dotted=1.0 version=2.0 kernel-type=1.0".split()


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "hub unreachable"])
def test_every_pin_form_loads_offline_after_an_online_import(env, hub, how):
    code = ALL_PIN_FORMS.format(full=hub.shas["seed_v1"], short=hub.shas["seed_v2"][:8])
    online = run_python(code, env)
    assert online.stdout.split() == EXPECTED, online.stderr
    hub.clear_requests()
    offline_env = dict(env, HF_HUB_OFFLINE="1") if how == "HF_HUB_OFFLINE" else dict(env, HF_ENDPOINT=_closed_port_url())
    offline = run_python(code, offline_env)
    assert offline.stdout.split() == EXPECTED, offline.stderr
    assert hub.requests == []
    assert "using commit" in offline.stderr and "resolved to" in offline.stderr  # the warning says so


def test_offline_with_nothing_cached_says_what_to_do(env, system, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError) as info:
        kernelhook.get_kernel(SEED, version=1)
    message = str(info.value)
    assert "kernels-ext-npu/RMSNorm" in message and "HF_HUB_OFFLINE" in message and "import it once online" in message


def test_hub_down_with_nothing_cached_is_a_clear_error(env, system, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(HubUnreachableError) as info:
        import kernels_hub.kernels_ext_npu.RMSNorm  # noqa: F401
    assert url in str(info.value) and isinstance(info.value, ImportError)


def test_processes_importing_into_one_empty_cache_fetch_each_file_once(env, hub):
    code = "import kernels_hub.kernels_community.relu as r; print(r.VERSION)"
    children = [subprocess.Popen([sys.executable, "-c", code], env=child_env(env), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [out.strip() for out, _ in outputs] == ["1.0"] * 4, [err for _, err in outputs]
    downloads = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert len(downloads) == len(set(downloads)) == 6


def test_large_files_get_a_progress_bar_and_small_ones_do_not(env, hub):
    from kernelhook.hub import LARGE_FILE

    hub.create_repo("acme/big")
    hub.commit("acme/big", {
        "build/torch-universal/__init__.py": "X = 1\n",
        "build/torch-universal/small.bin": bytes(1000),
        "build/torch-universal/large.bin": bytes(LARGE_FILE),
    })
    # TQDM_POSITION=-1 makes huggingface_hub draw bars even though stderr is a pipe here.
    result = run_python("import kernels_hub.acme.big", dict(env, TQDM_POSITION="-1"))
    assert result.returncode == 0, result.stderr
    assert "large.bin" in result.stderr and "small.bin" not in result.stderr


@pytest.mark.parametrize(
    "how, expected",
    [
        ("HF_TOKEN", "Bearer hf_from_env"),  # the variable, sent without huggingface_hub's token machinery
        ("token file", "Bearer hf_from_file"),  # a login's token file: huggingface_hub reads (and may refresh) it
        ("HF_TOKEN and HF_HUB_DISABLE_IMPLICIT_TOKEN", None),
        ("nothing", None),
    ],
)
def test_every_hub_request_carries_the_token_huggingface_hub_would_send(env, hub, tmp_path, how, expected):
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / ".agent_harnesses.json").write_text('{"standardEnvVars": [], "harnesses": {}}')
    extra = {}
    if "HF_TOKEN" in how:
        extra["HF_TOKEN"] = "hf_from_env"
    if "DISABLE" in how:
        extra["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    if how == "token file":
        (home / "token").write_text("hf_from_file\n")
    result = run_python("import kernels_hub.kernels_ext_npu.RMSNorm", {**env, **extra, "HF_HOME_OVERRIDE": str(home)})
    assert result.returncode == 0, result.stderr
    assert hub.requests and {r.authorization for r in hub.requests} == {expected}


def test_a_request_with_no_plain_http_answer_is_sent_again_through_huggingface_hub(env, system, hub, monkeypatch):
    from kernelhook.hub import client as hub_client

    def no_answer(url):  # as a proxy or CA bundle only huggingface_hub's client knows would make it
        raise hub_client._NoAnswer("connection refused")

    monkeypatch.setattr(hub_client, "_get_json_plain", no_answer)
    assert kernelhook.get_kernel(SEED, version=1).VERSION == "1.0"
    assert [r.path for r in hub.requests][:2] == [
        "/api/kernels/kernels-ext-npu/RMSNorm/refs", f"{SEED_API}/refs"]
