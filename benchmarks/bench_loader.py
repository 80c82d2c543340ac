"""Load a Hub kernel with kernelhook and with the public `kernels` package, side by side.

Both tools talk to the same loopback Hub (kernelhook.testing.LocalHub) serving one kernel repo,
and every number is the median over fresh interpreters: what a user pays once per process.
Each child imports torch before its timer starts, so torch's own import counts for neither tool.

    .venv/bin/python benchmarks/bench_loader.py [--runs 7] [--json runs.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import sys
import time
from pathlib import Path

from _common import (alternate, announce_machine, compared_tools, comparison_table, finish, hub_env,
                     loopback_hub, median_range, request_line, run_child)
from kernelhook.testing import LocalHub

REPO = "bench/relu"
UNIVERSAL = "torch-universal"
# Strict variants no CPU-only torch can take: choosing matters, and one wrong pick would cost a download.
OTHER_VARIANTS = {"torch26-cxx11-cu126-x86_64-linux": "cuda", "torch213-cxx11-cu128-x86_64-linux": "cuda",
                  "torch27-cxx11-cann82-aarch64-linux": "npu"}
LUT_BYTES = 1 << 20  # one ~1 MiB LFS file per variant, so the transfer is not just a few tiny files

# The package, alike in every variant but for VARIANT, which tells the parent which variant loaded.
PACKAGE = {
    "__init__.py": "from . import layers\nfrom ._ops import lut_bytes, relu\n\nVARIANT = {variant!r}\n",
    "layers.py": "import torch\n\nfrom ._ops import relu\n\n\nclass ReLU(torch.nn.Module):\n"
                 "    def forward(self, x):\n        return relu(x)\n",
    "_ops.py": "import os\n\nimport torch\n\n\ndef relu(x):\n    return torch.clamp_min(x, 0.0)\n\n\n"
               "def lut_bytes():\n    return os.path.getsize(os.path.join(os.path.dirname(__file__), 'relu_lut.bin'))\n",
}

# Runs in a fresh interpreter; argv: tool, revision ("" = time the import of the tool only).
CHILD = r"""
import importlib, json, sys, time
import torch  # before the timer: both tools need it, neither should be charged for it

tool, rev = sys.argv[1], sys.argv[2]
out = {"torch": torch.__version__}
t0 = time.perf_counter()
if tool == "kernelhook":
    import kernels_hub
else:
    import kernels
t1 = time.perf_counter()
out["install_s"] = t1 - t0
if rev:
    try:
        if tool == "kernelhook":
            module = importlib.import_module("kernels_hub.bench.relu@" + rev)
        else:
            pin = {"version": 1} if rev == "v1" else {"revision": rev}
            module = kernels.get_kernel("bench/relu", trust_remote_code=True, **pin)
        out["load_s"] = time.perf_counter() - t1
        # Outside the timer: prove the right variant loaded, with its LFS file complete.
        out.update(ok=True, variant=module.VARIANT, lut_bytes=module.lut_bytes(),
                   relu=module.layers.ReLU()(torch.tensor([-1.0, 2.0])).tolist())
    except Exception as exc:
        out.update(ok=False, error=f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
print(json.dumps(out))
"""


def publish(hub: LocalHub) -> str:
    """One kernel repo, branch v1, in the layout both tools load: build/<variant>/{metadata.json,__init__.py}."""
    files: dict[str, bytes | str] = {}
    for variant, backend in {UNIVERSAL: "cpu", **OTHER_VARIANTS}.items():
        base = f"build/{variant}"
        metadata = {"name": "relu", "id": "relu", "version": 1, "license": "Apache-2.0",
                    "python-depends": [], "backend": {"type": backend}}
        files.update({f"{base}/{name}": text.format(variant=variant) if name == "__init__.py" else text
                      for name, text in PACKAGE.items()})
        files[f"{base}/metadata.json"] = json.dumps(metadata)
        # Distinct bytes per variant, so no store can dedupe one variant's blob into another's.
        files[f"{base}/relu_lut.bin"] = random.Random(variant).randbytes(LUT_BYTES)
    hub.create_repo(REPO, repo_type="kernel")
    return hub.commit(REPO, files, repo_type="kernel", branch="v1", message="relu v1")


def child_env(tool: str, cache: Path, hub_url: str, hf_home: Path, offline: bool) -> dict[str, str]:
    """The environment of one child: the Hub, HF_HOME, this tool's cache in `cache`, and offline mode if asked."""
    env = hub_env(hub_url, hf_home)
    if tool == "kernelhook":
        env.update(KERNELHOOK_CACHE=str(cache), HF_HUB_CACHE=str(cache / "hf"))  # nothing lands in ~/.cache
    else:
        env["HF_HUB_CACHE"] = str(cache)  # kernels caches in huggingface_hub's cache unless KERNELS_CACHE is set
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_all(hub: LocalHub, tools: list[str], runs: int, root: Path, hf_home: Path, sha: str) -> dict:
    results = {tool: collections.defaultdict(list) for tool in tools}

    def measure(number: str, rev: str, cache_of, offline: bool = False) -> None:
        for i in range(runs):
            for tool in alternate(tools, i):
                env = child_env(tool, cache_of(tool, i), hub.url, hf_home, offline)
                results[tool][number].append(run_child(hub, CHILD, [tool, rev], env, root))
        print(f"  {number}: {runs * len(tools)} processes done", file=sys.stderr, flush=True)

    measure("install", "", lambda tool, i: root / tool / "unused")
    measure("cold", "v1", lambda tool, i: root / tool / f"cold-{i}")  # a new, empty cache every run

    def warm(tool: str, i: int) -> Path:
        return root / tool / f"cold-{runs - 1}"  # filled by the last cold run, in an earlier process

    measure("warm_v1", "v1", warm)
    measure("warm_sha", sha, warm)
    measure("offline_v1", "v1", warm, offline=True)
    return results


def samples(runs: list[dict], kind: str) -> list:
    """One value per run of one tool; failed loads give none (the "loads?" row counts them)."""
    ok = [r for r in runs if r.get("ok", True)]
    if kind == "total":  # the tool's import + the load call: what a fresh process pays after torch
        return [r["install_s"] + r["load_s"] for r in ok]
    return [len(r["requests"]) for r in ok] if kind == "requests" else [r[kind] for r in ok]


def cell(values: list, kind: str) -> str:
    """Median (min–max); times in ms, with their range even when all are equal."""
    if kind == "requests":
        return median_range(values, "{:g}")
    return median_range([v * 1000 for v in values], "{:.1f}", " ms", range_when_equal=True)


ROWS = [  # (label, number, kind)
    ("1. hook install (`import kernels_hub` / `import kernels`)", "install", "install_s"),
    ("2. cold load, empty cache: load call", "cold", "load_s"),
    ("   tool import + load call", "cold", "total"),
    ("   HTTP requests", "cold", "requests"),
    ("3. warm load, version=1 (`@v1`): load call", "warm_v1", "load_s"),
    ("   tool import + load call", "warm_v1", "total"),
    ("   HTTP requests", "warm_v1", "requests"),
    ("4. warm load, commit-pinned (`@<sha>`): load call", "warm_sha", "load_s"),
    ("   tool import + load call", "warm_sha", "total"),
    ("   HTTP requests", "warm_sha", "requests"),
    ("5. warm, HF_HUB_OFFLINE=1, version=1: loads?", "offline_v1", "loads"),
    ("   load call", "offline_v1", "load_s"),
    ("   tool import + load call", "offline_v1", "total"),
]


def table(results: dict, tools: list[str], kernels_version: str) -> str:
    both = len(tools) == 2
    rows = []
    for label, number, kind in ROWS:
        if kind == "loads":
            ok = [sum(1 for r in results[t][number] if r.get("ok")) for t in tools]
            cells = [f"{'yes' if n == len(results[t][number]) else 'no' if n == 0 else 'partly'} "
                     f"({n}/{len(results[t][number])})" for t, n in zip(tools, ok)] + [""] * both
        else:
            values = [samples(results[t][number], kind) for t in tools]
            cells = [cell(v, kind) for v in values]
            if both:  # kernels' median over kernelhook's: above 1, kernelhook is faster or asks less
                ours, theirs = values
                cells.append(f"{statistics.median(theirs) / statistics.median(ours):.1f}×"
                             if ours and theirs and statistics.median(ours) else "—")
        rows.append([label, *cells])
    return comparison_table(rows, tools, kernels_version)


def request_summary(results: dict, tools: list[str], sha: str) -> str:
    """What the Hub saw in the last run of each load (sha shortened): where the requests go."""
    return "\n".join(request_line(f"{number} / {tool}", results[tool][number][-1]["requests"], sha)
                     for number in ("cold", "warm_v1", "warm_sha") for tool in tools)


def problems(results: dict) -> list[str]:
    """Failed runs, and loads of anything but the CPU-compatible variant with its whole LFS file."""
    found = []
    for tool, numbers in results.items():
        for number, runs in numbers.items():
            for error in sorted({r["error"] for r in runs if not r.get("ok", True)}):
                found.append(f"{tool} {number} failed: {error}")
            for r in runs:
                if r.get("ok") and "variant" in r and (r["variant"], r["lut_bytes"], r["relu"]) != (
                        UNIVERSAL, LUT_BYTES, [0.0, 2.0]):
                    found.append(f"{tool} {number}: loaded {r['variant']} ({r['lut_bytes']} B), relu={r['relu']}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per number (default 7)")
    parser.add_argument("--json", metavar="PATH", help="write every run's raw report here")
    args = parser.parse_args()

    tools, kernels_version = compared_tools()
    machine = announce_machine(kernels_version)

    started = time.perf_counter()
    with loopback_hub("bench-loader-") as (hub, root, hf_home):
        sha = publish(hub)
        results = run_all(hub, tools, args.runs, root, hf_home, sha)
    elapsed = time.perf_counter() - started

    print(f"\n{REPO}@v1 = {sha[:12]}, {1 + len(OTHER_VARIANTS)} variants; medians (min–max) over "
          f"{args.runs} fresh processes each\n")
    print(table(results, tools, kernels_version))
    print("\nRequests the Hub saw (last run of each):\n" + request_summary(results, tools, sha))
    raw = {"machine": machine, "runs": args.runs, "repo": REPO, "commit": sha, "elapsed_s": elapsed,
           "results": {tool: dict(numbers) for tool, numbers in results.items()}}
    finish(problems(results), elapsed, args.json, raw)


if __name__ == "__main__":
    main()
