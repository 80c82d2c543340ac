"""Locked kernels under the `kernels` package's names: get_locked_kernel, load_kernel and the Locked
repositories, reading kernels.lock (as the real `kernels lock` writes it, and the earlier format
with variant hashes) and kernelhook.lock, each checked file by file before anything executes.
Each test has its own Hub, since they move branches."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

import kernelhook
from kernelhook import LockedFuncRepository, LockedLayerRepository
from kernelhook.errors import HubUnreachableError, LockfileError, LockMismatchError
from kernelhook.testing import LocalHub

from .conftest import child_env, run_python
from .repos import new_layout

REPO = "acme/relu"  # a kernel repo (the Hub's kernel type), as `kernels lock` expects
BLOB = bytes(range(256)) * 16  # an LFS file
CANN = "torch27-cxx11-cann82-aarch64-linux"


def _metadata(backend: str) -> str:
    # what kernel-builder writes; the kernels package's `lock` parses it for every variant
    return json.dumps({"id": f"relu_{backend}", "name": "relu", "version": 1, "license": "MIT",
                       "python-depends": [], "backend": {"type": backend}})


def _variants(version: str) -> dict:
    files = new_layout("torch-universal", version, {"build/torch-universal/table.bin": BLOB,
                                                     "build/torch-universal/metadata.json": _metadata("cpu")})
    files.update(new_layout(CANN, version, {f"build/{CANN}/metadata.json": _metadata("cann")}))
    return files


@pytest.fixture
def project(tmp_path, monkeypatch, system):
    """A project folder, its own Hub with acme/relu v1 and an empty cache."""
    with LocalHub(tmp_path / "hub") as hub:
        hub.create_repo(REPO, repo_type="kernel")
        hub.shas = {"v1": hub.commit(REPO, _variants("1.0"), repo_type="kernel", branch="v1")}
        folder = tmp_path / "project"
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
        hub.folder, hub.cache = folder, tmp_path / "cache"
        hub.env = {"HF_ENDPOINT": hub.url, "KERNELHOOK_CACHE": str(tmp_path / "cache")}
        yield hub


def kernels_lock(project) -> "os.PathLike":
    """kernels.lock as the kernels package's own `kernels lock` writes it from [tool.kernels.dependencies]."""
    if importlib.util.find_spec("kernels") is None:
        pytest.skip("the kernels package is not installed")
    (project.folder / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.kernels.dependencies]\n"{REPO}" = 1\n')
    code = "import sys; from kernels.cli import main; sys.argv = ['kernels', 'lock', sys.argv[1]]; main()"
    result = subprocess.run([sys.executable, "-c", code, str(project.folder)], env=child_env(project.env, None),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return project.folder / "kernels.lock"


def forget_kernels():
    for name in [n for n in sys.modules if n.startswith("_kernelhook_")]:
        del sys.modules[name]


def tamper(module, relative="__init__.py"):
    """Change a cached file of a loaded kernel, as a damaged or hostile cache would."""
    target = kernelhook.origin(module).tree / relative
    forget_kernels()
    os.chmod(target, 0o644)
    target.write_text("import os\nos.environ['PWNED'] = '1'\n")


def test_kernels_lock_from_the_kernels_cli_pins_the_commit_and_each_file_is_checked(project):
    lock = kernels_lock(project)
    assert json.loads(lock.read_text()) == [
        {"dependency": {"repo-id": REPO, "version": 1}, "lock": {"commit": project.shas["v1"]}}]
    project.commit(REPO, _variants("1.1"), repo_type="kernel", branch="v1")  # the branch moves on
    module = kernelhook.get_locked_kernel(REPO, lockfile=lock)
    assert module.VERSION == "1.0" and kernelhook.origin(module).commit == project.shas["v1"]
    assert kernelhook.get_kernel(REPO, revision=project.shas["v1"]) is module  # one module per commit and variant
    assert LockedLayerRepository(REPO, lockfile=lock, layer_name="ReLU").layer_in(module).__name__ == "ReLU"
    repo = LockedFuncRepository(REPO, lockfile=lock, func_name="relu")
    assert repo.pinned(project.shas["v1"]) is repo and repo.module(None) is module

    tamper(module)
    with pytest.raises(LockMismatchError) as info:
        kernelhook.get_locked_kernel(REPO, lockfile=lock)
    message = str(info.value)
    assert "__init__.py" in message and project.shas["v1"] in message and "listing" in message
    assert "PWNED" not in os.environ and not [n for n in sys.modules if n.startswith("_kernelhook_")]


def test_load_kernel_loads_a_locked_kernel_from_the_cache_and_sends_no_request(project):
    lock = kernels_lock(project)
    project.clear_requests()
    with pytest.raises(HubUnreachableError, match="cache only"):
        kernelhook.load_kernel(REPO, lockfile=lock)  # nothing cached yet, and nothing is fetched
    with pytest.raises(HubUnreachableError):
        kernelhook.get_locked_kernel(REPO, local_files=True, lockfile=lock)
    assert not project.requests
    kernelhook.get_locked_kernel(REPO, lockfile=lock)  # fills the cache
    forget_kernels()
    project.clear_requests()
    assert kernelhook.load_kernel(REPO, lockfile=lock).VERSION == "1.0"
    assert kernelhook.get_locked_kernel(REPO, local_files=True, lockfile=lock).VERSION == "1.0"
    assert not project.requests
    assert kernelhook.load_kernel(REPO, lockfile=lock, backend="cpu").VARIANT == "torch-universal"


def _early_kernels_lock(project, path, variants=None):
    """kernels.lock in the format earlier kernels releases wrote, its variant hashes computed from the Hub's
    own tree listing (through huggingface_hub) as those releases computed them."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    listed = [f for f in HfApi(endpoint=project.url).list_repo_tree(REPO, repo_type="kernel", recursive=True,
                                                                       revision=project.shas["v1"])
              if isinstance(f, RepoFile) and f.path.startswith("build/")]
    hashes = {}
    for variant in {f.path.split("/")[1] for f in listed}:
        files = sorted((f.path.split("/", 2)[2].encode(), bytes.fromhex(f.lfs.sha256 if f.lfs else f.blob_id))
                       for f in listed if f.path.split("/")[1] == variant)
        hashes[variant] = "sha256-" + hashlib.sha256(b"".join(name + digest for name, digest in files)).hexdigest()
    variants = variants or hashes
    entry = {"repo_id": REPO, "sha": project.shas["v1"],
             "variants": {v: {"hash": h or hashes[v], "hash_type": "git_lfs_concat"} for v, h in variants.items()}}
    path.write_text(json.dumps([entry], indent=2))
    return path


def test_an_early_kernels_lock_checks_the_variant_hash(project, system):
    lock = _early_kernels_lock(project, project.folder / "kernels.lock")
    module = kernelhook.get_locked_kernel(REPO, lockfile=lock)
    assert module.VERSION == "1.0"
    system(CANN)
    assert kernelhook.get_locked_kernel(REPO, lockfile=lock).VARIANT == CANN

    system("torch213-cxx11-cpu-x86_64-linux")
    wrong = {"torch-universal": "sha256-" + "0" * 64}
    forget_kernels()
    with pytest.raises(LockMismatchError, match="sha256-0000"):
        kernelhook.get_locked_kernel(REPO, lockfile=_early_kernels_lock(project, project.folder / "wrong.lock", wrong))
    only_cann = _early_kernels_lock(project, project.folder / "cann.lock", {CANN: ""})
    with pytest.raises(LockMismatchError, match="no hash for this variant"):
        kernelhook.get_locked_kernel(REPO, lockfile=only_cann)
    kernelhook.get_locked_kernel(REPO, lockfile=lock)
    tamper(module, "table.bin")  # an LFS file
    with pytest.raises(LockMismatchError, match="do not match"):
        kernelhook.get_locked_kernel(REPO, lockfile=lock)
    assert not [n for n in sys.modules if n.startswith("_kernelhook_")]


def test_kernelhook_lock_serves_the_locked_api_too(project):
    from kernelhook.cli import main as cli

    (project.folder / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.kernelhook.kernels]\n"{REPO}" = "v1"\n')
    assert cli(["lock"]) == 0
    project.commit(REPO, _variants("1.1"), repo_type="kernel", branch="v1")
    module = kernelhook.get_locked_kernel(REPO)  # the lockfile in effect, found from the working directory
    assert module.VERSION == "1.0"
    tamper(module, "layers.py")
    with pytest.raises(LockMismatchError, match="layers.py does not match the lockfile"):
        kernelhook.get_locked_kernel(REPO, lockfile=project.folder / "kernelhook.lock")


def test_the_lock_in_the_calling_packages_installed_metadata_is_found(project, tmp_path):
    lock = kernels_lock(project)
    (project.folder / "pyproject.toml").unlink()
    site = tmp_path / "site"
    package = site / "lockedapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        import kernelhook
        module = kernelhook.get_locked_kernel({REPO!r})
        layer = kernelhook.LockedLayerRepository({REPO!r}, layer_name="ReLU")
    """))
    dist = site / "lockedapp-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lockedapp\nVersion: 0.1\n")
    (dist / "top_level.txt").write_text("lockedapp\n")
    (dist / "kernels.lock").write_bytes(lock.read_bytes())
    lock.unlink()  # only the installed metadata holds it now
    project.commit(REPO, _variants("1.1"), repo_type="kernel", branch="v1")
    env = {**project.env, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    code = "import lockedapp, kernelhook; print(lockedapp.module.VERSION, lockedapp.layer.pin.source)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(env), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=1) == ["1.0", "kernels.lock in the metadata of lockedapp\n"]
    outside = run_python(f"import kernelhook; kernelhook.get_locked_kernel({REPO!r})", env)
    assert outside.returncode == 1 and "LockfileError" in outside.stderr  # a caller without it has no lock


@pytest.mark.parametrize("text, words", [
    ("[]", "acme/relu is not locked"),  # a lock that pins other kernels (here none)
    ('[{"repo_id": "acme/relu", "sha": "main", "variants": {}}]', "is not a commit sha"),  # a branch, not a pin
    ('{"kernels": {}}', "not a kernelhook lockfile"),  # a kernelhook.lock without its format version
    ("not json", "not a lockfile kernelhook reads"),
])
def test_a_lock_that_does_not_pin_the_repo_is_a_lockfile_error(project, text, words):
    path = project.folder / "some.lock"
    path.write_text(text)
    with pytest.raises(LockfileError, match=words):
        kernelhook.get_locked_kernel(REPO, lockfile=path)
    with pytest.raises(LockfileError, match="is not locked: looked in"):
        LockedLayerRepository(REPO, layer_name="ReLU")  # nothing named, nothing found
    assert not project.requests
