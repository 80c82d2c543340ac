"""On a GPU: the example's Triton build, loaded through the hook, matches eager PyTorch, runs under
torch.compile(fullgraph=True), and kernelize(measure=True) decides on the GPU and recalls the decision; the
throughput benchmark runs. CI has no GPU: these skip cleanly there."""

import importlib
import shutil

import pytest
import torch

import kernelhook

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs a CUDA GPU and triton")


def _cuda_rmsnorm_build():
    """The example's RMSNorm build, loaded through the hook with this machine's real probe: the Triton variant."""
    injected = kernelhook.set_system(None)
    try:
        module = importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")
    finally:
        kernelhook.set_system(injected)
    assert kernelhook.origin(module).variant == "torch-cuda"
    return module


def test_triton_build_matches_eager(kenv):
    module = _cuda_rmsnorm_build()
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    weight = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
    expected = weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
    torch.testing.assert_close(module.rms_norm(x, weight, 1e-6), expected, rtol=2e-2, atol=2e-2)


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



class Norm(torch.nn.Module):
    """Qwen3RMSNorm's state and forward (weight, variance_epsilon; rounds to the input dtype)."""

    def __init__(self, hidden: int = 4096):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(hidden) + 0.5)
        self.variance_epsilon = 1e-6

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon)).to(dtype)


def test_the_triton_layer_runs_under_torch_compile_fullgraph(kenv):
    """What setting can_torch_compile = True on the example's torch-cuda build would rest on."""
    layer = _cuda_rmsnorm_build().layers.RMSNorm
    norm = Norm().to("cuda", torch.bfloat16)
    x = torch.randn(8, 512, 4096, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(lambda hidden: layer.forward(norm, hidden), fullgraph=True)
    torch.testing.assert_close(compiled(x), layer.forward(norm, x))
    torch.testing.assert_close(compiled(x), norm(x), rtol=2e-2, atol=2e-2)


def test_measure_true_decides_on_the_gpu_and_the_next_call_recalls_it(kenv, monkeypatch):
    from kernelhook.binding import measure

    _cuda_rmsnorm_build()  # the variant this machine takes, placed in the cache
    marked = kernelhook.use_kernel_forward_from_hub("RMSNorm")(type("GpuNorm", (Norm,), {}))
    mapping = {"RMSNorm": {"cuda": "kernels-ext-npu/RMSNorm@v1:RMSNorm"}}
    x = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
    timed = []
    real = measure.time_forward
    monkeypatch.setattr(measure, "time_forward", lambda *a: timed.append(1) or real(*a))
    injected = kernelhook.set_system(None)
    try:
        with kernelhook.use_kernel_mapping(mapping):
            first = kernelhook.kernelize(torch.nn.Sequential(marked(), marked()).to("cuda", torch.bfloat16),
                                         device="cuda", measure=True, sample_input=x)
            again = kernelhook.kernelize(torch.nn.Sequential(marked(), marked()).to("cuda", torch.bfloat16),
                                         device="cuda", measure=True, sample_input=x)
    finally:
        kernelhook.set_system(injected)
    assert timed == [1]  # the second call recalls the decision: nothing timed

    def decided(model):
        report = kernelhook.kernelize_report(model)
        return ([(b.module, b.native_ms, b.kernel_ms) for b in report.bound]
                + [(k.module, k.reason) for k in report.kept])

    assert decided(first) == decided(again) and len(decided(first)) == 2
    bound = kernelhook.kernelize_report(first).bound
    assert all(b.native_ms > 0 and b.kernel_ms > 0 for b in bound)
    assert all(k.reason.startswith("measured:") for k in kernelhook.kernelize_report(first).kept)
    assert measure.device_name("cuda") == f"cuda {torch.cuda.get_device_name()}"
