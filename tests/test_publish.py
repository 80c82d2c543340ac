"""Publishing: the real huggingface_hub client writes to the loopback Hub, and `kernelhook check` / `publish`."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

import kernelhook
from kernelhook.testing import LocalHub

from .conftest import EXAMPLES
from .test_cli import run

RMSNORM = EXAMPLES / "kernels" / "RMSNorm"
SEED = "kernels-ext-npu/RMSNorm"
WEIGHTS = bytes(range(256)) * 40  # 10240 bytes: a *.bin, stored through LFS
README = "---\nlicense: apache-2.0\n---\n# demo\n"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh Hub with no repos; kernelhook points at it, with an empty cache."""
    with LocalHub(tmp_path / "hub") as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
        yield running


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "upload"
    (root / "build" / "cpu").mkdir(parents=True)
    (root / "README.md").write_text(README)
    (root / "build" / "cpu" / "ops.py").write_text("VALUE = 1\n")
    (root / "build" / "cpu" / "weights.bin").write_bytes(WEIGHTS)
    return root


# -- the huggingface_hub client against the Hub ------------------------------------------------------


@pytest.mark.parametrize("xet", [True, False], ids=["pipelined", "create_commit"])
@pytest.mark.parametrize("repo_type", ["model", "kernel"])
def test_client_publishes_to_a_branch(hub, folder, tmp_path, monkeypatch, repo_type, xet):
    # With hf_xet installed upload_folder takes its pipelined upload; without it, create_commit.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
    api = HfApi(endpoint=hub.url)
    url = api.create_repo("acme/pub", repo_type=repo_type, exist_ok=True)
    assert url.repo_type == repo_type and url.repo_id == "acme/pub"
    api.create_repo("acme/pub", repo_type=repo_type, exist_ok=True)  # a 409, swallowed
    api.create_branch("acme/pub", branch="v1", repo_type=repo_type, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id="acme/pub", repo_type=repo_type, revision="v1",
                             commit_message="publish v1", ignore_patterns=["**/*.pyc"])

    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs("acme/pub", repo_type=repo_type).branches}
    assert refs["v1"] == info.oid and set(refs) == {"main", "v1"}
    assert info.repo_url.repo_type == repo_type
    for name, data in [("build/cpu/weights.bin", WEIGHTS), ("README.md", README.encode())]:
        path = hf_hub_download("acme/pub", name, repo_type=repo_type, revision="v1", endpoint=hub.url,
                               cache_dir=str(tmp_path / "hf-cache"))
        with open(path, "rb") as f:
            assert f.read() == data
    tree = {e.path: e for e in api.list_repo_tree("acme/pub", repo_type=repo_type, revision="v1", recursive=True)}
    assert tree["build/cpu/weights.bin"].lfs is not None and tree["build/cpu/ops.py"].lfs is None
    assert api.list_repo_commits("acme/pub", repo_type=repo_type, revision="v1")[0].title == "publish v1"
    # Like the Hub, creating a repo commits a .gitattributes on main.
    assert [e.path for e in api.list_repo_tree("acme/pub", repo_type=repo_type)] == [".gitattributes"]
    # Every file went inline: no LFS batch or xet token request, on either path.
    kind = f"/api/{repo_type}s/acme/pub"
    assert {r.path for r in hub.requests if r.method == "POST"} == {
        "/api/repos/create", "/api/validate-yaml", f"{kind}/branch/v1", f"{kind}/preupload/v1", f"{kind}/commit/v1"}


def test_unchanged_files_make_no_commit(hub, folder):
    api = HfApi(endpoint=hub.url)
    api.create_repo("acme/pub", exist_ok=True)
    first = api.upload_folder(folder_path=str(folder), repo_id="acme/pub", commit_message="one")
    hub.clear_requests()
    again = api.upload_folder(folder_path=str(folder), repo_id="acme/pub", commit_message="two")
    assert again.oid == first.oid and hub.count("POST", "/commit/") == 0  # preupload told the client the oids


def test_write_errors_have_the_hubs_shape(hub, folder):
    api = HfApi(endpoint=hub.url)
    api.create_repo("acme/pub")
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_repo("acme/pub")
    assert exists.value.response.status_code == 409
    api.create_branch("acme/pub", branch="v1")
    with pytest.raises(HfHubHTTPError) as branch:
        api.create_branch("acme/pub", branch="v1")
    assert branch.value.response.status_code == 409
    head = api.list_repo_refs("acme/pub").branches[0].target_commit
    api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="acme/pub")
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit("acme/pub", [CommitOperationAdd("b.txt", b"y")], commit_message="m", parent_commit=head)
    assert stale.value.response.status_code == 412
    with pytest.raises(EntryNotFoundError):
        api.create_commit("acme/pub", [CommitOperationDelete("nope.txt")], commit_message="m")
    api.create_commit("acme/pub", [CommitOperationDelete("a.txt")], commit_message="delete a")
    assert [e.path for e in api.list_repo_tree("acme/pub")] == [".gitattributes"]


def test_python_create_repo_stays_empty_and_takes_a_first_commit(hub):
    hub.create_repo("acme/empty")
    api = HfApi(endpoint=hub.url)
    assert api.list_repo_refs("acme/empty").branches == []
    info = api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="acme/empty")
    assert api.list_repo_refs("acme/empty").branches[0].target_commit == info.oid


# -- kernelhook publish ----------------------------------------------------------------------------


def publish(folder, version: int) -> tuple[int, str, str]:
    return run("publish", str(folder), "--repo", SEED, "--version", str(version))


def test_publish_then_import_through_the_hook(hub, system):
    code, out, err = publish(RMSNORM, 1)
    assert code == 0, err
    sha = out.strip()
    refs = HfApi(endpoint=hub.url).list_repo_refs(SEED)
    assert {b.name: b.target_commit for b in refs.branches}["v1"] == sha
    module = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
    origin = kernelhook.origin(module)
    assert origin.commit == sha and origin.variant == "torch-universal"


def test_publishing_a_new_version_makes_its_branch(hub, system):
    first = publish(RMSNORM, 1)[1].strip()
    code, out, err = run("publish", str(RMSNORM), "--repo", SEED, "--version", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["branch"] == "v2" and data["repo"] == SEED
    branches = {b.name: b.target_commit for b in HfApi(endpoint=hub.url).list_repo_refs(SEED).branches}
    assert branches["v1"] == first and branches["v2"] == data["commit"] and set(branches) == {"main", "v1", "v2"}


def test_publish_refuses_a_folder_that_fails_check(hub, tmp_path):
    broken = copy_example(tmp_path)
    layers = broken / "build" / "torch-universal" / "RMSNorm" / "layers.py"
    layers.write_text(layers.read_text().replace(
        "    def forward(", "    def __init__(self):\n        super().__init__()\n\n    def forward(", 1))
    hub.clear_requests()
    code, out, err = publish(broken, 1)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "defines __init__" in err and "nothing was uploaded" in err
    assert hub.requests == []


# -- kernelhook check ------------------------------------------------------------------------------


def copy_example(tmp_path):
    return shutil.copytree(RMSNORM, tmp_path / "RMSNorm", ignore=shutil.ignore_patterns("__pycache__"))


def test_check_passes_a_function_kernel_in_the_flat_layout():
    code, text, _ = run("check", str(RMSNORM.parent / "rotary"))
    assert code == 0 and text.splitlines()[-1] == "ok: ready to publish"
    assert "torch-universal: imported; layers none; functions rotate_half, apply_rotary_pos_emb" in text
    assert "torch213-cxx11-cann90-x86_64-linux: static (torch_npu is not importable here)" in text


def test_check_passes_the_attention_kernel_with_both_conventions_in_every_build():
    code, text, _ = run("check", str(RMSNORM.parent / "attention"))
    assert code == 0 and text.splitlines()[-1] == "ok: ready to publish"
    for variant in ("torch-universal", "torch27-cxx11-cann82-aarch64-linux", "torch213-cxx11-cann90-aarch64-linux",
                    "torch213-cxx11-cann90-x86_64-linux"):
        assert f"{variant}: " in text
    assert text.count("functions flash_attn_func, flash_attn_varlen_func") == 4


def test_check_passes_the_example_in_both_forms():
    code, text, _ = run("check", str(RMSNORM))
    assert code == 0 and text.splitlines()[-1] == "ok: ready to publish"
    assert "torch-universal: imported; layers RMSNorm" in text
    code, out, _ = run("check", str(RMSNORM), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["problems"] == []
    assert {v["variant"] for v in data["variants"]} >= {"torch-universal", "torch27-cxx11-cann82-aarch64-linux"}


def bad_variant_name(root):
    shutil.copytree(root / "build" / "torch-universal", root / "build" / "cuda-universal")
    return "build/cuda-universal", "is not a build variant name"


def variant_without_package(root):
    (root / "build" / "torch-universal" / "RMSNorm" / "__init__.py").unlink()
    return "build/torch-universal", "exactly one package folder (found: none)"


def variant_without_layers_or_functions(root):
    package = root / "build" / "torch-universal" / "RMSNorm"
    (package / "layers.py").unlink()
    (package / "__init__.py").write_text("VERSION = '1.0'\n")  # nothing kernelize could take
    return "build/torch-universal/RMSNorm", "no layers.py and no public function"


def malformed_metadata(root):
    (root / "build" / "torch-universal" / "metadata.json").write_text("{not json")
    return "build/torch-universal/metadata.json", "not valid JSON"


def static_layer_with_extra_method(root):
    # The variant must be read from source, which happens where torch_npu is not importable.
    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is importable here, so the variant is imported rather than read")
    rel = "build/torch27-cxx11-cann82-aarch64-linux/RMSNorm/layers.py"
    path = root / rel
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("    def forward("))
    lines[at:at] = ["    def extra(self):", "        return 1", ""]
    path.write_text("\n".join(lines) + "\n")
    return f"{rel}:{at + 1}", "has a member beyond forward and the flags: extra"


@pytest.mark.parametrize("breakage", [bad_variant_name, variant_without_package, malformed_metadata,
                                      static_layer_with_extra_method, variant_without_layers_or_functions])
def test_check_names_the_file_and_the_rule(tmp_path, breakage):
    root = copy_example(tmp_path)
    where, rule = breakage(root)
    code, text, _ = run("check", str(root))
    assert code == 1 and text.splitlines()[-1] == "1 problem(s)"
    problem = next(line for line in text.splitlines() if line.startswith(f"{where}: "))
    assert rule in problem
    code, out, _ = run("check", str(root), "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert [p["path"] for p in data["problems"]] == [where] and rule in data["problems"][0]["rule"]
