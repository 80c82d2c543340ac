"""A class's forward run with a kernel in place of a module-level function, leaving the module alone.

transformers' attention classes call ``apply_rotary_pos_emb(...)`` by its global
name. To give one class a kernel for it without patching the module (which would
change every class and every model in the process), kernelize makes the forward
again from the same code object with other globals: a ``GlobalsView``, a dict
holding only the replaced names, whose ``__missing__`` reads everything else from
the module's live ``__dict__``. CPython's LOAD_GLOBAL takes its slow path for a
globals mapping that is not exactly a dict and looks names up with ``__getitem__``,
which honours ``__missing__`` (checked on 3.10 to 3.13, comprehensions and lambdas
inside the forward included: they are made with the frame's globals). Later changes
to the module's globals are seen, since nothing is copied. ``__contains__`` and
``get`` answer for the module too, which is what torch.compile (dynamo) asks of a
frame's globals.

A forward wrapped by decorators (``@deprecate_kwarg(...)``, ``functools.wraps``
closures) is made again level by level: each wrapper is rebuilt with the closure
cell that held the wrapped function now holding the rebuilt one. Where the call
cannot be reached that way (the name is called from another method, or a wrapper
keeps the function somewhere other than a closure cell), ``rebind`` returns None and
kernelize keeps the class's forward, saying why.
"""

from __future__ import annotations

import dis
import types


class GlobalsView(dict):
    """Globals for a remade function: the replaced names, then the module's live namespace."""

    __slots__ = ("_namespace",)

    def __init__(self, namespace: dict, replaced: dict):
        super().__init__(replaced)
        dict.__setitem__(self, "__builtins__", namespace.get("__builtins__", __builtins__))
        self._namespace = namespace

    def __missing__(self, name):
        return self._namespace[name]

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self._namespace

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __reduce__(self):  # a view is rebuilt by kernelize, never pickled
        raise TypeError("a kernelhook GlobalsView cannot be pickled")


def loads_global(code: types.CodeType, name: str) -> bool:
    """Whether ``code`` (or code nested in it) reads ``name`` as a global."""
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and instruction.argval == name:
            return True
    return any(loads_global(const, name) for const in code.co_consts if isinstance(const, types.CodeType))


def rebind(function, replaced: dict):
    """``function`` made again so that the names in ``replaced`` mean their new values, or None when no
    level of it (itself, or what it wraps through a closure cell) reads any of them from the module where
    they mean the objects being replaced.

    Args:
        function: a plain Python function (a class's ``forward``).
        replaced: ``{global name: (the module's object, the replacement)}``.
    """
    if not isinstance(function, types.FunctionType):
        return None
    names = {n: new for n, (old, new) in replaced.items() if function.__globals__.get(n) is old
             and loads_global(function.__code__, n)}
    inner = _wrapped_in_closure(function)
    new_inner = None if inner is None else rebind(inner, replaced)
    if not names and new_inner is None:
        return None
    namespace = GlobalsView(function.__globals__, names) if names else function.__globals__
    closure = function.__closure__
    if new_inner is not None:
        closure = tuple(types.CellType(new_inner) if _holds(cell, inner) else cell for cell in closure)
    return _remade(function, namespace, closure, new_inner)


def _wrapped_in_closure(function):
    """The function ``function`` wraps (``__wrapped__``), when a closure cell holds it and nothing else does."""
    inner = getattr(function, "__wrapped__", None)
    if not isinstance(inner, types.FunctionType) or not function.__closure__:
        return None
    if not any(_holds(cell, inner) for cell in function.__closure__):
        return None
    defaults = (function.__defaults__ or ()) + tuple((function.__kwdefaults__ or {}).values())
    return None if any(d is inner for d in defaults) else inner


def _holds(cell, value) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:  # an empty cell
        return False


def _remade(function, namespace: dict, closure, new_inner):
    made = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__, closure)
    made.__kwdefaults__ = function.__kwdefaults__
    made.__dict__.update(function.__dict__)
    if new_inner is not None:
        made.__wrapped__ = new_inner
    for attribute in ("__qualname__", "__module__", "__doc__", "__annotations__"):
        setattr(made, attribute, getattr(function, attribute))
    return made
