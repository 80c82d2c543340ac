"""Function kernels, as the kernels package defines them and transformers marks its rotary functions:
a function marked with use_kernel_func_from_hub becomes a module that calls like the function, a class
offers it to kernelize with use_kernelized_func, and mappings name FuncRepository entries per device and
mode. Also the fallback cases (KernelizeFallback) and a layer registered for a mode it cannot serve.

The kernels come from the loopback Hub (tests/repos.py ROTARY): acme/rotary computes what the function
below computes and records each call; acme/rotary-x2 doubles it."""

import functools
import logging
import sys

import pytest
import torch
from torch import nn

from kernelhook import (
    FuncRepository,
    KernelizeError,
    KernelizeFallback,
    KernelLayerError,
    Mode,
    kernelize,
    kernelize_report,
    use_kernel_func_from_hub,
    use_kernel_mapping,
    use_kernelized_func,
)
from kernelhook.binding.functions import GlobalsView, rebind

from .test_kernelize import model_of, norms, runs_its_own


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@use_kernel_func_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@use_kernelized_func(apply_rotary_pos_emb)
class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, hidden, cos, sin):
        q = k = self.proj(hidden).view(2, 1, 3, 8)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q + k


def inputs():
    torch.manual_seed(1)
    return torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8)


def kernel_calls():
    module = next(m for name, m in sys.modules.items() if name.startswith("_kernelhook_") and hasattr(m, "CALLS"))
    return len(module.CALLS)


def rotary(repo="acme/rotary", func_name="apply_rotary_pos_emb"):
    return FuncRepository(repo, func_name=func_name, version=1)


@pytest.fixture(autouse=True)
def native_function_again():
    """The marked function is one module shared by every model: give it back its own forward after each test."""
    yield
    kernelize(apply_rotary_pos_emb, device="xpu")


def test_the_marked_function_still_calls_like_the_function():
    q = k = torch.randn(2, 1, 3, 8)
    cos, sin = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    out_q, _ = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(out_q, q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1))
    assert isinstance(apply_rotary_pos_emb, nn.Module)
    assert "apply_rotary_pos_emb" not in dict(Attention().named_modules())  # not a submodule: no state_dict entry


def test_kernelize_binds_a_function_kernel_and_reports_it(kenv):
    model = nn.Sequential(Attention(), Attention())
    expected = model[0](*inputs())
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": rotary()}}):
        kernelize(model, device="cpu")
    before = kernel_calls()
    torch.testing.assert_close(model[0](*inputs()), expected)
    assert kernel_calls() == before + 1
    report = kernelize_report(model)
    assert [(b.module, b.module_class, b.layer_name, b.repo, b.kind) for b in report.bound] == [
        ("0.rotary_pos_emb", "apply_rotary_pos_emb", "rotary_pos_emb", "acme/rotary", "function")]
    assert report.bound[0].commit == kenv.shas["acme/rotary"]


def test_function_kernels_follow_the_mode_order(kenv):
    model = Attention()
    reference = model(*inputs())
    modes = {Mode.INFERENCE: rotary("acme/rotary-x2"), Mode.TRAINING: rotary()}
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": modes}}):
        kernelize(model.eval(), device="cpu")
        torch.testing.assert_close(model(*inputs()), 2 * reference)
        kernelize(model.train(), device="cpu")
        torch.testing.assert_close(model(*inputs()), reference)


def test_a_function_kernel_with_another_signature_is_kept_out(kenv, caplog):
    model = Attention()
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": rotary(func_name="rotary_without_unsqueeze")}}):
        with caplog.at_level(logging.WARNING, logger="kernelhook"):
            kernelize(model, device="cpu")
    kept = kernelize_report(model).kept
    assert [k.kind for k in kept] == ["function"] and "also takes unsqueeze_dim=1" in kept[0].reason


def test_a_missing_function_falls_back_or_raises(kenv):
    model = Attention()
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": rotary(func_name="no_such_function")}}):
        kernelize(model, device="cpu")
        assert "has no function no_such_function" in kernelize_report(model).kept[0].reason
        with pytest.raises(KernelizeError, match="no_such_function"):
            kernelize(model, device="cpu", use_fallback=False)


def test_use_kernelized_func_refuses_an_unmarked_function():
    def plain(x):
        return x

    with pytest.raises(ValueError, match="not marked"):
        use_kernelized_func(plain)


# -- fallback cases, as the kernels package names them ---------------------------------------------------


@pytest.mark.parametrize(
    "mapping, fallback, falls_back",
    [
        ({}, KernelizeFallback.NO_LAYER, True),
        ({}, KernelizeFallback.NO_DEVICE, False),  # nothing mapped for the name at all: NO_LAYER is the case
        ({"RMSNorm": {"npu": "acme/rms@v1:RMSNorm"}}, KernelizeFallback.NO_DEVICE, True),  # only npu is mapped
        ({"RMSNorm": {"cpu": "acme/rms-broken@v1:RMSNorm"}}, KernelizeFallback.DEFAULT, False),  # import fails
        ({"RMSNorm": {"cpu": "acme/rms-broken@v1:RMSNorm"}}, KernelizeFallback.CANNOT_LOAD, True),
        ({"RMSNorm": {"cpu": "acme/rms-broken@v1:RMSNorm"}}, True, True),  # kernelhook's True is ALL
        ({"RMSNorm": {"cpu": {Mode.INFERENCE: "acme/rms@v1:RMSNorm"}}}, KernelizeFallback.NO_COMPATIBLE_MODE, True),
        ({"RMSNorm": {"cpu": "acme/rms-no-compile@v1:RMSNorm"}}, KernelizeFallback.NO_LAYER, False),
    ],
)
def test_kernelize_fallback_flags_pick_the_cases_that_fall_back(kenv, mapping, fallback, falls_back):
    model = model_of(0)
    mode = Mode.INFERENCE | Mode.TORCH_COMPILE if "no-compile" in str(mapping) else Mode.TRAINING
    with use_kernel_mapping(mapping, inherit_mapping=False):
        if falls_back:
            kernelize(model, device="cpu", mode=mode, use_fallback=fallback)
            assert all(runs_its_own(n) for n in norms(model))
        else:
            with pytest.raises(KernelizeError):
                kernelize(model, device="cpu", mode=mode, use_fallback=fallback)


def test_a_layer_registered_for_training_without_backward_is_a_mapping_error(kenv):
    model = model_of(0)
    with use_kernel_mapping({"RMSNorm": {"cpu": {Mode.TRAINING: "acme/rms-no-backward@v1:RMSNorm"}}}):
        with pytest.raises(KernelLayerError, match="registered for 'RMSNorm' in Mode.TRAINING, but it has no backward"):
            kernelize(model, device="cpu", mode=Mode.INFERENCE)  # even where inference would take it
    assert all(runs_its_own(n) for n in norms(model))


# -- the example function kernel (examples/kernels/rotary) -----------------------------------------------


def test_the_example_rotary_kernel_computes_what_transformers_computes(kenv):
    transformers_rotary = pytest.importorskip("transformers.models.qwen3.modeling_qwen3").apply_rotary_pos_emb
    model = Attention()
    hidden, cos, sin = inputs()
    expected = model(hidden, cos, sin)
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": FuncRepository("kernels-ext-npu/rotary",
                                                                      func_name="apply_rotary_pos_emb", version=1)}}):
        kernelize(model, device="cpu")
    bound = kernelize_report(model).bound
    assert [(b.repo, b.variant, b.kind) for b in bound] == [("kernels-ext-npu/rotary", "torch-universal", "function")]
    torch.testing.assert_close(model(hidden, cos, sin), expected)
    q = k = torch.randn(2, 4, 3, 8)
    kernel = sys.modules[type(apply_rotary_pos_emb).forward.__module__]
    for mine, theirs in zip(kernel.apply_rotary_pos_emb(q, k, cos, sin), transformers_rotary(q, k, cos, sin)):
        torch.testing.assert_close(mine, theirs)


# -- a stock class's forward with a kernel in place of a module-level function (functions.py) --------------

SCALE = 1.0


def stock_rotary(q):
    return q + 1


def wrapping(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


class StockAttention:
    @wrapping
    def forward(self, q):
        return [stock_rotary(v) for v in (q,)][0] * SCALE  # in a comprehension, as code nested in the forward

    def helper_calls_it(self, q):
        return stock_rotary(q)

    def forward_through_a_helper(self, q):
        return self.helper_calls_it(q)


def test_a_rebound_forward_calls_the_kernel_and_reads_everything_else_live(monkeypatch):
    forward = rebind(StockAttention.forward, {"stock_rotary": (stock_rotary, lambda q: q + 100)})
    assert forward(None, 1) == 101 and StockAttention().forward(1) == 2  # the class and module are unchanged
    monkeypatch.setitem(globals(), "SCALE", 2.0)
    assert forward(None, 1) == 202  # not a copy of the module's globals
    inner = forward.__wrapped__
    assert isinstance(inner.__globals__, GlobalsView) and "SCALE" in inner.__globals__  # what dynamo asks
    assert inner.__globals__.get("no_such_name", "default") == "default"


def test_rebind_refuses_what_it_cannot_reach():
    replaced = {"stock_rotary": (stock_rotary, lambda q: q)}
    assert rebind(StockAttention.forward_through_a_helper, replaced) is None  # called from another method
    assert rebind(StockAttention.forward, {"stock_rotary": (lambda q: q, lambda q: q)}) is None  # another object
    assert rebind(len, replaced) is None
