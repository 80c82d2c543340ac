"""The Ascend builds of examples/kernels, run end to end on a simulated NPU.

No machine here has an NPU, so these tests put the torch_npu simulation (tests/npu_standin, a
stand-in computing torch_npu's documented operators on CPU tensors) first on the path of a fresh
interpreter, where it renames torch's privateuse1 backend to npu as torch_npu does. There,
kernelhook's probe sees an Ascend machine, the strict CANN builds are chosen, imported and bound by
kernelize onto a tiny Qwen3 (RMSNorm) and onto a Qwen3-style attention of this file's own (rotary,
a function kernel), and their outputs are compared with the universal builds'.

What this proves: the builds' Python is right (imports, names, signatures, argument order and
keywords, what they do with torch_npu's results), kernelhook chooses and binds them, and by the
documentation's formulas they compute what the universal builds compute. What it cannot prove: that
the device kernels compute what their documentation says, at what precision, or how fast.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kernelhook.platform import Compute, probe_system

from .conftest import CPU, EXAMPLES, child_env
from .repos import ROTARY_EXAMPLE, SEED

pytest.importorskip("transformers")

STANDIN = Path(__file__).resolve().parent / "npu_standin"
ASCEND = "torch213-cxx11-cann90-x86_64-linux"  # the strict variant the example builds are published for


def run_simulated(code: str, env: dict, *, system: str | None = ASCEND, cann_home: Path | None = None,
                  runtime_version: str | None = None) -> dict:
    """Run code in a fresh interpreter whose `torch_npu` is the simulation; returns the JSON it prints last."""
    full_env = child_env(env, system)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STANDIN), full_env.get("PYTHONPATH")) if p)
    for variable, value in (("ASCEND_HOME_PATH", cann_home), ("TORCH_NPU_SIMULATION_CANN_VERSION", runtime_version)):
        full_env.pop(variable, None)
        if value is not None:
            full_env[variable] = str(value)
    prelude = "import torch, torch_npu\nassert torch_npu.SIMULATION, torch_npu.__file__\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=full_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def install_info(root: Path, version: str) -> Path:
    """An Ascend toolkit folder as its installer leaves it, as far as torch_npu reads it."""
    folder = root / "ascend-toolkit" / "latest" / f"{platform.machine()}-linux"
    folder.mkdir(parents=True)
    (folder / "ascend_toolkit_install.info").write_text(
        f"package_name=Ascend-cann-toolkit\nversion={version}\ninnerversion=V100R001C25B001\narch=x86_64\nos=linux\n")
    return root


PROBE = """
import json
from kernelhook.platform import choose_variant, probe_system
system = probe_system()
variants = ["torch-universal", "torch213-cxx11-cann90-x86_64-linux", "torch213-cxx11-cann90-aarch64-linux",
            "torch27-cxx11-cann82-aarch64-linux", "torch-cuda"]
print(json.dumps({"backend": torch._C._get_privateuse1_backend_name(), "cann": torch.version.cann,
                  "npu_available": torch.npu.is_available(), "compute": [system.compute.backend, system.compute.version],
                  "strict": system.strict_variant, "chosen": choose_variant(variants, system)}))
"""


@pytest.mark.parametrize("info, runtime, cann, compute", [
    ("9.0.0", None, "9.0.0", [9, 0]),  # torch.version.cann, from the toolkit's install-info file
    (None, "9.0.RC1", "not known", [9, 0]),  # no install-info: the runtime's get_cann_version() answers
    ("8.2.RC1", "9.0.0", "8.2.RC1", [8, 2]),  # both: the install-info file's, read first
    (None, None, "not known", None),  # neither: CANN of unknown version
])
def test_the_probe_sees_the_simulated_npu_and_its_cann_version(tmp_path, info, runtime, cann, compute):
    home = install_info(tmp_path / "Ascend", info) if info else None
    seen = run_simulated(PROBE, {"KERNELHOOK_CACHE": str(tmp_path / "cache")}, system=None, cann_home=home, runtime_version=runtime)
    assert seen["backend"] == "npu" and seen["cann"] == cann and seen["npu_available"] is False
    assert seen["compute"] == ["cann", compute]
    here = probe_system()  # this interpreter's torch, ABI and machine, without the simulation
    expected = here._replace(compute=Compute("cann", tuple(compute) if compute else None))
    assert seen["strict"] == expected.strict_variant
    if compute == [9, 0] and expected.strict_variant == ASCEND:
        assert seen["chosen"] == ASCEND  # the probe alone picks the example's strict build
    elif compute is None:
        assert seen["chosen"] == "torch-universal"  # no CANN version: no strict CANN build can be trusted


QWEN3 = """
import json
import transformers
from kernelhook import get_kernel, kernelize, kernelize_report
from kernelhook.binding.layers import forget_loaded_layers
from kernelhook.platform import SystemInfo, set_system


def tiny_qwen3(dtype):
    config = transformers.Qwen3Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.Qwen3ForCausalLM(config).eval().to(dtype)


def logits(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randint(0, 128, (2, 12))).logits


def kernelized(dtype):
    model = tiny_qwen3(dtype)
    kernelize(model, device="npu")  # the shipped mapping: RMSNorm on npu from kernels-ext-npu/RMSNorm, v1
    report = kernelize_report(model)
    return logits(model), sorted({{(b.repo, b.variant, b.module_class) for b in report.bound}}), len(report.bound)


def rms_norm_of_each_build(x, weight):
    return get_kernel("{seed}", version=1).rms_norm(x, weight, epsilon=1e-6)


results = {{"own": {{}}}}
for dtype in (torch.float32, torch.bfloat16):
    results["own"][str(dtype)] = logits(tiny_qwen3(dtype))
calls = torch_npu.CALLS["npu_rms_norm"]
results["npu"] = {{str(dtype): kernelized(dtype) for dtype in (torch.float32, torch.bfloat16)}}
calls = torch_npu.CALLS["npu_rms_norm"] - calls
torch.manual_seed(2)
x, weight = torch.randn(4, 7, 64).bfloat16(), (torch.rand(64) + 0.5).bfloat16()
results["npu_rms_norm"] = rms_norm_of_each_build(x, weight)

set_system(SystemInfo.parse("{cpu}"))  # the same process as a CPU box: the universal build
forget_loaded_layers()
results["universal"] = {{str(dtype): kernelized(dtype) for dtype in (torch.float32, torch.bfloat16)}}
results["universal_rms_norm"] = rms_norm_of_each_build(x, weight)
results["calls"] = calls
torch.save(results, "{out}")
print(json.dumps({{"saved": True}}))
"""


@pytest.fixture(scope="module")
def qwen3_results(layer_hub, tmp_path_factory):
    """One fresh interpreter kernelizes tiny Qwen3s with the strict Ascend build, then (as a CPU box) with
    the universal one; the tests below read what it saved."""
    folder = tmp_path_factory.mktemp("qwen3-npu")
    env = {"HF_ENDPOINT": layer_hub.url, "KERNELHOOK_CACHE": str(folder / "cache")}
    run_simulated(QWEN3.format(seed=SEED, cpu=CPU, out=folder / "out.pt"), env)
    return torch.load(folder / "out.pt")


@pytest.mark.parametrize("dtype", ["torch.float32", "torch.bfloat16"])
def test_qwen3_norms_run_the_strict_ascend_build(qwen3_results, dtype):
    _, bound, count = qwen3_results["npu"][dtype]
    assert bound == [(SEED, ASCEND, "Qwen3RMSNorm")] and count == 9  # 2 x (input, post, q, k) + the final norm
    assert qwen3_results["universal"][dtype][1] == [(SEED, "torch-universal", "Qwen3RMSNorm")]


def test_every_norm_call_went_through_the_simulated_npu_rms_norm(qwen3_results):
    # Per forward: 2 layers x (input, post-attention, q, k) + the final norm, for each of the two dtypes.
    assert qwen3_results["calls"] == 9 * 2


def test_in_float32_the_ascend_build_gives_the_universal_builds_logits_exactly(qwen3_results):
    npu, universal = qwen3_results["npu"]["torch.float32"][0], qwen3_results["universal"]["torch.float32"][0]
    assert torch.equal(npu, universal)  # the documented formula, in the universal build's float32 order
    torch.testing.assert_close(npu, qwen3_results["own"]["torch.float32"])  # and the model's own RMSNorm's


def test_in_bfloat16_the_ascend_build_rounds_once_where_the_universal_build_rounds_twice(qwen3_results):
    # The fused operator computes x * rstd * gamma in float32 and rounds once; the universal build (like
    # transformers' RMSNorm) rounds x * rstd to bfloat16 before the weight: at most about one bfloat16
    # step apart (relative 2**-8 per rounding), and never further in the logits than bfloat16's tolerance.
    npu, universal = qwen3_results["npu_rms_norm"], qwen3_results["universal_rms_norm"]
    assert npu.dtype == universal.dtype == torch.bfloat16 and not torch.equal(npu, universal)
    torch.testing.assert_close(npu.float(), universal.float(), rtol=2 ** -7, atol=0)
    torch.testing.assert_close(qwen3_results["npu"]["torch.bfloat16"][0], qwen3_results["universal"]["torch.bfloat16"][0])


ROTARY = """
import json
import torch.nn.functional as F
from torch import nn
import transformers
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm, Qwen3RotaryEmbedding, rotate_half
from kernelhook import FuncRepository, kernelize, kernelize_report, use_kernel_func_from_hub, use_kernel_mapping
from kernelhook import use_kernelized_func
from kernelhook.binding.layers import forget_loaded_layers
from kernelhook.platform import SystemInfo, set_system


@use_kernel_func_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@use_kernelized_func(apply_rotary_pos_emb)
class Attention(nn.Module):
    \"\"\"Qwen3's attention, as transformers writes it, with its rotary function marked for kernelize.\"\"\"

    def __init__(self, config):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)
        self.q_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.rotary = Qwen3RotaryEmbedding(config)

    def forward(self, hidden, position_ids):
        batch, seq, _ = hidden.shape
        q = self.q_norm(self.q_proj(hidden).view(batch, seq, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(hidden).view(batch, seq, -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary(v, position_ids)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


config = transformers.Qwen3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=64)
torch.manual_seed(0)
model = Attention(config).eval()
torch.manual_seed(1)
hidden, positions = torch.randn(2, 10, 64), torch.arange(3, 13).expand(2, 10)


def run():
    with use_kernel_mapping({{"rotary_pos_emb": {{"npu": FuncRepository("{rotary}", func_name="apply_rotary_pos_emb",
                                                                         version=1)}}}}):
        kernelize(model, device="npu")
    with torch.no_grad():
        out = model(hidden, positions)
    return out, sorted((b.module, b.repo, b.variant) for b in kernelize_report(model).bound)


with torch.no_grad():
    own = model(hidden, positions)
before = dict(torch_npu.CALLS)
npu, npu_bound = run()
calls = {{name: torch_npu.CALLS[name] - before.get(name, 0) for name in torch_npu.CALLS}}
set_system(SystemInfo.parse("{cpu}"))
forget_loaded_layers()
universal, universal_bound = run()
torch.save({{"own": own, "npu": npu, "universal": universal}}, "{out}")
print(json.dumps({{"npu_bound": npu_bound, "universal_bound": universal_bound, "calls": calls}}))
"""


def test_the_strict_ascend_rotary_build_runs_in_a_qwen3_attention_and_matches_the_universal_one(layer_hub, tmp_path):
    env = {"HF_ENDPOINT": layer_hub.url, "KERNELHOOK_CACHE": str(tmp_path / "cache")}
    seen = run_simulated(ROTARY.format(rotary=ROTARY_EXAMPLE, cpu=CPU, out=tmp_path / "out.pt"), env)
    assert seen["npu_bound"] == [
        ["k_norm", SEED, ASCEND], ["q_norm", SEED, ASCEND], ["rotary_pos_emb", ROTARY_EXAMPLE, ASCEND]]
    assert [row[2] for row in seen["universal_bound"]] == ["torch-universal"] * 3
    assert seen["calls"] == {"npu_rms_norm": 2, "npu_rotary_mul": 2}  # one forward: q and k, each
    outputs = torch.load(tmp_path / "out.pt")
    assert torch.equal(outputs["npu"], outputs["universal"])  # float32: the same formula, the same order
    torch.testing.assert_close(outputs["npu"], outputs["own"])


CHECK = """
import json
from kernelhook.cli.check import check_repo
seen = {{}}
for name in ("RMSNorm", "rotary"):
    problems, results = check_repo("{examples}/kernels/" + name)
    seen[name] = {{"problems": [str(p) for p in problems], "how": {{r.variant: r.how for r in results}}}}
print(json.dumps(seen))
"""


def test_kernelhook_check_imports_every_ascend_build_under_the_simulation(tmp_path):
    """Without torch_npu, check reads the Ascend builds from source; with the simulation it executes them
    and validates their layers and functions as objects."""
    seen = run_simulated(CHECK.format(examples=EXAMPLES), {"KERNELHOOK_CACHE": str(tmp_path / "cache")}, system=None)
    for name in ("RMSNorm", "rotary"):
        ascend = {variant: how for variant, how in seen[name]["how"].items() if "-cann" in variant}
        assert seen[name]["problems"] == [] and len(ascend) == 3
        assert set(ascend.values()) == {"imported"}, ascend
