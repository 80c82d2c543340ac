"""The import syntax and get_kernel against the loopback Hub: pin forms, layouts,
repo types, name mapping, variant choice, side-by-side versions."""

import importlib
import importlib.util
import os
import py_compile
import sys
import threading
import time
import types

import pytest

import kernelhook
from kernelhook.errors import KernelNotFoundError, NoCompatibleVariantError

from .conftest import ASCEND
from .repos import RELU, SEED, new_layout


def test_unpinned_import_takes_the_highest_version_branch(env, system, hub):
    import kernels_hub.kernels_ext_npu.RMSNorm

    rms = kernels_hub.kernels_ext_npu.RMSNorm
    assert rms.VERSION == "2.0" and rms.VARIANT == "torch-universal"
    origin = kernelhook.origin(rms)
    assert (origin.repo_id, origin.commit, origin.how) == (SEED, hub.shas["seed_v2"], "branch v2")
    assert sys.modules["kernels_hub.kernels_ext_npu.RMSNorm"] is rms


@pytest.mark.parametrize(
    "suffix, version",
    [
        ("@v1", "1.0"),  # vN: the major-version branch
        ("@v2", "2.0"),
        ("@main", "2.0"),  # a branch
        ("@stable", "1.0"),  # a tag
    ],
)
def test_pins_by_name(env, system, suffix, version):
    module = importlib.import_module(f"kernels_hub.kernels_ext_npu.RMSNorm{suffix}")
    assert module.VERSION == version


def test_pins_by_full_and_short_commit(env, system, hub):
    full = hub.shas["seed_v1"]
    assert importlib.import_module(f"kernels_hub.kernels_ext_npu.RMSNorm@{full}").VERSION == "1.0"
    short = hub.shas["seed_v2"][:9]
    assert importlib.import_module(f"kernels_hub.kernels_ext_npu.RMSNorm@{short}").VERSION == "2.0"


def test_get_kernel_takes_dotted_revisions_and_versions(env, system):
    assert kernelhook.get_kernel(SEED, revision="v1.0.0").VERSION == "1.0"
    assert kernelhook.get_kernel(SEED, version=2).VERSION == "2.0"
    assert kernelhook.get_kernel("acme/my.kernel").VERSION == "dotted"


def test_get_kernel_and_import_give_the_very_same_module(env, system, hub):
    imported = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
    assert kernelhook.get_kernel(SEED, revision="v1.0.0") is imported
    assert kernelhook.get_kernel(SEED, revision=hub.shas["seed_v1"]) is imported


def test_two_versions_live_side_by_side_with_their_own_submodules(env, system):
    v1 = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
    v2 = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v2")
    assert v1 is not v2 and v1.__name__ != v2.__name__
    assert v1.layers is not v2.layers
    assert v1.RMSNorm().forward(0) == ("rmsnorm", "1.0", 0)
    assert v2.RMSNorm().forward(0) == ("rmsnorm", "2.0", 0)


def test_two_pins_of_one_commit_are_one_module(env, system):
    v2 = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v2")
    main = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@main")
    assert v2 is main


def test_two_repos_with_identical_builds_are_two_modules_each_with_its_own_origin(env, system, hub):
    files = new_layout("torch-universal", "twin")
    shas = {}
    for repo in ("acme/twin-a", "acme/twin-b"):
        hub.create_repo(repo)
        shas[repo] = hub.commit(repo, files, branch="v1")
    a, b = kernelhook.get_kernel("acme/twin-a", version=1), kernelhook.get_kernel("acme/twin-b", version=1)
    assert a is not b and a.__name__ != b.__name__ and a.layers is not b.layers
    assert (kernelhook.origin(a).repo_id, kernelhook.origin(a).commit) == ("acme/twin-a", shas["acme/twin-a"])
    assert (kernelhook.origin(b).repo_id, kernelhook.origin(b).commit) == ("acme/twin-b", shas["acme/twin-b"])
    assert kernelhook.origin(a).tree == kernelhook.origin(b).tree  # the bytes are cached once


def test_two_commits_with_identical_builds_are_two_modules_each_with_its_own_origin(env, system, hub):
    repo = "acme/twin-commits"
    files = new_layout("torch-universal", "twin")
    hub.create_repo(repo)
    first = hub.commit(repo, files, branch="v1")
    second = hub.commit(repo, {**files, "README.md": "# the same build, a new card\n"}, branch="v2")
    one, two = kernelhook.get_kernel(repo, version=1), kernelhook.get_kernel(repo, version=2)
    assert one is not two
    assert kernelhook.origin(one).commit == first and kernelhook.origin(two).commit == second
    assert str(kernelhook.origin(two)).startswith(f"{repo}@{second[:12]} [torch-universal]")
    assert kernelhook.get_kernel(repo, revision=second) is two  # two pins of one commit: one module
    assert importlib.import_module(f"kernels_hub.acme.twin_commits@{first}") is one


def test_submodules_through_the_public_name_are_the_kernels_own(env, system):
    relu = importlib.import_module("kernels_hub.kernels_community.relu")
    import kernels_hub.kernels_community.relu.layers as layers

    assert layers is relu.layers and layers.__name__ == relu.__name__ + ".layers"
    # a submodule the kernel's __init__ does not import is found in the store, not on sys.path
    lazy = importlib.import_module("kernels_hub.kernels_community.relu.lazy")
    assert lazy.LOADED_LAZILY and lazy is sys.modules[relu.__name__ + ".lazy"]
    pinned = importlib.import_module("kernels_hub.kernels_community.relu@v1._ops")
    assert pinned is relu._ops


def test_submodules_the_kernel_imported_are_under_the_public_name_at_once_however_deep(env, system, hub):
    repo = "acme/nested"
    hub.create_repo(repo)
    hub.commit(repo, {
        "build/torch-universal/__init__.py": "from .ops import deep\nfrom . import ops\nimport json\n",
        "build/torch-universal/ops/__init__.py": "",
        "build/torch-universal/ops/deep.py": "from .. import ops as parent\nDEPTH = 2\n",  # a cycle back up
        "build/torch-universal/ops/unused.py": "DEPTH = -1\n",
    }, branch="v1")
    nested = importlib.import_module("kernels_hub.acme.nested")
    public = {name: module for name, module in sys.modules.items() if name.startswith("kernels_hub.acme.nested.")}
    assert public == {"kernels_hub.acme.nested.ops": nested.ops, "kernels_hub.acme.nested.ops.deep": nested.ops.deep}
    assert nested.ops.deep.DEPTH == 2  # json, a module the kernel imported from outside, is not aliased under it
    assert importlib.import_module("kernels_hub.acme.nested.ops.unused").DEPTH == -1  # the rest on demand


@pytest.mark.parametrize(
    "typed",
    [
        "kernels_hub.kernels_community.relu.nosuch",
        "kernels_hub.kernels_community.relu@v1.nosuch",  # pinned
    ],
)
def test_a_missing_submodule_is_named_as_typed_not_by_its_internal_name(env, system, typed):
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module(typed)
    message = str(info.value)
    assert info.value.name == typed and message.startswith(f"No module named {typed!r}: ")
    assert "_kernelhook_" not in message and "kernels-community/relu@" in message and "Fix:" in message


def test_reload_executes_the_kernel_again_from_the_store_by_public_name_or_module(env, system):
    relu = importlib.import_module("kernels_hub.kernels_community.relu")
    origin = kernelhook.origin(relu)
    relu.VERSION = "patched"
    assert importlib.reload(sys.modules["kernels_hub.kernels_community.relu"]) is relu
    assert relu.VERSION == "1.0"  # the source ran again
    relu.VERSION = "patched"
    assert importlib.reload(relu) is relu and relu.VERSION == "1.0"
    assert relu.__spec__.name == relu.__name__ and relu.__file__.startswith(env["KERNELHOOK_CACHE"])
    assert sys.modules["kernels_hub.kernels_community.relu"] is relu and kernelhook.origin(relu) == origin
    layers = sys.modules["kernels_hub.kernels_community.relu.layers"]
    layers.ReLU = None
    assert importlib.reload(layers) is relu.layers and relu.layers.ReLU().forward(-1) == 0


def test_reload_works_for_a_kernel_from_get_kernel_without_the_import_hook(env, system):
    kernelhook.uninstall()
    try:
        module = kernelhook.get_kernel(SEED, version=1)
        module.VERSION = "patched"
        assert importlib.reload(module) is module and module.VERSION == "1.0"
        assert "kernels_hub" not in repr(sys.meta_path)  # loading did not put back the hook the user took off
    finally:
        kernelhook.install()


def test_module_is_loaded_from_the_store_not_sys_path(env, system):
    relu = importlib.import_module("kernels_hub.kernels_community.relu")
    origin = kernelhook.origin(relu)
    assert relu.__file__.startswith(env["KERNELHOOK_CACHE"])
    assert not any(entry and env["KERNELHOOK_CACHE"] in entry for entry in sys.path)
    assert relu.__spec__.name == relu.__name__  # the alias did not overwrite the module's own spec
    assert origin.package == origin.tree  # the newer layout: __init__.py at the variant root


def test_kernel_repo_type_and_lfs_files(env, system, hub):
    relu = importlib.import_module("kernels_hub.kernels_community.relu")
    assert kernelhook.origin(relu).repo_type == "kernel"
    assert relu.relu([-1, 2]) == [0, 2]
    weights = kernelhook.origin(relu).tree / "weights.bin"
    assert weights.read_bytes() == bytes(range(256)) * 64


def test_underscores_find_hyphenated_names_and_the_literal_name_wins(env, system):
    assert importlib.import_module("kernels_hub.acme.liger_kernels").VERSION == "literal"
    assert importlib.import_module("kernels_hub.acme.liger-kernels").VERSION == "hyphenated"
    assert importlib.import_module("kernels_hub.kernels-ext-npu.RMSNorm@v1").VERSION == "1.0"


def test_found_name_mapping_is_remembered(env, system, hub):
    importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
    first = len(hub.requests)
    assert first > 1  # discovery tried spellings and repo types first
    for name in [n for n in sys.modules if n.startswith(("kernels_hub.kernels_ext_npu", "_kernelhook_"))]:
        del sys.modules[name]
    hub.clear_requests()
    importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
    assert [r.path for r in hub.requests] == ["/api/models/kernels-ext-npu/RMSNorm/refs"]


@pytest.mark.parametrize(
    "description, variant",
    [
        (ASCEND, "torch27-cxx11-cann82-aarch64-linux"),
        ("torch27-cxx11-cu126-x86_64-linux", "torch27-cxx11-cu126-x86_64-linux"),
        ("torch27-cxx11-cu128-x86_64-linux", "torch27-cxx11-cu126-x86_64-linux"),  # older CUDA minor loads
        ("torch28-cxx11-rocm64-x86_64-linux", "torch28-cxx11-rocm64-x86_64-linux"),
        ("torch213-cxx11-cpu-x86_64-linux", "torch-universal"),
        ("torch213-cxx11-cann82-aarch64-linux", "torch-universal"),  # no torch 2.13 NPU build in this repo
    ],
)
def test_variant_choice_follows_the_injected_system(env, system, description, variant):
    system(description)
    module = kernelhook.get_kernel(SEED, version=1)
    assert module.VARIANT == variant and kernelhook.origin(module).variant == variant


def test_only_the_chosen_variants_files_are_downloaded(env, system, hub):
    system(ASCEND)
    kernelhook.get_kernel(SEED, version=1)
    downloads = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert sorted(downloads) == sorted(
        f"/kernels-ext-npu/RMSNorm/resolve/{hub.shas['seed_v1']}/build/torch27-cxx11-cann82-aarch64-linux/RMSNorm/{f}"
        for f in ("__init__.py", "layers.py")
    )


def test_no_variant_for_this_system_lists_every_variant_and_why(env, system, hub):
    with pytest.raises(NoCompatibleVariantError) as info:
        kernelhook.get_kernel("acme/cuda-only")
    message = str(info.value)
    assert "acme/cuda-only" in message and hub.shas["cuda_only"] in message
    assert "torch27-cxx11-cu126-x86_64-linux: built for CUDA 12.6; this system has CPU" in message
    assert "torch 2.13, cxx11 ABI, CPU, x86_64 linux" in message
    assert isinstance(info.value, ImportError)


def test_threads_importing_at_once_load_each_kernel_once(env, system, hub):
    results, errors = [], []

    def worker(spelling):
        try:
            results.append(importlib.import_module(spelling))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    spellings = ["kernels_hub.kernels_community.relu", "kernels_hub.kernels_community.relu@v1"] * 4
    threads = [threading.Thread(target=worker, args=(s,)) for s in spellings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == len(spellings)
    assert len({id(m) for m in results}) == 1
    downloads = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert len(downloads) == len(set(downloads)) == 6  # every file of the variant fetched exactly once


def test_unknown_kernel_is_module_not_found(env, system):
    with pytest.raises(KernelNotFoundError) as info:
        import kernels_hub.nobody_here.nothing  # noqa: F401
    assert isinstance(info.value, ModuleNotFoundError)
    assert "nobody_here/nothing (kernel repo)" in str(info.value) and "nobody-here/nothing (model repo)" in str(info.value)


def test_kernel_repo_type_is_tried_before_model(env, system, hub):
    kernelhook.get_kernel(RELU)
    assert hub.requests[0].path == "/api/kernels/kernels-community/relu/refs"


# A kernel that reports to a gate the test puts in sys.modules, then waits there until released:
# while it waits it is half executed (no VERSION yet), which no other importer may ever see.
GATE = "kernelhook_tests_gate"
GATED_INIT = f"""\
import sys
_gate = sys.modules[{GATE!r}]
_gate.executions.append(__name__)
_gate.started.set()
_gate.release.wait(60)  # bounded: the test releases it
from . import layers
VERSION = "1.0"
"""
WAIT_S = 60  # bound on every wait for a thread; far above what a healthy run needs


def test_threads_importing_a_kernel_still_executing_wait_for_it_to_finish(env, system, hub, monkeypatch):
    repo = "acme/gated-init"
    hub.create_repo(repo)
    sha = hub.commit(repo, {"build/torch-universal/__init__.py": GATED_INIT,
                            "build/torch-universal/layers.py": "class ReLU:\n    pass\n"}, branch="v1")
    gate = types.SimpleNamespace(executions=[], started=threading.Event(), release=threading.Event())
    monkeypatch.setitem(sys.modules, GATE, gate)
    typed = "kernels_hub.acme.gated_init"
    ways = [  # every way in: the import system (one name, other pins) and get_kernel
        lambda: importlib.import_module(typed),
        lambda: importlib.import_module(f"{typed}@v1"),
        lambda: importlib.import_module(f"{typed}@{sha}"),
        lambda: importlib.import_module(f"{typed}@{sha[:7]}"),
        lambda: kernelhook.get_kernel(repo),
        lambda: kernelhook.get_kernel(repo, version=1),
        lambda: kernelhook.get_kernel(repo, revision=sha),
    ]
    seen: list = [None] * (1 + len(ways))

    def work(i: int, load) -> None:
        try:
            module = load()
            seen[i] = (module, getattr(module, "VERSION", None))  # as handed out, before the first is released
        except BaseException as exc:  # reported below, with the rest
            seen[i] = exc

    first = threading.Thread(target=work, args=(0, ways[0]), daemon=True)
    first.start()
    assert gate.started.wait(WAIT_S), "the first import never started executing the kernel"
    others = [threading.Thread(target=work, args=(i + 1, load), daemon=True) for i, load in enumerate(ways)]
    for thread in others:
        thread.start()
    # A loader that hands out the half-executed module returns at once; one that waits returns only after
    # the release. Give the others a while to get as far as they can, then release the first.
    deadline = time.monotonic() + 1.5
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    gate.release.set()
    for thread in [first, *others]:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in [first, *others])
    assert not [s for s in seen if isinstance(s, BaseException)], seen
    assert [version for _, version in seen] == ["1.0"] * len(seen)
    assert len({id(module) for module, _ in seen}) == 1
    assert len(gate.executions) == 1  # executed once, by the first thread


def test_a_kernel_importing_itself_and_its_submodules_while_executing_gets_itself(env, system, hub):
    repo = "acme/self-import"
    hub.create_repo(repo)
    hub.commit(repo, {
        "build/torch-universal/__init__.py": (
            "import importlib\n"
            "EARLY = 1\n"
            "import kernels_hub.acme.self_import as me\n"  # re-entrant: the module being executed
            "SAW_EARLY = me.EARLY\n"
            "from . import layers\n"
            "lazy = importlib.import_module(__name__ + '.lazy')\n"
            "from kernels_hub.acme.self_import import layers as public_layers\n"
            "VERSION = '1.0'\n"
        ),
        "build/torch-universal/layers.py": "class ReLU:\n    pass\n",
        "build/torch-universal/lazy.py": "LAZY = True\n",
    })
    module = importlib.import_module("kernels_hub.acme.self_import")
    assert (module.VERSION, module.SAW_EARLY, module.me) == ("1.0", 1, module)
    assert module.lazy.LAZY and module.public_layers is module.layers
    assert kernelhook.get_kernel(repo) is module


def _mutual_init(me: str, other: str, how: str) -> str:
    return (
        "import sys\n"
        f"_gate = sys.modules[{GATE!r}]\n"
        f"_gate.started[{me!r}].set()\n"
        f"_gate.started[{other!r}].wait(60)  # bounded: both are executing before either imports the other\n"
        + how.format(other=other) + "\n"
        f"VERSION = {me!r}\n"
    )


@pytest.mark.parametrize("how", [
    "import kernels_hub.acme.mutual_{other}",  # the import system's own locks for the public names
    "import kernelhook; kernelhook.get_kernel('acme/mutual-{other}')",  # only the kernel modules' locks
])
def test_two_kernels_importing_each_other_from_two_threads_never_hang(env, system, hub, monkeypatch, how):
    for me, other in (("x", "y"), ("y", "x")):
        hub.create_repo(f"acme/mutual-{me}")
        hub.commit(f"acme/mutual-{me}", {"build/torch-universal/__init__.py": _mutual_init(me, other, how)},
                   replace=True)
    gate = types.SimpleNamespace(started={"x": threading.Event(), "y": threading.Event()})
    monkeypatch.setitem(sys.modules, GATE, gate)
    seen: dict = {}

    def work(me: str) -> None:
        try:
            seen[me] = importlib.import_module(f"kernels_hub.acme.mutual_{me}").VERSION
        except BaseException as exc:  # reported below
            seen[me] = exc

    threads = [threading.Thread(target=work, args=(me,), daemon=True) for me in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "two kernels importing each other hung"
    # As for any import cycle across threads: the import system breaks it; whoever it stops gets an
    # ImportError saying so, and the other thread's kernel loads whole.
    assert sorted(v for v in seen.values() if isinstance(v, str)) in (["x"], ["y"], ["x", "y"]), seen
    for failure in [v for v in seen.values() if not isinstance(v, str)]:
        assert isinstance(failure, ImportError) and "deadlock" in str(failure), seen


def test_a_failing_import_never_removes_the_org_namespace_another_thread_is_importing_under(
        env, system, hub, monkeypatch):
    repo = "acme/gated-org"
    hub.create_repo(repo)
    hub.commit(repo, {"build/torch-universal/__init__.py": GATED_INIT,
                      "build/torch-universal/layers.py": "class ReLU:\n    pass\n"})
    gate = types.SimpleNamespace(executions=[], started=threading.Event(), release=threading.Event())
    monkeypatch.setitem(sys.modules, GATE, gate)
    seen: list = []

    def work() -> None:
        try:
            seen.append(importlib.import_module("kernels_hub.acme.gated_org").VERSION)
        except BaseException as exc:  # reported below
            seen.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        assert gate.started.wait(WAIT_S), "the import never started executing the kernel"
        with pytest.raises(NoCompatibleVariantError):  # the same org, meanwhile: a failure that cleans up
            importlib.import_module("kernels_hub.acme.cuda_only")
    finally:
        gate.release.set()
        thread.join(WAIT_S)
    assert seen == ["1.0"]
    assert sys.modules["kernels_hub.acme"].gated_org is sys.modules["kernels_hub.acme.gated_org"]


def test_bytecode_beside_a_kernels_source_in_the_store_is_never_run(env, system, tmp_path):
    relu = importlib.import_module("kernels_hub.kernels_community.relu")
    source = kernelhook.origin(relu).tree / "lazy.py"
    # A .pyc that the import system would take for lazy.py's: same size and mtime in its header, other code.
    impostor = tmp_path / "lazy.py"
    impostor.write_text(source.read_text().replace("True", "'bc'"))
    assert impostor.stat().st_size == source.stat().st_size
    os.utime(impostor, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    py_compile.compile(str(impostor), cfile=importlib.util.cache_from_source(str(source)), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    lazy = importlib.import_module("kernels_hub.kernels_community.relu.lazy")
    assert lazy.LOADED_LAZILY is True
