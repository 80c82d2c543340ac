"""kernelhook's main job, end to end, with no internet.

1. Publishes the kernel repos under examples/kernels/ (RMSNorm, a layer; rotary, a function)
   with `kernelhook publish` to a Hub-compatible server on 127.0.0.1 (real git history: the branch v1).
2. Imports `kernels_hub.kernels_ext_npu.RMSNorm` through the import hook.
3. Prints what it loaded: repo, commit, build variant, module name, cache folder,
   and checks the kernel against plain PyTorch.
4. Imports it again, pinned to that commit, in a fresh interpreter: zero requests; loads the
   rotary function kernel and checks it against transformers' own apply_rotary_pos_emb.
5. Builds a tiny Qwen3 from a config (transformers, no weights download), kernelizes it
   for the best device present (npu, then cuda, then cpu), checks the logits against the
   unkernelized model and prints what was bound where, with time per forward before and after.

Run: python examples/demo.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ID = "kernels-ext-npu/RMSNorm"
ROTARY_ID = "kernels-ext-npu/rotary"


def publish(folder: str, repo_id: str) -> str:
    """`kernelhook publish`, as a kernel author runs it: check, then upload to the branch v1."""
    import contextlib
    import io

    from kernelhook.cli import main as kernelhook_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = kernelhook_cli(["publish", str(HERE / "kernels" / folder), "--repo", repo_id, "--version", "1"])
    if code != 0:
        raise SystemExit("kernelhook publish failed")
    return out.getvalue().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="kernelhook cache folder (default: a new temporary folder)")
    args = parser.parse_args()

    from kernelhook.testing import LocalHub

    with tempfile.TemporaryDirectory(prefix="kernelhook-demo-") as work:
        cache = args.cache or os.path.join(work, "cache")
        with LocalHub(os.path.join(work, "hub")) as hub:
            os.environ.update(HF_ENDPOINT=hub.url, KERNELHOOK_CACHE=cache, HF_HOME=os.path.join(work, "hf-home"))
            commit = publish("RMSNorm", REPO_ID)
            print(f"kernelhook publish examples/kernels/RMSNorm --repo {REPO_ID} --version 1\n"
                  f"  -> local Hub at {hub.url}, branch v1 at {commit}")
            rotary_commit = publish("rotary", ROTARY_ID)
            print(f"kernelhook publish examples/kernels/rotary --repo {ROTARY_ID} --version 1\n"
                  f"  -> branch v1 at {rotary_commit}")

            hub.clear_requests()
            import kernels_hub.kernels_ext_npu.RMSNorm  # noqa: F401  (the import hook at work)
            import kernelhook

            rms = kernels_hub.kernels_ext_npu.RMSNorm
            origin = kernelhook.origin(rms)
            print(f"\nimport kernels_hub.kernels_ext_npu.RMSNorm  ({len(hub.requests)} HTTP requests, cold)")
            print(f"  repo      {origin.repo_id} ({origin.repo_type} repo)")
            print(f"  commit    {origin.commit}  ({origin.how})")
            print(f"  system    {kernelhook.current_system()}")
            print(f"  variant   {origin.variant}")
            print(f"  module    {rms.__name__}")
            print(f"  cache     {origin.package}")
            check_numerics(rms)

            hub.clear_requests()
            warm = subprocess.run(
                [sys.executable, "-c", f"import importlib; m = importlib.import_module("
                 f"'kernels_hub.kernels_ext_npu.RMSNorm@{commit}'); print(m.__name__)"],
                env=dict(os.environ), capture_output=True, text=True, timeout=120,
            )
            if warm.returncode != 0:
                print(warm.stderr, file=sys.stderr)
                return 1
            print(f"\nFresh interpreter, pinned @{commit[:12]}: {warm.stdout.strip()} "
                  f"({len(hub.requests)} HTTP requests, warm)")
            check_rotary()
            return kernelize_qwen3()


def best_device() -> str:
    import torch

    if getattr(torch, "npu", None) is not None and torch.npu.is_available():
        return "npu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def kernelize_qwen3() -> int:
    import time

    import torch
    import transformers

    import kernelhook

    device = best_device()
    if device != "npu":  # kernelhook ships the npu mapping; on other devices, the user maps RMSNorm
        kernelhook.register_kernel_mapping({"RMSNorm": {device: f"{REPO_ID}@v1:RMSNorm"}})
    config = transformers.Qwen3Config(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).to(device).eval()
    ids = torch.randint(0, config.vocab_size, (2, 64), device=device)

    def per_forward_ms() -> float:
        with torch.no_grad():
            model(ids)  # warm up
            start = time.perf_counter()
            for _ in range(10):
                logits = model(ids).logits
            if device == "cuda":
                torch.cuda.synchronize()
        per_forward_ms.logits = logits
        return (time.perf_counter() - start) * 100

    before_ms = per_forward_ms()
    before = per_forward_ms.logits
    kernelhook.kernelize(model, device=device)
    after_ms = per_forward_ms()
    error = (per_forward_ms.logits - before).abs().max().item()
    report = kernelhook.kernelize_report(model)
    print(f"\nkernelize(tiny Qwen3ForCausalLM, device={device!r}): {len(report.bound)} modules bound")
    print(f"  {'module':<42} {'kernel':<40} variant")
    for bound in report.bound:
        print(f"  {bound.module:<42} {bound.repo + '@' + bound.commit[:12]:<40} {bound.variant}")
    print(f"  time per forward: {before_ms:.2f} ms before, {after_ms:.2f} ms after; "
          f"logits max abs difference {error:.1e}")
    if not report.bound or error > 1e-3:
        print("kernelize did not bind the kernel, or changed the logits", file=sys.stderr)
        return 1
    return 0


def check_numerics(rms) -> None:
    import torch

    torch.manual_seed(0)
    x, weight = torch.randn(4, 64), torch.rand(64)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight
    got = rms.rms_norm(x, weight, epsilon=1e-6)
    error = (got - expected).abs().max().item()
    print(f"  check     rms_norm matches plain PyTorch (max abs error {error:.1e})")
    if error > 1e-5:
        raise SystemExit("the kernel's output does not match PyTorch")


def check_rotary() -> None:
    """The function kernel computes what transformers' own rotary function computes."""
    import torch
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

    import kernelhook

    rotary = kernelhook.get_kernel(ROTARY_ID, version=1)
    origin = kernelhook.origin(rotary)
    torch.manual_seed(0)
    q, k, cos, sin = torch.randn(2, 4, 16, 64), torch.randn(2, 2, 16, 64), torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    error = max((mine - theirs).abs().max().item()
                for mine, theirs in zip(rotary.apply_rotary_pos_emb(q, k, cos, sin), apply_rotary_pos_emb(q, k, cos, sin)))
    print(f"\nkernelhook.get_kernel({ROTARY_ID!r}, version=1): {origin.repo_id}@{origin.commit[:12]} [{origin.variant}]")
    print(f"  check     apply_rotary_pos_emb matches transformers' (max abs error {error:.1e})")
    if error > 1e-5:
        raise SystemExit("the rotary kernel's output does not match transformers'")


if __name__ == "__main__":
    sys.exit(main())
