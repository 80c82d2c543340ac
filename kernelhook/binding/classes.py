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
"""

from __future__ import annotations

import copyreg
import logging
import pickle
import threading

from ..errors import KernelImportError, KernelLayerError
from .layers import load_layer, validate_layer

logger = logging.getLogger("kernelhook")


_lock = threading.Lock()
_by_layer: dict[tuple[type, type], type] = {}  # (native class, layer) -> kernel class
_made: dict[type, tuple[type, object]] = {}  # kernel class -> (native class, spec)
_by_spec: dict[tuple[type, object], type] = {}  # for unpickling: (native class, spec) -> kernel class
_kernel_forwards: set = set()  # every layer forward a kernel class carries


def kernel_class(native: type, layer: type, spec) -> type:
    """The subclass of ``native`` whose forward is ``layer.forward`` (made once per pair).

    ``spec`` is the repository the layer came from, pinned to its commit: what a pickle records.
    """
    with _lock:
        made = _by_layer.get((native, layer))
        if made is None:
            made = type(native.__name__, (native,), {
                "forward": layer.forward,
                "__module__": native.__module__,
                "__qualname__": native.__qualname__,
                "__doc__": native.__doc__,
                "__reduce_ex__": _reduce_ex,
            })
            _by_layer[(native, layer)] = made
            _made[made] = (native, spec)
            _by_spec.setdefault((native, spec), made)
            _kernel_forwards.add(layer.forward)
        return made


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
    from ..loading.api import load_kernel  # only unpickling in a fresh process gets here

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
