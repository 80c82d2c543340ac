"""kernelize(measure=True): bind a kernel only where it beats the class's own forward here.

For each class a kernel would replace, the inputs one of its modules really sees
(recorded by forward pre-hooks while the model runs ``sample_input`` once under
``torch.no_grad``) are fed to the class's own forward and to the kernel's,
interleaved, after warm-up calls, with the device synchronised around each
repeat; the medians decide. The kernel is bound when its median is at least
``MARGIN`` (5%) below the native one; a tie, noise or a slower kernel keeps the
native forward.

Each decision is kept in the cache (``Store.remember_decision``) under a key of
the device's name, the kernel's repo, commit and variant, the layer name, the
native class, and the dtypes and shape class (each dim rounded up to a power of
two) of the inputs, so a later process with the same key binds at once with no
timing, and a new device, dtype, shape class or kernel commit is measured anew.

Learning those input signatures takes a forward of the whole model, which on a
large model costs more than the rest of kernelize together. So each run on
``sample_input`` also keeps an input plan (``Store.remember_input_plan``): the
input signature and the decision key of each measured class, under a key
(``plan_key``) that is cheap to compute without running anything: the device's
name, the autocast state, the sample's own description (every tensor's dtype and
exact shape; numbers, strings and containers as they are), the measured modules
(every one's path; for the first of each class, the classes, parameters' and
buffers' dtypes and shapes of it and everything under it), the dtype of the
model's first parameter, whether the model trains, and each measured class's
kernel repo, commit, variant and layer (so the decision keys the plan names are
the ones a run would compute). A later kernelize with the same key reads the
plan and the decisions it names, and binds with no forward at all; a plan or a
decision missing or damaged sends it down the path above, which writes the plan
again. The key costs a fraction of a microsecond per measured module; the rest
of the model is not walked, so what only the rest shows (a few other layers cast
or replaced, plain attributes that change shapes, the contents of an object
among the inputs) is not seen: at worst it recalls the decision made for another
input signature (a kernel bound where it is slower here, or kept out where it is
faster), never a wrong result, since a bound kernel is one plain kernelize would
bind too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from typing import NamedTuple

from .classes import native_class

logger = logging.getLogger("kernelhook")

MARGIN = 0.05  # the kernel's median must be at least this fraction below the native one to be bound
WARMUP = 3  # calls of each forward before timing: lazy initialisation, caches, autotuning
REPEATS = 7  # timed repeats of each forward, interleaved; the median of them decides
MIN_REPEAT_S = 0.002  # each forward's calls per repeat are raised until a repeat takes this long (to MAX_CALLS)
MAX_CALLS = 256
PLAN_FORMAT = 2  # of the input plan records and their keys; another format is a miss
CPUINFO_READS = 64  # of 1 KiB: /proc/cpuinfo is read no further when no model name is found
MAX_DEPTH = 8  # containers in sample_input deeper than this count by their type alone


class Timing(NamedTuple):
    native_ms: float
    kernel_ms: float

    @property
    def faster(self) -> bool:
        """Whether the kernel wins by the margin."""
        return self.kernel_ms <= (1.0 - MARGIN) * self.native_ms

    def __str__(self) -> str:
        return f"native {self.native_ms:.3g} ms, kernel {self.kernel_ms:.3g} ms"


def device_name(device_type: str) -> str:
    """What decisions are kept per: the accelerator's own name, or the CPU's ("cpu x86_64 <model name>")."""
    import torch

    if device_type in ("cuda", "rocm") and torch.cuda.is_available():
        return f"{device_type} {torch.cuda.get_device_name()}"
    if device_type == "npu":  # asked only here: without torch_npu, torch's module __getattr__ raises, slowly
        npu = getattr(torch, "npu", None)
        if npu is not None and hasattr(npu, "get_device_name"):
            return f"npu {npu.get_device_name()}"
    return f"{device_type} {_cpu_name()}"


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one; else the machine (platform.processor() on
    Linux runs ``uname -p`` in a subprocess, which costs more than a remembered decision does)."""
    with contextlib.closing(_cpuinfo_lines()) as lines:  # closed (the file too) as soon as the name is found
        for line in lines:
            if line.startswith(("model name", "Model", "cpu model")) and ":" in line:
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    return platform.machine() or "unknown"


def _cpuinfo_lines():
    """/proc/cpuinfo's whole lines, read 1 KiB at a time: the kernel makes each CPU's block as it is read
    (on x86 asking that core for its clock), and the model name is in the first block, so stopping there
    costs a fraction of reading the file through a text buffer."""
    try:
        fd = os.open("/proc/cpuinfo", os.O_RDONLY)
    except OSError:
        return
    try:
        pending = b""
        for _ in range(CPUINFO_READS):
            chunk = os.read(fd, 1024)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop() if chunk else b""
            yield from (line.decode("utf-8", "replace") for line in lines)
            if not chunk:
                return
    except OSError:
        return
    finally:
        os.close(fd)


def shape_class(shape) -> list[int]:
    """Each dim rounded up to a power of two: shapes that cost alike share a decision."""
    return [1 if d <= 1 else 1 << (int(d) - 1).bit_length() for d in shape]


def input_signature(args: tuple, kwargs: dict) -> list:
    """[name, dtype, shape class] of every tensor among the inputs, in order."""
    import torch

    named = [(str(i), a) for i, a in enumerate(args)] + sorted(kwargs.items())
    return [[name, str(v.dtype).replace("torch.", ""), shape_class(v.shape)] for name, v in named
            if isinstance(v, torch.Tensor)]


def decision_key(fields: dict) -> str:
    """The cache key of a decision: a digest of every field it depends on."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def time_forward(native_forward, kernel_forward, module, args: tuple, kwargs: dict, device_type: str) -> Timing:
    """Median milliseconds per call of both forwards on ``module`` with these inputs.

    Returns:
        The two medians; every loop is bounded (WARMUP, REPEATS, MAX_CALLS).

    Raises:
        Whatever either forward raises on these inputs.
    """
    import torch

    sync = _synchroniser(device_type)
    with torch.no_grad():
        for _ in range(WARMUP):
            native_forward(module, *args, **kwargs)
            kernel_forward(module, *args, **kwargs)
        native_calls = _calls_for(native_forward, module, args, kwargs, sync)
        kernel_calls = _calls_for(kernel_forward, module, args, kwargs, sync)
        native, kernel = [], []
        for _ in range(REPEATS):  # interleaved, so a burst of load elsewhere hits both
            native.append(_repeat(native_forward, module, args, kwargs, sync, native_calls))
            kernel.append(_repeat(kernel_forward, module, args, kwargs, sync, kernel_calls))
    return Timing(1000 * statistics.median(native), 1000 * statistics.median(kernel))


def _calls_for(forward, module, args, kwargs, sync) -> int:
    calls = 1
    while calls < MAX_CALLS and _repeat(forward, module, args, kwargs, sync, calls) * calls < MIN_REPEAT_S:
        calls *= 4
    return min(calls, MAX_CALLS)


def _repeat(forward, module, args, kwargs, sync, calls: int) -> float:
    """Seconds per call over ``calls`` calls, the device synchronised before and after."""
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        forward(module, *args, **kwargs)
    sync()
    return (time.perf_counter() - start) / calls


def _synchroniser(device_type: str):
    import torch

    if device_type in ("cuda", "rocm") and torch.cuda.is_available():
        return torch.cuda.synchronize
    for name in ("npu", "xpu", "mps"):
        backend = getattr(torch, name, None)
        if device_type == name and backend is not None and hasattr(backend, "synchronize"):
            return backend.synchronize
    return _nothing


def _nothing() -> None:
    return None


def record_inputs(model, modules: dict, sample_input) -> dict:
    """Run the model once on ``sample_input`` and record the inputs the given modules saw.

    Args:
        modules: {key: [module, ...]}; the first call of any module under a key is recorded for it.
        sample_input: the model's positional args (a tuple, or one tensor), or ``(args, kwargs)``.

    Returns:
        {key: (module, args, kwargs)} for every key one of whose modules was called.

    Raises:
        Whatever the model raises on ``sample_input``; the hooks are removed either way.
    """
    import torch

    args, kwargs = _split(sample_input)
    seen: dict = {}
    handles = watch_inputs(modules, seen)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def watch_inputs(modules: dict, seen: dict) -> list:
    """Forward pre-hooks that put into ``seen[key]`` the first (module, args, kwargs) any module under a
    key is called with.

    Returns:
        The hooks' handles: the caller removes them.
    """
    return [module.register_forward_pre_hook(_recorder(seen, key, module), with_kwargs=True)
            for key, members in modules.items() for module in members]


def _recorder(seen: dict, key, module):
    def hook(_module, args, kwargs):
        seen.setdefault(key, (module, tuple(args), dict(kwargs)))

    return hook


def _split(sample_input) -> tuple[tuple, dict]:
    if (isinstance(sample_input, tuple) and len(sample_input) == 2 and isinstance(sample_input[0], (tuple, list))
            and isinstance(sample_input[1], dict)):
        return tuple(sample_input[0]), dict(sample_input[1])
    if isinstance(sample_input, (tuple, list)):
        return tuple(sample_input), {}
    return (sample_input,), {}


# -- input plans: the inputs a run on sample_input gave each measured class, recalled without running it ---------


def plan_key(model, sample_input, device_type: str, kernels: list, paths: list, firsts: list) -> str:
    """The cache key of the input plan for this model, sample and set of kernels; nothing runs.

    Args:
        kernels: one row per measured class, in model order: [native class, layer, repo, commit, variant].
        paths: the path of every module of those classes, in model order, with KEPT_MARK after it where the
            module's own forward stays (someone else set it).
        firsts: the first of those modules of each class, in the order of ``kernels``.

    Returns:
        A hex digest of what decides which inputs the measured classes see (the module docstring says what
        that is and what it cannot see).
    """
    args, kwargs = _split(sample_input)
    head = (PLAN_FORMAT, device_name(device_type), _autocast(device_type), describe([args, kwargs]), kernels,
            model_fingerprint(model, firsts))
    # repr, not json.dumps: the head is made of str, int, float, bool, None, lists and tuples, whose reprs are
    # fixed. The paths go in joined, not as a list's repr: on a model of thousands of modules that is most of
    # the key's cost, and a remembered decision is meant to cost next to nothing
    digest = hashlib.sha256(repr(head).encode())
    digest.update("\n".join(paths).encode())
    return digest.hexdigest()


KEPT_MARK = " (kept)"  # after a path in plan_key's paths: that module keeps its own forward


def describe(value, depth: int = 0):
    """A JSON value for an input: a tensor's dtype and exact shape; a number, string, bool or
    None as itself; tuples, lists and dicts item by item; any other object by its type alone."""
    import torch

    if isinstance(value, torch.Tensor):  # its device is the model's, which device_name already tells
        return ["tensor", _dtype_name(value.dtype), list(value.shape)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and depth < MAX_DEPTH:
        return [type(value).__name__, [describe(item, depth + 1) for item in value]]
    if isinstance(value, dict) and depth < MAX_DEPTH:
        return ["dict", [[str(k), describe(v, depth + 1)] for k, v in sorted(value.items(), key=_by_name)]]
    return ["object", f"{type(value).__module__}.{type(value).__qualname__}"]


def _by_name(item) -> str:
    return str(item[0])


def model_fingerprint(model, firsts: list) -> str:
    """What of the model, besides its measured modules' paths, decides the inputs those modules see, without
    walking all of it.

    Args:
        firsts: the first measured module of each class (the one a run records, as a rule).

    Returns:
        A string (the repr of a flat list; plan_key hashes it): whether the model trains, the dtype of its
        first parameter (a model cast as a whole shows there even where the measured modules hold no
        weights), and for each of ``firsts`` the native class and own parameters' and buffers' names, dtypes
        and shapes of it and of every module under it.
    """
    first = _first_parameter(model, set())
    parts: list = [bool(getattr(model, "training", False)), None if first is None else _dtype_name(first.dtype)]
    for module in firsts:
        _describe_module(module, parts, set())
    return repr(parts)


def _first_parameter(module, memo: set):
    """``next(module.parameters(), None)``, without the three generators it goes through (a module met again,
    as in a cycle, is skipped as parameters() skips it)."""
    memo.add(id(module))
    for parameter in module._parameters.values():
        if parameter is not None:
            return parameter
    for child in module._modules.values():
        if child is not None and id(child) not in memo:
            found = _first_parameter(child, memo)
            if found is not None:
                return found
    return None


def _describe_module(module, parts: list, memo: set) -> None:
    """Append the module's native class, its own tensors and then each child's, depth first (a module met
    again, as in a cycle, is one None)."""
    if id(module) in memo:
        parts.append(None)
        return
    memo.add(id(module))
    cls = native_class(type(module))
    parts += (cls.__module__, cls.__qualname__)
    for tensors in (module._parameters, module._buffers):
        for name, tensor in tensors.items():
            parts.append(name)
            if tensor is not None:
                parts += (_dtype_name(tensor.dtype), tuple(tensor.shape))
    children = module._modules
    parts.append(len(children))
    for name, child in children.items():
        parts.append(name)
        if child is not None:
            _describe_module(child, parts, memo)


def _dtype_name(dtype) -> str:
    """str(dtype), looked up: a dict costs less than str() does."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


_DTYPE_NAMES: dict = {}


def _autocast(device_type: str):
    """[enabled, dtype] of torch.autocast for this device type (it changes the dtypes modules see)."""
    import torch

    kind = "cuda" if device_type == "rocm" else device_type
    try:
        return [torch.is_autocast_enabled(kind), str(torch.get_autocast_dtype(kind))]
    except (RuntimeError, ValueError, TypeError):  # a device type this torch has no autocast for
        return None


def input_plan(kernels: list, decided: list) -> dict:
    """The record of an input plan.

    Args:
        kernels: the rows plan_key was given, one per measured class.
        decided: per class, (the input signature its first module saw on sample_input, the key of its
            decision), or None where no module of it ran.

    Returns:
        {"format", "classes": [{"native", "layer", "inputs", "decision"}], "made_at"}; the inputs are there
        for whoever reads the cache, the decision keys are what a later kernelize follows.
    """
    classes = [{"native": row[0], "layer": row[1], "inputs": None if d is None else d[0],
                "decision": None if d is None else d[1]} for row, d in zip(kernels, decided)]
    return {"format": PLAN_FORMAT, "classes": classes, "made_at": time.time()}


def planned_decisions(record, kernels: list) -> list | None:
    """The decision key (or None: no module of it ran) of each of ``kernels``' classes in a plan record.

    Returns:
        One entry per row of ``kernels``; None when the record is missing, damaged or made for other classes.
    """
    if not isinstance(record, dict) or record.get("format") != PLAN_FORMAT:
        return None
    classes = record.get("classes")
    if not isinstance(classes, list) or len(classes) != len(kernels):
        return None
    found = []
    for row, entry in zip(kernels, classes):
        if not (isinstance(entry, dict) and entry.get("native") == row[0] and entry.get("layer") == row[1]):
            return None
        key = entry.get("decision")
        if key is not None and not _is_digest(key):
            return None
        found.append(key)
    return found


def _is_digest(key) -> bool:
    """A sha256 hex digest, as decision_key makes (it names a file, so nothing else may pass)."""
    return isinstance(key, str) and len(key) == 64 and not key.strip("0123456789abcdef")


def is_decision(record) -> bool:
    """Whether a decision record read from the cache holds what binding needs (else it is measured again)."""
    return (isinstance(record, dict) and isinstance(record.get("bound"), bool) and _is_signature(record.get("inputs"))
            and all(isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)
                    for k in ("native_ms", "kernel_ms")))


def _is_signature(inputs) -> bool:
    """Whether ``inputs`` has the shape input_signature gives: [[name, dtype, [int, ...]], ...]."""
    return isinstance(inputs, list) and all(
        isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], str)
        and isinstance(item[2], list) and all(type(d) is int for d in item[2]) for item in inputs)
