"""The classes kernelize makes: a module's own class, with a kernel layer's forward.

``kernel_class(RMSNorm, layer, spec)`` is a subclass of ``RMSNorm`` named like it,
whose only member is ``layer.forward``; kernelize sets it as a module's class.
Keeping the kernel in a class rather than on the instance is what lets a
kernelized module be freed by reference counting alone (an instance holding a
method bound to itself is a cycle), lets ``copy.copy`` run the kernel against
the copy's own attributes, and lets accelerate wrap the kernel like any forward.

Pickling (``torch.save(model)`` too) writes the native class and the kernel's
repo, commit and layer name; loading finds that commit through the cache, as
any kernel import does, and falls back to the native forward with a warning
when it cannot. One class is made per (native class, layer), once per process.

``function_kernel_class(Attention, kernels)`` is the other kind: a subclass whose
forward is the native forward's own code, run with the kernels in place of the
module-level functions it calls (functions.py), for stock classes whose functions
are plain functions (transformers without the ``kernels`` package).
"""

from __future__ import annotations

import copyreg
import logging
import pickle
import threading
from typing import NamedTuple

from ..errors import KernelImportError, KernelLayerError
from .functions import rebind
from .known_layers import stock_functions_of
from .layers import load_layer, validate_layer
from .repositories import function_layer

logger = logging.getLogger("kernelhook")


_lock = threading.Lock()
_by_layer: dict[tuple[type, type], type] = {}  # (native class, layer) -> kernel class
_made: dict[type, tuple[type, object]] = {}  # kernel class -> (native class, spec)
_by_spec: dict[tuple[type, object], type] = {}  # for unpickling: (native class, spec) -> kernel class
_kernel_forwards: set = set()  # every layer forward a kernel class carries
_by_functions: dict[tuple, tuple[type, dict]] = {}  # (native class, kernel callables) -> (kernel class, them)
_layer_instances: dict[type, object] = {}  # a layer class mapped to a function name -> the instance called


def kernel_class(native: type, layer: type, spec) -> type:
    """The subclass of ``native`` whose forward is ``layer.forward`` (made once per pair).

    ``spec`` is the repository the layer came from, pinned to its commit: what a pickle records.
    """
    with _lock:
        made = _by_layer.get((native, layer))
        if made is None:
            made = _subclass(native, layer.forward)
            _by_layer[(native, layer)] = made
            _made[made] = (native, spec)
            _by_spec.setdefault((native, spec), made)
            _kernel_forwards.add(layer.forward)
        return made


class FunctionKernel(NamedTuple):
    """One module-level function a class's forward calls, and the kernel that stands in for it."""

    name: str  # the global name the forward calls
    layer_name: str  # the name it is mapped under ("rotary_pos_emb")
    spec: object  # the repository, pinned to its commit: what a pickle records


def function_kernel_class(native: type, kernels: tuple, replacements: dict) -> type | None:
    """The subclass of ``native`` whose forward calls the kernels in place of the functions it names (made
    once per set of kernels), or None when its forward does not call any of them by name (functions.rebind).

    Args:
        kernels: ``FunctionKernel`` rows, sorted; what a pickle records.
        replacements: ``{global name: (the stock function, the kernel's callable)}``.
    """
    key = (native, tuple(sorted((name, id(new)) for name, (_, new) in replacements.items())))
    with _lock:
        made = _by_functions.get(key)
    if made is not None:
        return made[0]
    forward = rebind(native.forward, replacements)
    if forward is None:
        return None
    with _lock:
        if key not in _by_functions:
            made = _subclass(native, forward)
            _by_functions[key] = (made, replacements)  # holding the callables keeps their ids unique
            _made[made] = (native, kernels)
            _by_spec.setdefault((native, kernels), made)
            _kernel_forwards.add(forward)
        return _by_functions[key][0]


def kernel_callable(layer: type):
    """What a function kernel's layer class calls: the kernel function itself, or (a layer class mapped
    to a function name) one instance of the layer, made once."""
    function = getattr(layer.forward, "__wrapped__", None)
    if callable(function):
        return function
    with _lock:
        instance = _layer_instances.get(layer)
        if instance is None:
            instance = _layer_instances[layer] = layer()
        return instance


def _subclass(native: type, forward) -> type:
    return type(native.__name__, (native,), {
        "forward": forward,
        "__module__": native.__module__,
        "__qualname__": native.__qualname__,
        "__doc__": native.__doc__,
        "__reduce_ex__": _reduce_ex,
    })


def native_class(cls: type) -> type:
    """The class a kernel class was made from; any other class is its own native class."""
    made = _made.get(cls)
    return cls if made is None else made[0]


def is_kernel_forward(function) -> bool:
    """Whether ``function`` is a layer forward that kernelize has put into a class."""
    try:
        return function in _kernel_forwards
    except TypeError:  # unhashable: not one of ours
        return False


def _reduce_ex(self, protocol):
    """Pickle as the native class plus the kernel's spec, so loading needs no class of kernelhook's making."""
    cls = type(self)
    native, spec = _made[cls]
    reduced = super(cls, self).__reduce_ex__(max(protocol, 2))
    if not (isinstance(reduced, tuple) and reduced[0] is copyreg.__newobj__ and reduced[1][0] is cls):
        raise pickle.PicklingError(
            f"{native.__qualname__} reduces itself in its own way, so its kernel ({spec}) "
            f"cannot be carried through pickling or copying. Fix: pickle the model before kernelize, and "
            f"kernelize the loaded one.")
    return (restore_kernelized, (native, spec, reduced[1][1:]), *reduced[2:])


def restore_kernelized(native: type, spec, newargs: tuple = ()):
    """Unpickling: a new, empty instance of ``native`` with the kernel of ``spec`` when it can be had."""
    cls = _class_for(native, spec)
    return cls.__new__(cls, *newargs)


def _class_for(native: type, spec) -> type:
    with _lock:
        made = _by_spec.get((native, spec))
    if made is not None:
        return made
    from ..loading.api import (
        load_kernel,  # only unpickling in a fresh process gets here
    )

    if isinstance(spec, tuple) and all(isinstance(row, FunctionKernel) for row in spec):
        return _function_class_for(native, spec, load_kernel)
    try:
        layer, kernel = load_layer(spec, load_kernel)
        unfit = validate_layer(layer, native, spec, kernel)
    except (KernelImportError, KernelLayerError) as exc:
        unfit = str(exc)
    if unfit:
        logger.warning("kernelhook: a pickled %s had the kernel %s; it runs its own forward now, because %s",
                       native.__qualname__, spec, unfit)
        return native
    return kernel_class(native, layer, spec)


def _function_class_for(native: type, kernels: tuple, load_kernel) -> type:
    stock = stock_functions_of(native)
    replacements = {}
    try:
        for row in kernels:
            layer, kernel = load_layer(row.spec, load_kernel)
            unfit = validate_layer(layer, function_layer(stock[row.name][0]), row.spec, kernel)
            if unfit:
                break
            replacements[row.name] = (stock[row.name][0], kernel_callable(layer))
    except (KernelImportError, KernelLayerError, KeyError) as exc:
        unfit = f"{type(exc).__name__}: {exc}"
    made = None if unfit else function_kernel_class(native, kernels, replacements)
    if made is None:
        logger.warning("kernelhook: a pickled %s had function kernels (%s); it runs its own forward now, because %s",
                       native.__qualname__, ", ".join(str(row.spec) for row in kernels),
                       unfit or "its forward no longer calls them by name")
        return native
    return made
