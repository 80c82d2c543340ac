"""Multi-node: torchrun with the gloo backend on CPU, ranks sharing one cache.

The branch moves on the Hub while ranks start one after another; every rank
must still load the commit the first one resolved, and the Hub must see one
resolve and each file fetched once."""

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from kernelhook.testing import LocalHub

from .conftest import child_env
from .repos import new_layout

REPO = "acme/dist"

RANK_SCRIPT = textwrap.dedent("""
    import importlib, json, os, sys, time
    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if os.environ.get("ONLY_RANK0") and rank != 0:
        dist.destroy_process_group()  # this rank never asks for the kernel
        sys.exit(0)
    time.sleep(float(os.environ.get("STAGGER_S", "0")) * rank)  # ranks start their imports one after another
    module = importlib.import_module("kernels_hub.acme.dist@v1")
    import kernelhook
    print(json.dumps({"rank": rank, "commit": kernelhook.origin(module).commit, "version": module.VERSION}), flush=True)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dist_hub(tmp_path):
    with LocalHub(tmp_path / "hub") as hub:
        hub.create_repo(REPO)
        hub.first = hub.commit(REPO, new_layout("torch-universal", "1.0"), branch="v1")
        yield hub


def torchrun(hub, tmp_path, ranks: int, **env) -> list[dict]:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={ranks}",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--max-restarts=0", str(script)]
    full_env = child_env({"HF_ENDPOINT": hub.url, "KERNELHOOK_CACHE": str(tmp_path / "cache"), **env})
    result = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted((json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")),
                  key=lambda r: r["rank"])


def _resolves(hub) -> list:
    return [r for r in list(hub.requests) if r.path.endswith("/refs") and r.status == 200]


def _move_branch_after_first_resolve(hub) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + 120
        while not _resolves(hub) and time.monotonic() < deadline:
            time.sleep(0.01)
        hub.commit(REPO, new_layout("torch-universal", "1.1"), branch="v1")  # the branch moves mid-launch

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_all_ranks_load_the_commit_the_first_resolved_while_the_branch_moves(dist_hub, tmp_path):
    watcher = _move_branch_after_first_resolve(dist_hub)
    rows = torchrun(dist_hub, tmp_path, 4, STAGGER_S="1.0")
    watcher.join(timeout=30)
    assert [r["rank"] for r in rows] == [0, 1, 2, 3]
    assert {r["commit"] for r in rows} == {dist_hub.first} and {r["version"] for r in rows} == {"1.0"}
    assert len(_resolves(dist_hub)) == 1  # one resolve for the whole job (discovery's 404s aside)
    downloads = [r.path for r in dist_hub.requests if "/resolve/" in r.path]
    assert len(downloads) == len(set(downloads)) == 5  # each file of the variant fetched once
    assert dist_hub.count(path_contains="/tree/") == 1  # one listing for the node


def test_a_rank_that_imports_alone_never_waits_for_the_others(dist_hub, tmp_path):
    rows = torchrun(dist_hub, tmp_path, 4, ONLY_RANK0="1")
    assert rows == [{"rank": 0, "commit": dist_hub.first, "version": "1.0"}]
