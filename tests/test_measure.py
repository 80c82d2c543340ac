"""kernelize(measure=True): a kernel is bound only where it beats the class's own forward on this
device, and the decision is kept in the cache per device, kernel commit, dtype and shape class.

Timings are never asserted: the kernels differ from the native forwards by a chain of tanh
(tests/measured.py), many times the cost of the work both do, so the decision holds on a loaded machine.
"""

import json
import logging
import platform
from pathlib import Path

import pytest
import torch

from kernelhook import kernelize, kernelize_report, use_kernel_mapping
from kernelhook.binding import measure
from kernelhook.cache.store import Store
from kernelhook.cli import main
from kernelhook.testing import LocalHub

from . import measured
from .conftest import run_python


@pytest.fixture(scope="module")
def measure_hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("measure-hub")) as local_hub:
        for repo_id, code in ((measured.FAST_REPO, measured.FAST_LAYER), (measured.SLOW_REPO, measured.SLOW_LAYER)):
            local_hub.create_repo(repo_id)
            local_hub.commit(repo_id, measured.layer_files(code), branch="v1")
        yield local_hub


@pytest.fixture
def menv(measure_hub, tmp_path, monkeypatch, system):
    monkeypatch.setenv("HF_ENDPOINT", measure_hub.url)
    monkeypatch.setenv("KERNELHOOK_CACHE", str(tmp_path / "cache"))
    return {"HF_ENDPOINT": measure_hub.url, "KERNELHOOK_CACHE": str(tmp_path / "cache")}


@pytest.fixture
def timings(monkeypatch):
    """Every call of the timing function, by layer class: proof of whether a decision was measured."""
    calls = []
    real = measure.time_forward

    def counted(native_forward, kernel_forward, module, *rest):
        calls.append(type(module).__name__)
        return real(native_forward, kernel_forward, module, *rest)

    monkeypatch.setattr(measure, "time_forward", counted)
    return calls


@pytest.fixture
def forwards():
    """Every module call (through nn.Module.__call__) while the test runs, by class: proof of whether a
    kernelize ran the model."""
    calls = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, _args: calls.append(type(module).__name__))
    yield calls
    handle.remove()


def kernelized(dtype=torch.float32, rows=32, mapping=None, model=None, sample=None):
    model = measured.model(dtype) if model is None else model
    sample = (measured.sample(dtype, rows),) if sample is None else sample
    with use_kernel_mapping(mapping or measured.MAPPING):
        kernelize(model, device="cpu", measure=True, sample_input=sample)
    return model, kernelize_report(model)


def rows(report) -> list:
    """What a report says, timings and reasons included."""
    return [tuple(b) for b in report.bound] + [tuple(k) for k in report.kept]


def test_the_faster_kernel_is_bound_and_the_slower_kept(menv, timings):
    reference = measured.model()(measured.sample())
    model, report = kernelized()
    assert sorted(timings) == ["HeavyScale", "LightScale"]  # one measurement per class, not per module
    assert [(b.module, b.module_class) for b in report.bound] == [("1", "HeavyScale"), ("3", "HeavyScale")]
    assert all(b.native_ms > 0 and b.kernel_ms > 0 for b in report.bound)
    assert [(k.module, k.module_class) for k in report.kept] == [("2", "LightScale"), ("4", "LightScale")]
    assert all(k.reason.startswith("measured: native ") and " ms, kernel " in k.reason for k in report.kept)
    assert type(model[1]).forward is not measured.HeavyScale.forward  # the kernel's forward
    assert type(model[2]) is measured.LightScale  # its own
    torch.testing.assert_close(model(measured.sample()), reference)
    decisions = Store().decisions()
    assert sorted((d["layer"], d["bound"]) for d in decisions) == [("HeavyScale", True), ("LightScale", False)]
    assert all(d["inputs"] == [["0", "float32", [32, 64]]] for d in decisions)


def test_a_second_process_binds_from_the_remembered_decision_without_timing_or_running_the_model(menv):
    code = """
        import json, torch
        from kernelhook import kernelize, kernelize_report, use_kernel_mapping
        from kernelhook.binding import measure
        from tests import measured
        calls, real = [], measure.time_forward
        measure.time_forward = lambda *a: calls.append(1) or real(*a)
        forwards = []  # every module call in the process, the model's and its submodules'
        torch.nn.modules.module.register_module_forward_pre_hook(lambda module, args: forwards.append(1))
        model = measured.model()
        with use_kernel_mapping(measured.MAPPING):
            kernelize(model, device="cpu", measure=True, sample_input=measured.sample())
        report = kernelize_report(model)
        print(json.dumps({"calls": len(calls), "forwards": len(forwards), "bound": [b.module for b in report.bound],
                          "kept": [k.reason for k in report.kept],
                          "times": [[b.native_ms, b.kernel_ms] for b in report.bound]}))
    """
    first, second = (run_python(code, menv) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    first, second = json.loads(first.stdout), json.loads(second.stdout)
    assert first["calls"] == 2 and second["calls"] == 0
    assert first["forwards"] == 6 and second["forwards"] == 0  # the model and its 5 modules, once; then never
    assert first["bound"] == second["bound"] == ["1", "3"]
    assert first["kept"] == second["kept"] and first["times"] == second["times"]  # the remembered numbers


def test_a_remembered_input_plan_decides_without_running_the_model(menv, timings, forwards, caplog):
    _, first = kernelized()
    assert forwards.count("Sequential") == 1 and len(timings) == 2
    forwards.clear()
    with caplog.at_level(logging.INFO, logger="kernelhook"):
        model, second = kernelized()
    assert forwards == [] and len(timings) == 2  # neither the model nor a timing ran
    assert rows(second) == rows(first)  # the same kernels, times and reasons
    assert "decided from a remembered input plan, without running the model" in caplog.text
    assert type(model[1]) is not measured.HeavyScale and type(model[2]) is measured.LightScale
    torch.testing.assert_close(model(measured.sample()), measured.model()(measured.sample()))


def test_another_sample_shape_runs_the_model_again(menv, timings, forwards):
    kernelized(rows=32)
    kernelized(rows=32)
    assert forwards.count("Sequential") == 1
    kernelized(rows=100)
    assert forwards.count("Sequential") == 2 and len(timings) == 4  # another shape class: run and measured
    kernelized(rows=30)
    assert forwards.count("Sequential") == 3 and len(timings) == 4  # another shape: run, but 32's decisions hold
    kernelized(rows=30)
    assert forwards.count("Sequential") == 3


class CastIn(torch.nn.Module):
    """A model that takes float32 inputs whatever its own dtype, as a model of embeddings does."""

    def __init__(self):
        super().__init__()
        self.inner = measured.model()

    def forward(self, x):
        return self.inner(x.to(self.inner[0].weight.dtype))


def test_another_model_dtype_runs_the_model_again(menv, timings, forwards):
    sample = (measured.sample(),)  # float32 both times
    kernelized(model=CastIn(), sample=sample)
    kernelized(model=CastIn(), sample=sample)
    assert forwards.count("CastIn") == 1 and len(timings) == 2
    _, report = kernelized(model=CastIn().to(torch.float64), sample=sample)
    assert forwards.count("CastIn") == 2 and len(timings) == 4  # float64 inputs inside: measured anew
    assert {d["inputs"][0][1] for d in Store().decisions()} == {"float32", "float64"}
    assert [b.module for b in report.bound] == ["inner.1", "inner.3"]


def test_another_device_runs_the_model_again(menv, timings, forwards, monkeypatch):
    kernelized()
    kernelized()
    assert forwards.count("Sequential") == 1
    monkeypatch.setattr(measure, "device_name", lambda device_type: f"{device_type} another chip")
    kernelized()
    assert forwards.count("Sequential") == 2 and len(timings) == 4


def test_a_new_kernel_commit_runs_the_model_again(menv, measure_hub, timings, forwards):
    repo_id = "acme/fast-scale-planned"
    measure_hub.create_repo(repo_id)
    measure_hub.commit(repo_id, measured.layer_files(measured.FAST_LAYER), branch="v1")
    mapping = {**measured.MAPPING, "HeavyScale": {"cpu": f"{repo_id}@v1:HeavyScale"}}
    kernelized(mapping=mapping)
    kernelized(mapping=mapping)
    assert forwards.count("Sequential") == 1
    from kernelhook.binding.layers import forget_loaded_layers

    measure_hub.commit(repo_id, {"README.md": "same layer, a new commit\n"}, branch="v1")
    forget_loaded_layers()  # as a fresh process would: resolve v1 again
    kernelized(mapping=mapping)
    assert forwards.count("Sequential") == 2 and sorted(timings) == ["HeavyScale", "HeavyScale", "LightScale"]


def plan_files() -> list:
    return sorted((Path(Store().root) / "input-plans").glob("*.json"))


@pytest.mark.parametrize("damage", ["garbage", "other classes", "bad decision key", "deleted"])
def test_a_damaged_or_missing_input_plan_runs_the_model_and_is_written_again(menv, timings, forwards, damage):
    _, first = kernelized()
    [plan] = plan_files()
    good = json.loads(plan.read_text())
    original = json.loads(json.dumps(good["classes"]))  # a copy: the damage below may change good's
    if damage == "deleted":
        plan.unlink()
    elif damage == "garbage":
        plan.write_bytes(b"\x00{not json")
    elif damage == "other classes":
        plan.write_text(json.dumps({**good, "classes": good["classes"][:1]}))
    else:
        good["classes"][0]["decision"] = "../" + good["classes"][0]["decision"]
        plan.write_text(json.dumps(good))
    _, second = kernelized()
    assert forwards.count("Sequential") == 2 and len(timings) == 2  # run again; the decisions were there
    assert rows(second) == rows(first)
    assert json.loads(plan.read_text())["classes"] == original
    kernelized()
    assert forwards.count("Sequential") == 2  # the plan written again serves the next one


def test_a_plan_whose_decision_is_gone_runs_the_model_and_measures_only_that(menv, timings, forwards):
    kernelized()
    [light] = [p for p in sorted((Path(Store().root) / "decisions").glob("*.json"))
               if json.loads(p.read_text())["layer"] == "LightScale"]
    light.unlink()
    _, second = kernelized()
    assert forwards.count("Sequential") == 2 and sorted(timings) == ["HeavyScale", "LightScale", "LightScale"]
    assert [b.module for b in second.bound] == ["1", "3"] and [k.module for k in second.kept] == ["2", "4"]
    kernelized()
    assert forwards.count("Sequential") == 2 and len(timings) == 3


def test_a_damaged_decision_is_measured_again_whether_a_plan_names_it_or_not(menv, timings, forwards):
    kernelized()
    [light] = [p for p in sorted((Path(Store().root) / "decisions").glob("*.json"))
               if json.loads(p.read_text())["layer"] == "LightScale"]
    light.write_text(json.dumps({"bound": False}))  # a record without its times
    _, second = kernelized()
    assert forwards.count("Sequential") == 2 and sorted(timings) == ["HeavyScale", "LightScale", "LightScale"]
    assert [b.module for b in second.bound] == ["1", "3"] and [k.module for k in second.kept] == ["2", "4"]
    assert json.loads(light.read_text())["native_ms"] > 0  # written again
    kernelized()
    assert forwards.count("Sequential") == 2 and len(timings) == 3


def test_a_class_the_sample_does_not_reach_is_remembered_as_unreached(menv, timings, forwards):
    class Partly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = measured.HeavyScale(), measured.LightScale()

        def forward(self, x):
            return self.used(x)

    _, first = kernelized(model=Partly(), sample=measured.sample())
    _, second = kernelized(model=Partly(), sample=measured.sample())
    assert forwards.count("Partly") == 1 and timings == ["HeavyScale"]
    assert rows(second) == rows(first) and "no module of this class ran on sample_input" in second.kept[0].reason


def test_sample_and_model_fingerprints_see_dtypes_shapes_and_structure():
    x = torch.zeros(3, 5)
    assert measure.describe(((x,), {"mask": None, "n": 2})) == [
        "tuple", [["tuple", [["tensor", "torch.float32", [3, 5]]]], ["dict", [["mask", None], ["n", 2]]]]]
    assert measure.describe(object())[0] == "object"

    def key(model, sample=x):
        classes = (measured.HeavyScale, measured.LightScale)
        found = [(path, module) for path, module in model.named_modules() if isinstance(module, classes)]
        firsts = [next(m for _, m in found if isinstance(m, cls)) for cls in classes
                  if any(isinstance(m, cls) for _, m in found)]
        return measure.plan_key(model, sample, "cpu", [["row"]], [path for path, _ in found], firsts)

    base = key(measured.model())
    assert base == key(measured.model())
    assert base != key(measured.model().to(torch.float64))
    assert base != key(torch.nn.Sequential(*measured.model()[:4]))  # fewer modules: other paths
    assert base != key(measured.model(), torch.zeros(3, 6))  # another sample shape
    fingerprint = measure.model_fingerprint(measured.model(), [measured.model()[1]])
    assert fingerprint == "[True, 'torch.float32', 'tests.measured', 'HeavyScale', 'weight', 'torch.float32', (64,), 0]"
    assert fingerprint != measure.model_fingerprint(measured.model().eval(), [measured.model()[1]])
    weightless = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())  # a measured module with no weights
    before = measure.model_fingerprint(weightless, [weightless[1]])
    assert before != measure.model_fingerprint(weightless.to(torch.float64), [weightless[1]])
    kept = measure.plan_key(weightless, x, "cpu", [["row"]], ["1" + measure.KEPT_MARK], [weightless[1]])
    assert kept != measure.plan_key(weightless, x, "cpu", [["row"]], ["1"], [weightless[1]])


def test_the_cpu_is_named_by_the_model_name_in_proc_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo here")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
             if line.startswith(("model name", "Model", "cpu model")) and ":" in line]
    assert measure.device_name("cpu") == f"cpu {platform.machine()} {names[0] if names else ''}".rstrip()


def test_decisions_do_not_leak_across_dtypes_or_shape_classes(menv, timings):
    kernelized(torch.float32, rows=32)
    assert len(timings) == 2
    kernelized(torch.float64, rows=32)
    assert len(timings) == 4  # another dtype: measured again
    kernelized(torch.float32, rows=100)
    assert len(timings) == 6  # 100 rows are in the class of 128, not of 32
    _, report = kernelized(torch.float32, rows=30)
    assert len(timings) == 6  # 30 rows share the class of 32: remembered
    assert [b.module for b in report.bound] == ["1", "3"]
    assert len(Store().decisions()) == 6


def test_a_new_commit_of_the_kernel_is_measured_again(menv, measure_hub, timings):
    repo_id = "acme/fast-scale-recommitted"
    measure_hub.create_repo(repo_id)
    measure_hub.commit(repo_id, measured.layer_files(measured.FAST_LAYER), branch="v1")
    mapping = {**measured.MAPPING, "HeavyScale": {"cpu": f"{repo_id}@v1:HeavyScale"}}
    _, before = kernelized(mapping=mapping)
    kernelized(mapping=mapping)
    assert timings.count("HeavyScale") == 1
    from kernelhook.binding.layers import forget_loaded_layers

    new = measure_hub.commit(repo_id, {"README.md": "same layer, a new commit\n"}, branch="v1")
    forget_loaded_layers()  # as a fresh process would: resolve v1 again
    _, after = kernelized(mapping=mapping)
    assert timings.count("HeavyScale") == 2 and timings.count("LightScale") == 1
    assert before.bound[0].commit != new and after.bound[0].commit == new


def test_without_sample_input_the_first_forward_records_measures_and_binds(menv, timings):
    reference = measured.model()(measured.sample())
    model = measured.model()
    with use_kernel_mapping(measured.MAPPING):
        kernelize(model, device="cpu", measure=True)
    before = kernelize_report(model)
    assert not before.bound and not timings and type(model[1]) is measured.HeavyScale
    assert all("decided after the model's first forward" in k.reason for k in before.kept)
    torch.testing.assert_close(model(measured.sample()), reference)  # the first forward: the classes' own
    assert sorted(timings) == ["HeavyScale", "LightScale"]
    report = kernelize_report(model)
    assert [b.module for b in report.bound] == ["1", "3"] and [k.module for k in report.kept] == ["2", "4"]
    assert type(model[1]) is not measured.HeavyScale and type(model[2]) is measured.LightScale
    assert not model._forward_hooks and not any(m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(model(measured.sample()), reference)
    assert len(timings) == 2  # decided once


def test_kernelize_again_before_the_first_forward_drops_the_deferred_measurement(menv, timings):
    model = measured.model()
    with use_kernel_mapping(measured.MAPPING):
        kernelize(model, device="cpu", measure=True)
        kernelize(model, device="cpu")  # binds both, measures nothing
    model(measured.sample())
    assert not timings and len(kernelize_report(model).bound) == 4
    assert not model._forward_hooks and not any(m._forward_pre_hooks for m in model.modules())


def test_a_class_the_sample_does_not_reach_keeps_its_forward(menv, timings):
    class Partly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = measured.HeavyScale(), measured.LightScale()

        def forward(self, x):
            return self.used(x)  # never self.unused

    model = Partly()
    with use_kernel_mapping(measured.MAPPING):
        kernelize(model, device="cpu", measure=True, sample_input=measured.sample())
    report = kernelize_report(model)
    assert [b.module for b in report.bound] == ["used"] and timings == ["HeavyScale"]
    assert report.kept[0].module == "unused" and "no module of this class ran on sample_input" in report.kept[0].reason


def test_shape_class_rounds_each_dim_up_to_a_power_of_two():
    assert measure.shape_class((1, 30, 32, 33, 0)) == [1, 32, 32, 64, 1]


def test_bench_lists_the_decisions(menv, capsys):
    kernelized()
    assert main(["bench", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["decisions"]
    assert sorted((r["layer"], r["bound"], r["dtype"], r["shape_class"]) for r in rows) == [
        ("HeavyScale", True, "float32", "32x64"), ("LightScale", False, "float32", "32x64")]
    assert main(["bench"]) == 0
    text = capsys.readouterr().out
    assert "HeavyScale" in text and "acme/slow-scale@" in text and "kernel" in text.splitlines()[0]


def test_bench_plot_draws_a_png(menv, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    kernelized()
    assert main(["bench", "--plot", str(tmp_path / "bench.png")]) == 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_is_one_line_naming_the_install(menv, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it fails, as where it is not installed
    kernelized()
    assert main(["bench", "--plot", str(tmp_path / "bench.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install matplotlib" in err and not (tmp_path / "bench.png").exists()
