"""The kernelhook command: every command in both output forms, bad usage, and prune."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

import kernelhook
from kernelhook.cli import command
from kernelhook.cli import main as cli
from kernelhook.platform import set_system
from kernelhook.testing import LocalHub

from .conftest import EXAMPLES, child_env
from .repos import SEED, new_layout

REPO = "acme/pruned"


def run(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli(list(args))
        except SystemExit as exit:  # argparse's bad usage
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_system_in_both_forms(system):
    system("torch27-cxx11-cann82-aarch64-linux")
    code, text, _ = run("system")
    assert code == 0 and text.splitlines()[0] == "torch 2.7, cxx11 ABI, CANN 8.2, aarch64 linux"
    assert "  torch-npu" in text
    data = json.loads(run("system", "--json")[1])
    assert data["strict_variant"] == "torch27-cxx11-cann82-aarch64-linux" and data["candidates"][-1] == "torch-universal"


def test_info_in_both_forms(env, system, hub):
    code, text, _ = run("info", f"{SEED}@v1")
    assert code == 0 and text.splitlines()[0] == f"kernels-ext-npu/RMSNorm @ {hub.shas['seed_v1']} (revision v1)"
    assert "  -> torch-universal: compatible (universal)" in text
    assert "  -- torch27-cxx11-cu126-x86_64-linux: built for CUDA 12.6; this system has CPU" in text
    data = json.loads(run("info", f"{SEED}@v1", "--json")[1])
    assert data["chosen"] == "torch-universal" and data["commit"] == hub.shas["seed_v1"]
    assert {v["name"] for v in data["variants"]} == {
        "torch-universal", "torch27-cxx11-cann82-aarch64-linux", "torch27-cxx11-cu126-x86_64-linux",
        "torch28-cxx11-rocm64-x86_64-linux"}


def test_info_exits_1_when_no_variant_fits(env, system):
    code, text, _ = run("info", "acme/cuda-only")
    assert code == 1 and text.endswith("no variant fits this system\n")


def test_download_and_cache_ls_in_both_forms(env, system, hub):
    code, text, _ = run("download", f"{SEED}@v1", "--all-variants")
    assert code == 0 and len(text.splitlines()) == 4
    data = json.loads(run("download", "kernels-community/relu", "--json")[1])
    assert [(d["repo"], d["variant"]) for d in data] == [("kernels-community/relu", "torch-universal")]
    code, text, _ = run("cache", "ls")
    assert code == 0 and f"kernels-ext-npu/RMSNorm  v1  {hub.shas['seed_v1'][:12]}  torch-universal" in text
    rows = json.loads(run("cache", "ls", "--json")[1])
    assert {(r["repo_id"], r["variant"]) for r in rows} >= {(SEED, "torch28-cxx11-rocm64-x86_64-linux"),
                                                            ("kernels-community/relu", "torch-universal")}
    assert all(r["size"] > 0 for r in rows)


def test_verify_in_both_forms(env, system):
    kernelhook.get_kernel(SEED, version=1)
    code, text, _ = run("cache", "verify")
    assert code == 0 and text.startswith("checked 2 objects and 1 trees: 0 damaged")
    assert json.loads(run("cache", "verify", "--json")[1])["damaged"] == []


@pytest.mark.parametrize(
    "args, code, words",
    [
        ((), 2, "the following arguments are required"),  # no command
        (("frobnicate",), 2, "invalid choice"),
        (("info",), 2, "REPO[@REV]"),
        (("info", "acme/x@"), 2, "nothing after '@'"),
        (("info", "not-a-repo-id"), 2, "is not a Hub repo id"),  # bad usage: not ORG/NAME
        (("info", "notarepo"), 2, "Expected REPO[@REV]"),  # the form it takes, named
        (("info", "acme/x@bad..rev"), 2, "Expected REPO[@REV]"),  # not a revision
        (("download", "notarepo"), 2, "Expected REPO[@REV]"),
        (("info", "acme/nothing-at-all"), 1, "No Hub repo answers"),
        (("download",), 2, "no repos named and no kernelhook.lock found"),
        (("download", "--lockfile", "/nonexistent/kernelhook.lock"), 1, "not a kernelhook lockfile"),
        (("cache",), 2, "the following arguments are required"),
        (("cache", "prune", "--grace", "soon"), 2, "invalid float value"),
        (("lock", "--pyproject", "/nonexistent/pyproject.toml"), 1, "cannot read it as TOML"),
        (("lock",), 1, "no pyproject.toml here or above"),
        (("system", "extra"), 2, "unrecognized arguments"),
        (("cache", "ls", "extra"), 2, "unrecognized arguments"),
        (("cache", "verify", "--fix"), 2, "unrecognized arguments"),
        (("cache", "prune", "--lockfile", "/nonexistent.lock"), 1, "not a kernelhook lockfile"),
        (("check", "/no/such/dir"), 2, "/no/such/dir does not exist"),  # bad usage: DIR names nothing
        (("check", __file__), 2, "is not a folder"),
        (("publish", "/no/such/dir", "--repo", "acme/x", "--version", "1"), 2, "/no/such/dir does not exist"),
    ],
)
def test_bad_usage_and_failures_exit_with_meaningful_codes_and_one_line(env, system, tmp_path, monkeypatch,
                                                                         args, code, words):
    monkeypatch.chdir(tmp_path)  # no lockfile or pyproject above
    got, out, err = run(*args)
    assert got == code and words in err
    assert err.count("\n") == 1 and err.startswith("kernelhook: error: ")  # one line, bad usage included
    assert out == ""


@pytest.mark.parametrize(
    "args, code",
    [
        (("--json",), 2),  # no command
        (("frobnicate", "--json"), 2),  # no such command
        (("info", "--json"), 2),  # REPO missing
        (("--json", "info", "notarepo"), 2),  # REPO not ORG/NAME, --json before the command
        (("cache", "prune", "--grace", "soon", "--json"), 2),  # a value argparse refuses
        (("system", "--json", "extra"), 2),  # an argument too many
        (("check", "/no/such/dir", "--json"), 2),
        (("info", "acme/nothing-at-all", "--json"), 1),  # a failure, not bad usage
    ],
)
def test_with_json_every_error_is_json_on_stdout_bad_usage_included(env, system, tmp_path, monkeypatch, args, code):
    monkeypatch.chdir(tmp_path)
    got, out, err = run(*args)
    assert got == code
    assert json.loads(out) == {"error": err.removeprefix("kernelhook: error: ").rstrip("\n")}
    assert err.count("\n") == 1


def test_json_is_taken_before_the_command_too(system):
    assert json.loads(run("--json", "system")[1]) == json.loads(run("system", "--json")[1])
    assert json.loads(run("--json", "cache", "ls")[1]) == json.loads(run("cache", "ls", "--json")[1])


def test_version():
    code, out, _ = run("--version")
    assert code == 0 and out == f"kernelhook {kernelhook.__version__}\n"


def test_an_unexpected_exception_is_one_line_naming_its_type_and_debug_shows_the_traceback(system, monkeypatch):
    def probe_crashes():
        raise RuntimeError("the probe crashed")

    monkeypatch.setattr(command, "current_system", probe_crashes)
    code, out, err = run("system")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("kernelhook: error: unexpected RuntimeError: the probe crashed.") and "KERNELHOOK_DEBUG=1" in err
    code, out, err = run("system", "--json")
    assert code == 1 and json.loads(out)["error"].startswith("unexpected RuntimeError: the probe crashed.")
    monkeypatch.setenv("KERNELHOOK_DEBUG", "1")
    code, out, err = run("system")
    assert code == 1 and err.startswith("Traceback (most recent call last):") and "probe_crashes" in err
    assert err.splitlines()[-1].startswith("kernelhook: error: unexpected RuntimeError: the probe crashed.")


def test_a_malformed_setting_is_one_line(system, monkeypatch):
    set_system(None)  # the command reads KERNELHOOK_SYSTEM, as in a fresh process; the fixture restores it
    monkeypatch.setenv("KERNELHOOK_SYSTEM", "torch27-cxx11-cann82-aarch64")  # the OS part is missing
    code, _, err = run("system")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("kernelhook: error: KERNELHOOK_SYSTEM='torch27-cxx11-cann82-aarch64' is not")


def test_publish_offline_is_one_line_with_the_fix_and_no_traceback(env, tmp_path):
    argv = [sys.executable, "-m", "kernelhook", "publish", str(EXAMPLES / "kernels" / "RMSNorm"),
            "--repo", "acme/offline", "--version", "1"]
    result = subprocess.run(argv, env=child_env({**env, "HF_HUB_OFFLINE": "1"}), capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("kernelhook: error: could not publish ") and "acme/offline (branch v1)" in result.stderr
    assert "Fix: unset HF_HUB_OFFLINE" in result.stderr


def test_lock_in_both_forms(env, system, hub, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(f'[tool.kernelhook.kernels]\n"{SEED}" = "v1"\n')
    monkeypatch.chdir(tmp_path)
    code, text, _ = run("lock")
    assert code == 0 and text.splitlines() == [f"wrote {tmp_path / 'kernelhook.lock'}",
                                               f"  {SEED} v1 -> {hub.shas['seed_v1']} (4 variants)"]
    data = json.loads(run("lock", "--json")[1])
    assert data["kernels"] == [{"repo": SEED, "revision": "v1", "commit": hub.shas["seed_v1"], "variants": sorted(
        ["torch-universal", "torch27-cxx11-cann82-aarch64-linux", "torch27-cxx11-cu126-x86_64-linux",
         "torch28-cxx11-rocm64-x86_64-linux"])}]


def test_lock_without_a_kernels_table_says_what_to_add(env, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = run("lock", "--json")
    assert code == 1 and "[tool.kernelhook.kernels]" in err and json.loads(out)["error"].startswith(str(tmp_path))


@pytest.fixture
def moved(tmp_path, monkeypatch, system):
    """A repo whose v1 was loaded at commit A, then moved to B and loaded again."""
    with LocalHub(tmp_path / "hub") as hub:
        hub.create_repo(REPO)
        a = hub.commit(REPO, new_layout("torch-universal", "A", {"build/torch-universal/a.bin": b"A" * 5000}), branch="v1")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
        monkeypatch.chdir(tmp_path)
        project = tmp_path / "pyproject.toml"
        project.write_text(f'[tool.kernelhook.kernels]\n"{REPO}" = "v1"\n')
        assert run("lock")[0] == 0  # pins A
        tree_a = kernelhook.origin(kernelhook.get_kernel(REPO)).tree  # loaded under the lock: verified, on record
        (tmp_path / "kernelhook.lock").rename(tmp_path / "a.lock")
        # A load under a lock leaves a commit ref that prune keeps anywhere (a root); drop it, as if A had
        # been loaded under a lock that is gone, so that only the lock passed to prune can keep A.
        (tmp_path / "cache" / "v1" / "refs" / "model" / REPO / "revisions" / f"rev-{a}.json").unlink()
        assert kernelhook.get_kernel(REPO, revision="v1").VERSION == "A"
        b = hub.commit(REPO, new_layout("torch-universal", "B"), branch="v1", replace=True)
        assert kernelhook.get_kernel(REPO, revision="v1").VERSION == "B"
        yield {"A": a, "B": b, "lock": str(tmp_path / "a.lock"), "tree_A": tree_a}


def test_prune_removes_what_no_ref_reaches_refs_first(moved):
    code, text, _ = run("cache", "prune", "--grace", "0", "--dry-run")
    # A's __init__.py, _ops.py and a.bin; layers.py, lazy.py and metadata.json are the same bytes in B: kept
    assert code == 0 and text.startswith("would remove 1 commit refs, 1 trees, 3 objects")
    assert run("cache", "prune", "--grace", "0", "--dry-run")[1] == text  # a dry run changes nothing
    verified = moved["tree_A"].parent.parent / "verified" / moved["tree_A"].name
    assert verified.is_dir()
    data = json.loads(run("cache", "prune", "--grace", "0", "--json")[1])
    assert len(data["refs"]) == 1 and moved["A"] in data["refs"][0] and len(data["objects"]) == 3
    assert not verified.exists()  # the record of verifying a tree goes with the tree
    assert run("cache", "verify")[0] == 0
    rows = json.loads(run("cache", "ls", "--json")[1])
    assert [r["commit"] for r in rows] == [moved["B"]]


def test_prune_keeps_what_a_lockfile_pins(moved):
    data = json.loads(run("cache", "prune", "--grace", "0", "--lockfile", moved["lock"], "--json")[1])
    assert data["refs"] == [] and data["objects"] == [] and data["kept_for_lockfile"] == [moved["A"]]
    assert {r["commit"] for r in json.loads(run("cache", "ls", "--json")[1])} == {moved["A"], moved["B"]}


def test_prune_keeps_recent_entries_by_default(moved):
    assert run("cache", "prune")[1].startswith("removed 0 commit refs, 0 trees, 0 objects")
