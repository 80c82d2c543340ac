"""kernelize on a stock transformers model: a tiny Qwen3 built from its config, no weights download.

transformers marks its layers only when a compatible `kernels` package is installed;
kernelhook must bind them either way, through the class-name table guarded by
transformers' own decorators."""

import pytest
import torch

import kernelhook
from kernelhook import kernelize, kernelize_report
from kernelhook.binding import mapping
from kernelhook.binding.known_layers import (
    layer_name_of,
    read_markers,
    stock_functions_of,
)

transformers = pytest.importorskip("transformers")


def tiny_qwen3():
    config = transformers.Qwen3Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.Qwen3ForCausalLM(config).eval()


def test_default_npu_mapping_binds_every_qwen3_rmsnorm_and_keeps_the_logits(kenv):
    model = tiny_qwen3()
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kernelize(model, device="npu")  # the shipped mapping: RMSNorm on npu from kernels-ext-npu/RMSNorm
    norms = [name for name, m in model.named_modules() if type(m).__name__ == "Qwen3RMSNorm"]
    report = kernelize_report(model)
    assert len(norms) == 9 and sorted(b.module for b in report.bound) == sorted(norms)
    assert {(b.repo, b.commit, b.variant) for b in report.bound} == {
        ("kernels-ext-npu/RMSNorm", kenv.shas["seed"], "torch-universal")}
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_cpu_has_no_default_mapping_so_the_model_is_untouched(kenv):
    model = tiny_qwen3()
    kernelize(model, device="cpu")
    report = kernelize_report(model)
    kept = sorted((k.module_class, k.layer_name) for k in report.kept)
    assert report.bound == [] and kept == sorted(
        [("Qwen3RMSNorm", "RMSNorm")] * 9 + [("SiLUActivation", "SiLU")] * 2
        + [("apply_rotary_pos_emb", "rotary_pos_emb")] * 2)  # the function each Qwen3Attention calls


@pytest.mark.parametrize(
    "module, cls, expected",
    [
        ("qwen3.modeling_qwen3", "Qwen3RMSNorm", "RMSNorm"),
        ("llama.modeling_llama", "LlamaRMSNorm", "RMSNorm"),
        ("gemma.modeling_gemma", "GemmaRMSNorm", None),  # scales by 1 + weight: not a plain RMSNorm
        ("qwen3_5.modeling_qwen3_5", "Qwen3_5RMSNorm", "RMSNormZeroCentered"),  # transformers' own name wins
        ("qwen3_next.modeling_qwen3_next", "Qwen3NextRMSNormGated", "RMSNormGated"),
        # stacked under a multi-line use_kernelized_func([...]); the name is transformers' own
        ("qwen3_5.modeling_qwen3_5", "Qwen3_5GatedDeltaNet", "Qwen3_5GatedDeltaNet"),
        ("qwen3_5_moe.modeling_qwen3_5_moe", "Qwen3_5MoeGatedDeltaNet", "Qwen3_5GatedDeltaNet"),
        ("activations", "SiLUActivation", "SiLU"),
        ("activations", "GELUTanh", "GeluTanh"),
        ("activations", "ReLUSquaredActivation", None),  # not in the table
    ],
)
def test_the_transformers_table(module, cls, expected):
    import importlib

    try:
        found = getattr(importlib.import_module(f"transformers.models.{module}" if "." in module
                                                else f"transformers.{module}"), cls)
    except (ImportError, AttributeError):
        pytest.skip(f"this transformers has no {cls}")
    assert layer_name_of(found) == expected


def test_a_class_marked_by_the_kernels_package_keeps_its_name():
    class Marked(torch.nn.Module):
        kernel_layer_name = "SiLU"

    assert layer_name_of(Marked) == "SiLU"
    assert layer_name_of(torch.nn.LayerNorm) is None
    assert kernelhook.LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1) in [
        entry.repo for modes in mapping.snapshot()["RMSNorm"]["npu"].values() for entry in modes.values()]


MARKED_SOURCE = """
import hub_kernels
from .integrations import use_kernel_forward_from_hub, use_kernelized_func


@use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin):
    return q, k


@use_kernel_func_from_hub_with_fallback("causal_conv1d_fn", "causal_conv1d")
def causal_conv1d_fn(x):
    return x


def unmarked(x):
    return x


@use_kernelized_func(
    [
        apply_rotary_pos_emb,
        causal_conv1d_fn,
    ]
)
@use_kernel_forward_from_hub(
    "GatedDeltaNet"
)
class Stacked:  # the layer mark under another decorator, both over several lines
    pass


@some.other_decorator(1)
@hub_kernels.use_kernel_forward_from_hub("RMSNorm")
@dataclass
class Dotted:
    pass


@use_kernelized_func(apply_rotary_pos_emb)
class Attention:
    pass


class Plain:  # named like a norm, marked by nothing
    pass


if True:
    @use_kernel_forward_from_hub("Nested")
    class NotTopLevel:
        pass
"""


def test_markers_are_read_from_the_syntax_tree_whatever_the_decorators_layout():
    markers = read_markers(MARKED_SOURCE)
    assert markers.classes == {"Stacked": "GatedDeltaNet", "Dotted": "RMSNorm"}
    assert markers.functions == {"apply_rotary_pos_emb": "rotary_pos_emb", "causal_conv1d_fn": "causal_conv1d_fn"}
    assert markers.kernelized == {"Stacked": ["apply_rotary_pos_emb", "causal_conv1d_fn"],
                                  "Attention": ["apply_rotary_pos_emb"]}


def test_a_stock_attention_class_calls_the_marked_rotary_function():
    qwen3 = pytest.importorskip("transformers.models.qwen3.modeling_qwen3")
    assert stock_functions_of(qwen3.Qwen3Attention) == {
        "apply_rotary_pos_emb": (qwen3.apply_rotary_pos_emb, "rotary_pos_emb")}
    assert stock_functions_of(qwen3.Qwen3RMSNorm) == {}
