"""kernelize leaves models whole: accelerate's hooks and offloading, subclasses, instance forwards set by
others, all-or-nothing validation, memory, pickling and copies, and defaults that follow the model.

Layers come from the loopback Hub (tests/repos.py): acme/rms-x2 computes 2 * RMSNorm, so outputs tell
kernel from native. accelerate is the real package."""

import copy
import gc
import logging
import pickle
import re
import weakref

import pytest
import torch
from torch import nn

from kernelhook import (
    KernelizeError,
    KernelLayerError,
    Mode,
    kernelize,
    kernelize_report,
    use_kernel_forward_from_hub,
    use_kernel_mapping,
)

from .conftest import run_python
from .test_kernelize import MyRMSNorm, has_kernel, model_of, norms, runs_its_own, x

accelerate = pytest.importorskip("accelerate")
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module  # noqa: E402

X2 = {"RMSNorm": {"cpu": "acme/rms-x2@v1:RMSNorm"}}


def native_output(model):
    with torch.no_grad():
        return model(x())


class CountingHook(ModelHook):
    """Counts calls and adds one to the input, so a test sees the hook ran around whichever forward."""

    def __init__(self):
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return (args[0] + 1,) + args[1:], kwargs


def single_norm():
    torch.manual_seed(0)
    return MyRMSNorm()


# -- accelerate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook_first", [True, False], ids=["hook-then-kernelize", "kernelize-then-hook"])
def test_the_kernel_runs_inside_accelerates_hook_and_survives_its_removal(kenv, hook_first):
    norm = single_norm()
    plain = norm(x() + 1)  # what the hook's +1 and the native forward give
    hook = CountingHook()
    with use_kernel_mapping(X2):
        if hook_first:
            add_hook_to_module(norm, hook)
            kernelize(norm, device="cpu")
        else:
            kernelize(norm, device="cpu")
            add_hook_to_module(norm, hook)
    torch.testing.assert_close(norm(x()), 2 * plain)  # hook (+1) around the kernel (2x)
    assert hook.calls == 1
    remove_hook_from_module(norm)
    torch.testing.assert_close(norm(x()), 2 * norm.__class__.__mro__[1].forward(norm, x()))
    assert hook.calls == 1 and kernelize_report(norm).bound


def test_kernelizing_again_under_a_hook_swaps_the_kernel_inside_it(kenv):
    norm = single_norm()
    hook = CountingHook()
    add_hook_to_module(norm, hook)
    with use_kernel_mapping(X2):
        kernelize(norm, device="cpu")
    with use_kernel_mapping({"RMSNorm": {"cpu": "acme/rms-x3@v1:RMSNorm"}}):
        kernelize(norm, device="cpu")
        plain = MyRMSNorm.forward(norm, x() + 1)
        torch.testing.assert_close(norm(x()), 3 * plain)
    kernelize(norm, device="xpu")  # nothing mapped: the class's own forward, still inside the hook
    torch.testing.assert_close(norm(x()), plain)
    assert hook.calls == 2 and "_hf_hook" in vars(norm)


@pytest.mark.parametrize("kernelize_first", [True, False])
def test_cpu_offload_keeps_working_with_kernels(kenv, kernelize_first):
    reference = model_of(2)
    with use_kernel_mapping(X2):
        kernelize(reference, device="cpu")
    expected = native_output(reference)
    model = model_of(2)
    with use_kernel_mapping(X2):
        if kernelize_first:
            kernelize(model, device="cpu")
            accelerate.cpu_offload(model, execution_device="cpu")
        else:
            accelerate.cpu_offload(model, execution_device="cpu")
            with pytest.raises(KernelizeError, match="meta device.*pass device="):
                kernelize(model)  # offloaded weights are on meta: that says nothing of where it runs
            kernelize(model, device="cpu")
    torch.testing.assert_close(native_output(model), expected)
    assert len(kernelize_report(model).bound) == 3


def test_dispatch_model_with_a_disk_offloaded_device_map(kenv, tmp_path):
    reference = model_of(3)
    with use_kernel_mapping(X2):
        kernelize(reference, device="cpu")
    expected = native_output(reference)
    model = model_of(3)
    device_map = {"0": "cpu", "1": "disk", "2": "cpu", "3": "disk"}
    accelerate.dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path / "offload"))
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    torch.testing.assert_close(native_output(model), expected)
    assert len(kernelize_report(model).bound) == 4


# -- what others put on an instance -------------------------------------------------------------------


def test_an_instance_forward_set_by_someone_else_is_kept_and_reported(kenv, caplog):
    model = model_of(1)
    mine = model[1]
    mine.forward = lambda hidden_states: hidden_states * 0  # the user's own patch
    with use_kernel_mapping(X2):
        with caplog.at_level(logging.WARNING, logger="kernelhook"):
            kernelize(model, device="cpu")
        assert mine.forward.__name__ == "<lambda>" and torch.equal(mine(x()), x() * 0)
        kept = kernelize_report(model).kept
        assert [k.module for k in kept] == ["1"] and "did not set" in kept[0].reason and "did not set" in caplog.text
        assert has_kernel(model[0].norm)
        with pytest.raises(KernelizeError, match=r"module 1 \(MyRMSNorm\).*did not set"):
            kernelize(model, device="npu", use_fallback=False)
    assert has_kernel(model[0].norm)  # the refused call changed nothing


# -- subclasses ---------------------------------------------------------------------------------------


class ScaledNorm(MyRMSNorm):
    """Inherits the mark, overrides the forward: its output is its own."""

    def forward(self, hidden_states):
        return 10 * super().forward(hidden_states)


class PlainSubclass(MyRMSNorm):
    """Inherits mark and forward: the kernel replaces what it inherits."""


@use_kernel_forward_from_hub("RMSNorm")
class MarkedScaledNorm(ScaledNorm):
    """Marked itself: it asks for the kernel."""


def test_a_subclass_with_its_own_forward_keeps_it_unless_marked_itself(kenv):
    torch.manual_seed(0)
    model = nn.Sequential(ScaledNorm(), PlainSubclass(), MarkedScaledNorm(), MyRMSNorm())
    scaled_before = model[0](x())
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    report = kernelize_report(model)
    assert sorted(b.module for b in report.bound) == ["1", "2", "3"]
    assert [(k.module, k.module_class) for k in report.kept] == [("0", "ScaledNorm")]
    assert "overrides the forward of MyRMSNorm" in report.kept[0].reason
    torch.testing.assert_close(model[0](x()), scaled_before)
    assert isinstance(model[1], PlainSubclass) and has_kernel(model[1])


# -- all or nothing ------------------------------------------------------------------------------------


@use_kernel_forward_from_hub("OtherNorm")
class OtherNorm(MyRMSNorm):
    pass


def test_a_refused_layer_leaves_the_model_and_its_report_as_they_were(kenv):
    model = nn.Sequential(MyRMSNorm(), OtherNorm(), MyRMSNorm())
    with use_kernel_mapping({"RMSNorm": {"cpu": "acme/rms-x3@v1:RMSNorm"}}):
        kernelize(model, device="cpu")
    before = kernelize_report(model)
    outputs = [norm(x()) for norm in model]  # each on its own: a chain of norms hides a scale
    with use_kernel_mapping({**X2, "OtherNorm": {"cpu": "acme/bad-layers@v1:WithInit"}}):
        with pytest.raises(KernelLayerError, match="WithInit"):
            kernelize(model, device="cpu")
    assert kernelize_report(model) is before
    for norm, output in zip(model, outputs):  # still the x3 kernel and the native OtherNorm: nothing half-bound
        torch.testing.assert_close(norm(x()), output)


def test_a_layer_with_other_parameter_names_is_not_bound(kenv, caplog):
    model = model_of(1)
    with use_kernel_mapping({"RMSNorm": {"cpu": "acme/bad-layers@v1:Renamed"}}):
        with caplog.at_level(logging.WARNING, logger="kernelhook"):
            kernelize(model, device="cpu")
        assert all(runs_its_own(n) for n in norms(model))
        reason = kernelize_report(model).kept[0].reason
        assert "'hidden_states' (the kernel calls it 'x')" in reason and "Fix" in reason and "hidden_states" in caplog.text
        with pytest.raises(KernelizeError, match="hidden_states"):
            kernelize(model, device="cpu", use_fallback=False)
    assert all(runs_its_own(n) for n in norms(model))


@use_kernel_forward_from_hub("RMSNorm")
class ResidualNorm(MyRMSNorm):
    def forward(self, hidden_states, residual=None):
        return super().forward(hidden_states if residual is None else hidden_states + residual)


@use_kernel_forward_from_hub("RMSNorm")
class KwargsNorm(MyRMSNorm):
    def forward(self, hidden_states, **kwargs):
        return super().forward(hidden_states)


@pytest.mark.parametrize("cls, words", [(ResidualNorm, "also takes residual=None"), (KwargsNorm, "also takes **kwargs")])
def test_a_class_whose_forward_takes_more_keeps_it_with_a_warning(kenv, caplog, cls, words):
    torch.manual_seed(0)
    model = nn.Sequential(cls(), MyRMSNorm())
    with use_kernel_mapping(X2):
        with caplog.at_level(logging.WARNING, logger="kernelhook"):
            kernelize(model, device="cpu")
        report = kernelize_report(model)
        assert [b.module for b in report.bound] == ["1"] and words in report.kept[0].reason
        assert words in caplog.text
        with pytest.raises(KernelizeError, match=re.escape(words)):
            kernelize(model, device="cpu", use_fallback=False)
    assert type(model[0]) is cls


# -- memory, copies, pickles -------------------------------------------------------------------------


def test_a_kernelized_model_is_freed_by_reference_counting_alone(kenv):
    model = model_of(2)
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    model(x())
    gone_model, gone_norm = weakref.ref(model), weakref.ref(model[0].norm)
    gc.collect()
    gc.disable()
    try:
        del model
        assert gone_model() is None and gone_norm() is None
    finally:
        gc.enable()


def test_copy_runs_the_kernel_on_the_copys_own_attributes(kenv):
    norm = single_norm()
    with use_kernel_mapping(X2):
        kernelize(norm, device="cpu")
    twin = copy.copy(norm)  # shallow: parameters are shared, plain attributes are the copy's own
    twin.variance_epsilon = 100.0
    torch.testing.assert_close(twin(x()), 2 * MyRMSNorm.forward(twin, x()))
    assert not torch.allclose(twin(x()), norm(x()))
    assert has_kernel(copy.deepcopy(norm))


def test_pickle_round_trip_keeps_the_kernel(kenv):
    model = model_of(1)
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    expected = native_output(model)
    loaded = pickle.loads(pickle.dumps(model))
    assert all(has_kernel(n) and isinstance(n, MyRMSNorm) for n in norms(loaded))
    torch.testing.assert_close(native_output(loaded), expected)


TORCH_LOAD = """
import logging, sys, torch
logging.basicConfig(level=logging.WARNING)
model = torch.load(sys.argv[1] if len(sys.argv) > 1 else {path!r}, weights_only=False)
norms = [m for m in model.modules() if type(m).__name__ == "MyRMSNorm"]
torch.manual_seed(1)
out = model(torch.randn(2, 8))
print(sum(type(n).forward.__module__.endswith(".layers") for n in norms), len(norms))
torch.save(out, {out!r})
"""


def test_torch_save_keeps_the_kernel_in_a_fresh_process_offline(kenv, tmp_path):
    model = model_of(1)
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    expected = native_output(model)
    torch.save(model, tmp_path / "model.pt")
    kenv.clear_requests()
    env = {"HF_ENDPOINT": kenv.url, "KERNELHOOK_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    code = TORCH_LOAD.format(path=str(tmp_path / "model.pt"), out=str(tmp_path / "out.pt"))
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"] and kenv.requests == []
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected)


def test_a_pickled_kernel_that_cannot_be_had_falls_back_with_a_warning(kenv, tmp_path):
    model = model_of(1)
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    torch.save(model, tmp_path / "model.pt")
    env = {"HF_ENDPOINT": kenv.url, "KERNELHOOK_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    result = run_python(TORCH_LOAD.format(path=str(tmp_path / "model.pt"), out=str(tmp_path / "out.pt")), env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "2"] and "runs its own forward now" in result.stderr


# -- defaults that follow the model ------------------------------------------------------------------


def test_without_a_mode_kernelize_follows_the_model(kenv):
    modes = {"RMSNorm": {"cpu": {Mode.INFERENCE: "acme/rms-x2@v1:RMSNorm", Mode.TRAINING: "acme/rms-x3@v1:RMSNorm"}}}
    model = model_of(0)
    reference = native_output(model)
    with use_kernel_mapping(modes):
        kernelize(model.train(), device="cpu")
        assert kernelize_report(model).mode == Mode.TRAINING
        torch.testing.assert_close(native_output(model), 3 * reference)
        kernelize(model.eval(), device="cpu")
        assert kernelize_report(model).mode == Mode.INFERENCE
        torch.testing.assert_close(native_output(model), 2 * reference)


def test_a_model_on_meta_without_a_device_is_told_to_pass_one(kenv):
    with torch.device("meta"):
        model = model_of(1)
    with pytest.raises(KernelizeError, match="meta device.*pass device="):
        kernelize(model)
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    assert len(kernelize_report(model).bound) == 2


# -- what already worked keeps working with kernels in classes --------------------------------------------


def test_hooks_dtype_moves_gradients_tied_modules_and_compile(kenv):
    torch.manual_seed(0)
    shared = MyRMSNorm()
    model = nn.Sequential(nn.Linear(8, 8), shared, nn.Linear(8, 8), shared)  # one norm, used twice
    reference = copy.deepcopy(model)
    with use_kernel_mapping(X2):
        kernelize(model, device="cpu")
    assert [b.module for b in kernelize_report(model).bound] == ["1"]  # named_modules lists a tied module once
    seen = []
    shared.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    out = model(x())
    assert len(seen) == 2 and has_kernel(shared)
    out.sum().backward()
    assert shared.weight.grad is not None and shared.weight.grad.abs().sum() > 0
    norm = reference[1]  # deepcopy kept the tie: reference[3] is the same module
    expected = 2 * norm(reference[2](2 * norm(reference[0](x()))))  # the x2 kernel, twice
    torch.testing.assert_close(out, expected)
    model.to(torch.float64)
    assert has_kernel(shared) and model(x().double()).dtype == torch.float64
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x().double()), model(x().double()))

