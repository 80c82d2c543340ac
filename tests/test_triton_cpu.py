"""The example RMSNorm's portable builds against transformers' Qwen3RMSNorm: the torch-universal build on CPU,
and the torch-cuda build's Triton kernel on CPU under Triton's interpreter.

No CI machine has a GPU. With TRITON_INTERPRET=1 Triton runs kernels on CPU tensors through numpy; the
variable must be set before the kernel is decorated, and another test module may have imported triton
already, so the Triton kernel runs in one fresh interpreter for this module. That interpreter loads the
build through kernelhook from the loopback Hub on an injected CUDA system (so the torch-cuda variant is
chosen and its files come from the cache), runs every case through the build's `rms_norm` and through a
Qwen3RMSNorm kernelized for "cuda", and hands the outputs back in a file. The references are computed here.
Without triton (it installs only on Linux x86_64/aarch64) the Triton tests skip; the universal ones run.
"""

import hashlib
import importlib.util
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

import kernelhook

from .conftest import EXAMPLES, run_python
from .repos import SEED

CUDA_SYSTEM = "torch213-cxx11-cu126-x86_64-linux"  # no strict build fits it: the no-arch torch-cuda build does
TRITON_SOURCE = EXAMPLES / "kernels" / "RMSNorm" / "build" / "torch-cuda" / "RMSNorm" / "_triton.py"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (the test extra installs it on Linux x86_64/aarch64)")


class Case(NamedTuple):
    x_dtype: torch.dtype
    w_dtype: torch.dtype
    hidden: int
    layout: str  # contiguous | sliced (rows further apart than hidden) | strided (x's last dim and the weight)
    weights: str  # random | pow2 (powers of two: multiplying by them is exact, so y / w shows the rounding)

    @property
    def name(self) -> str:
        return "-".join([str(self.x_dtype)[6:], "w" + str(self.w_dtype)[6:], str(self.hidden), self.layout,
                         self.weights])


# hidden sizes: not powers of two; 1000 runs 4 rows per program (6 rows: the last program is half empty),
# 3000 one row per program, 7 a row shorter than any block; a (2, 3) leading batch shape throughout.
CASES = [Case(x, w, hidden, layout, "random")
         for x in (torch.float32, torch.bfloat16, torch.float16) for w in (torch.float32, torch.bfloat16)
         for hidden in (7, 1000, 3000) for layout in ("contiguous", "sliced", "strided")]
CASES += [Case(x, w, 1000, "contiguous", "pow2") for x in (torch.bfloat16, torch.float16)
          for w in (torch.float32, torch.bfloat16)]
EPS = 1e-6


def make_inputs(index: int, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """x of shape (2, 3, hidden) in the case's layout, and the weight; the same for the same index."""
    generator = torch.Generator().manual_seed(index)
    shape = {"sliced": (2, 3, case.hidden + 5), "strided": (2, case.hidden, 3)}.get(case.layout, (2, 3, case.hidden))
    x = (3 * torch.randn(shape, generator=generator)).to(case.x_dtype)  # the views last: arithmetic makes copies
    if case.weights == "pow2":
        weight = 2.0 ** torch.randint(-2, 3, (case.hidden,), generator=generator).float()
    else:
        weight = 2 * torch.rand(2 * case.hidden if case.layout == "strided" else case.hidden, generator=generator)
    weight = weight.to(case.w_dtype)
    if case.layout == "sliced":
        x = x[..., :case.hidden]
    elif case.layout == "strided":
        x, weight = x.transpose(-1, -2), weight[::2]
    return x, weight


INPUTS = {case.name: make_inputs(index, case) for index, case in enumerate(CASES)}


def qwen3(case: Case) -> torch.Tensor:
    """What transformers' Qwen3RMSNorm computes for the case."""
    x, weight = INPUTS[case.name]
    norm = Qwen3RMSNorm(case.hidden, eps=EPS)
    with torch.no_grad():
        norm.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
        return norm(x)


def tolerance(case: Case) -> dict:
    """rtol and atol of the Triton kernel, run by Triton 3.9's interpreter, against Qwen3RMSNorm.

    Every case allows 8 fp32 ulps: tl.sum adds the squares in another order than torch's mean, and the
    interpreter's rsqrt is numpy's 1 / sqrt, each off by an ulp or two (2 seen). On top of that:
    - fp16 x: one fp16 ulp. The interpreter rounds fp32 to fp16 to nearest even, as GPUs and torch do,
      but a normalised value within a few fp32 ulps of a rounding boundary can round the other way.
      Below 2**-14 (fp16 subnormals) that ulp is a fixed 2**-24: atol is that times the largest weight, 2.
    - bf16 x: the interpreter truncates fp32 to bf16 (its cast passes no rounding mode) where GPUs and
      torch round to nearest even: the normalised value is up to one bf16 ulp low, and a bf16 result,
      truncated again, up to about 2.5 ulps in all (3 allowed).
    The rounding to the input dtype that these tolerances would hide is pinned by
    test_triton_build_rounds_to_the_input_dtype.
    """
    fp32_slack = 8 * torch.finfo(torch.float32).eps
    if case.x_dtype == torch.float16:
        return {"rtol": torch.finfo(torch.float16).eps + fp32_slack, "atol": 2 * 2.0**-24}
    if case.x_dtype == torch.bfloat16:
        ulps = 3 if torch.promote_types(case.x_dtype, case.w_dtype) == torch.bfloat16 else 1
        return {"rtol": ulps * torch.finfo(torch.bfloat16).eps + fp32_slack, "atol": 0.0}
    return {"rtol": fp32_slack, "atol": 0.0}


@pytest.fixture(scope="module")
def triton_run(layer_hub, tmp_path_factory):
    """Run every case through the torch-cuda build in a fresh interpreter with TRITON_INTERPRET=1."""
    folder = tmp_path_factory.mktemp("triton-cpu")
    torch.save({case.name: INPUTS[case.name] for case in CASES}, folder / "inputs.pt")
    env = {"HF_ENDPOINT": layer_hub.url, "KERNELHOOK_CACHE": str(folder / "cache"), "TRITON_INTERPRET": "1"}
    out = run_python(f"""
        import hashlib
        import torch
        from torch import nn
        from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm
        import kernelhook
        from kernelhook import Mode, kernelize, kernelize_report, use_kernel_mapping

        module = kernelhook.get_kernel({SEED!r}, revision="v1")
        where = kernelhook.origin(module)
        inputs = torch.load({str(folder / "inputs.pt")!r})
        outputs = {{name: module.rms_norm(x, weight, {EPS!r}) for name, (x, weight) in inputs.items()}}
        try:  # a weight of the wrong length must be refused, not read past its end
            module.rms_norm(torch.ones(2, 8), torch.ones(7), {EPS!r})
            weight_check = "no error"
        except ValueError as exc:
            weight_check = str(exc)

        norms = nn.ModuleDict()
        for name, (x, weight) in inputs.items():
            norm = Qwen3RMSNorm(x.shape[-1], eps={EPS!r})
            norm.weight = nn.Parameter(weight.clone(), requires_grad=False)
            norms[name] = norm
        with use_kernel_mapping({{"RMSNorm": {{"cuda": "{SEED}@v1:RMSNorm"}}}}):
            kernelize(norms, device="cuda", mode=Mode.INFERENCE, use_fallback=False)
        with torch.no_grad():
            layer_outputs = {{name: norms[name](x) for name, (x, _) in inputs.items()}}
        torch.save({{
            "variant": where.variant,
            "package": str(where.package),
            "triton_sha256": hashlib.sha256((where.package / "_triton.py").read_bytes()).hexdigest(),
            "bound": sorted({{(b.repo, b.variant) for b in kernelize_report(norms).bound}}),
            "bound_count": len(kernelize_report(norms).bound),
            "strides": {{name: (x.stride(), weight.stride()) for name, (x, weight) in inputs.items()}},
            "outputs": outputs,
            "layer_outputs": layer_outputs,
            "weight_check": weight_check,
        }}, {str(folder / "outputs.pt")!r})
    """, env, system=CUDA_SYSTEM, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return torch.load(folder / "outputs.pt")


@pytest.fixture
def universal(kenv):
    """The torch-universal build, through kernelhook on the default CPU system."""
    module = kernelhook.get_kernel(SEED, revision="v1")
    assert kernelhook.origin(module).variant == "torch-universal"
    return module


def test_triton_build_refuses_a_weight_of_the_wrong_length(triton_run):
    assert "weight has shape (7,), expected (8,)" in triton_run["weight_check"]


def test_inputs_have_the_layouts_they_claim():
    for case in CASES:
        x, weight = INPUTS[case.name]
        assert x.shape == (2, 3, case.hidden) and weight.shape == (case.hidden,)
        assert x.is_contiguous() == (case.layout == "contiguous"), case
        assert (x.stride(-1) == 1) == (case.layout != "strided"), case
        assert weight.is_contiguous() == (case.layout != "strided"), case


@needs_triton
def test_triton_build_is_the_examples_file_loaded_through_kernelhook(triton_run):
    assert triton_run["variant"] == "torch-cuda"
    assert not Path(triton_run["package"]).is_relative_to(EXAMPLES)  # executed from the cache
    assert triton_run["triton_sha256"] == hashlib.sha256(TRITON_SOURCE.read_bytes()).hexdigest()
    # the kernel saw the layouts the cases claim (torch.save keeps views' strides)
    assert triton_run["strides"] == {name: (x.stride(), weight.stride()) for name, (x, weight) in INPUTS.items()}


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_triton_build_matches_qwen3(triton_run, case):
    expected = qwen3(case)
    actual = triton_run["outputs"][case.name]
    assert actual.dtype == expected.dtype == torch.promote_types(case.x_dtype, case.w_dtype)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, **tolerance(case))


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_triton_build_matches_universal_build(triton_run, universal, case):
    x, weight = INPUTS[case.name]
    expected = universal.rms_norm(x, weight, EPS)
    torch.testing.assert_close(triton_run["outputs"][case.name], expected, **tolerance(case))


@needs_triton
@pytest.mark.parametrize("case", [c for c in CASES if c.weights == "pow2"], ids=lambda case: case.name)
def test_triton_build_rounds_to_the_input_dtype(triton_run, case):
    """Qwen3RMSNorm rounds the normalised value to the input dtype before the weight multiply, even when
    the weight makes the result wider (bf16 x, fp32 weight: fp32 out). With power-of-two weights the
    multiply is exact, so y / weight is that rounded value: it must lie on the input dtype's grid,
    whichever way the interpreter rounds."""
    _, weight = INPUTS[case.name]
    normalised = triton_run["outputs"][case.name].float() / weight.float()
    assert torch.equal(normalised, normalised.to(case.x_dtype).float())


@needs_triton
def test_kernelized_qwen3_norms_run_the_triton_build(triton_run):
    assert triton_run["bound"] == [(SEED, "torch-cuda")]
    assert triton_run["bound_count"] == len(CASES)
    for case in CASES:
        assert torch.equal(triton_run["layer_outputs"][case.name], triton_run["outputs"][case.name]), case.name


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_universal_build_equals_qwen3(universal, case):
    x, weight = INPUTS[case.name]
    actual = universal.rms_norm(x, weight, EPS)
    expected = qwen3(case)
    assert actual.dtype == expected.dtype
    assert torch.equal(actual, expected)  # the same torch operations in the same order: bit for bit


def test_universal_layer_equals_qwen3(universal):
    case = Case(torch.bfloat16, torch.float32, 1000, "sliced", "random")  # rounds to bf16, returns fp32
    x, weight = INPUTS[case.name]
    norm = Qwen3RMSNorm(case.hidden, eps=EPS)
    norm.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    assert torch.equal(universal.RMSNorm.forward(norm, x), qwen3(case))
