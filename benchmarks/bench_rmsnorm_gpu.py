"""RMSNorm throughput on a GPU: the example's Triton build against eager PyTorch, torch.compile and a copy.

Memory-bound RMSNorm reads x and writes y once: bytes moved = 2 * rows * hidden * itemsize (+ the
weight). GB/s = bytes / time. A device-to-device copy of the same tensor is the practical ceiling.
Needs a CUDA (or ROCm) GPU and triton; writes a bar chart PNG with matplotlib.

It then lets kernelize(measure=True) decide, on the same shapes, between a Qwen3RMSNorm-like class's own
forward and the example's layer loaded through the hook from a loopback Hub (the torch-cuda variant this
machine's probe picks): the decisions it keeps, with both medians, are what the README reports for this GPU.

    python benchmarks/bench_rmsnorm_gpu.py [--rows 4096 16384 65536] [--hidden 4096] [--png rmsnorm.png]
                                           [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

TRITON_BUILD = Path(__file__).resolve().parent.parent / "examples/kernels/RMSNorm/build/torch-cuda/RMSNorm/_triton.py"


def load_triton_rms_norm():
    spec = importlib.util.spec_from_file_location("rmsnorm_triton_build", TRITON_BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rms_norm


def eager(x, weight, eps):
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


def timed_ms(fn, repeats: int = 50) -> float:
    """Median over CUDA-event-timed runs, after warm-up (compilation, autotuning, caches)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure(rows: int, hidden: int, dtype=torch.bfloat16, eps: float = 1e-6) -> dict:
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    weight = torch.rand(hidden, device="cuda", dtype=dtype) + 0.5
    triton_rms = load_triton_rms_norm()
    compiled = torch.compile(eager)
    reference = eager(x, weight, eps)
    for name, fn in (("triton", triton_rms), ("compiled", compiled)):
        torch.testing.assert_close(fn(x, weight, eps), reference, rtol=2e-2, atol=2e-2, msg=f"{name} differs")
    moved = 2 * x.numel() * x.element_size() + weight.numel() * weight.element_size()
    out = torch.empty_like(x)
    ms = {
        "copy": timed_ms(lambda: out.copy_(x)),
        "eager": timed_ms(lambda: eager(x, weight, eps)),
        "torch.compile": timed_ms(lambda: compiled(x, weight, eps)),
        "kernelhook Triton": timed_ms(lambda: triton_rms(x, weight, eps)),
    }
    return {"rows": rows, "hidden": hidden, "dtype": str(dtype), "ms": ms,
            "tb_per_s": {k: moved / (v / 1e3) / 1e12 for k, v in ms.items()}}


def measure_decisions(rows_list: list[int], hidden: int, dtype=torch.bfloat16) -> list[dict]:
    """kernelize(measure=True)'s decision for each shape, from a fresh cache: [{rows, bound, native_ms, kernel_ms}]."""
    import tempfile

    import kernelhook
    from kernelhook.testing import LocalHub
    from torch import nn

    @kernelhook.use_kernel_forward_from_hub("RMSNorm")
    class Qwen3LikeRMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.rand(hidden) + 0.5)
            self.variance_epsilon = 1e-6

        def forward(self, hidden_states):
            return eager(hidden_states, self.weight, self.variance_epsilon)

    examples = Path(__file__).resolve().parent.parent / "examples" / "kernels" / "RMSNorm"
    mapping = {"RMSNorm": {"cuda": "kernels-ext-npu/RMSNorm@v1:RMSNorm"}}
    found = []
    with tempfile.TemporaryDirectory(prefix="bench-rmsnorm-") as tmp, LocalHub(Path(tmp) / "hub") as hub:
        hub.create_repo("kernels-ext-npu/RMSNorm")
        hub.commit_dir("kernels-ext-npu/RMSNorm", examples, branch="v1")
        saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "KERNELHOOK_CACHE")}
        os.environ.update(HF_ENDPOINT=hub.url, KERNELHOOK_CACHE=str(Path(tmp) / "cache"))
        try:
            with kernelhook.use_kernel_mapping(mapping):
                for rows in rows_list:
                    model = nn.Sequential(Qwen3LikeRMSNorm()).to("cuda", dtype)
                    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
                    report = kernelhook.kernelize_report(
                        kernelhook.kernelize(model, device="cuda", measure=True, sample_input=x))
                    for b in report.bound:
                        found.append({"rows": rows, "bound": True, "variant": b.variant,
                                      "native_ms": b.native_ms, "kernel_ms": b.kernel_ms})
                    for k in report.kept:
                        found.append({"rows": rows, "bound": False, "reason": k.reason})
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return found


def chart(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results[0]["tb_per_s"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar([j + i * width for j in range(len(results))], [r["tb_per_s"][name] for r in results], width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(results))],
                  [f"{r['rows']}x{r['hidden']}" for r in results])
    ax.set_ylabel("TB/s (read x + write y)")
    ax.set_title(f"RMSNorm, bf16, {torch.cuda.get_device_name()}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--hidden", type=int, default=4096)  # Qwen3-8B's hidden size
    parser.add_argument("--png", type=Path, default=Path("rmsnorm_gpu.png"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 1
    results = [measure(rows, args.hidden) for rows in args.rows]
    print(f"| shape | {' | '.join(results[0]['tb_per_s'])} |")
    print("|---" * (len(results[0]["tb_per_s"]) + 1) + "|")
    for r in results:
        print(f"| {r['rows']}x{r['hidden']} | " + " | ".join(f"{v:.2f} TB/s" for v in r["tb_per_s"].values()) + " |")
    chart(results, args.png)
    decisions = measure_decisions(args.rows, args.hidden)
    print("\nkernelize(measure=True) on this GPU (bf16):")
    for d in decisions:
        what = (f"kernel bound [{d['variant']}]: native {d['native_ms']:.4g} ms, kernel {d['kernel_ms']:.4g} ms"
                if d["bound"] else f"native kept: {d['reason']}")
        print(f"  {d['rows']}x{args.hidden}: {what}")
    if args.json:
        args.json.write_text(json.dumps({"throughput": results, "measure": decisions}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
