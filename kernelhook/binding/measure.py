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
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import statistics
import time
from typing import NamedTuple

logger = logging.getLogger("kernelhook")

MARGIN = 0.05  # the kernel's median must be at least this fraction below the native one to be bound
WARMUP = 3  # calls of each forward before timing: lazy initialisation, caches, autotuning
REPEATS = 7  # timed repeats of each forward, interleaved; the median of them decides
MIN_REPEAT_S = 0.002  # each forward's calls per repeat are raised until a repeat takes this long (to MAX_CALLS)
MAX_CALLS = 256


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
    npu = getattr(torch, "npu", None)
    if device_type == "npu" and npu is not None and hasattr(npu, "get_device_name"):
        return f"npu {npu.get_device_name()}"
    return f"{device_type} {_cpu_name()}"


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one; else the machine (platform.processor() on
    Linux runs ``uname -p`` in a subprocess, which costs more than a remembered decision does)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("model name", "Model", "cpu model")) and ":" in line:
                    return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.machine() or "unknown"


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
