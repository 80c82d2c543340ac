"""Kernel layers: when one may be used (Mode, KernelizeFallback), how model code marks a class or a
function for one (use_kernel_forward_from_hub, use_kernel_func_from_hub, use_kernelized_func), and
what a layer must be. Where a layer comes from is repositories.py.

A kernel layer lends one thing, its ``forward``, to modules of another class; it
must not bring state of its own. So a layer class is accepted only when it has
no ``__init__`` of its own, no members beyond ``forward`` and the documented
flags ``has_backward`` and ``can_torch_compile``, and a ``forward`` whose
parameters match the one it replaces.
"""

from __future__ import annotations

import enum
import functools
import inspect
import threading
from types import ModuleType
from typing import Callable

from ..errors import KernelLayerError
from .repositories import describe, function_module_class

FLAGS = ("has_backward", "can_torch_compile")


class Mode(enum.Flag):
    """What kernelize prepares a model for; mappings may name a kernel per mode.

    INFERENCE and TRAINING exclude each other; either may be combined with
    TORCH_COMPILE. FALLBACK is for mappings only: the kernel used when no
    entry for the requested mode exists.
    """

    NONE = 0
    FALLBACK = enum.auto()
    TRAINING = enum.auto()
    INFERENCE = enum.auto()
    TORCH_COMPILE = enum.auto()

    def __or__(self, other):
        union = super().__or__(other)
        if Mode.INFERENCE in union and Mode.TRAINING in union:
            raise ValueError("Mode.INFERENCE and Mode.TRAINING exclude each other.")
        if Mode.FALLBACK in union and union is not Mode.FALLBACK:
            raise ValueError("Mode.FALLBACK cannot be combined with other modes.")
        return union


# For each mode kernelize accepts, the mapping entries to use, best first (the kernels package's order).
MODE_PRIORITY = {
    Mode.INFERENCE: (Mode.INFERENCE, Mode.INFERENCE | Mode.TORCH_COMPILE, Mode.TRAINING,
                     Mode.TRAINING | Mode.TORCH_COMPILE, Mode.FALLBACK),
    Mode.TRAINING: (Mode.TRAINING, Mode.TRAINING | Mode.TORCH_COMPILE, Mode.FALLBACK),
    Mode.INFERENCE | Mode.TORCH_COMPILE: (Mode.INFERENCE | Mode.TORCH_COMPILE, Mode.TRAINING | Mode.TORCH_COMPILE,
                                          Mode.FALLBACK),
    Mode.TRAINING | Mode.TORCH_COMPILE: (Mode.TRAINING | Mode.TORCH_COMPILE, Mode.FALLBACK),
}

class KernelizeFallback(enum.Flag):
    """The cases in which kernelize keeps a module's own forward instead of raising (the ``kernels``
    package's flag). ``use_fallback=True`` is ALL: kernelhook also keeps the forward when a kernel
    cannot be loaded; ``use_fallback=False`` is NONE.

    NO_LAYER: nothing is mapped for the layer name. NO_DEVICE: nothing for the device.
    NO_COMPATIBLE_PROPERTIES: nothing for the GPU's capability. NO_COMPATIBLE_MODE: nothing for the mode,
    or the kernel lacks backward or torch.compile support for it. CANNOT_LOAD: the kernel cannot be had,
    is not trusted, or does not fit the class it would replace.
    """

    NONE = 0
    NO_LAYER = enum.auto()
    NO_DEVICE = enum.auto()
    NO_COMPATIBLE_PROPERTIES = enum.auto()
    NO_COMPATIBLE_MODE = enum.auto()
    CANNOT_LOAD = enum.auto()
    DEFAULT = NO_LAYER | NO_DEVICE | NO_COMPATIBLE_PROPERTIES | NO_COMPATIBLE_MODE
    ALL = DEFAULT | CANNOT_LOAD


def fallback_cases(use_fallback) -> KernelizeFallback:
    """``use_fallback`` as flags: True is ALL, False is NONE, flags are themselves.

    Raises:
        TypeError: anything else.
    """
    if isinstance(use_fallback, KernelizeFallback):
        return use_fallback
    if isinstance(use_fallback, bool):
        return KernelizeFallback.ALL if use_fallback else KernelizeFallback.NONE
    raise TypeError(f"use_fallback must be True, False or a KernelizeFallback, got {use_fallback!r}")


def use_kernel_forward_from_hub(layer_name: str, condition: Callable | None = None):
    """Mark a class (or a function) so that kernelize may give it the forward of the layer ``layer_name``.

    On a class, it only marks it (``kernel_layer_name``, and ``kernel_condition`` when a condition is
    given: a callable of the module that may say no per instance); the class is returned unchanged.
    On a function, as in the ``kernels`` package, the function becomes an ``nn.Module`` instance that
    calls like the function and that kernelize can rebind, once a module class names it with
    ``use_kernelized_func``.

    Returns:
        The decorator, which returns the class, or the module standing for the function.

    Raises:
        TypeError: ``layer_name`` is not a non-empty string, or the decorated object is neither a
            class nor a function.
    """
    if not isinstance(layer_name, str) or not layer_name:
        raise TypeError(f"use_kernel_forward_from_hub needs a layer name, got {layer_name!r}")

    def mark(target):
        if inspect.isclass(target):
            replace_kernel_forward_from_hub(target, layer_name, condition)
            return target
        if inspect.isfunction(target) or inspect.isbuiltin(target):
            cls = function_module_class(target)
            replace_kernel_forward_from_hub(cls, layer_name, condition)
            return cls()
        raise TypeError(f"use_kernel_forward_from_hub({layer_name!r}) marks classes and functions, not {target!r}")

    return mark


def use_kernel_func_from_hub(func_name: str):
    """Mark a function so that kernelize may replace it with the function mapped as ``func_name``.

    The function becomes an ``nn.Module`` instance that still calls like the function (the
    ``kernels`` package's convention); a module class makes it visible to kernelize with
    ``use_kernelized_func``. Raises TypeError as ``use_kernel_forward_from_hub`` does.
    """
    return use_kernel_forward_from_hub(func_name)


def replace_kernel_forward_from_hub(cls: type, layer_name: str, condition: Callable | None = None) -> None:
    """Mark an existing class (a third party's, say) as ``use_kernel_forward_from_hub`` would."""
    cls.kernel_layer_name = layer_name
    if condition is not None:
        # a staticmethod, so that reading it through an instance does not bind the module to it
        cls.kernel_condition = staticmethod(condition)


def use_kernelized_func(*functions):
    """Class decorator: every instance holds ``functions`` (marked with ``use_kernel_func_from_hub``)
    where kernelize finds them, not as submodules (``module._kernel_funcs``, as the ``kernels``
    package keeps them), so kernelize rebinds them along with the model.

    Raises:
        ValueError: a function is not marked.
    """
    for function in functions:
        if not isinstance(getattr(function, "kernel_layer_name", None), str):
            raise ValueError(f"{getattr(function, '__name__', function)!r} is not marked with use_kernel_func_from_hub "
                             f"or use_kernel_forward_from_hub, so use_kernelized_func cannot offer it to kernelize")

    def attach(cls):
        own_init = cls.__init__

        @functools.wraps(own_init)
        def __init__(self, *args, **kwargs):
            own_init(self, *args, **kwargs)
            held = self.__dict__.setdefault(KERNEL_FUNCS, {})
            for function in functions:
                held[function.kernel_layer_name] = function

        cls.__init__ = __init__
        return cls

    return attach


KERNEL_FUNCS = "_kernel_funcs"  # where use_kernelized_func leaves an instance's functions (the kernels package's name)


_layers_lock = threading.Lock()
_layers: dict[tuple, tuple[type, ModuleType]] = {}


def forget_loaded_layers() -> None:
    """Drop the memo of load_layer, so the next kernelize resolves every repository again
    (for a process that switches caches or Hubs, as tests do)."""
    with _layers_lock:
        _layers.clear()


def load_layer(repo, load_kernel) -> tuple[type, ModuleType]:
    """The layer class a repository names and its kernel module; memoised per process (one resolve
    per repository).

    Raises:
        KernelImportError: the kernel cannot be loaded (any of the loading path's errors).
        KernelLayerError: the kernel has no such layer class (or function).
    """
    key = repo.key()
    with _layers_lock:
        found = _layers.get(key)
    if found is not None:
        return found
    module = repo.module(load_kernel)
    layer = repo.layer_in(module)
    with _layers_lock:
        _layers[key] = (layer, module)
    return layer, module


def validate_layer(layer: type, replaced: type, repo, module: ModuleType) -> str | None:
    """Check a layer against the class whose forward it would replace.

    Returns:
        None when the layer fits every call the class's callers can make; else what some callers
        would trip over (a parameter named differently, or optional parameters only the class's
        forward takes). Such a layer is not broken, only unfit for this class: kernelize keeps the
        class's forward for it when falling back.

    Raises:
        KernelLayerError: the layer breaks a rule of its own (state, members, flags), or cannot take
            the arguments every caller passes (fewer or other kinds of parameters).
    """
    where = f"layer {layer.__name__} from {describe(repo, module)}"
    problem = layer_problem(layer)
    if problem:
        raise KernelLayerError(f"{where} {problem}.")
    hard, soft = _signature_problems(inspect.signature(layer.forward), inspect.signature(replaced.forward))
    if hard:
        raise KernelLayerError(f"{where} cannot replace {replaced.__name__}.forward: {hard}.")
    return f"{where} differs from {replaced.__name__}.forward: {soft}" if soft else None


def layer_problem(layer: type) -> str | None:
    """The first rule a layer class breaks on its own (before any class it would replace is known)."""
    import torch.nn as nn

    if not isinstance(layer, type) or not issubclass(layer, nn.Module):
        return "is not a torch.nn.Module subclass"
    if layer.__init__ is not nn.Module.__init__:
        return "defines __init__: kernel layers must hold no state of their own"
    extra = set(dir(layer)) - set(dir(nn.Module)) - set(FLAGS)
    if extra:
        return f"has members beyond forward and the flags {', '.join(FLAGS)}: {', '.join(sorted(extra))}"
    for flag in FLAGS:
        if not isinstance(getattr(layer, flag, True), bool):
            return f"sets {flag} to {getattr(layer, flag)!r}: it must be True or False"
    if layer.forward is nn.Module.forward:
        return "has no forward of its own"
    return None


def _signature_problems(new: inspect.Signature, old: inspect.Signature) -> tuple[str | None, str | None]:
    """(what breaks every call, what breaks some calls) when ``new`` replaces ``old``; the first is an error."""
    new_params, old_params = list(new.parameters.values()), list(old.parameters.values())
    optional_extra = [p for p in old_params[len(new_params):] if _optional(p)]
    if len(new_params) > len(old_params) or len(old_params) - len(new_params) > len(optional_extra):
        return f"it takes {len(new_params)} parameters, the original {len(old_params)}", None
    for mine, theirs in zip(new_params, old_params):
        if mine.kind != theirs.kind:
            return (f"parameter {mine.name!r} is {mine.kind.description}, the original's {theirs.name!r} is "
                    f"{theirs.kind.description}"), None
        if mine.kind is inspect.Parameter.KEYWORD_ONLY and mine.name != theirs.name:
            return f"keyword-only parameter {mine.name!r} should be named {theirs.name!r}", None
    renamed = [(m.name, t.name) for m, t in zip(new_params[1:], old_params[1:])
               if m.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and m.name != t.name]
    if renamed:
        names = ", ".join(f"{t!r} (the kernel calls it {m!r})" for m, t in renamed)
        return None, f"callers that pass {names} by name would fail"
    if optional_extra:
        names = ", ".join(str(p) for p in optional_extra)
        return None, f"the class's forward also takes {names}, which the kernel's does not"
    return None, None


def _optional(param: inspect.Parameter) -> bool:
    return param.default is not inspect.Parameter.empty or param.kind in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
