"""kernelize: bind Hub kernel layers onto a model.

    mapping lookup -> LayerRepository -> (the loader's data path) -> layer class
      -> validate (every class, before anything changes) -> bind

A kernel replaces the forward of the class that was marked. Binding gives each
chosen module a class of kernelhook's making: a subclass of its own class whose
only member is the layer's ``forward`` (classes.py). The module tree, the
parameters and the state_dict are untouched, ``isinstance`` holds, a call costs
what the class's own forward would, the module holds no reference to itself
(reference counting alone frees a kernelized model), and copies, pickles and
``torch.save`` keep the kernel.

What others put on an instance stays theirs: accelerate's hooks (an instance
``forward`` that calls ``module._old_forward``) keep running around the kernel;
any other instance ``forward`` kernelize did not set is kept and reported, or,
with ``use_fallback=False``, refused. Every class is planned and validated
before a module changes, so an error leaves the model as it was. Decisions are
made once per class: a model of a thousand norms costs one lookup and one load.

Functions: a module holding marked functions (``use_kernelized_func``) gets each
function module rebound, as the ``kernels`` package does. A stock transformers class
whose functions are plain functions (transformers without the ``kernels`` package)
gets a class of its own whose forward runs with the kernel in place of the function
it calls by name (functions.py); the module's globals are never changed. Both are
reported with kind "function", as ``<module path>.<mapped name>``.
"""

from __future__ import annotations

import logging
import time
import weakref
from types import MethodType, ModuleType
from typing import NamedTuple

from ..cache.store import Store  # loading.api imports it too: nothing more is imported for measure=True
from ..errors import KernelImportError, KernelizeError, KernelLayerError
from ..loading.api import (
    load_kernel,  # the loader's data path: imported with kernelize, not inside its first call
)
from . import classes, mapping, trust
from . import measure as measuring
from .functions import rebind
from .known_layers import layer_name_of, marked_class, stock_functions_of
from .layers import (
    FLAGS,
    KERNEL_FUNCS,
    MODE_PRIORITY,
    KernelizeFallback,
    Mode,
    fallback_cases,
    load_layer,
    validate_layer,
)
from .repositories import function_layer

logger = logging.getLogger("kernelhook")


class Bound(NamedTuple):  # tuples: one is made per module, so they must be cheap
    module: str  # its path in the model, "" for the model itself; "<path>.<name>" for a function it holds
    module_class: str  # the class, or the function's name
    layer_name: str
    repo: str
    commit: str
    variant: str
    kind: str = "layer"  # or "function" (use_kernelized_func)
    native_ms: float | None = None  # measure=True: the medians that decided (measured now or remembered)
    kernel_ms: float | None = None


class Kept(NamedTuple):
    module: str
    module_class: str
    layer_name: str
    reason: str
    kind: str = "layer"


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
    """What every module of one class gets: a kernel class, or a reason to keep its forward."""

    __slots__ = ("layer_name", "kernel_class", "kernel", "reason", "modules", "condition", "functions",
                 "functions_class", "timing", "undecided", "decision")

    def __init__(self, layer_name: str | None, condition=None):
        self.layer_name = layer_name  # None: the class is no layer itself, only calls marked functions
        self.kernel_class: type | None = None  # the class of kernelhook's making that carries the layer's forward
        self.kernel: ModuleType | None = None
        self.reason = ""
        self.modules = 0
        self.condition = condition  # the kernels package's per-instance kernel_condition, if the class has one
        self.functions: list[_FunctionPlan] = []  # stock functions its forward calls (transformers' own)
        self.functions_class: type | None = None  # its forward, calling the function kernels chosen
        self.timing: measuring.Timing | None = None  # measure=True: what decided for kernel_class
        self.undecided: type | None = None  # measure=True without sample_input: the kernel class, until measured
        self.decision: tuple | None = None  # measure=True: (input signature, decision key) of what decided


class _FunctionPlan:
    """A module-level function a stock class's forward calls, and the kernel chosen for it (or why none)."""

    __slots__ = ("name", "function_name", "layer_name", "kernel", "reason")

    def __init__(self, name: str, function, layer_name: str):
        self.name = name  # the global name the forward calls
        self.function_name = getattr(function, "__name__", name)
        self.layer_name = layer_name
        self.kernel: ModuleType | None = None
        self.reason = ""


def kernelize(model, *, device=None, mode: Mode | None = None, use_fallback: bool = True, measure: bool = False,
              sample_input=None):
    """Replace the forward of every marked module with the mapped Hub layer's.

    Args:
        model: a torch.nn.Module; its marked submodules (``use_kernel_forward_from_hub``, the
            kernels package's marks, stock transformers layers) get the kernel's forward, and marked
            functions they call (``use_kernelized_func``, stock transformers attention) the function kernel.
        device: "npu", "cuda", "rocm", "xpu", "mps", "cpu" or a torch.device (default: the model's;
            a model on the meta device needs it).
        mode: ``Mode.INFERENCE`` or ``Mode.TRAINING``, optionally ``| Mode.TORCH_COMPILE``; by default
            the model's own: TRAINING when ``model.training``, else INFERENCE.
        use_fallback: when a kernel cannot be had or does not fit a class, keep the class's own forward
            and log why; with False, raise KernelizeError instead. A ``KernelizeFallback`` names the
            cases that fall back (True is ``KernelizeFallback.ALL``, False ``NONE``).
        measure: bind a layer kernel only where it is faster here: for each class a kernel would replace,
            time its own forward and the kernel's on the inputs one of its modules sees when the model runs
            ``sample_input``, and bind the kernel only when its median is at least 5% lower (measure.MARGIN).
            Each decision is kept in the cache per device, kernel commit and variant, class, dtype and shape
            class, so a later process decides without timing. Function kernels are not measured.
        sample_input: with measure=True, the model's inputs: its positional args (a tuple, or one tensor),
            or ``(args, kwargs)``; the model runs once on them under ``torch.no_grad``, unless the cache holds
            an input plan for this device, sample (dtypes and shapes), measured modules and kernel commits
            whose decisions are all remembered: then nothing runs (measure.py says what the key holds).
            Without it, the classes to measure keep their own forward until the model's first forward, whose
            inputs are recorded; right after it they are measured (or recalled) and bound, and the report is
            redone.

    Returns:
        The same model; ``kernelize_report(model)`` says what was bound where and what was kept.

    Raises:
        ValueError: ``mode`` is not one kernelize uses.
        KernelizeError: the device cannot be told, or (use_fallback=False) a kernel cannot be had, does
            not fit, or a module's forward was set by someone else.
        KernelLayerError: a mapped layer breaks a rule, with or without fallback.
    Nothing of the model has changed when any of these is raised.
    """
    mode = _mode_for(model, mode)
    fallback = fallback_cases(use_fallback)
    device_type = _device_type(model, device)
    capability = _capability() if device_type in ("cuda", "rocm") else None
    table = mapping.snapshot()
    plans: dict[type, _Plan | None] = {}
    marked = []
    for path, module, kind in _candidates(model):  # plan and check everything before changing anything
        cls = classes.native_class(type(module))
        if cls not in plans:
            plans[cls] = _class_plan(cls, device_type, capability, mode, table, fallback)
        if plans[cls] is not None:
            marked.append((path, module, cls, kind, plans[cls], _foreign_forward(module, path, fallback)))
    _cancel_deferred(model)
    if measure and sample_input is not None:
        _measure(model, plans, marked, sample_input, device_type)
    elif measure:
        _defer(model, plans, marked, device_type, mode)
    _bind_all(model, plans, marked, device_type, mode)
    return model


def _bind_all(model, plans: dict, marked: list, device_type: str, mode: Mode) -> None:
    report = KernelizeReport(device_type, mode)
    debug = logger.isEnabledFor(logging.DEBUG)
    for plan in plans.values():
        if plan is not None:
            plan.modules = 0
    for path, module, cls, kind, plan, foreign in marked:
        _bind(module, path, cls, kind, plan, foreign, report, debug)
    _log_summary(plans, device_type, mode)
    _reports[model] = report


def _candidates(model):
    """(path, module, kind) of every submodule, and of every function a submodule holds through
    ``use_kernelized_func`` (a module standing for the function), each once."""
    seen = set()
    for path, module in model.named_modules():
        yield path, module, "layer"
        for name, function in (getattr(module, "__dict__", {}).get(KERNEL_FUNCS) or {}).items():
            if id(function) not in seen:
                seen.add(id(function))
                yield f"{path}.{name}" if path else name, function, "function"


def _mode_for(model, mode: Mode | None) -> Mode:
    if mode is None:
        return Mode.TRAINING if getattr(model, "training", False) else Mode.INFERENCE
    if mode not in MODE_PRIORITY:
        raise ValueError(f"kernelize mode {mode!r}: use Mode.INFERENCE or Mode.TRAINING, optionally | Mode.TORCH_COMPILE")
    return mode


def _class_plan(cls, device_type, capability, mode, table, fallback: KernelizeFallback) -> _Plan | None:
    """The plan for a class that is a marked layer, or whose forward calls marked stock functions; else None."""
    name = layer_name_of(cls)
    stock = stock_functions_of(cls)
    if name is None and not stock:
        return None
    plan = _Plan(None) if name is None else _plan(cls, name, device_type, capability, mode, table, fallback)
    if stock:
        _plan_functions(plan, cls, stock, (device_type, capability, mode, table, fallback))
    return plan


def _plan(cls, layer_name, device_type, capability, mode, table, fallback: KernelizeFallback) -> _Plan:
    plan = _Plan(layer_name, condition=_condition_of(cls))
    owner = marked_class(cls)
    if owner is not None and owner is not cls and cls.forward is not owner.forward:
        reason = (f"{cls.__name__} overrides the forward of {owner.__name__}, the class marked {layer_name!r}; "
                  f"mark {cls.__name__} itself to give it a kernel")
        _keep(plan, reason, KernelizeFallback.ALL, None, logging.INFO)  # its own forward is the user's choice
        return plan
    chosen = _choose(plan, cls, device_type, capability, mode, table, fallback)
    if chosen is not None:
        layer, repo = chosen
        plan.kernel_class = classes.kernel_class(cls, layer, repo.pinned(plan.kernel.__kernelhook__.commit))
    return plan


def _plan_functions(plan: _Plan, cls, stock: dict, context: tuple) -> None:
    """Choose a kernel for each stock function the class's forward calls, and make the class that calls them."""
    rows, replacements = [], {}
    for name, (function, layer_name) in sorted(stock.items()):
        row = _FunctionPlan(name, function, layer_name)
        plan.functions.append(row)
        if plan.kernel_class is not None:
            row.reason = f"{cls.__name__}'s forward is the layer {plan.layer_name!r}'s, which does not call {name}"
            continue
        unreachable = None if rebind(cls.forward, {name: (function, function)}) is not None else (
            f"{cls.__name__}.forward does not call {name} by name itself (another method does, or a wrapper "
            f"holds it where kernelize cannot reach), so no kernel can stand in for it there")
        chosen = _choose(row, function_layer(function), *context, unreachable=unreachable)
        if chosen is not None:
            layer, repo = chosen
            spec = repo.pinned(row.kernel.__kernelhook__.commit)
            rows.append(classes.FunctionKernel(name, layer_name, spec))
            replacements[name] = (function, classes.kernel_callable(layer))
    if replacements:
        plan.functions_class = classes.function_kernel_class(cls, tuple(rows), replacements)


def _choose(plan, replaced: type, device_type, capability, mode, table, fallback: KernelizeFallback,
            unreachable: str | None = None):
    """(layer class, repository) for ``plan.layer_name``, loaded into ``plan.kernel`` and checked against
    ``replaced``; or None, with ``plan.reason`` saying why (or KernelizeError, when that case does not fall back)."""
    selection = mapping.select(table, plan.layer_name, device_type, capability, mode)
    if isinstance(selection, mapping.NoSelection):
        return _keep(plan, selection.reason, fallback, selection.case, logging.INFO)
    repo = selection.repo
    if selection.offered_by is not None and not trust.is_trusted(repo.repo_id):
        reason = (f"{repo} comes from {selection.offered_by} and its org is not trusted; "
                  f"add it to KERNELHOOK_TRUSTED_ORGS, or register the mapping yourself")
        return _keep(plan, reason, fallback, KernelizeFallback.CANNOT_LOAD, logging.WARNING)
    if unreachable:
        return _keep(plan, f"{repo} is mapped, but {unreachable}", fallback, KernelizeFallback.CANNOT_LOAD,
                     logging.WARNING)
    try:
        layer, kernel = load_layer(repo, load_kernel)
    except (KernelImportError, KernelLayerError) as exc:
        return _keep(plan, f"could not load {repo}: {exc}", fallback, KernelizeFallback.CANNOT_LOAD, logging.WARNING,
                     exc)
    unfit = validate_layer(layer, replaced, repo, kernel)  # a broken layer raises, fallback or not
    if unfit:
        reason = f"{unfit}. Fix: map a layer whose forward matches {replaced.__name__}.forward, or no kernel for it"
        return _keep(plan, reason, fallback, KernelizeFallback.CANNOT_LOAD, logging.WARNING)
    _check_registered_mode(layer, plan.layer_name, repo, selection.registered_for)
    unmet = _unmet_flags(layer, mode)
    if unmet:
        return _keep(plan, f"{repo} {unmet}, needed for {mode}", fallback, KernelizeFallback.NO_COMPATIBLE_MODE,
                     logging.INFO)
    plan.kernel = kernel
    return layer, repo


def _check_registered_mode(layer: type, layer_name: str, repo, registered_for: Mode) -> None:
    """A mapping that registers a layer for a mode it cannot serve is a mistake in the mapping (the
    ``kernels`` package raises too), whatever mode kernelize runs in."""
    unmet = _unmet_flags(layer, registered_for)
    if unmet:
        raise KernelLayerError(f"{repo} is registered for {layer_name!r} in {registered_for}, but it {unmet}. Fix: "
                               f"register it for a mode it serves (Mode.INFERENCE, or Mode.FALLBACK), or fix the layer.")


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


def _keep(plan, reason: str, fallback: KernelizeFallback, case: KernelizeFallback | None, level: int,
          cause: Exception | None = None) -> None:
    """Keep the class's forward (or the function) for this reason, or raise KernelizeError when ``case`` is
    not one that falls back."""
    if case is not None and case not in fallback:
        raise KernelizeError(f"kernelize: layer {plan.layer_name!r}: {reason}. (use_fallback={fallback!r})") from cause
    plan.reason = reason
    logger.log(level, "kernelize: %s keeps its own forward: %s", plan.layer_name, reason)
    return None


# -- instance-level forwards: whose are they? ---------------------------------------------------------


def _foreign_forward(module, path: str, fallback: KernelizeFallback) -> str | None:
    """Why this module's own forward must stay (someone else set it on the instance), or None.

    kernelize's own binding lives in the class; an instance ``forward`` is either accelerate's hook
    (which calls ``module._old_forward``, where the kernel then goes), a bound forward of the module's
    classes that accelerate left behind when its hook was removed, or someone else's.
    """
    state = module.__dict__
    forward = state.get("forward")
    if forward is None or _is_accelerate_hooked(state):
        return None
    if _is_class_forward(forward, module):
        return None
    what = f"{type(forward).__name__} {getattr(forward, '__qualname__', forward)!r}"
    reason = (f"its instance has a forward kernelize did not set ({what}); it stays, so the class's and any "
              f"kernel's forward would not run. Fix: delete it (del module.forward) before kernelize, or wrap "
              f"with forward hooks instead")
    if fallback is KernelizeFallback.NONE:
        raise KernelizeError(f"kernelize: module {path or '<model>'} ({type(module).__name__}): {reason}. "
                             f"(use_fallback=False)")
    logger.warning("kernelize: %s (%s) keeps its own forward: %s", path or "<model>", type(module).__name__, reason)
    return reason


def _is_accelerate_hooked(state: dict) -> bool:
    return "_hf_hook" in state and "_old_forward" in state


def _is_class_forward(forward, module) -> bool:
    """A forward bound to this module whose function is its native class's or a kernel class's."""
    if getattr(forward, "__self__", None) is not module:
        return False
    function = getattr(forward, "__func__", None)
    native = classes.native_class(type(module))
    return function is native.forward or classes.is_kernel_forward(function)


# -- measuring ----------------------------------------------------------------------------------------------


_deferred: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> hook handles until its first forward


def _measure(model, plans: dict, marked: list, sample_input, device_type: str) -> None:
    """Keep a class's kernel only where it beats the class's own forward on the inputs its modules see.

    A remembered input plan whose decisions are all in the cache decides with no forward of the model; else the
    model runs on ``sample_input``, what is not remembered is measured, and the plan is written anew."""
    natives = _natives(plans)
    store = Store()
    by_id = {id(plan): plan for plan in plans.values() if plan is not None}
    # marked's entries are (path, module, class, kind, plan, foreign forward): the measured modules' own entries,
    # by index, so a model of thousands of modules costs no new tuple each
    measured = [entry for entry in marked if entry[3] == "layer" and id(entry[4]) in natives]
    if all(foreign is not None for _path, _module, _cls, _kind, _plan, foreign in measured):  # none would be bound
        _decide_all(plans, natives, {}, device_type, "sample_input", store)
        return
    kernels = [_kernel_row(by_id[key], cls) for key, cls in natives.items()]
    firsts: dict = {}
    for _path, module, _cls, _kind, plan, _foreign in measured:
        if id(plan) not in firsts:
            firsts[id(plan)] = module
            if len(firsts) == len(natives):  # as a rule, long before the last module
                break
    paths = [path if foreign is None else path + measuring.KEPT_MARK
             for path, _module, _cls, _kind, _plan, foreign in measured]
    key = measuring.plan_key(model, sample_input, device_type, kernels, paths,
                             [firsts[plan_id] for plan_id in natives if plan_id in firsts])
    if _recall_plan(store.recall_input_plan(key), by_id, natives, kernels, store):
        return
    seen = measuring.record_inputs(model, _members(natives, marked), sample_input)
    _decide_all(plans, natives, seen, device_type, "sample_input", store)
    store.remember_input_plan(key, measuring.input_plan(kernels, [by_id[k].decision for k in natives]))


def _kernel_row(plan: _Plan, cls: type) -> list:
    """[native class, layer, repo, commit, variant]: what an input plan is made for, per measured class."""
    origin = plan.kernel.__kernelhook__
    return [f"{cls.__module__}.{cls.__qualname__}", plan.layer_name, origin.repo_id, origin.commit, origin.variant]


def _recall_plan(record, by_id: dict, natives: dict, kernels: list, store) -> bool:
    """Decide every measured class from a remembered input plan and the decisions it names.

    Returns:
        True when all were decided; False (nothing changed) when the plan is missing or damaged, or a
        decision it names is missing or damaged.
    """
    keys = measuring.planned_decisions(record, kernels)
    if keys is None:
        return False
    recalled = []
    for (plan_id, cls), key in zip(natives.items(), keys):
        found = None if key is None else store.recall_decision(key)
        if key is not None and not measuring.is_decision(found):
            logger.debug("kernelize: the input plan names no usable decision for %s: running sample_input",
                         by_id[plan_id].layer_name)
            return False
        recalled.append((by_id[plan_id], cls, found))
    logger.info("kernelize: %d class(es) decided from a remembered input plan, without running the model on "
                "sample_input", len(recalled))
    for plan, cls, found in recalled:
        if found is None:
            _unreached(plan, "sample_input")
        else:
            _apply(plan, cls, found, "remembered")
    return True


def _natives(plans: dict) -> dict:
    """{id(plan): native class} of the plans with a layer kernel: the classes measure=True decides."""
    return {id(plan): cls for cls, plan in plans.items() if plan is not None and plan.kernel_class is not None}


def _members(natives: dict, marked: list) -> dict:
    """{id(plan): [its modules that would be bound]} for the classes in ``natives``: whose inputs are recorded."""
    members: dict = {}
    for _path, module, _cls, kind, plan, foreign in marked:
        if kind == "layer" and foreign is None and id(plan) in natives:
            members.setdefault(id(plan), []).append(module)
    return members


def _decide_all(plans: dict, natives: dict, seen: dict, device_type: str, source: str, store=None) -> None:
    by_id = {id(plan): plan for plan in plans.values() if plan is not None}
    store = Store() if store is None else store
    for key, cls in natives.items():
        plan = by_id[key]
        if key not in seen:
            _unreached(plan, source)
            continue
        _decide(plan, cls, seen[key], device_type, store)


def _unreached(plan: _Plan, source: str) -> None:
    plan.kernel_class = None
    plan.reason = f"measured: no module of this class ran on {source}, so nothing was timed"


def _defer(model, plans: dict, marked: list, device_type: str, mode: Mode) -> None:
    """measure=True without sample_input: the classes to measure keep their own forward until the model's first
    forward, which records their inputs (pre-hooks); after it, one forward hook measures, binds and removes all."""
    natives = _natives(plans)
    members = _members(natives, marked)
    if not members:
        return
    by_id = {id(plan): plan for plan in plans.values() if plan is not None}
    for key in natives:
        plan = by_id[key]
        plan.undecided, plan.kernel_class = plan.kernel_class, None
        plan.reason = "measure=True: decided after the model's first forward, which runs the class's own"
    seen: dict = {}
    handles = measuring.watch_inputs(members, seen)

    def decide(module, _args, _output):
        handles = _deferred.pop(module, None)
        if handles is None:  # another thread's forward got here first
            return
        for handle in handles:
            handle.remove()
        for key in natives:
            plan = by_id[key]
            plan.kernel_class, plan.undecided = plan.undecided, None
        _decide_all(plans, natives, seen, device_type, "the model's first forward")
        _bind_all(module, plans, marked, device_type, mode)

    handles.append(model.register_forward_hook(decide))
    _deferred[model] = handles


def _cancel_deferred(model) -> None:
    """A kernelize again before the model's first forward plans anew: the earlier one's hooks go."""
    for handle in _deferred.pop(model, ()):
        handle.remove()


def _decide(plan: _Plan, cls: type, recorded: tuple, device_type: str, store) -> None:
    """Measure (or recall) the plan's kernel against ``cls.forward``; drop the kernel unless it wins."""
    module, args, kwargs = recorded
    origin = plan.kernel.__kernelhook__
    fields = {"device": measuring.device_name(device_type), "repo": origin.repo_id, "commit": origin.commit,
              "variant": origin.variant, "layer": plan.layer_name, "native": f"{cls.__module__}.{cls.__qualname__}",
              "inputs": measuring.input_signature(args, kwargs)}
    key = measuring.decision_key(fields)
    plan.decision = (fields["inputs"], key)
    record = store.recall_decision(key)
    how = "remembered"
    if not measuring.is_decision(record):  # none, or one a damaged file left: measured (and written) again
        try:
            timing = measuring.time_forward(cls.forward, plan.kernel_class.forward, module, args, kwargs, device_type)
        except Exception as exc:  # the kernel (or the class) failed on the real inputs: keep the class's own
            plan.kernel_class = None
            plan.reason = f"measured: the kernel failed on the recorded inputs ({type(exc).__name__}: {exc})"
            logger.warning("kernelize: %s (%s) keeps its forward: %s", plan.layer_name, cls.__name__, plan.reason)
            return
        record = {**fields, "native_ms": timing.native_ms, "kernel_ms": timing.kernel_ms, "bound": timing.faster,
                  "margin": measuring.MARGIN, "measured_at": time.time()}
        store.remember_decision(key, record)
        how = "measured"
    _apply(plan, cls, record, how)


def _apply(plan: _Plan, cls: type, record: dict, how: str) -> None:
    """Take a decision (measured or remembered): its times go to the report; a kernel that lost is dropped."""
    plan.timing = measuring.Timing(record["native_ms"], record["kernel_ms"])
    if logger.isEnabledFor(logging.INFO):
        logger.info("kernelize: %s %s (%s) for %s: %s -> %s", how, plan.layer_name, cls.__name__,
                    " ".join(f"{d}{s}" for _, d, s in record["inputs"]), plan.timing,
                    "kernel" if record["bound"] else "native")
    if not record["bound"]:
        plan.kernel_class = None
        plan.reason = f"measured: {plan.timing}; the kernel must be at least {measuring.MARGIN:.0%} faster"


# -- binding ----------------------------------------------------------------------------------------------


def _bind(module, path: str, native: type, kind: str, plan: _Plan, foreign: str | None, report: KernelizeReport,
          debug: bool) -> None:
    plan.modules += 1
    chosen = plan.kernel_class or plan.functions_class
    overruled = None
    if chosen is not None and foreign is not None:
        chosen, overruled = None, foreign
    elif chosen is not None and plan.condition is not None and not plan.condition(module):
        chosen, overruled = None, "its class's kernel_condition said no"
    _set_class(module, chosen or native)
    if plan.layer_name is not None:
        bound = chosen is not None and chosen is plan.kernel_class
        _record(report, path, native.__name__, plan.layer_name, plan.kernel if bound else None,
                overruled or plan.reason, kind, debug, plan.timing)
    for row in plan.functions:
        bound = chosen is not None and chosen is plan.functions_class and row.kernel is not None
        _record(report, f"{path}.{row.layer_name}" if path else row.layer_name, row.function_name, row.layer_name,
                row.kernel if bound else None, overruled or row.reason, "function", debug)


def _record(report: KernelizeReport, path: str, what: str, layer_name: str, kernel: ModuleType | None,
            reason: str, kind: str, debug: bool, timing: measuring.Timing | None = None) -> None:
    """One row of the report: bound to ``kernel``, or kept for ``reason``."""
    if kernel is None:
        report.kept.append(Kept(path, what, layer_name, reason, kind))
        return
    origin = kernel.__kernelhook__
    times = (None, None) if timing is None else timing
    report.bound.append(Bound(path, what, layer_name, origin.repo_id, origin.commit, origin.variant, kind, *times))
    if debug:
        logger.debug("kernelize: %s (%s) <- %s from %s@%s", path or "<model>", what, layer_name, origin.repo_id,
                     origin.commit[:12])


def _set_class(module, cls: type) -> None:
    """Give the module its class, and keep what accelerate wrapped pointing at that class's forward."""
    state = module.__dict__
    if type(module) is not cls:
        # Straight past nn.Module.__setattr__: its parameter and buffer checks (a Python-level isinstance
        # per call) cost as much as the rest of binding, and __class__ is never one of those.
        object.__setattr__(module, "__class__", cls)
    if "forward" not in state and "_old_forward" not in state:
        return  # the common case: nothing on the instance
    forward = state.get("forward")
    hooked = _is_accelerate_hooked(state)
    if forward is not None and not hooked and _is_class_forward(forward, module):
        del state["forward"]  # left behind by a removed hook: the class decides again
    old = state.get("_old_forward")
    if hooked and old is not None and _is_class_forward(old, module):
        state["_old_forward"] = MethodType(cls.forward, module)  # the kernel runs inside the hook


def _log_summary(plans: dict, device_type: str, mode: Mode) -> None:
    for cls, plan in plans.items():
        if plan is None:
            continue
        if plan.kernel_class is not None:
            _log_class(plan.layer_name, plan.kernel, plan.modules, cls.__name__, device_type, mode)
        if plan.functions_class is not None:
            for row in plan.functions:
                if row.kernel is not None:
                    _log_class(row.layer_name, row.kernel, plan.modules, f"{cls.__name__}.{row.name}", device_type,
                               mode)


def _log_class(layer_name: str, kernel: ModuleType, modules: int, where: str, device_type: str, mode: Mode) -> None:
    origin = kernel.__kernelhook__
    logger.info("kernelize: %s -> %s@%s [%s] on %d %s module(s) (%s, %s)", layer_name, origin.repo_id,
                origin.commit[:12], origin.variant, modules, where, device_type, mode)


def _device_type(model, device) -> str:
    if device is None:
        tensor = next(model.parameters(), None)
        if tensor is None:
            tensor = next(model.buffers(), None)
        if tensor is None:
            raise KernelizeError("kernelize: the model has no parameters or buffers to tell its device; pass device=")
        if tensor.device.type == "meta":
            raise KernelizeError(
                "kernelize: the model's weights are on the meta device (not materialised yet, or offloaded by "
                "accelerate), which says nothing of where it will run; pass device=, e.g. device=\"npu\"")
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
