"""kernelhook's main job, end to end, with no internet.

1. Publishes the kernel repos under examples/kernels/ (RMSNorm, a layer; rotary, a function;
   attention, flash-attn's conventions) with `kernelhook publish` to a Hub-compatible server on
   127.0.0.1 (real git history: the branch v1).
2. Imports `kernels_hub.kernels_ext_npu.RMSNorm` through the import hook.
3. Prints what it loaded: repo, commit, build variant, module name, cache folder,
   and checks the kernel against plain PyTorch.
4. Imports it again, pinned to that commit, in a fresh interpreter: zero requests; loads the
   rotary function kernel and checks it against transformers' own apply_rotary_pos_emb.
5. Builds a tiny Qwen3 from a config (transformers, no weights download), saves it, and loads it
   again the way transformers users ask for kernels: `from_pretrained(..., use_kernels=True,
   attn_implementation=<the attention kernel>)` after `kernelhook.transformers.enable()`, for the
   best device present (npu, then cuda, then cpu); checks the logits against the plain model and
   prints what was bound where (norms, the rotary function, attention), with time per forward.

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
ATTENTION_ID = "kernels-ext-npu/attention"


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
            for folder, repo_id in (("rotary", ROTARY_ID), ("attention", ATTENTION_ID)):
                print(f"kernelhook publish examples/kernels/{folder} --repo {repo_id} --version 1\n"
                      f"  -> branch v1 at {publish(folder, repo_id)}")

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
            return use_kernels_on_qwen3(os.path.join(work, "qwen3"))


def best_device() -> str:
    import torch

    if getattr(torch, "npu", None) is not None and torch.npu.is_available():
        return "npu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_kernels_on_qwen3(folder: str) -> int:
    import time

    import torch
    import transformers

    import kernelhook
    import kernelhook.transformers

    transformers.utils.logging.disable_progress_bar()  # saving and loading a tiny model needs no bars
    device = best_device()
    mapping = {"rotary_pos_emb": {device: kernelhook.FuncRepository(ROTARY_ID, func_name="apply_rotary_pos_emb",
                                                                     version=1)}}
    if device != "npu":  # kernelhook ships the npu mapping for RMSNorm; on other devices, the user maps it
        mapping["RMSNorm"] = {device: f"{REPO_ID}@v1:RMSNorm"}
    kernelhook.register_kernel_mapping(mapping)
    config = transformers.Qwen3Config(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    torch.manual_seed(0)
    transformers.Qwen3ForCausalLM(config).save_pretrained(folder)
    plain = transformers.Qwen3ForCausalLM.from_pretrained(folder, attn_implementation="sdpa").to(device).eval()

    kernelhook.transformers.enable()  # use_kernels=True now kernelizes through kernelhook
    attention = kernelhook.transformers.register_attention(ATTENTION_ID)
    model = transformers.Qwen3ForCausalLM.from_pretrained(folder, use_kernels=True, attn_implementation=attention)
    model = model.to(device).eval()  # eval() kernelizes again, for INFERENCE, on the device it now sits on
    ids = torch.randint(0, config.vocab_size, (2, 64), device=device)

    def per_forward_ms(which) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            which(ids)  # warm up
            start = time.perf_counter()
            for _ in range(10):
                logits = which(ids).logits
            if device == "cuda":
                torch.cuda.synchronize()
        return (time.perf_counter() - start) * 100, logits

    before_ms, before = per_forward_ms(plain)
    after_ms, after = per_forward_ms(model)
    error = (after - before).abs().max().item()
    report = kernelhook.kernelize_report(model)
    print(f"\nkernelhook.transformers.enable(); from_pretrained(tiny Qwen3, use_kernels=True, "
          f"attn_implementation={attention!r})")
    print(f"  kernelize for {report.device}, {report.mode}: {len(report.bound)} modules bound")
    print(f"  {'module':<42} {'kernel':<40} variant")
    for bound in report.bound:
        print(f"  {bound.module:<42} {bound.repo + '@' + bound.commit[:12]:<40} {bound.variant}")
    print(f"  {'attention (every layer)':<42} {ATTENTION_ID:<40} "
          f"{kernelhook.origin(kernelhook.get_kernel(ATTENTION_ID, version=1)).variant}")
    print(f"  time per forward: {before_ms:.2f} ms plain (sdpa), {after_ms:.2f} ms with kernels; "
          f"logits max abs difference {error:.1e}")
    kernelhook.transformers.disable()
    if not report.bound or error > 1e-4:
        print("kernelize did not bind the kernels, or changed the logits", file=sys.stderr)
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
