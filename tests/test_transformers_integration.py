"""transformers as its users use it: kernelhook.transformers.enable(), then from_pretrained(use_kernels=True),
model.use_kernels, set_use_kernels, train()/eval(); transformers' own kernel table, read from its source.

The model is a tiny Qwen3ForCausalLM built from a config and saved with save_pretrained (no downloads);
kernels come from the loopback Hub (tests/repos.py): examples/kernels/RMSNorm as kernels-ext-npu/RMSNorm,
examples/kernels/rotary as kernels-ext-npu/rotary, acme/rotary (records its calls) and acme/rms-x2 (2x)."""

import copy
import logging
import sys
import threading

import pytest
import torch

import kernelhook
from kernelhook import (
    FuncRepository,
    LayerRepository,
    Mode,
    TransformersOptionError,
    kernelize,
    kernelize_report,
    use_kernel_forward_from_hub,
    use_kernel_mapping,
)
from kernelhook.binding import mapping
from kernelhook.integrations.transformers_table import read_kernel_table

from .conftest import run_python

transformers = pytest.importorskip("transformers")
modeling_utils = pytest.importorskip("transformers.modeling_utils")
from transformers.utils import import_utils  # noqa: E402

OWN_SET_USE_KERNELS = modeling_utils.PreTrainedModel.__dict__["set_use_kernels"]
NORMS = 9  # 2 layers x (input, post-attention, q_norm, k_norm) + the final norm
ATTENTIONS = 2

CPU_MAPPING = {
    "RMSNorm": {"cpu": LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1)},
    "rotary_pos_emb": {"cpu": FuncRepository("kernels-ext-npu/rotary", func_name="apply_rotary_pos_emb", version=1)},
}


@pytest.fixture(scope="module")
def saved_qwen3(tmp_path_factory):
    """A tiny Qwen3ForCausalLM saved with save_pretrained, and token ids to run it on."""
    config = transformers.Qwen3Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen3")
    transformers.Qwen3ForCausalLM(config).save_pretrained(path)
    return path


def ids():
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def load(path, **kwargs):
    return transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)


def logits(model):
    with torch.no_grad():
        return model(ids()).logits


@pytest.fixture
def enabled():
    """kernelhook serves use_kernels for the test; transformers' own method afterwards."""
    if import_utils.is_kernels_available():
        pytest.skip("a kernels package transformers accepts is installed: enable() leaves transformers' path alone")
    assert kernelhook.transformers.enable() is True
    yield
    kernelhook.transformers.disable()
    assert modeling_utils.PreTrainedModel.__dict__["set_use_kernels"] is OWN_SET_USE_KERNELS


def bound_rows(model):
    return sorted((b.module, b.module_class, b.layer_name, b.repo, b.kind) for b in kernelize_report(model).bound)


def expected_rows(model, norm_repo="kernels-ext-npu/RMSNorm", rotary_repo="kernels-ext-npu/rotary"):
    norms = [(n, "Qwen3RMSNorm", "RMSNorm", norm_repo, "layer") for n, m in model.named_modules()
             if type(m).__name__ == "Qwen3RMSNorm"]
    rotary = [(f"{n}.rotary_pos_emb", "apply_rotary_pos_emb", "rotary_pos_emb", rotary_repo, "function")
              for n, m in model.named_modules() if type(m).__name__ == "Qwen3Attention"]
    assert len(norms) == NORMS and len(rotary) == ATTENTIONS
    return sorted(norms + rotary)


# -- enable(): use_kernels through kernelhook --------------------------------------------------------------


def test_importing_kernelhook_or_kernels_hub_never_imports_transformers():
    code = """
        import sys
        import kernels_hub, kernelhook, kernelhook.transformers, kernelhook.binding.kernelize
        kernelhook.transformers.transformers_kernel_table()  # read from source, not imported
        print(sorted(m for m in sys.modules if m.split(".")[0] == "transformers"))
        kernelhook.transformers.enable()
        print("transformers.modeling_utils" in sys.modules)
    """
    result = run_python(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_without_enable_use_kernels_raises_transformers_own_error(saved_qwen3):
    if import_utils.is_kernels_available():
        pytest.skip("a kernels package transformers accepts is installed")
    with pytest.raises(ValueError, match="Kernels are not available"):
        load(saved_qwen3, use_kernels=True)


def test_from_pretrained_use_kernels_binds_every_norm_and_the_rotary_function(kenv, enabled, saved_qwen3):
    plain = logits(load(saved_qwen3))
    with use_kernel_mapping(CPU_MAPPING):
        model = load(saved_qwen3, use_kernels=True)
    report = kernelize_report(model)
    assert model.use_kernels is True and report.mode is Mode.INFERENCE and report.device == "cpu"
    assert bound_rows(model) == expected_rows(model)
    assert {(b.commit, b.variant) for b in report.bound if b.kind == "layer"} == {(kenv.shas["seed"], "torch-universal")}
    attention = model.model.layers[0].self_attn
    assert type(attention) is not transformers.models.qwen3.modeling_qwen3.Qwen3Attention  # kernelhook's subclass
    assert isinstance(attention, transformers.models.qwen3.modeling_qwen3.Qwen3Attention)
    torch.testing.assert_close(logits(model), plain)
    assert "apply_rotary_pos_emb" in vars(transformers.models.qwen3.modeling_qwen3)  # the module is left alone
    assert transformers.models.qwen3.modeling_qwen3.apply_rotary_pos_emb.__module__ == "transformers.models.qwen3.modeling_qwen3"


def test_the_function_kernel_runs_in_place_of_the_stock_function(kenv, enabled, saved_qwen3):
    plain_model = load(saved_qwen3)
    plain = logits(plain_model)
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": FuncRepository("acme/rotary-x2", func_name="apply_rotary_pos_emb",
                                                                      version=1)}}):
        model = load(saved_qwen3, use_kernels=True)
    assert not torch.allclose(logits(model), plain)  # the doubling kernel ran
    torch.testing.assert_close(logits(plain_model), plain)  # and only in the kernelized model
    with use_kernel_mapping({"rotary_pos_emb": {"cpu": FuncRepository("acme/rotary", func_name="apply_rotary_pos_emb",
                                                                      version=1)}}):
        model.set_use_kernels(True)
    calls = next(m for name, m in sys.modules.items() if name.startswith("_kernelhook_") and hasattr(m, "CALLS")
                 and m.__kernelhook__.repo_id == "acme/rotary").CALLS
    before = len(calls)
    torch.testing.assert_close(logits(model), plain)
    assert len(calls) == before + ATTENTIONS


def test_train_and_eval_kernelize_again_for_their_mode(kenv, enabled, saved_qwen3):
    by_mode = {"RMSNorm": {"cpu": {Mode.INFERENCE: LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1),
                                   Mode.TRAINING: "acme/rms-x2@v1:RMSNorm"}}}
    with use_kernel_mapping(by_mode):
        model = load(saved_qwen3, use_kernels=True)
        assert kernelize_report(model).mode is Mode.INFERENCE
        model.train()
        report = kernelize_report(model)
        assert report.mode is Mode.TRAINING and {b.repo for b in report.bound} == {"acme/rms-x2"}
        model.eval()
        report = kernelize_report(model)
        assert report.mode is Mode.INFERENCE and {b.repo for b in report.bound} == {"kernels-ext-npu/RMSNorm"}


def test_the_use_kernels_setter_and_set_use_kernels_kernelize(kenv, enabled, saved_qwen3):
    with use_kernel_mapping(CPU_MAPPING):
        by_setter = load(saved_qwen3)
        assert kernelize_report(by_setter) is None
        by_setter.use_kernels = True
        by_method = load(saved_qwen3)
        by_method.set_use_kernels(True)
    for model in (by_setter, by_method):
        assert model.use_kernels is True and bound_rows(model) == expected_rows(model)
    by_method.use_kernels = False  # recorded, as transformers does; kernels stay until kernelized again
    assert by_method.use_kernels is False


def test_a_kernelized_model_copies_with_its_function_kernels(kenv, enabled, saved_qwen3):
    with use_kernel_mapping(CPU_MAPPING):
        model = load(saved_qwen3, use_kernels=True)
    twin = copy.deepcopy(model)
    stock = transformers.models.qwen3.modeling_qwen3.Qwen3Attention
    attention = type(twin.model.layers[1].self_attn)
    assert attention is not stock and issubclass(attention, stock) and attention.forward is not stock.forward
    torch.testing.assert_close(logits(twin), logits(model))


TORCH_LOAD = """
import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention
model = torch.load({path!r}, weights_only=False)
print(sorted({{type(m.self_attn) is not Qwen3Attention for m in model.model.layers}}))  # kernelhook's subclass
torch.save(model(torch.tensor({ids})).logits, {out!r})
"""


def test_torch_save_keeps_the_function_kernels_in_a_fresh_process_offline(kenv, enabled, saved_qwen3, tmp_path):
    with use_kernel_mapping({"rotary_pos_emb": CPU_MAPPING["rotary_pos_emb"]}):
        model = load(saved_qwen3, use_kernels=True)
    torch.save(model, tmp_path / "model.pt")
    kenv.clear_requests()
    env = {"HF_ENDPOINT": kenv.url, "KERNELHOOK_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    code = TORCH_LOAD.format(path=str(tmp_path / "model.pt"), ids=ids().tolist(), out=str(tmp_path / "out.pt"))
    result = run_python(code, env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["[True]"] and kenv.requests == []
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), logits(model))


def test_torch_compile_traces_through_the_function_kernel_in_one_graph(kenv, enabled, saved_qwen3):
    plain = logits(load(saved_qwen3))
    doubled = {**CPU_MAPPING, "rotary_pos_emb": {"cpu": FuncRepository("acme/rotary-x2", func_name="apply_rotary_pos_emb",
                                                                       version=1)}}
    with use_kernel_mapping(doubled):
        model = load(saved_qwen3, use_kernels=True)
    eager = logits(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # a graph break would raise
    with torch.no_grad():
        out = compiled(ids(), use_cache=False).logits
    torch.testing.assert_close(out, eager)
    assert not torch.allclose(out, plain)  # the kernel, not the stock function, is in the graph


def test_kernel_config_fails_with_what_to_use_instead(kenv, enabled, saved_qwen3):
    model = load(saved_qwen3)
    config = transformers.KernelConfig({"RMSNorm": "kernels-community/layer_norm:LlamaRMSNorm"})
    with pytest.raises(TransformersOptionError, match=r"kernel_config=KernelConfig.*layer_norm.*"
                                                      r"kernelhook\.register_kernel_mapping"):
        model.set_use_kernels(True, kernel_config=config)
    assert kernelize_report(model) is None and model.use_kernels is False


def test_disable_restores_transformers_method_and_its_error(kenv, saved_qwen3):
    if import_utils.is_kernels_available():
        pytest.skip("a kernels package transformers accepts is installed")
    for _ in range(2):  # idempotent both ways
        assert kernelhook.transformers.enable() is True
    assert modeling_utils.PreTrainedModel.set_use_kernels is kernelhook.transformers.set_use_kernels
    for _ in range(2):
        kernelhook.transformers.disable()
    assert modeling_utils.PreTrainedModel.__dict__["set_use_kernels"] is OWN_SET_USE_KERNELS
    assert not kernelhook.transformers.is_enabled()
    with pytest.raises(ValueError, match="Kernels are not available"):
        load(saved_qwen3, use_kernels=True)
    assert kenv.requests == []


def test_enable_and_disable_from_many_threads_leave_one_consistent_state():
    if import_utils.is_kernels_available():
        pytest.skip("a kernels package transformers accepts is installed")
    barrier = threading.Barrier(8)
    errors = []

    def toggle(index):
        try:
            barrier.wait(timeout=30)
            for _ in range(20):
                kernelhook.transformers.enable() if index % 2 else kernelhook.transformers.disable()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=toggle, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == [] and not any(t.is_alive() for t in threads)
        method = modeling_utils.PreTrainedModel.__dict__["set_use_kernels"]
        assert method is (kernelhook.transformers.set_use_kernels if kernelhook.transformers.is_enabled()
                          else OWN_SET_USE_KERNELS)
    finally:
        kernelhook.transformers.disable()
    assert modeling_utils.PreTrainedModel.__dict__["set_use_kernels"] is OWN_SET_USE_KERNELS
    assert "transformers' kernel table" not in {e.offered_by for e in _entries(mapping.snapshot())}


def test_enable_leaves_transformers_own_path_alone_when_it_accepts_the_kernels_package(monkeypatch, caplog):
    monkeypatch.setattr(import_utils, "is_kernels_available", lambda *args, **kwargs: True)
    with caplog.at_level(logging.INFO, logger="kernelhook"):
        assert kernelhook.transformers.enable() is False
    assert "transformers' own path; kernelhook left it alone" in caplog.text
    assert modeling_utils.PreTrainedModel.__dict__["set_use_kernels"] is OWN_SET_USE_KERNELS
    assert not kernelhook.transformers.is_enabled()
    assert "transformers' kernel table" not in {e.offered_by for e in _entries(mapping.snapshot())}


WARM_OFFLINE = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
import kernelhook, kernelhook.transformers, transformers
from kernelhook import FuncRepository, LayerRepository, kernelize_report, register_kernel_mapping
register_kernel_mapping({{
    "RMSNorm": {{"cpu": LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1)}},
    "rotary_pos_emb": {{"cpu": FuncRepository("kernels-ext-npu/rotary", func_name="apply_rotary_pos_emb", version=1)}},
}})
kernelhook.transformers.enable()
model = transformers.AutoModelForCausalLM.from_pretrained({path!r}, use_kernels=True)
print("BOUND", len(kernelize_report(model).bound))
"""


def test_a_warm_run_in_a_fresh_interpreter_offline_makes_no_request_and_logs_each_module(kenv, enabled, saved_qwen3,
                                                                                        tmp_path):
    with use_kernel_mapping(CPU_MAPPING):
        load(saved_qwen3, use_kernels=True)  # warms the cache
    kenv.clear_requests()
    env = {"HF_ENDPOINT": kenv.url, "KERNELHOOK_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = run_python(WARM_OFFLINE.format(path=str(saved_qwen3)), env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    replaced = [line for line in lines if line.startswith("kernelhook kernelize: model.") and " <- " in line]
    assert len([line for line in replaced if "(Qwen3RMSNorm) <- RMSNorm from kernels-ext-npu/RMSNorm@" in line]) == NORMS
    assert len([line for line in replaced if ".rotary_pos_emb (apply_rotary_pos_emb) <- rotary_pos_emb from "
                                             "kernels-ext-npu/rotary@" in line]) == ATTENTIONS
    assert f"BOUND {NORMS + ATTENTIONS}" in lines
    assert kenv.requests == []


# -- transformers' own table ------------------------------------------------------------------------------


def _entries(table):
    return [entry for per_device in table.values() for ranges in per_device.values() for modes in ranges.values()
            for entry in modes.values()]


def test_transformers_table_is_read_from_its_source():
    table = kernelhook.transformers.transformers_kernel_table()
    assert table.path.endswith("hub_kernels.py") and table.skipped == []
    liger = LayerRepository("kernels-community/liger-kernels", "LigerRMSNorm", version=3)
    assert table.mapping["RMSNorm"]["npu"] == {Mode.TRAINING: liger, Mode.INFERENCE: liger}
    assert table.mapping["SwiGLUMLP"]["cuda"][Mode.INFERENCE | Mode.TORCH_COMPILE].layer_name == "LigerSwiGLUMLP"
    device = kernelhook.Device("cuda", kernelhook.CUDAProperties(121, 121))
    assert table.mapping["Qwen3_5GatedDeltaNet"][device].repo_id == "Atlas-Inference/gdn"


SOURCE = '''
def _build_kernel_mapping() -> dict:
    _KERNEL_MAPPING: dict = {
        "RMSNorm": {
            "npu": {Mode.INFERENCE: LayerRepository(repo_id="kernels-community/norms", layer_name="Norm", version=2)},
            "cuda": LayerRepository("kernels-community/norms", "Norm", revision=SOME_REVISION),   # a name: skipped
            "xpu": make_repository("kernels-community/norms"),                                     # a call: skipped
            "neuron": LayerRepository("kernels-community/norms", "Norm"),   # not a device kernelhook knows: skipped
        },
        "rotary_pos_emb": {
            Device(type="cuda", properties=CUDAProperties(min_capability=80, max_capability=90)): {
                Mode.INFERENCE | Mode.TORCH_COMPILE: FuncRepository("kernels-community/rotary", func_name="rope"),
            },
        },
        "Bad": {"cpu": LayerRepository("not a repo id", "X")},                 # refused by LayerRepository
        **EXTRA,                                                               # an expansion: skipped
    }
    return _KERNEL_MAPPING
'''


def test_the_table_evaluator_takes_what_it_knows_and_reports_the_rest():
    table = read_kernel_table(SOURCE)
    assert table.mapping == {
        "RMSNorm": {"npu": {Mode.INFERENCE: LayerRepository("kernels-community/norms", "Norm", version=2)}},
        "rotary_pos_emb": {kernelhook.Device("cuda", kernelhook.CUDAProperties(80, 90)): {
            Mode.INFERENCE | Mode.TORCH_COMPILE: FuncRepository("kernels-community/rotary", func_name="rope")}},
    }
    skipped = {s.where: s.reason for s in table.skipped}
    assert sorted(skipped) == ["**", "Bad/'cpu'", "RMSNorm/'cuda'", "RMSNorm/'neuron'", "RMSNorm/'xpu'"]
    assert "SOME_REVISION" in skipped["RMSNorm/'cuda'"] and "make_repository" in skipped["RMSNorm/'xpu'"]
    assert "neuron" in skipped["RMSNorm/'neuron'"] and "not a repo id" in skipped["Bad/'cpu'"]


def test_precedence_the_user_then_transformers_table_then_kernelhooks_defaults(enabled):
    def chosen(mode=Mode.INFERENCE):
        selection = mapping.select(mapping.snapshot(), "RMSNorm", "npu", None, mode)
        return selection.repo.repo_id, selection.offered_by

    assert chosen() == ("kernels-community/liger-kernels", "transformers' kernel table")
    assert chosen(Mode.TRAINING) == ("kernels-community/liger-kernels", "transformers' kernel table")
    # transformers has nothing for npu under torch.compile: kernelhook's default serves it
    assert chosen(Mode.INFERENCE | Mode.TORCH_COMPILE) == ("kernels-ext-npu/RMSNorm", mapping.DEFAULTS_OFFERED_BY)
    with use_kernel_mapping({"RMSNorm": {"npu": "acme/rms@v1:RMSNorm"}}):  # a plain entry (FALLBACK) of the user's
        assert chosen() == chosen(Mode.TRAINING) == ("acme/rms", None)
    kernelhook.transformers.disable()
    assert chosen() == ("kernels-ext-npu/RMSNorm", mapping.DEFAULTS_OFFERED_BY)


@use_kernel_forward_from_hub("EsmFold2TriangleMultiplication")
class TriangleMultiplication(torch.nn.Module):
    def forward(self, x):
        return x


def test_an_untrusted_entry_of_transformers_table_is_reported_not_downloaded(kenv, enabled, monkeypatch):
    monkeypatch.delenv("KERNELHOOK_TRUSTED_ORGS", raising=False)
    model = torch.nn.Sequential(TriangleMultiplication()).eval()
    kernelize(model, device="cuda")  # transformers maps it on cuda to biohub/esmfold2-trimul
    kept = kernelize_report(model).kept
    assert [(k.module, k.layer_name) for k in kept] == [("0", "EsmFold2TriangleMultiplication")]
    assert "biohub/esmfold2-trimul" in kept[0].reason and "transformers' kernel table" in kept[0].reason
    assert "not trusted" in kept[0].reason
    assert kenv.requests == []


def test_a_trusted_entry_of_transformers_table_is_tried_on_npu(kenv, enabled, saved_qwen3):
    model = load(saved_qwen3)
    kernelize(model, device="npu")  # liger-kernels, which this Hub does not hold: kept, with the reason
    report = kernelize_report(model)
    norms = [k for k in report.kept if k.layer_name == "RMSNorm"]
    assert report.bound == [] and len(norms) == NORMS
    assert all("could not load kernels-community/liger-kernels@v3:LigerRMSNorm" in k.reason for k in norms)
