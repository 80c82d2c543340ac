"""Bad input gets a typed error that names what was typed, what was tried and the fix;
nothing is left half-written in the cache or half-imported in sys.modules."""

import importlib
import os
import sys

import pytest

import kernelhook
from kernelhook.cache.store import Store
from kernelhook.errors import (
    InvalidKernelName,
    InvalidRevision,
    KernelLoadError,
    KernelNotFoundError,
    NoBuildError,
    RevisionNotFoundError,
)

from .repos import SEED

BAD_IMPORTS = [
    # (module name, error, words the message must hold)
    ("kernels_hub.acme.repo@", InvalidKernelName, ["kernels_hub.acme.repo@", "<repo>@<revision>"]),
    ("kernels_hub.acme.repo@v1@v2", InvalidKernelName, ["v1@v2"]),
    ("kernels_hub.acme.repo@-bad", InvalidRevision, ["'-bad'", "branch, tag, commit sha"]),
    ("kernels_hub.nobody.nothing", KernelNotFoundError, ["nobody/nothing (kernel repo)", "nobody/nothing (model repo)", "HF_TOKEN"]),
    ("kernels_hub.kernels_ext_npu.RMSNorm@v9", RevisionNotFoundError, ["'v9'", "branches: main, v1, v2", "tags: stable, v1.0.0"]),
    ("kernels_hub.kernels_ext_npu.RMSNorm@abcdef0", RevisionNotFoundError, ["'abcdef0'"]),
    ("kernels_hub.acme.no_build", NoBuildError, ["acme/no-build", "no build/ folder"]),
    ("kernels_hub.acme.tagless", RevisionNotFoundError, ["neither a vN branch nor main", "branches: dev"]),
    ("kernels_hub.acme.broken", KernelLoadError, ["acme/broken", "RuntimeError: kernel init failed"]),
]


@pytest.mark.parametrize("fullname, error, words", BAD_IMPORTS, ids=[b[0] for b in BAD_IMPORTS])
def test_bad_imports_raise_typed_errors_and_leave_no_trace(env, system, fullname, error, words):
    before = set(sys.modules)
    root_attributes = set(vars(sys.modules["kernels_hub"])) if "kernels_hub" in sys.modules else None
    with pytest.raises(error) as info:
        importlib.import_module(fullname)
    assert isinstance(info.value, ImportError)
    for word in words:
        assert word in str(info.value)
    new = {name for name in set(sys.modules) - before if name.startswith(("kernels_hub", "_kernelhook_"))}
    assert new <= {"kernels_hub"}  # nothing half-imported, no empty org namespace
    if root_attributes is not None:
        assert set(vars(sys.modules["kernels_hub"])) == root_attributes
    _assert_cache_holds_nothing_half_written(env["KERNELHOOK_CACHE"])


def test_a_failing_kernel_import_removes_its_submodules_too(env, system):
    with pytest.raises(KernelLoadError) as info:
        kernelhook.get_kernel("acme/broken")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not [name for name in sys.modules if name.startswith("_kernelhook_")]


def test_errors_keep_the_org_namespace_when_it_holds_other_kernels(env, system):
    import kernels_hub.acme.liger_kernels  # noqa: F401

    with pytest.raises(KernelNotFoundError):
        import kernels_hub.acme.nothing_here  # noqa: F401
    assert sys.modules["kernels_hub.acme"].liger_kernels.VERSION == "literal"


def test_a_commit_the_repo_does_not_have_is_revision_not_found(env, system):
    kernelhook.get_kernel(SEED, version=1)  # the name is known from now on: commit pins skip the lookup
    with pytest.raises(RevisionNotFoundError, match="has no commit 0123456789abcdef0123456789abcdef01234567"):
        importlib.import_module("kernels_hub.kernels-ext-npu.RMSNorm@0123456789abcdef0123456789abcdef01234567")


def test_revision_and_version_together_is_bad_usage(env, system):
    with pytest.raises(InvalidRevision, match="not both"):
        kernelhook.get_kernel(SEED, revision="v1", version=1)


def test_a_listing_path_that_leaves_the_variant_is_refused(env, system, hub):
    hub.create_repo("acme/escape")
    hub.commit("acme/escape", {"build/torch-universal/__init__.py": "X = 1\n"})
    store = Store()
    # A hostile Hub could list paths that climb out of the variant; the store refuses them.
    from kernelhook.cache.store import check_relative_path
    from kernelhook.errors import CacheError

    for path in ("../x", "a/../../x", "/etc/passwd", "a\\b", "", "a//b"):
        with pytest.raises(CacheError):
            check_relative_path(path)
    assert kernelhook.get_kernel("acme/escape").X == 1
    _assert_cache_holds_nothing_half_written(str(store.top))


def _assert_cache_holds_nothing_half_written(cache: str) -> None:
    """No temp files; every object's name is the sha256 of its bytes."""
    import hashlib

    if not os.path.isdir(cache):
        return
    for folder, _, files in os.walk(cache):
        for file in files:
            assert not file.startswith((".tmp-", "download-")), os.path.join(folder, file)
            path = os.path.join(folder, file)
            if os.sep + "objects" + os.sep in path:
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
                assert path.endswith(digest[:2] + os.sep + digest[2:])


def test_bytes_that_do_not_match_the_listed_hash_are_never_cached(env, system, hub):
    import hashlib

    good = b"\x7fELF" + bytes(4096)
    hub.create_repo("acme/tampered")
    hub.commit("acme/tampered", {"build/torch-universal/__init__.py": "X = 1\n", "build/torch-universal/ops.so": good})
    hub.replace_lfs_content("acme/tampered", hashlib.sha256(good).hexdigest(), b"\x7fELF" + bytes(4095) + b"!")
    with pytest.raises(kernelhook.DownloadError) as info:
        kernelhook.get_kernel("acme/tampered")
    message = str(info.value)
    assert "ops.so" in message and hashlib.sha256(good).hexdigest() in message and "it was not cached" in message
    _assert_cache_holds_nothing_half_written(env["KERNELHOOK_CACHE"])
    assert not [n for n in sys.modules if n.startswith("_kernelhook_")]
