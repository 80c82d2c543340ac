"""kernelhook as a drop-in for code written for the public `kernels` package: its loading API under
its names and semantics (get_local_kernel, LOCAL_KERNELS, local repositories, has_kernel,
install_kernel, get_loaded_kernels, get_kernel_variants, get_kernel's keywords) and the warning
for an old major version. Locked kernels are in test_dropin_locks.py."""

import importlib
import logging
import sys

import pytest
import torch

import kernelhook
from kernelhook import (
    LayerRepository,
    LocalFuncRepository,
    LocalLayerRepository,
    VariantAccepted,
    VariantRejected,
    kernelize,
    kernelize_report,
    use_kernel_mapping,
)
from kernelhook.errors import (
    InvalidBackend,
    KernelNotFoundError,
    NoCompatibleVariantError,
    RevisionNotFoundError,
    SettingError,
)
from kernelhook.loading import resolve

from .conftest import ASCEND, run_python
from .repos import RELU, ROTARY, SEED, SEED_VARIANTS, layer_repo, new_layout, rms_layer, seed_layout
from .test_kernelize import MyRMSNorm, model_of, norms, x


def write(folder, files: dict):
    """A kernel author's folder: {path below it: text}."""
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def kernel_modules() -> set:
    return {n for n in sys.modules if n.startswith("_kernelhook_")}


# -- get_local_kernel -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [
    lambda variant: seed_layout(variant, "local", package="relu"),  # build/<variant>/<Name>/__init__.py
    lambda variant: new_layout(variant, "local"),  # build/<variant>/__init__.py + metadata.json
])
def test_a_local_folder_loads_in_either_layout_and_the_variant_fits_the_machine(env, system, tmp_path, layout):
    folder = tmp_path / "relu"
    for variant in ("torch-universal", ASCEND):
        write(folder, layout(variant))
    assert kernelhook.get_local_kernel(folder).VARIANT == "torch-universal"  # a CPU box
    system(ASCEND)
    module = kernelhook.get_local_kernel(folder)
    assert module.VARIANT == ASCEND and module.VERSION == "local"
    origin = kernelhook.origin(module)
    assert origin.repo_id == str(folder) and origin.variant == ASCEND
    assert str(origin.package).startswith(env["KERNELHOOK_CACHE"])  # runs from its snapshot in the cache
    # the build folder and the variant folder itself are accepted too, as the kernels package accepts them
    assert kernelhook.get_local_kernel(folder / "build").VARIANT == ASCEND
    assert kernelhook.get_local_kernel(folder / "build" / "torch-universal").VARIANT == "torch-universal"


def test_editing_the_folder_loads_a_new_module_beside_the_old(env, tmp_path):
    folder = write(tmp_path / "relu", new_layout("torch-universal", "1"))
    old = kernelhook.get_local_kernel(folder)
    assert kernelhook.get_local_kernel(folder) is old  # unchanged content: the same module
    init = folder / "build" / "torch-universal" / "__init__.py"
    init.write_text(init.read_text().replace("VERSION = '1'", "VERSION = '2'"))
    (folder / "build" / "torch-universal" / "lazy.py").write_text("LOADED_LAZILY = 'edited'\n")
    new = kernelhook.get_local_kernel(folder)
    assert (old.VERSION, new.VERSION) == ("1", "2") and old.__name__ != new.__name__
    assert old.__name__ in sys.modules and new.__name__ in sys.modules
    # the old module's lazy submodule comes from its own snapshot, not from the edited folder
    assert importlib.import_module(old.__name__ + ".lazy").LOADED_LAZILY is True
    assert importlib.import_module(new.__name__ + ".lazy").LOADED_LAZILY == "edited"


def test_a_local_folder_and_the_hub_build_of_the_repo_coexist(env, tmp_path):
    hub_module = kernelhook.get_kernel(RELU, version=1)
    # byte for byte what the Hub serves: one snapshot in the cache, yet two modules with their own origins
    folder = write(tmp_path / "relu", new_layout("torch-universal", "1.0", {
        "build/torch-universal/weights.bin": bytes(range(256)) * 64}))
    local = kernelhook.get_local_kernel(folder)
    assert kernelhook.origin(local).tree == kernelhook.origin(hub_module).tree
    assert local is not hub_module and local.__name__ != hub_module.__name__
    assert local.layers is not hub_module.layers
    assert (kernelhook.origin(local).repo_id, kernelhook.origin(hub_module).repo_id) == (str(folder), RELU)
    assert kernelhook.get_kernel(RELU, version=1) is hub_module


def test_a_local_folder_never_runs_bytecode_left_beside_its_sources(env, tmp_path):
    folder = write(tmp_path / "relu", new_layout("torch-universal", "source"))
    variant = folder / "build" / "torch-universal"
    # Bytecode an author's tools left behind: an unchecked-hash .pyc, which Python's own loader would run
    # in place of the source without looking at it, and a sourceless module.
    import py_compile

    stale = tmp_path / "stale.py"
    stale.write_text("from . import _ops, layers\nVARIANT = 'x'\nVERSION = 'bytecode'\n")
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    py_compile.compile(str(stale), cfile=str(variant / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"),
                       invalidation_mode=unchecked)
    py_compile.compile(str(stale), cfile=str(variant / "extra.pyc"), invalidation_mode=unchecked)
    module = kernelhook.get_local_kernel(folder)
    assert module.VERSION == "source"
    tree = kernelhook.origin(module).tree
    assert not [p for p in tree.rglob("*") if p.suffix == ".pyc" or p.name == "__pycache__"]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module.__name__ + ".extra")


def test_a_package_name_picks_one_of_several_packages(env, tmp_path):
    folder = tmp_path / "kernels"
    write(folder, seed_layout("torch-universal", "a", package="alpha"))
    write(folder, seed_layout("torch-universal", "b", package="beta"))
    assert kernelhook.get_local_kernel(folder, "beta").VERSION == "b"
    assert kernelhook.get_local_kernel(folder, package_name="alpha").VERSION == "a"
    with pytest.raises(kernelhook.KernelLoadError, match="alpha, beta"):
        kernelhook.get_local_kernel(folder)  # several packages, none named like the folder


def test_a_local_folder_without_a_fitting_variant_says_what_it_holds(env, tmp_path):
    folder = write(tmp_path / "cuda-only", seed_layout("torch27-cxx11-cu126-x86_64-linux", "1", package="cuda_only"))
    with pytest.raises(NoCompatibleVariantError) as info:
        kernelhook.get_local_kernel(folder)
    assert "torch27-cxx11-cu126-x86_64-linux: built for CUDA 12.6; this system has CPU" in str(info.value)
    with pytest.raises(KernelNotFoundError, match="is not a folder"):
        kernelhook.get_local_kernel(tmp_path / "nowhere")
    assert not kernel_modules()


# -- LOCAL_KERNELS -----------------------------------------------------------------------------------


def test_local_kernels_sends_every_load_of_the_repo_to_the_folder(env, hub, tmp_path, monkeypatch, caplog):
    folder = write(tmp_path / "relu-dev", new_layout("torch-universal", "dev"))
    monkeypatch.setenv("LOCAL_KERNELS", f"acme/other=/nowhere:{RELU}={folder}")
    with caplog.at_level(logging.INFO, logger="kernelhook"):
        by_call = kernelhook.get_kernel(RELU, version=1)
        import kernels_hub.kernels_community.relu as by_import
    assert by_call.VERSION == "dev" and by_import is by_call
    assert kernelhook.origin(by_call).repo_id == RELU and kernelhook.origin(by_call).repo_type == "local"
    assert f"LOCAL_KERNELS sends {RELU} to {folder}" in caplog.text
    assert not [r for r in hub.requests if "kernels-community" in r.path]  # the Hub is not asked
    assert kernelhook.has_kernel(RELU, version=1)
    monkeypatch.delenv("LOCAL_KERNELS")  # no longer named: the Hub's build again
    assert kernelhook.get_kernel(RELU, version=1).VERSION == "1.0"


def test_local_kernels_covers_mappings_too(kenv, tmp_path, monkeypatch):
    folder = write(tmp_path / "rms", layer_repo(rms_layer(scale=3.0)))
    monkeypatch.setenv("LOCAL_KERNELS", f"acme/rms={folder}")
    model = model_of(0)  # one norm: its output scales with the layer's
    expected = 3.0 * model(x())
    with use_kernel_mapping({"RMSNorm": {"cpu": LayerRepository("acme/rms", "RMSNorm", version=1)}}):
        kernelize(model, device="cpu")
    torch.testing.assert_close(model(x()), expected, rtol=1e-4, atol=1e-5)
    assert {b.repo for b in kernelize_report(model).bound} == {"acme/rms"}
    assert not kenv.requests


@pytest.mark.parametrize("value, words", [
    ("kernels-community/relu", "is not org/repo=/path"),  # no '='
    ("relu=/home/me/relu", "does not start with a Hub repo id"),  # no org
    ("kernels-community/relu=", "is not org/repo=/path"),  # no folder
    ("acme/a=/x:oops", "'oops' is not org/repo=/path"),  # a second entry without '='
])
def test_a_malformed_local_kernels_is_a_setting_error(env, monkeypatch, value, words):
    monkeypatch.setenv("LOCAL_KERNELS", value)
    with pytest.raises(SettingError) as info:
        kernelhook.get_kernel(RELU, version=1)
    assert words in str(info.value) and "LOCAL_KERNELS=" in str(info.value)


# -- local repositories in mappings ------------------------------------------------------------------


def test_local_layer_and_function_repositories_bind_from_folders(kenv, tmp_path):
    layers = write(tmp_path / "rms", layer_repo(rms_layer(scale=2.0)))
    repo = LocalLayerRepository(layers, layer_name="RMSNorm")
    assert repo.pinned("0" * 40) is repo  # a folder has no commits
    model = model_of(0)
    expected = 2.0 * model(x())
    with use_kernel_mapping({"RMSNorm": {"cpu": repo}}):
        kernelize(model, device="cpu")
    torch.testing.assert_close(model(x()), expected, rtol=1e-4, atol=1e-5)
    assert {b.repo for b in kernelize_report(model).bound} == {str(layers)}

    from .test_kernelize_functions import Attention, apply_rotary_pos_emb, inputs

    rotary = write(tmp_path / "rotary", {"build/torch-universal/__init__.py": ROTARY.format(scale=2)})
    attention = Attention().eval()
    reference = attention(*inputs())
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": LocalFuncRepository(rotary, func_name="apply_rotary_pos_emb")}}):
        kernelize(attention, device="cpu")
    try:
        torch.testing.assert_close(attention(*inputs()), 2 * reference)
    finally:
        kernelize(apply_rotary_pos_emb, device="xpu")  # the marked function is shared: its own forward back


def test_a_local_repository_with_a_bad_layer_name_fails_when_made(tmp_path):
    with pytest.raises(kernelhook.InvalidKernelName):
        LocalLayerRepository(tmp_path, layer_name="not a name")


# -- get_kernel, has_kernel, install_kernel, get_kernel_variants, get_loaded_kernels -------------------


def test_get_kernel_takes_the_kernels_packages_arguments(env, system):
    plain = kernelhook.get_kernel(SEED, version=1)
    assert kernelhook.get_kernel(SEED, None, 1, user_agent={"framework": "demo"}, trust_remote_code=True,
                                 check_arch=False) is plain
    system(ASCEND)
    assert kernelhook.get_kernel(SEED, version=1).VARIANT == ASCEND
    assert kernelhook.get_kernel(SEED, version=1, backend="npu").VARIANT == ASCEND
    assert kernelhook.get_kernel(SEED, version=1, backend="cpu").VARIANT == "torch-universal"
    with pytest.raises(InvalidBackend, match="backend='cuda'"):
        kernelhook.get_kernel(SEED, version=1, backend="cuda")


def test_has_kernel_answers_without_downloading_or_executing(env, hub, system):
    before = kernel_modules()
    assert kernelhook.has_kernel(SEED, version=1) is True
    assert kernelhook.has_kernel("acme/cuda-only") is False  # a build, but none for this machine
    assert kernelhook.has_kernel("acme/no-build") is False  # no build/ at all
    system("torch27-cxx11-cu126-x86_64-linux")
    assert kernelhook.has_kernel("acme/cuda-only") is True
    assert not [r for r in hub.requests if "/resolve/" in r.path]  # no file was downloaded
    assert kernel_modules() == before
    with pytest.raises(RevisionNotFoundError):
        kernelhook.has_kernel(SEED, version=9)


def test_install_kernel_prefetches_the_variant_folder_without_loading_it(env, hub):
    folder = kernelhook.install_kernel(SEED, version=1)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py")) == [
        "RMSNorm/__init__.py", "RMSNorm/layers.py"]
    assert not kernel_modules()
    hub.clear_requests()
    assert kernelhook.install_kernel(SEED, "v1", local_files_only=True) == folder
    assert not hub.requests  # answered from the cache alone
    module = kernelhook.get_kernel(SEED, version=1)
    assert kernelhook.origin(module).tree == folder


def test_install_kernel_with_local_files_only_sends_no_request(env, hub):
    with pytest.raises(kernelhook.HubUnreachableError, match="local_files_only"):
        kernelhook.install_kernel(RELU, version=1, local_files_only=True)
    assert not hub.requests


def test_get_kernel_variants_lists_each_variant_with_its_verdict(env, system):
    system(ASCEND)
    decisions = kernelhook.get_kernel_variants(SEED, version=1)
    assert [type(d) for d in decisions] == [VariantAccepted, VariantAccepted, VariantRejected, VariantRejected]
    assert [d.variant.variant_str for d in decisions[:2]] == [ASCEND, "torch-universal"]  # the preferred first
    assert {d.variant.variant_str for d in decisions} == set(SEED_VARIANTS)
    rejected = {d.variant.variant_str: d.reason for d in decisions[2:]}
    assert rejected["torch27-cxx11-cu126-x86_64-linux"] == "built for x86_64; this system is aarch64"
    assert not kernel_modules()


def test_get_loaded_kernels_lists_repo_commit_variant_and_folder(env, hub, tmp_path):
    v1 = kernelhook.get_kernel(SEED, version=1)
    v2 = kernelhook.get_kernel(SEED, version=2)
    relu = kernelhook.get_kernel(RELU, version=1)
    local = kernelhook.get_local_kernel(write(tmp_path / "dev", new_layout("torch-universal", "dev")))
    loaded = kernelhook.get_loaded_kernels()
    assert [k.module for k in loaded] == [v1, v2, relu, local]
    assert [(k.repo_id, k.commit) for k in loaded[:3]] == [
        (SEED, hub.shas["seed_v1"]), (SEED, hub.shas["seed_v2"]), (RELU, hub.shas["relu_v1"])]
    assert loaded[0].repo_info == kernelhook.RepoInfo(SEED, hub.shas["seed_v1"])
    assert loaded[2].metadata == {"id": "relu", "python-depends": []} and loaded[0].metadata is None
    assert all(k.variant == "torch-universal" and k.variant_path == kernelhook.origin(k.module).tree for k in loaded)
    assert (loaded[3].repo_id, loaded[3].commit, loaded[3].repo_info) == (str(tmp_path / "dev"), None, None)


# -- an older major version than the newest -----------------------------------------------------------


def test_an_old_major_version_warns_once_per_repo_and_costs_no_request(env, hub, monkeypatch, caplog):
    monkeypatch.setattr(resolve, "_warned", set())
    kernelhook.get_kernel(SEED, revision=hub.shas["seed_v1"])  # cached by a commit pin: no refs listing, no warning
    assert "is available" not in caplog.text
    hub.clear_requests()
    with caplog.at_level(logging.WARNING, logger="kernelhook"):
        kernelhook.get_kernel(SEED, version=1)
    assert [r.path for r in hub.requests] == [f"/api/models/{SEED}/refs"]  # a warm load's one request, no more
    with caplog.at_level(logging.WARNING, logger="kernelhook"):
        kernelhook.get_kernel(SEED, version=1)
        importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
        kernelhook.get_kernel(SEED, version=2)  # the newest
    warnings = [r.getMessage() for r in caplog.records if "is available" in r.getMessage()]
    assert len(warnings) == 1 and f"you are using version 1 of {SEED}, version 2 is available" in warnings[0]


def test_the_warning_is_once_per_process_not_once_per_call_site(env):
    code = """
        import logging, kernelhook
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        kernelhook.get_kernel("kernels-ext-npu/RMSNorm", version=1)
        kernelhook.get_kernel("kernels-ext-npu/RMSNorm", version=1)
        import kernels_hub.kernels_ext_npu.RMSNorm
    """
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("version 2 is available") == 1, result.stderr


def test_local_layer_repository_loads_each_norm_like_kernels(kenv, tmp_path):
    # the signature transformers uses when a kernel_config asks for a local kernel
    folder = write(tmp_path / "rms", layer_repo(rms_layer()))
    model = model_of(1)
    with use_kernel_mapping({"RMSNorm": {"cpu": LocalLayerRepository(repo_path=folder, layer_name="RMSNorm")}}):
        kernelize(model, device="cpu")
    assert all(type(m) is not MyRMSNorm for m in norms(model))
