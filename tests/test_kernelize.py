"""kernelize against the loopback Hub: mappings per device and mode, binding rules,
validation, fallback, logging and the report. Layers are plain torch and run on CPU;
mapping them under "npu" proves the NPU path takes the NPU mapping."""

import logging
import socket
import threading

import pytest
import torch
from torch import nn

import kernelhook
from kernelhook import (
    CUDAProperties,
    Device,
    KernelizeError,
    KernelLayerError,
    LayerRepository,
    Mode,
    kernelize,
    kernelize_report,
    register_kernel_mapping,
    use_kernel_forward_from_hub,
    use_kernel_mapping,
)
from kernelhook.binding import mapping
from kernelhook.testing import LocalHub

from .repos import SEED, layer_repo, rms_layer


@use_kernel_forward_from_hub("RMSNorm")
class MyRMSNorm(nn.Module):
    def __init__(self, size=8, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(size) + 0.5)
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * hidden_states * torch.rsqrt(variance + self.variance_epsilon)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.norm = MyRMSNorm()

    def forward(self, x):
        return self.norm(self.linear(x))


def model_of(n=3):
    torch.manual_seed(0)
    return nn.Sequential(*[Block() for _ in range(n)], MyRMSNorm())


def norms(model):
    return [m for m in model.modules() if isinstance(m, MyRMSNorm)]


def x():
    torch.manual_seed(1)
    return torch.randn(2, 8)


def has_kernel(module):
    """The module runs a Hub layer's forward, from the class kernelize gave it (nothing on the instance)."""
    return type(module).forward.__module__.endswith(".layers") and "forward" not in vars(module)


def runs_its_own(module):
    """The module runs its class's own forward again: its own class, nothing on the instance."""
    return type(module) is MyRMSNorm and "forward" not in vars(module)


def test_npu_mapping_binds_every_marked_module_and_changes_nothing_else(kenv):
    model = model_of()
    expected, state = model(x()), {k: v.clone() for k, v in model.state_dict().items()}
    modules_before, params_before = list(model.named_modules()), list(model.parameters())
    with use_kernel_mapping({"RMSNorm": {"npu": "acme/rms@v1:RMSNorm"}}):
        assert kernelize(model, device="npu") is model
    for norm in norms(model):
        assert has_kernel(norm) and norm.forward.__self__ is norm and isinstance(norm, MyRMSNorm)
        assert norm.forward.__func__.__module__.endswith(".layers")  # the Hub layer's forward
    torch.testing.assert_close(model(x()), expected)
    assert list(model.named_modules()) == modules_before and list(model.parameters()) == params_before
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_the_npu_mapping_is_not_used_for_other_devices(kenv):
    model = model_of(0)  # one norm: its output scales with the layer's
    with use_kernel_mapping({"RMSNorm": {"npu": "acme/rms-x2@v1:RMSNorm", "cpu": "acme/rms@v1:RMSNorm"}}):
        kernelize(model, device="npu")
        on_npu = model(x())
        kernelize(model, device="cpu")
        on_cpu = model(x())
    torch.testing.assert_close(on_npu[0], 2 * on_cpu[0])


def test_device_defaults_to_the_models_parameters(kenv):
    model = model_of()
    with use_kernel_mapping({"RMSNorm": {"cpu": "acme/rms-x2@v1:RMSNorm"}}):
        kernelize(model)
    assert kernelize_report(model).device == "cpu" and len(kernelize_report(model).bound) == 4


def test_kernelizing_again_restores_the_class_forward_first(kenv):
    model = model_of()
    with use_kernel_mapping({"RMSNorm": {"npu": "acme/rms-x2@v1:RMSNorm"}}):
        kernelize(model, device="npu")
        kernelize(model, device="cuda")  # nothing mapped for cuda: the class's own forward again
    assert all(runs_its_own(n) for n in norms(model))
    assert [k.reason for k in kernelize_report(model).kept][0].startswith("no mapping for 'RMSNorm' on cuda")


@pytest.mark.parametrize(
    "mode, expected_scale",
    [
        (Mode.INFERENCE, 2.0),
        (Mode.TRAINING, 3.0),
        (Mode.INFERENCE | Mode.TORCH_COMPILE, 1.0),  # no inference+compile entry: training+compile serves
        (Mode.TRAINING | Mode.TORCH_COMPILE, 1.0),
    ],
)
def test_modes_pick_their_entry_in_the_documented_order(kenv, mode, expected_scale):
    register = {Mode.INFERENCE: "acme/rms-x2@v1:RMSNorm", Mode.TRAINING: "acme/rms-x3@v1:RMSNorm"}
    with use_kernel_mapping({"RMSNorm": {"npu": register}}):
        # a second registration for the same layer and device adds a mode, it does not replace the others
        register_kernel_mapping({"RMSNorm": {"npu": {Mode.TRAINING | Mode.TORCH_COMPILE: "acme/rms@v1:RMSNorm"}}})
        model = model_of(0)
        reference = model(x())
        kernelize(model, device="npu", mode=mode)
        torch.testing.assert_close(model(x()), expected_scale * reference)


@pytest.mark.parametrize(
    "repo, mode, words",
    [
        ("acme/rms-no-backward@v1:RMSNorm", Mode.TRAINING, "has no backward"),
        ("acme/rms-no-compile@v1:RMSNorm", Mode.INFERENCE | Mode.TORCH_COMPILE, "does not support torch.compile"),
    ],
)
def test_flags_are_respected(kenv, repo, mode, words):
    model = model_of(1)
    with use_kernel_mapping({"RMSNorm": {"npu": repo}}):
        kernelize(model, device="npu", mode=mode)
        assert all(runs_its_own(n) for n in norms(model))
        assert words in kernelize_report(model).kept[0].reason
        with pytest.raises(KernelizeError, match=words):
            kernelize(model, device="npu", mode=mode, use_fallback=False)
        kernelize(model, device="npu", mode=Mode.INFERENCE)  # the same layer is fine for plain inference
        assert all(has_kernel(n) for n in norms(model))


@pytest.mark.parametrize(
    "layer, rule",
    [
        ("WithInit", "defines __init__"),
        ("WithState", "members beyond forward and the flags has_backward, can_torch_compile: cache"),
        ("TwoInputs", "takes 3 parameters, the original 2"),
        ("NotAModule", "is not a torch.nn.Module subclass"),
        ("BadFlag", "has_backward to 'yes': it must be True or False"),
    ],
)
def test_layers_that_break_a_rule_are_refused_with_the_rule(kenv, layer, rule):
    model = model_of(1)
    with use_kernel_mapping({"RMSNorm": {"npu": f"acme/bad-layers@v1:{layer}"}}):
        with pytest.raises(KernelLayerError) as info:
            kernelize(model, device="npu")  # fallback on: a broken layer is still an error
    message = str(info.value)
    assert layer in message and rule in message
    assert f"acme/bad-layers@{kenv.shas['acme/bad-layers'][:12]} [torch-universal]" in message
    assert all(runs_its_own(n) for n in norms(model))


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "repo, words",
    [
        ("acme/nothing-here@v1:RMSNorm", "No Hub repo answers"),  # the repo does not exist
        ("acme/rms-cuda-only@v1:RMSNorm", "no build variant for this system"),
        ("acme/rms-broken@v1:RMSNorm", "needs torch_npu"),  # the kernel's import fails
        ("acme/rms@v1:NoSuchLayer", "has no class NoSuchLayer"),
        ("acme/rms@v1:RMSNorm", "could not reach the Hub"),  # Hub down, nothing cached
    ],
)
def test_a_kernel_that_cannot_be_had_keeps_the_forward_or_raises(kenv, monkeypatch, caplog, repo, words):
    if words == "could not reach the Hub":
        monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    model = model_of(1)
    with use_kernel_mapping({"RMSNorm": {"npu": repo}}):
        with caplog.at_level(logging.WARNING, logger="kernelhook"):
            kernelize(model, device="npu")
        assert all(runs_its_own(n) for n in norms(model))
        assert words in kernelize_report(model).kept[0].reason and words in caplog.text
        with pytest.raises(KernelizeError) as info:
            kernelize(model, device="npu", use_fallback=False)
    assert words in str(info.value) and info.value.__cause__ is not None


def test_no_mapping_for_the_device_raises_without_fallback(kenv):
    with use_kernel_mapping({"RMSNorm": {"npu": "acme/rms@v1:RMSNorm"}}, inherit_mapping=False):
        with pytest.raises(KernelizeError, match="no mapping for 'RMSNorm' on xpu"):
            kernelize(model_of(1), device="xpu", use_fallback=False)


def test_narrowest_capability_range_holding_the_device_wins(kenv, monkeypatch):
    mapping = {"RMSNorm": {
        "cuda": "acme/rms@v1:RMSNorm",
        Device("cuda", CUDAProperties(80, 90)): "acme/rms-x2@v1:RMSNorm",
        Device("cuda", CUDAProperties(86, 89)): "acme/rms-x3@v1:RMSNorm",
    }}
    results = {}
    with use_kernel_mapping(mapping):
        for capability in (75, 80, 86, 90, None):
            monkeypatch.setattr("kernelhook.binding.kernelize._capability", lambda c=capability: c)
            model = model_of(0)
            reference = model(x())
            kernelize(model, device="cuda")
            results[capability] = round((model(x()) / reference).mean().item())
    assert results == {75: 1, 80: 2, 86: 3, 90: 2, None: 1}


def test_scoped_mappings_stay_in_their_thread_and_block(kenv):
    seen = {}

    def other_thread():
        seen["other"] = mapping.snapshot().get("Scoped")

    with use_kernel_mapping({"Scoped": {"npu": "acme/rms@v1:RMSNorm"}}):
        register_kernel_mapping({"Scoped": {"cpu": "acme/rms@v1:RMSNorm"}})  # goes into the block's mapping
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=30)
        assert set(mapping.snapshot()["Scoped"]) == {"npu", "cpu"}
        with use_kernel_mapping({"Other": {"cpu": "acme/rms@v1:RMSNorm"}}, inherit_mapping=False):
            assert set(mapping.snapshot()) == {"Other"}
    assert seen["other"] is None and "Scoped" not in mapping.snapshot()
    assert "RMSNorm" in mapping.snapshot()  # the shipped npu default is process-wide


def test_process_wide_registration_is_seen_by_other_threads(kenv):
    seen = {}
    register_kernel_mapping({"Global": {"cpu": "acme/rms@v1:RMSNorm"}})
    try:
        thread = threading.Thread(target=lambda: seen.update(g=mapping.snapshot().get("Global")))
        thread.start()
        thread.join(timeout=30)
        assert seen["g"] is not None
    finally:
        with mapping._lock:
            mapping._base.pop("Global")


def test_debug_logging_shows_every_replacement_and_info_one_line_per_class(kenv, caplog):
    model = model_of(3).eval()  # kernelize follows the model: INFERENCE
    with use_kernel_mapping({"RMSNorm": {"npu": LayerRepository("acme/rms", "RMSNorm", version=1)}}):
        with caplog.at_level(logging.DEBUG, logger="kernelhook"):
            kernelize(model, device="npu")
    commit = kenv.shas["acme/rms"]
    per_module = [r for r in caplog.records if r.levelno == logging.DEBUG and "<- RMSNorm" in r.getMessage()]
    assert len(per_module) == 4
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "on 4 MyRMSNorm" in r.getMessage()]
    assert summary == [f"kernelize: RMSNorm -> acme/rms@{commit[:12]} [torch-universal] on 4 MyRMSNorm module(s) "
                       f"(npu, {Mode.INFERENCE})"]
    report = kernelize_report(model)
    assert [b.module for b in report.bound] == ["0.norm", "1.norm", "2.norm", "3"]
    assert {(b.repo, b.commit, b.variant) for b in report.bound} == {("acme/rms", commit, "torch-universal")}


@use_kernel_forward_from_hub("TwinA")
class TwinA(MyRMSNorm):
    pass


@use_kernel_forward_from_hub("TwinB")
class TwinB(MyRMSNorm):
    pass


def test_the_report_names_each_repo_when_two_repos_have_identical_builds(kenv):
    shas = {}
    for repo in ("acme/rms-twin-a", "acme/rms-twin-b"):
        kenv.create_repo(repo)
        shas[repo] = kenv.commit(repo, layer_repo(rms_layer()), branch="v1")
    model = nn.Sequential(TwinA(), TwinB())
    with use_kernel_mapping({"TwinA": {"cpu": "acme/rms-twin-a@v1:RMSNorm"},
                             "TwinB": {"cpu": "acme/rms-twin-b@v1:RMSNorm"}}):
        kernelize(model, device="cpu")
    rows = {(b.module_class, b.repo, b.commit) for b in kernelize_report(model).bound}
    assert rows == {("TwinA", "acme/rms-twin-a", shas["acme/rms-twin-a"]),
                    ("TwinB", "acme/rms-twin-b", shas["acme/rms-twin-b"])}


def test_a_kernel_layer_name_attribute_is_honoured(kenv):
    class Marked(nn.Module):  # as the kernels package's decorator leaves a class
        kernel_layer_name = "RMSNorm"

        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.ones(8)), 1e-6

        def forward(self, hidden_states):
            return hidden_states

    module = Marked()
    with use_kernel_mapping({"RMSNorm": {"cpu": "acme/rms-x2@v1:RMSNorm"}}):
        kernelize(module, device="cpu")
    assert len(kernelize_report(module).bound) == 1


def test_the_kernels_packages_kernel_condition_is_honoured(kenv):
    class Conditional(MyRMSNorm):
        kernel_layer_name = "RMSNorm"
        kernel_condition = staticmethod(lambda module: module.weight.numel() == 8)

    model = nn.Sequential(Conditional(8), Conditional(16))
    with use_kernel_mapping({"RMSNorm": {"cpu": "acme/rms@v1:RMSNorm"}}):
        kernelize(model, device="cpu")
    report = kernelize_report(model)
    assert [b.module for b in report.bound] == ["0"] and report.kept[0].reason == "its class's kernel_condition said no"


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"RMSNorm": {"tpu9": "acme/rms:RMSNorm"}}, ValueError),  # unknown device
        ({"RMSNorm": {"npu": "acme/rms"}}, kernelhook.InvalidKernelName),  # no ':Layer'
        ({"RMSNorm": {"npu": {"inference": "acme/rms:RMSNorm"}}}, ValueError),  # not a Mode
        ({"RMSNorm": {Device("npu"): 42}}, TypeError),  # not a repository
        ({"RMSNorm": "acme/rms:RMSNorm"}, TypeError),  # missing the device level
    ],
)
def test_bad_mappings_are_refused_before_anything_changes(bad, error):
    before = mapping.snapshot()
    with pytest.raises(error):
        register_kernel_mapping(bad)
    assert mapping.snapshot() == before


def test_modes_that_kernelize_cannot_use(kenv):
    with pytest.raises(ValueError):
        Mode.INFERENCE | Mode.TRAINING
    with pytest.raises(ValueError):
        kernelize(model_of(1), device="cpu", mode=Mode.FALLBACK)


def test_implicit_kernels_come_only_from_trusted_orgs(kenv, monkeypatch):
    untrusted = LayerRepository("acme/rms-x2", "RMSNorm", version=1)
    mapping.offer_kernel_mapping({"RMSNorm": {"npu": untrusted}}, "a library's table")  # replaces the default offer
    try:
        model = model_of(1)
        kernelize(model, device="npu")
        assert "a library's table" in kernelize_report(model).kept[0].reason
        assert "not trusted" in kernelize_report(model).kept[0].reason
        assert kenv.requests == []  # untrusted code is not even downloaded
        monkeypatch.setenv("KERNELHOOK_TRUSTED_ORGS", "someone-else, acme")
        kernelize(model, device="npu")
        assert len(kernelize_report(model).bound) == 2
    finally:
        mapping.withdraw_kernel_mapping("a library's table")
        mapping.offer_kernel_mapping(mapping.DEFAULT_MAPPING, mapping.DEFAULTS_OFFERED_BY)
    # the same repository registered by the user is the user's choice
    with use_kernel_mapping({"RMSNorm": {"npu": "acme/rms-x3@v1:RMSNorm"}}):
        monkeypatch.delenv("KERNELHOOK_TRUSTED_ORGS")
        kernelize(model, device="npu")
        assert len(kernelize_report(model).bound) == 2


def test_the_default_mapping_stays_on_major_version_1_when_a_v2_appears(tmp_path, monkeypatch, system):
    with LocalHub(tmp_path / "hub") as hub:
        hub.create_repo(SEED)
        v1 = hub.commit(SEED, layer_repo(rms_layer()), branch="v1")
        hub.commit(SEED, layer_repo(rms_layer(scale=2.0)), branch="v2")  # a new major version computes otherwise
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
        model = model_of(1)
        with torch.no_grad():
            before = model(x())
            kernelize(model, device="npu")  # no mapping of the user's: kernelhook's default
            after = model(x())
    assert {(b.repo, b.commit) for b in kernelize_report(model).bound} == {(SEED, v1)}
    torch.testing.assert_close(after, before)


def test_trusted_orgs_from_pyproject(tmp_path, monkeypatch):
    from kernelhook.binding import trust

    (tmp_path / "pyproject.toml").write_text('[tool.kernelhook]\ntrusted-orgs = ["my-lab"]\n')
    monkeypatch.chdir(tmp_path)
    assert trust.is_trusted("my-lab/rms") and trust.is_trusted("kernels-community/x")
    assert not trust.is_trusted("stranger/x")
