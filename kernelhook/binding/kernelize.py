"""kernelize: bind Hub kernel layers onto a model.

    mapping lookup -> LayerRepository -> (the loader's data path) -> layer class
      -> validate -> forward bound per instance

Binding sets ``forward`` on each instance, bound to it: the module tree, the
parameters and the state_dict are untouched, and a call costs what calling the
layer's forward as the class's own would. Each call first restores what the
class defines, so kernelizing again for another device or mode starts clean.
Decisions are made once per class, so a model of a thousand norms costs one
lookup and one load.
"""

from __future__ import annotations

import logging
import weakref
from types import MethodType, ModuleType
from typing import NamedTuple

from ..errors import KernelImportError, KernelizeError, KernelLayerError
from ..loading.api import load_kernel  # the loader's data path: imported with kernelize, not inside its first call
from . import mapping, trust
from .known_layers import layer_name_of
from .layers import FLAGS, MODE_PRIORITY, LayerRepository, Mode, load_layer, validate_layer

logger = logging.getLogger("kernelhook")


class Bound(NamedTuple):  # tuples: one is made per module, so they must be cheap
    module: str  # its path in the model, "" for the model itself
    module_class: str
    layer_name: str
    repo: str
    commit: str
    variant: str


class Kept(NamedTuple):
    module: str
    module_class: str
    layer_name: str
    reason: str


class KernelizeReport:
    """What kernelize bound where, and what kept its own forward and why."""

    def __init__(self, device: str, mode: Mode):
        self.device, self.mode = device, mode
        self.bound: list[Bound] = []
        self.kept: list[Kept] = []

    def __repr__(self) -> str:
        return f"<KernelizeReport {self.device} {self.mode}: {len(self.bound)} bound, {len(self.kept)} kept>"

    def __str__(self) -> str:
        lines = [f"kernelize for {self.device}, {self.mode}: {len(self.bound)} bound, {len(self.kept)} kept"]
        lines += [f"  {b.module or '<model>'}: {b.layer_name} <- {b.repo}@{b.commit[:12]} [{b.variant}]" for b in self.bound]
        lines += [f"  {k.module or '<model>'}: {k.layer_name} kept its forward ({k.reason})" for k in self.kept]
        return "\n".join(lines)


_reports: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def kernelize_report(model) -> KernelizeReport | None:
    """The report of the last kernelize of this model (``bound`` and ``kept`` rows), or None if never kernelized."""
    return _reports.get(model)


class _Plan:
    """What every module of one class gets: a layer, or a reason to keep its forward."""

    __slots__ = ("layer_name", "layer", "repo", "kernel", "reason", "modules", "condition")

    def __init__(self, layer_name: str, condition=None):
        self.layer_name = layer_name
        self.layer: type | None = None
        self.repo: LayerRepository | None = None
        self.kernel: ModuleType | None = None
        self.reason = ""
        self.modules = 0
        self.condition = condition  # the kernels package's per-instance kernel_condition, if the class has one


def kernelize(model, *, device=None, mode: Mode = Mode.INFERENCE, use_fallback: bool = True):
    """Replace the forward of every marked module with the mapped Hub layer's.

    Args:
        model: a torch.nn.Module; its marked submodules (``use_kernel_forward_from_hub``, the
            kernels package's marks, stock transformers layers) are bound per instance.
        device: "npu", "cuda", "rocm", "xpu", "mps", "cpu" or a torch.device (default: the model's).
        mode: ``Mode.INFERENCE`` or ``Mode.TRAINING``, optionally ``| Mode.TORCH_COMPILE``.
        use_fallback: when a kernel cannot be had, keep the module's own forward and log why;
            with False, raise KernelizeError instead.

    Returns:
        The same model; ``kernelize_report(model)`` says what was bound where and what was kept.

    Raises:
        ValueError: ``mode`` is not one kernelize uses.
        KernelizeError: the device cannot be told, or (use_fallback=False) a kernel cannot be had.
        KernelLayerError: a mapped layer breaks a rule, with or without fallback.
    """
    if mode not in MODE_PRIORITY:
        raise ValueError(f"kernelize mode {mode!r}: use Mode.INFERENCE or Mode.TRAINING, optionally | Mode.TORCH_COMPILE")
    device_type = _device_type(model, device)
    capability = _capability() if device_type in ("cuda", "rocm") else None
    table = mapping.snapshot()
    report = KernelizeReport(device_type, mode)
    plans: dict[type, _Plan | None] = {}
    debug = logger.isEnabledFor(logging.DEBUG)
    for path, module in model.named_modules():
        cls = type(module)
        if cls not in plans:
            name = layer_name_of(cls)
            plans[cls] = None if name is None else _plan(cls, name, device_type, capability, mode, table, use_fallback)
        plan = plans[cls]
        if plan is not None:
            _bind(module, path, plan, report, debug)
    _log_summary(plans, device_type, mode)
    _reports[model] = report
    return model


def _plan(cls, layer_name, device_type, capability, mode, table, use_fallback) -> _Plan:
    plan = _Plan(layer_name, condition=_condition_of(cls))
    selection = mapping.select(table, layer_name, device_type, capability, mode)
    if isinstance(selection, str):
        return _keep(plan, selection, use_fallback, logging.INFO)
    plan.repo = selection.repo
    if selection.offered_by is not None and not trust.is_trusted(selection.repo.repo_id):
        reason = (f"{selection.repo} comes from {selection.offered_by} and its org is not trusted; "
                  f"add it to KERNELHOOK_TRUSTED_ORGS, or register the mapping yourself")
        return _keep(plan, reason, use_fallback, logging.WARNING)
    try:
        plan.layer, plan.kernel = load_layer(selection.repo, load_kernel)
    except (KernelImportError, KernelLayerError) as exc:
        return _keep(plan, f"could not load {selection.repo}: {exc}", use_fallback, logging.WARNING, exc)
    validate_layer(plan.layer, cls, selection.repo, plan.kernel)  # a broken layer is an error, fallback or not
    unmet = _unmet_flags(plan.layer, mode)
    if unmet:
        plan.layer = None
        return _keep(plan, f"{selection.repo} {unmet}, needed for {mode}", use_fallback, logging.INFO)
    return plan


def _condition_of(cls):
    """The kernels package's decorator may attach a per-instance condition; honour it."""
    condition = getattr(cls, "kernel_condition", None)
    return condition if callable(condition) else None


def _unmet_flags(layer: type, mode: Mode) -> str | None:
    flags = {flag: getattr(layer, flag, default) for flag, default in zip(FLAGS, (True, False))}
    if Mode.TRAINING in mode and not flags["has_backward"]:
        return "has no backward (has_backward=False)"
    if Mode.TORCH_COMPILE in mode and not flags["can_torch_compile"]:
        return "does not support torch.compile (can_torch_compile is not True)"
    return None


def _keep(plan: _Plan, reason: str, use_fallback: bool, level: int, cause: Exception | None = None) -> _Plan:
    if not use_fallback:
        raise KernelizeError(f"kernelize: layer {plan.layer_name!r}: {reason}. (use_fallback=False)") from cause
    plan.reason = reason
    logger.log(level, "kernelize: %s keeps its own forward: %s", plan.layer_name, reason)
    return plan


def _bind(module, path: str, plan: _Plan, report: KernelizeReport, debug: bool) -> None:
    state = module.__dict__
    state.pop("forward", None)  # back to what the class defines
    plan.modules += 1
    if plan.layer is None:
        report.kept.append(Kept(path, type(module).__name__, plan.layer_name, plan.reason))
        return
    if plan.condition is not None and not plan.condition(module):
        report.kept.append(Kept(path, type(module).__name__, plan.layer_name, "its class's kernel_condition said no"))
        return
    # Straight into the instance dict: nn.Module.__setattr__ would only check that "forward"
    # is no parameter, buffer or submodule, which it never is.
    state["forward"] = MethodType(plan.layer.forward, module)
    origin = plan.kernel.__kernelhook__
    report.bound.append(Bound(path, type(module).__name__, plan.layer_name, origin.repo_id, origin.commit, origin.variant))
    if debug:
        logger.debug("kernelize: %s (%s) <- %s from %s@%s", path or "<model>", type(module).__name__,
                     plan.layer_name, origin.repo_id, origin.commit[:12])


def _log_summary(plans: dict, device_type: str, mode: Mode) -> None:
    for cls, plan in plans.items():
        if plan is not None and plan.layer is not None:
            origin = plan.kernel.__kernelhook__
            logger.info("kernelize: %s -> %s@%s [%s] on %d %s module(s) (%s, %s)", plan.layer_name, origin.repo_id,
                        origin.commit[:12], origin.variant, plan.modules, cls.__name__, device_type, mode)


def _device_type(model, device) -> str:
    if device is None:
        tensor = next(model.parameters(), None)
        if tensor is None:
            tensor = next(model.buffers(), None)
        if tensor is None:
            raise KernelizeError("kernelize: the model has no parameters or buffers to tell its device; pass device=")
        device = tensor.device
    kind = device if isinstance(device, str) else getattr(device, "type", None)
    if not isinstance(kind, str):
        raise KernelizeError(f"kernelize: {device!r} is not a device; use one of {', '.join(mapping.DEVICE_TYPES)}")
    kind = kind.split(":")[0]
    if kind == "cuda" and _is_rocm():
        kind = "rocm"
    if kind not in mapping.DEVICE_TYPES:
        raise KernelizeError(f"kernelize: unknown device {device!r}; use one of {', '.join(mapping.DEVICE_TYPES)}")
    return kind


def _is_rocm() -> bool:
    import torch

    return getattr(torch.version, "hip", None) is not None


def _capability() -> int | None:
    """The current GPU's compute capability as major*10+minor, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor
