"""get_kernel with a lockfile in effect and a large locked file: what verifying the lock costs.

A lockfile makes kernelhook hash every file of a locked variant before it executes. This measures
get_kernel for a kernel whose variant holds one large LFS file (256 MiB unless --mib says otherwise):

  * the first call in a process whose tree no earlier process verified,
  * the first call in a process after an earlier one verified the same tree,
  * the second call in a process (the module is loaded; nothing changed on disk),
  * for comparison, the first and second call pinning the same commit with no lockfile in effect.

Every number is the median over fresh interpreters, each importing torch and kernelhook before its
timer starts, against a loopback Hub (kernelhook.testing.LocalHub) and a cache filled beforehand.

    python benchmarks/bench_lockfile.py [--runs 7] [--mib 256]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kernelhook.testing import LocalHub

REPO = "bench/locked"
VARIANT = "torch-universal"
CHILD_TIMEOUT_S = 600
STRIPPED_ENV = ("HF_", "HUGGINGFACE_", "KERNELHOOK_", "PYTHONDONTWRITEBYTECODE")

# Runs in a fresh interpreter: two get_kernel calls, timed one by one; argv: a revision, or "" for none.
CHILD = r"""
import json, sys, time
import torch  # before the timer, as in bench_loader.py
import kernelhook

out = {}
revision = sys.argv[1] or None
t0 = time.perf_counter()
first = kernelhook.get_kernel("bench/locked", revision)
t1 = time.perf_counter()
second = kernelhook.get_kernel("bench/locked", revision)
t2 = time.perf_counter()
assert first is second and first.VERSION == "1.0"
out.update(first_s=t1 - t0, second_s=t2 - t1, how=kernelhook.origin(first).how)
print(json.dumps(out))
"""


def publish(hub: LocalHub, mib: int) -> str:
    base = f"build/{VARIANT}"
    files = {
        f"{base}/__init__.py": "from . import layers\nVERSION = '1.0'\n",
        f"{base}/layers.py": "class Identity:\n    def forward(self, x):\n        return x\n",
        f"{base}/metadata.json": json.dumps({"id": "locked", "python-depends": []}),
        # *.bin is stored in LFS; distinct bytes per MiB, so no layer of any store can dedupe it away
        f"{base}/weights.bin": b"".join(i.to_bytes(4, "little") * (1 << 18) for i in range(mib)),
    }
    hub.create_repo(REPO)
    return hub.commit(REPO, files, branch="v1", message="locked v1")


def env_for(hub: LocalHub, cache: Path, hf_home: Path, lockfile: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV)}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), KERNELHOOK_CACHE=str(cache), HF_HUB_CACHE=str(cache / "hf"))
    if lockfile is not None:
        env["KERNELHOOK_LOCKFILE"] = str(lockfile)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{proc.stderr[-2000:]}")
    return proc


def child(env: dict[str, str], cwd: Path, revision: str = "") -> dict:
    return json.loads(run([sys.executable, "-c", CHILD, revision], env, cwd).stdout.strip().splitlines()[-1])


def forget_verifications(cache: Path) -> None:
    """Make the next process find the tree unverified (a cache folder of this benchmark's own)."""
    shutil.rmtree(cache / "v1" / "verified", ignore_errors=True)


def measure(hub: LocalHub, root: Path, runs: int, sha: str) -> dict[str, list[float]]:
    cache, project = root / "cache", root / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(f'[tool.kernelhook.kernels]\n"{REPO}" = "v1"\n')
    hf_home = root / "hf_home"
    hf_home.mkdir()
    (hf_home / ".agent_harnesses.json").write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
    lockfile = project / "kernelhook.lock"
    locked, unlocked = env_for(hub, cache, hf_home, lockfile), env_for(hub, cache, hf_home, None)
    run([sys.executable, "-m", "kernelhook", "lock"], unlocked, project)
    run([sys.executable, "-m", "kernelhook", "download"], locked, project)  # fill the cache, outside any timer
    times: dict[str, list[float]] = {"unverified": [], "verified": [], "second": [], "first_unlocked": [],
                                     "second_unlocked": []}
    for _ in range(runs):
        forget_verifications(cache)
        out = child(locked, project)
        assert out["how"].startswith("lockfile"), out
        times["unverified"].append(out["first_s"])
        out = child(locked, project)
        times["verified"].append(out["first_s"])
        times["second"].append(out["second_s"])
        out = child(unlocked, root, sha)  # no lockfile above root
        times["first_unlocked"].append(out["first_s"])
        times["second_unlocked"].append(out["second_s"])
        print(f"  run {len(times['second'])}/{runs} done", file=sys.stderr, flush=True)
    return times


ROWS = [
    ("first get_kernel in a process, tree never verified", "unverified"),
    ("first get_kernel in a process, tree verified by an earlier process", "verified"),
    ("second get_kernel in a process", "second"),
    ("for comparison, no lockfile, commit pin: first get_kernel in a process", "first_unlocked"),
    ("... second get_kernel in a process", "second_unlocked"),
]


def cell(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.2f} ms ({min(ms):.2f}–{max(ms):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per number (default 7)")
    parser.add_argument("--mib", type=int, default=256, help="size of the locked LFS file in MiB (default 256)")
    args = parser.parse_args()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {importlib.metadata.version('torch')}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-lockfile-") as tmp, LocalHub(Path(tmp) / "hub") as hub:
        sha = publish(hub, args.mib)
        times = measure(hub, Path(tmp), args.runs, sha)
    print(f"\n{REPO}@v1 = {sha[:12]}, locked; {VARIANT} holds a {args.mib} MiB LFS file and 3 small files; "
          f"medians (min–max) over {args.runs} fresh processes\n")
    print("| | get_kernel |\n|---|---|")
    for label, key in ROWS:
        print(f"| {label} | {cell(times[key])} |")
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
