"""Hub requests per rank when a torchrun job imports a kernel into an empty, shared cache.

Each run starts a fresh loopback Hub and cache, launches N ranks with the gloo
backend (one node), and has every rank import `kernels_hub.acme.dist@v1`. The
Hub counts what it is asked: the resolve is made once per job (through
torch.distributed's store), the listing and each file once per node.

    python benchmarks/bench_ranks.py [--ranks 1 4 8]
"""

from __future__ import annotations

import argparse
import collections
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import hub_env, make_hf_home, md_row  # noqa: E402
from kernelhook.testing import LocalHub  # noqa: E402
from tests.repos import new_layout  # noqa: E402

RANK = textwrap.dedent("""
    import importlib
    import torch.distributed as dist
    dist.init_process_group("gloo")
    importlib.import_module("kernels_hub.acme.dist@v1")
    dist.destroy_process_group()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kind(path: str) -> str:
    if path.endswith("/refs"):
        return "resolve"
    if "/tree/" in path:
        return "listing"
    return "file" if "/resolve/" in path else "other"


def run(ranks: int, work: Path) -> collections.Counter:
    with LocalHub(work / f"hub-{ranks}") as hub:
        hub.create_repo("acme/dist", repo_type="kernel")
        hub.commit("acme/dist", new_layout("torch-universal", "1.0"), repo_type="kernel", branch="v1")
        (work / "rank.py").write_text(RANK)
        env = hub_env(hub.url, make_hf_home(work), stripped=("HF_", "KERNELHOOK_"))
        env["KERNELHOOK_CACHE"] = str(work / f"cache-{ranks}")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={ranks}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", str(work / "rank.py")]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-2000:])
        return collections.Counter(kind(r.path) for r in hub.requests if r.status == 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    print(md_row(["ranks", "resolve", "listing", "files", "all requests", "per rank"]))
    print(md_row(["---"] * 6))
    with tempfile.TemporaryDirectory() as work:
        for ranks in args.ranks:
            seen = run(ranks, Path(work))
            total = sum(seen.values())
            print(md_row([ranks, seen["resolve"], seen["listing"], seen["file"], total, f"{total / ranks:.2f}"]))


if __name__ == "__main__":
    main()
