"""Scaffolding shared by the benchmarks in this folder; it measures nothing itself.

The side-by-side benchmarks (bench_loader.py, bench_kernelize.py) serve a kernel repo from a loopback Hub
(kernelhook.testing.LocalHub), run each measurement in a fresh Python process whose environment points both
tools at that Hub, read the process's JSON report, and print medians over those processes as markdown tables.
bench_ranks.py uses the environment and table pieces. The scripts import this module as `_common`: Python puts
a script's own folder first on sys.path.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from kernelhook.testing import LocalHub

CHILD_TIMEOUT_S = 120
# Variables that would change either tool's behaviour if inherited from the caller's shell. PYTHONDONTWRITEBYTECODE
# too: with it, every child recompiles kernelhook's modules from source (a checkout has no .pyc until one is
# written), while kernels, installed by pip, comes with its .pyc: not what a user's process pays.
STRIPPED_ENV = ("HF_", "HUGGINGFACE_", "KERNELS_", "KERNELHOOK_", "LOCAL_KERNELS", "TRANSFORMERS_OFFLINE",
                "PYTHONDONTWRITEBYTECODE")


def compared_tools() -> tuple[list[str], str]:
    """The tools to run, kernelhook first, and the installed `kernels` version ("" and kernelhook alone without it)."""
    if importlib.util.find_spec("kernels") is None:
        return ["kernelhook"], ""
    return ["kernelhook", "kernels"], importlib.metadata.version("kernels")


def announce_machine(kernels_version: str) -> dict:
    """Print one line about this machine and the versions compared; return the same facts for the JSON report."""
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "torch": importlib.metadata.version("torch"), "kernels": kernels_version or None}
    kernels = f"kernels {kernels_version}" if kernels_version else "kernels not installed"
    print(f"Machine: {machine['platform']}, {machine['cpus']} CPUs, Python {machine['python']}, "
          f"torch {machine['torch']}, {kernels}", flush=True)  # before the children's progress lines on stderr
    return machine


def make_hf_home(root: Path) -> Path:
    """A shared HF_HOME with the agent-harness answer cached, so huggingface_hub asks the Hub nothing of its own."""
    home = root / "hf_home"
    home.mkdir(exist_ok=True)
    (home / ".agent_harnesses.json").write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
    return home


@contextlib.contextmanager
def loopback_hub(prefix: str) -> Iterator[tuple[LocalHub, Path, Path]]:
    """A temporary folder (root) holding a running LocalHub and a shared HF_HOME; yields (hub, root, hf_home)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, LocalHub(Path(tmp) / "hub") as hub:
        root = Path(tmp)
        yield hub, root, make_hf_home(root)


def hub_env(hub_url: str, hf_home: Path, stripped: tuple[str, ...] = STRIPPED_ENV) -> dict[str, str]:
    """This process's environment without the variables starting with `stripped`, pointed at the Hub and hf_home.

    The caller adds each tool's cache.
    """
    # HF_HUB_DISABLE_TELEMETRY stays unset: with it, kernels 0.17.2 sends an illegal User-Agent and fails.
    # KERNELHOOK_SYSTEM stays unset: kernelhook probes this machine, as it would for a user.
    env = {k: v for k, v in os.environ.items() if not k.startswith(stripped)}
    env.update(HF_ENDPOINT=hub_url, HF_HOME=str(hf_home))
    return env


def run_child(hub: LocalHub, script: str, args: list, env: dict[str, str], cwd: Path) -> dict:
    """Run `python -c script *args` in a fresh process; its JSON report plus every request the Hub saw while it ran.

    The report is the last line the child prints; a child that fails or times out gives {"ok": False, "error": ...}.
    """
    hub.clear_requests()
    try:
        proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        lines = proc.stdout.strip().splitlines()
        out = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
            "ok": False, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    except subprocess.TimeoutExpired:
        out = {"ok": False, "error": f"timed out after {CHILD_TIMEOUT_S}s"}
    # The Hub logs a request before answering it, so after the child exits the log is complete.
    out["requests"] = [f"{r.method} {r.path} {r.status}" for r in hub.requests]
    return out


def alternate(tools: list[str], i: int) -> list[str]:
    """The tools in the order run i takes them: reversed on odd runs, so drift hits both alike."""
    return tools if i % 2 == 0 else tools[::-1]


def median_range(values: list, fmt: str, unit: str = "", range_when_equal: bool = False) -> str:
    """`median unit (min–max)`, each number formatted with fmt; "—" for no values.

    The range is left out when all values are equal, unless range_when_equal.
    """
    if not values:
        return "—"
    spread = "" if min(values) == max(values) and not range_when_equal else \
        f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
    return fmt.format(statistics.median(values)) + unit + spread


def md_row(cells: list) -> str:
    """One markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def comparison_table(rows: list[list], tools: list[str], kernels_version: str) -> str:
    """A markdown table of rows (label, one cell per tool, then the ratio cell when both tools ran)."""
    header = ["", "kernelhook", *([f"kernels {kernels_version}", "kernels ÷ kernelhook"] if len(tools) == 2 else [])]
    return "\n".join([md_row(header), "|" + "---|" * len(header), *map(md_row, rows)])


def request_line(label: str, requests: list[str], sha: str) -> str:
    """`- label: 2× GET /path 200, ...`: a run's requests, counted, in order of first appearance; sha shortened."""
    seen = collections.Counter(q.replace(sha, "<sha>") for q in requests)
    return f"- {label}: " + (", ".join(f"{n}× {q}" if n > 1 else q for q, n in seen.items()) or "none")


def finish(problems: list[str], elapsed: float, json_path: str | None, raw: dict) -> None:
    """Print each problem, then the total time; write raw to json_path as JSON when a path is given."""
    for problem in problems:
        print(f"\n{problem}")
    print(f"\nTotal time: {elapsed:.0f} s")
    if json_path:
        Path(json_path).write_text(json.dumps(raw, indent=1))
