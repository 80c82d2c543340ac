"""kernelize a model with kernelhook and with the public `kernels` package, side by side.

Both tools bind the same Hub layer (`bench/rmsnorm`, served by kernelhook.testing.LocalHub) onto a model
of 1,000 RMSNorm modules, from a warm cache, in fresh interpreters; every number is a median over them.
Each child imports torch and builds the model before its timers start. A second kind of child times
calls of one kernelized module against a class whose own forward is the layer's forward.

    .venv/bin/python benchmarks/bench_kernelize.py [--runs 7] [--json runs.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

from _common import (alternate, announce_machine, compared_tools, comparison_table, finish, hub_env,
                     loopback_hub, median_range, request_line, run_child)
from kernelhook.testing import LocalHub

REPO = "bench/rmsnorm"
MODULES = 1000

# The Hub layer. The children compile this same text for the Reference class, so (i) runs the very same code.
LAYERS_PY = '''import torch
from torch import nn


class RMSNorm(nn.Module):
    has_backward = True
    can_torch_compile = True

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)
'''

# Shared by both children; argv: repo, revision ("v1" or a sha), LAYERS_PY, then the child's own.
PRELUDE = r"""
import importlib, json, os, sys, time
import torch
from torch import nn

repo, rev, layers_py = sys.argv[1:4]
PIN = {"version": 1} if rev == "v1" else {"revision": rev}
hub_code = {"__name__": "hub_code"}
exec(layers_py, hub_code)  # compiled here, by neither tool


class RMSNorm(nn.Module):  # model code, as transformers writes it; the class attribute is what both tools read
    kernel_layer_name = "RMSNorm"

    def __init__(self, hidden_size=64, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def mark(tool):  # each tool's own decorator, as a model would carry it; kernels' adds kernel_condition
    importlib.import_module(tool).use_kernel_forward_from_hub("RMSNorm")(RMSNorm)


def register(tool):
    if tool == "kernelhook":
        import kernelhook
        kernelhook.register_kernel_mapping({"RMSNorm": {"cpu": kernelhook.LayerRepository(repo, "RMSNorm", **PIN)}})
    else:
        import kernels
        kernels.register_kernel_mapping({"RMSNorm": {"cpu": kernels.LayerRepository(
            repo, layer_name="RMSNorm", trust_remote_code=True, **PIN)}})


def kernelize_function(tool):
    # from <tool> import kernelize, Mode: what model code does at import time (kernelhook loads it lazily)
    tool_module = sys.modules[tool]
    return tool_module.kernelize, tool_module.Mode.INFERENCE


def from_hub(module, tool):  # the module's forward is a function the tool loaded from its cache: kernels sets
    fn = getattr(module.forward, "__func__", None)  # it on the instance, kernelhook in a class it makes
    cache = os.path.realpath(os.environ["KERNELHOOK_CACHE" if tool == "kernelhook" else "HF_HUB_CACHE"])
    return fn is not None and fn.__module__.endswith("layers") and \
        os.path.realpath(fn.__code__.co_filename).startswith(cache + os.sep)
"""

KERNELIZE_CHILD = PRELUDE + r"""
tool = sys.argv[4]
torch.manual_seed(0)
model = nn.Sequential(*(RMSNorm() for _ in range(int(sys.argv[5]))))
x = torch.randn(2, 64)
with torch.no_grad():
    expected = model(x)
t0 = time.perf_counter()
importlib.import_module(tool)
t1 = time.perf_counter()
mark(tool)  # between the timers: a model's classes are decorated when its code is imported, not here
t2 = time.perf_counter()
register(tool)
kernelize, inference = kernelize_function(tool)
t3 = time.perf_counter()
kernelize(model, device="cpu", mode=inference)
t4 = time.perf_counter()
out = {"ok": True, "import_s": t1 - t0, "register_s": t3 - t2, "kernelize_s": t4 - t3,
       "bound": sum(from_hub(m, tool) for m in model)}
if tool == "kernelhook":
    out["report_bound"] = len(sys.modules["kernelhook"].kernelize_report(model).bound)
with torch.no_grad():
    out["max_diff"] = (model(x) - expected).abs().max().item()
print(json.dumps(out))
"""

OVERHEAD_CHILD = PRELUDE + r"""
tools, calls, repeats = sys.argv[4].split(","), int(sys.argv[5]), int(sys.argv[6])


class Reference(nn.Module):  # (i): the layer's forward as the class's own, the floor for a bound forward
    forward = hub_code["RMSNorm"].forward

    def __init__(self, like):
        super().__init__()
        self.weight, self.variance_epsilon = like.weight, like.variance_epsilon


torch.manual_seed(0)
like = RMSNorm()
setups = {"reference": Reference(like)}
for tool in tools:
    importlib.import_module(tool), mark(tool), register(tool)
    module = RMSNorm()
    module.weight = like.weight
    kernelize, inference = kernelize_function(tool)
    kernelize(module, device="cpu", mode=inference)
    assert from_hub(module, tool), f"{tool} did not bind the Hub layer"
    setups[tool] = module


def ns_per_call(module, x, n):
    start = time.perf_counter_ns()
    for _ in range(n):
        module(x)
    return (time.perf_counter_ns() - start) / n


x = torch.randn(1, 64)
names = list(setups)
times = {name: [] for name in names}
with torch.no_grad():
    expected = setups["reference"](x)
    assert all(torch.equal(m(x), expected) for m in setups.values()), "outputs differ"
    for module in setups.values():
        ns_per_call(module, x, calls // 10)  # warm-up
    for i in range(repeats):  # rotate who goes first, so drift hits every setup alike
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(ns_per_call(setups[name], x, calls))
print(json.dumps({"ok": True, "ns": {name: min(v) for name, v in times.items()}, "all_ns": times}))
"""


def publish(hub: LocalHub) -> str:
    """One kernel repo, branch v1, with a torch-universal build holding the RMSNorm layer."""
    base = "build/torch-universal"
    metadata = {"name": "rmsnorm", "id": "rmsnorm", "version": 1, "license": "Apache-2.0",
                "python-depends": [], "backend": {"type": "cpu"}}  # the fields kernels 0.17.2 checks
    files = {f"{base}/__init__.py": "from . import layers\n", f"{base}/layers.py": LAYERS_PY,
             f"{base}/metadata.json": json.dumps(metadata)}
    hub.create_repo(REPO, repo_type="kernel")
    return hub.commit(REPO, files, repo_type="kernel", branch="v1", message="rmsnorm v1")


def child_env(root: Path, hub_url: str, hf_home: Path, tool: str | None) -> dict[str, str]:
    """The environment of one child: the Hub, HF_HOME, KERNELHOOK_CACHE, and HF_HUB_CACHE as `tool` uses it."""
    env = hub_env(hub_url, hf_home)
    # One cache per tool; kernelhook's huggingface_hub fallback gets its own, so nothing is shared. The names
    # are not identifiers: the children run in root, and a folder named kernelhook there would shadow the package.
    env["KERNELHOOK_CACHE"] = str(root / "kernelhook-cache")
    env["HF_HUB_CACHE"] = str(root / ("kernelhook-hf-cache" if tool == "kernelhook" else "kernels-cache"))
    return env


def run_all(hub: LocalHub, tools: list[str], runs: int, root: Path, hf_home: Path, sha: str, calls: int,
            repeats: int) -> dict:
    results = {tool: collections.defaultdict(list) for tool in tools}

    def kernelize_run(tool: str, number: str, rev: str) -> None:
        env = child_env(root, hub.url, hf_home, tool)
        results[tool][number].append(run_child(hub, KERNELIZE_CHILD, [REPO, rev, LAYERS_PY, tool, MODULES], env, root))

    forms = {"v1": "v1", "sha": sha}
    for tool in tools:  # untimed: the first fills the tool's cache, so every timed run below is warm
        for rev in forms.values():
            kernelize_run(tool, "warmup", rev)
    for form, rev in forms.items():
        for i in range(runs):
            for tool in alternate(tools, i):
                kernelize_run(tool, form, rev)
        print(f"  kernelize {form}: {runs * len(tools)} processes done", file=sys.stderr, flush=True)
    started = time.perf_counter()
    env = child_env(root, hub.url, hf_home, "kernels")  # both caches: KERNELHOOK_CACHE and kernels' HF_HUB_CACHE
    args = [REPO, sha, LAYERS_PY, ",".join(tools), calls, repeats]
    results["overhead"] = [run_child(hub, OVERHEAD_CHILD, args, env, root) for _ in range(runs)]
    print(f"  per-call overhead: {runs} processes done in {time.perf_counter() - started:.0f} s", file=sys.stderr,
          flush=True)
    return results


def values(results: dict, tool: str, number: str, kind: str) -> list:
    """One value per successful run; failures are listed below the table instead."""
    if number == "overhead":
        ok = [r["ns"] for r in results["overhead"] if r.get("ok")]
        if kind == "ref_ns":
            return [ns["reference"] for ns in ok]
        return [ns[tool] for ns in ok] if kind == "ns" else [100 * (ns[tool] / ns["reference"] - 1) for ns in ok]
    ok = [r for r in results[tool][number] if r.get("ok")]
    if kind == "total":  # tool import + mapping registration + kernelize: what a fresh process pays after torch
        return [r["import_s"] + r["register_s"] + r["kernelize_s"] for r in ok]
    return [len(r["requests"]) for r in ok] if kind == "requests" else [r[kind] for r in ok]


def cell(vals: list, kind: str) -> str:
    """Median (min–max): times in ms, calls in ns, overhead in %."""
    fmt = {"requests": "{:g}", "pct": "{:+.1f}%", "ns": "{:.0f}", "ref_ns": "{:.0f}"}.get(kind)
    if fmt is None:  # a time in seconds
        fmt, vals = "{:.1f}", [v * 1000 for v in vals]
    return median_range(vals, fmt, {"requests": "", "pct": "", "ns": " ns", "ref_ns": " ns"}.get(kind, " ms"))


ROWS = [  # (label, number, kind)
    ("1a. version=1: `kernelize(...)` call", "v1", "kernelize_s"),
    ("    tool import + mapping + kernelize", "v1", "total"),
    ("    HTTP requests", "v1", "requests"),
    ("1b. revision=<sha>: `kernelize(...)` call", "sha", "kernelize_s"),
    ("    tool import + mapping + kernelize", "sha", "total"),
    ("    HTTP requests", "sha", "requests"),
    ("2. per call, 1x64: (i) layer's forward as the class's own", "overhead", "ref_ns"),
    ("   kernelized module: (ii) kernelhook / (iii) kernels", "overhead", "ns"),
    ("   overhead against (i)", "overhead", "pct"),
]


def table(results: dict, tools: list[str], kernels_version: str) -> str:
    both = len(tools) == 2
    rows = []
    for label, number, kind in ROWS:
        vals = [values(results, t, number, kind) for t in tools]
        cells = [cell(v, kind) for v in vals]
        if both:  # above 1: kernelhook is faster or asks less; no ratio of percentages or of a shared reference
            ours, theirs = (statistics.median(v) if v else 0 for v in vals)
            cells.append(f"{theirs / ours:.1f}×" if ours and kind not in ("pct", "ref_ns") else "—")
        rows.append([label, *cells])
    return comparison_table(rows, tools, kernels_version)


def request_summary(results: dict, tools: list[str], sha: str) -> str:
    lines = []
    for number in ("warmup", "v1", "sha"):
        for tool in tools:
            for run in results[tool][number][-1:] if number != "warmup" else results[tool][number][:1]:
                label = f"{'cold (first warm-up)' if number == 'warmup' else number} / {tool}"
                lines.append(request_line(label, run["requests"], sha))
    return "\n".join(lines)


def problems(results: dict, tools: list[str]) -> list[str]:
    """Failed runs, models not fully bound, outputs that differ from the unkernelized model."""
    found = []
    runs = [(f"{tool} {number}", r) for tool in tools for number, rs in results[tool].items() for r in rs]
    for where, r in runs + [("overhead", r) for r in results["overhead"]]:
        if not r.get("ok"):
            found.append(f"{where} failed: {r.get('error')}")
        elif "bound" in r and (r["bound"] != MODULES or r.get("report_bound", MODULES) != MODULES
                               or r["max_diff"] > 1e-5):
            found.append(f"{where}: bound {r['bound']}, report {r.get('report_bound')}, max diff {r['max_diff']}")
    return sorted(set(found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per number (default 7)")
    parser.add_argument("--calls", type=int, default=10000, help="calls per timed batch in the per-call test")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per setup and process (best kept)")
    parser.add_argument("--json", metavar="PATH", help="write every run's raw report here")
    args = parser.parse_args()

    tools, kernels_version = compared_tools()
    machine = announce_machine(kernels_version)

    started = time.perf_counter()
    with loopback_hub("bench-kernelize-") as (hub, root, hf_home):
        sha = publish(hub)
        results = run_all(hub, tools, args.runs, root, hf_home, sha, args.calls, args.repeats)
    elapsed = time.perf_counter() - started

    print(f"\n{REPO}@v1 = {sha[:12]}; {MODULES} RMSNorm modules, device cpu, Mode.INFERENCE, warm cache; "
          f"medians (min–max) over {args.runs} fresh processes; per call: best of {args.repeats}×{args.calls}\n")
    print(table(results, tools, kernels_version))
    print("\nRequests the Hub saw (one run of each):\n" + request_summary(results, tools, sha))
    raw = {"machine": machine, "runs": args.runs, "repo": REPO, "commit": sha, "elapsed_s": elapsed,
           "results": {k: (v if k == "overhead" else dict(v)) for k, v in results.items()}}
    finish(problems(results, tools), elapsed, args.json, raw)


if __name__ == "__main__":
    main()
