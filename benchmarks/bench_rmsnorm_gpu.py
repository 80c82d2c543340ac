"""RMSNorm throughput on a GPU: the example's Triton build against eager PyTorch, torch.compile and a copy.

Memory-bound RMSNorm reads x and writes y once: bytes moved = 2 * rows * hidden * itemsize (+ the
weight). GB/s = bytes / time. A device-to-device copy of the same tensor is the practical ceiling.
Needs a CUDA (or ROCm) GPU and triton; writes a bar chart PNG with matplotlib.

    python benchmarks/bench_rmsnorm_gpu.py [--rows 4096 16384 65536] [--hidden 4096] [--png rmsnorm.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
