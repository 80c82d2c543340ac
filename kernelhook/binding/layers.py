"""Kernel layers: where a layer comes from (LayerRepository), when it may be used (Mode),
how model code marks a class (use_kernel_forward_from_hub), and what a layer must be.

A kernel layer lends one thing, its ``forward``, to modules of another class; it
must not bring state of its own. So a layer class is accepted only when it has
no ``__init__`` of its own, no members beyond ``forward`` and the documented
flags ``has_backward`` and ``can_torch_compile``, and a ``forward`` whose
parameters match the one it replaces.
"""

from __future__ import annotations

import enum
import inspect
import re
import threading
from types import ModuleType

from ..errors import InvalidKernelName, KernelLayerError
from ..loading.names import KernelName, parse_repo_id

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

_SHORT_FORM = re.compile(r"(?P<repo>[^@:\s]+/[^@:\s]+)(?:@(?P<rev>[^:\s]+))?:(?P<layer>[A-Za-z_][A-Za-z0-9_]*)")


class LayerRepository:
    """A layer class in a Hub kernel repo: ``LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1)``.

    The short form ``"org/repo[@rev]:Layer"`` is accepted wherever a repository is expected.
    Bad input fails here, when the repository is made: InvalidKernelName, InvalidRevision.
    """

    __slots__ = ("repo_id", "layer_name", "revision", "version", "_name")

    def __init__(self, repo_id: str, layer_name: str, revision: str | None = None, version: int | None = None):
        self._name: KernelName = parse_repo_id(repo_id, revision, version)  # bad input fails here, early
        if not isinstance(layer_name, str) or not layer_name.isidentifier():
            raise InvalidKernelName(f"{layer_name!r} is not a layer name (a Python identifier such as 'RMSNorm').")
        self.repo_id, self.layer_name, self.revision, self.version = repo_id, layer_name, revision, version

    @classmethod
    def parse(cls, text: str) -> "LayerRepository":
        match = _SHORT_FORM.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidKernelName(
                f"{text!r} is not a layer repository: write 'org/repo:Layer' or 'org/repo@revision:Layer', "
                f"e.g. 'kernels-ext-npu/RMSNorm@v1:RMSNorm'."
            )
        return cls(match["repo"], match["layer"], revision=match["rev"])

    @classmethod
    def coerce(cls, value) -> "LayerRepository":
        if isinstance(value, LayerRepository):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise TypeError(f"expected a LayerRepository or 'org/repo[@rev]:Layer', got {value!r}")

    @property
    def kernel_name(self) -> KernelName:
        return self._name

    def _key(self):
        return (self.repo_id, self.layer_name, self._name.revision)

    def __eq__(self, other):
        return isinstance(other, LayerRepository) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self) -> str:
        return f"LayerRepository({str(self)!r})"

    def __str__(self) -> str:
        revision = f"@{self._name.revision}" if self._name.revision else ""
        return f"{self.repo_id}{revision}:{self.layer_name}"


def use_kernel_forward_from_hub(layer_name: str):
    """Class decorator: kernelize may replace this class's forward with the layer ``layer_name``.

    It only marks the class (``kernel_layer_name``); nothing else about it changes.

    Returns:
        The decorator, which returns the class itself.

    Raises:
        TypeError: ``layer_name`` is not a non-empty string.
    """
    if not isinstance(layer_name, str) or not layer_name:
        raise TypeError(f"use_kernel_forward_from_hub needs a layer name, got {layer_name!r}")

    def mark(cls):
        cls.kernel_layer_name = layer_name
        return cls

    return mark


_layers_lock = threading.Lock()
_layers: dict[tuple, tuple[type, ModuleType]] = {}


def forget_loaded_layers() -> None:
    """Drop the memo of load_layer, so the next kernelize resolves every repository again
    (for a process that switches caches or Hubs, as tests do)."""
    with _layers_lock:
        _layers.clear()


def load_layer(repo: LayerRepository, load_kernel) -> tuple[type, ModuleType]:
    """The layer class and its kernel module; memoised per process (one resolve per repository).

    Raises:
        KernelImportError: the kernel cannot be loaded (any of the loading path's errors).
        KernelLayerError: the kernel has no ``layers`` submodule, or no such class in it.
    """
    with _layers_lock:
        found = _layers.get(repo._key())
    if found is not None:
        return found
    module = load_kernel(repo.kernel_name)
    layers = getattr(module, "layers", None)
    layer = getattr(layers, repo.layer_name, None)
    if not isinstance(layer, type):
        where = "has no layers submodule" if layers is None else f"has no class {repo.layer_name} in its layers"
        raise KernelLayerError(f"{_describe(repo, module)} {where}. Fix: check the layer name in the mapping.")
    with _layers_lock:
        _layers[repo._key()] = (layer, module)
    return layer, module


def validate_layer(layer: type, replaced: type, repo: LayerRepository, module: ModuleType) -> str | None:
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
    where = f"layer {layer.__name__} from {_describe(repo, module)}"
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


def _describe(repo: LayerRepository, module: ModuleType) -> str:
    origin = getattr(module, "__kernelhook__", None)
    return f"{repo.repo_id}@{origin.commit[:12]} [{origin.variant}]" if origin else str(repo)
