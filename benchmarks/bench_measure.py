"""What kernelize(measure=True) costs: measuring (the first process) and a remembered decision (every later one).

A loopback Hub (kernelhook.testing.LocalHub) serves two layers: a kernel that skips an expensive step of its
class's own forward (bound when measured) and one that adds it (kept out). The model holds MODULES modules of
each of the two classes. Every number is a median over fresh interpreters, each importing torch, building the
model and (but for the "-first" kinds) loading the kernels before its timer starts, so only kernelize itself is
timed. The kernels are loaded by one call of the kind timed on a model of one module of each class, with a 1-row input for measure=True (its
own decisions and plan, so the timed call still measures, or recalls, its own), which also runs that kind's
code once, as any call after a process's first does; "remembered-cold" loads them with a plain kernelize, so
the code that only measure=True runs is run for the first time in the timed call:

    plain            kernelize(model)                                (binds both kernels, measures nothing)
    measuring        kernelize(model, measure=True, sample_input=x)  with no decision in the cache: times each class
    remembered       the same, with the decisions and the input plan the measuring runs left: the plan's key (the
                     device, x's dtypes and shapes, the measured modules' paths, classes, parameter dtypes and
                     shapes, and the kernels' commits: a digest, no forward) finds the plan, the plan names the
                     decisions; the model does not run on x and nothing is timed
    remembered-cold  the same as remembered, as the first measure=True call of its process
    plain-first, remembered-first
                     plain and remembered as the process's first kernelize, which loads the kernels from the
                     warm cache (commit pins, so no request): what a user's next process pays

    .venv/bin/python benchmarks/bench_measure.py [--runs 7] [--modules 20] [--json runs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from kernelhook.testing import LocalHub

MODULES = 20  # of each class (--modules)
WASTE = 40  # tanh calls of the step one side skips

NATIVE_AND_KERNELS = f'''
import torch
from torch import nn


class HeavyScale(nn.Module):  # its kernel skips the chain: faster
    def forward(self, hidden_states):
        waste = hidden_states
        for _ in range({WASTE}):
            waste = torch.tanh(waste)
        return hidden_states * self.weight + 0 * waste[..., :1]


class LightScale(nn.Module):  # its kernel adds the chain: slower
    def forward(self, hidden_states):
        return hidden_states * self.weight
'''

FAST_KERNEL = "from torch import nn\n\n\nclass HeavyScale(nn.Module):\n    def forward(self, hidden_states):\n" \
              "        return hidden_states * self.weight\n"
SLOW_KERNEL = f"""import torch
from torch import nn


class LightScale(nn.Module):
    def forward(self, hidden_states):
        waste = hidden_states
        for _ in range({WASTE}):
            waste = torch.tanh(waste)
        return hidden_states * self.weight + 0 * waste[..., :1]
"""

CHILD = r'''
import json, sys, time
import torch
from torch import nn
import kernelhook
from kernelhook import kernelize, kernelize_report, use_kernel_forward_from_hub, use_kernel_mapping
from kernelhook.binding import measure

code = {"__name__": "model_code"}
exec(sys.argv[1], code)
Heavy = use_kernel_forward_from_hub("HeavyScale")(code["HeavyScale"])
Light = use_kernel_forward_from_hub("LightScale")(code["LightScale"])
for cls in (Heavy, Light):
    cls.__init__ = lambda self, size=64: (nn.Module.__init__(self), setattr(self, "weight", nn.Parameter(torch.ones(size))))[0]
modules = int(sys.argv[3])
torch.manual_seed(0)
model = nn.Sequential(*[Heavy() if i % 2 == 0 else Light() for i in range(2 * modules)])
x = torch.randn(32, 64)
first = sys.argv[2].endswith("-first")  # the process's first kernelize, which loads the kernels (commit pins)
pins = json.loads(sys.argv[4]) if first else {}
fast, slow = pins.get("bench/fast-scale", "v1"), pins.get("bench/slow-scale", "v1")
mapping = {"HeavyScale": {"cpu": f"bench/fast-scale@{fast}:HeavyScale"},
           "LightScale": {"cpu": f"bench/slow-scale@{slow}:LightScale"}}
with use_kernel_mapping(mapping):
    small = nn.Sequential(Heavy(), Light())  # loads both kernels and warms the path timed: not what is timed
    if sys.argv[2] == "plain" or sys.argv[2].endswith("-cold"):
        kernelize(small, device="cpu")
    elif not first:  # 1 row: its own decisions and plan, so the timed call below still measures, or recalls, its own
        kernelize(small, device="cpu", measure=True, sample_input=x[:1])
    timed, real = [], measure.time_forward
    measure.time_forward = lambda *a: timed.append(1) or real(*a)
    forwards = []
    model.register_forward_pre_hook(lambda *a: forwards.append(1))
    start = time.perf_counter()
    if sys.argv[2].startswith("plain"):
        kernelize(model, device="cpu")
    else:
        kernelize(model, device="cpu", measure=True, sample_input=x)
    elapsed = time.perf_counter() - start
report = kernelize_report(model)
fresh = nn.Sequential(*[Heavy() if i % 2 == 0 else Light() for i in range(2 * modules)])
start = time.perf_counter()
with torch.no_grad():
    fresh(x)  # what measure=True runs once to see the inputs, unless an input plan is remembered
forward = time.perf_counter() - start
print(json.dumps({"ms": 1000 * elapsed, "forward_ms": 1000 * forward, "timed": len(timed), "forwards": len(forwards), "bound": len(report.bound), "kept": len(report.kept)}))
'''


def child(kind: str, env: dict, modules: int = MODULES, pins: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, NATIVE_AND_KERNELS, kind, str(modules), json.dumps(pins or {})],
                          env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"a {kind} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--modules", type=int, default=MODULES, help="modules of each class (default %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write every run here")
    args = parser.parse_args()
    modules = args.modules
    with tempfile.TemporaryDirectory(prefix="bench-measure-") as tmp, LocalHub(Path(tmp) / "hub") as hub:
        pins = {}
        for repo_id, layers in (("bench/fast-scale", FAST_KERNEL), ("bench/slow-scale", SLOW_KERNEL)):
            hub.create_repo(repo_id)
            pins[repo_id] = hub.commit(repo_id, {"build/torch-universal/__init__.py": "from . import layers\n",
                                                 "build/torch-universal/layers.py": layers}, branch="v1")
        cache = Path(tmp) / "cache"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "KERNELHOOK_"))}
        env.update(HF_ENDPOINT=hub.url, KERNELHOOK_CACHE=str(cache), HF_HOME=str(Path(tmp) / "hf-home"),
                   KERNELHOOK_SYSTEM="torch213-cxx11-cpu-x86_64-linux")
        child("plain", env)  # fills the kernel cache: every timed run below loads warm
        runs = {"plain": [], "measuring": [], "remembered": [], "remembered-cold": [], "plain-first": [],
                "remembered-first": []}
        for _ in range(args.runs):  # interleaved, so load elsewhere hits every kind alike
            runs["plain"].append(child("plain", env, modules))
            shutil.rmtree(cache / "v1" / "decisions", ignore_errors=True)  # this benchmark's own cache: none kept
            runs["measuring"].append(child("measuring", env, modules))
            runs["remembered"].append(child("remembered", env, modules))
            runs["remembered-cold"].append(child("remembered-cold", env, modules))
            runs["plain-first"].append(child("plain-first", env, modules, pins))
            runs["remembered-first"].append(child("remembered-first", env, modules, pins))
    remembered_runs = runs["remembered"] + runs["remembered-cold"] + runs["remembered-first"]
    assert all(r["timed"] == 2 for r in runs["measuring"]) and all(r["timed"] == 0 for r in remembered_runs)
    assert all(r["forwards"] == 1 for r in runs["measuring"]) and all(r["forwards"] == 0 for r in remembered_runs)
    print(f"kernelize of {2 * modules} modules of 2 classes, medians over {args.runs} fresh processes each\n")
    print("| run | kernelize ms (median, min-max) | one native forward on x, ms | classes timed | bound | kept |\n"
          "|---|---|---|---|---|---|")
    for kind, rows in runs.items():
        ms = [r["ms"] for r in rows]
        forward = statistics.median(r["forward_ms"] for r in rows)
        print(f"| {kind} | {statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f}) | {forward:.1f} | "
              f"{rows[0]['timed']} | {rows[0]['bound']} | {rows[0]['kept']} |")
    measuring = statistics.median(r["ms"] for r in runs["measuring"])
    remembered = statistics.median(r["ms"] for r in runs["remembered"])
    print(f"\nmeasuring costs {(measuring - remembered) / 2:.1f} ms per class over a remembered decision")
    for plain_kind, remembered_kind in (("plain", "remembered"), ("plain-first", "remembered-first")):
        plain = sorted(r["ms"] for r in runs[plain_kind])
        recalled = statistics.median(r["ms"] for r in runs[remembered_kind])
        low, _, high = statistics.quantiles(plain, n=4)  # the middle half of plain's runs: its noise, outliers aside
        where = "inside" if low <= recalled <= high else ("above" if recalled > high else "below")
        print(f"{remembered_kind} costs {recalled - statistics.median(plain):+.2f} ms over {plain_kind}; the middle "
              f"half of {plain_kind}'s runs spans {low:.2f}-{high:.2f} ms and the {remembered_kind} median is {where} it")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
