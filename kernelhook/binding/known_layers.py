"""Which kernel layer a module class is, if any, and which stock functions it calls.

1. A ``kernel_layer_name`` class attribute: set by kernelhook's or the ``kernels``
   package's ``use_kernel_forward_from_hub``.
2. A stock transformers class. transformers marks its layers only when a
   compatible ``kernels`` package is installed; without it its decorators are
   stubs, so kernelhook reads the module's source (with ``ast``, once per module)
   for what they would have marked:

       @use_kernel_forward_from_hub("RMSNorm")            class  -> layer "RMSNorm"
       @use_kernel_forward_from_hub("rotary_pos_emb")     function -> "rotary_pos_emb"
       @use_kernel_func_from_hub("n"), @use_kernel_func_from_hub_with_fallback("n", package)
       @use_kernelized_func(fn) / ([fn1, fn2])            class calls these functions

   in any order among other decorators, each over as many lines as it likes. A
   class is taken only when its own source decorates it, with the name given
   there: many classes end in ``RMSNorm`` yet compute something else (GemmaRMSNorm
   scales by ``1 + weight``; Qwen3.5's norms are marked "RMSNormZeroCentered"),
   and binding a plain RMSNorm kernel to them would silently change the output.
   Only when no source can be read is the table below used, and then only for
   exact class names (never ``*RMSNorm``):

    class name               layer name
    SiLUActivation           SiLU
    GELUActivation           GeLU
    FastGELUActivation       FastGELU
    NewGELUActivation        NewGELU
    QuickGELUActivation      QuickGELU
    GELUTanh                 GeluTanh
    MultiScaleDeformableAttention, Llama4TextMoe   themselves
"""

from __future__ import annotations

import ast
import functools
import logging
import sys
from typing import NamedTuple

logger = logging.getLogger("kernelhook")

WITHOUT_SOURCE = {
    "SiLUActivation": "SiLU",
    "GELUActivation": "GeLU",
    "FastGELUActivation": "FastGELU",
    "NewGELUActivation": "NewGELU",
    "QuickGELUActivation": "QuickGELU",
    "GELUTanh": "GeluTanh",
    "MultiScaleDeformableAttention": "MultiScaleDeformableAttention",
    "Llama4TextMoe": "Llama4TextMoe",
}
_LAYER_MARKS = ("use_kernel_forward_from_hub",)
_FUNCTION_MARKS = ("use_kernel_forward_from_hub", "use_kernel_func_from_hub", "use_kernel_func_from_hub_with_fallback")
_KERNELIZED_MARK = "use_kernelized_func"


class Markers(NamedTuple):
    """What one module's source marks for hub kernels."""

    classes: dict  # class name -> layer name
    functions: dict  # function name -> layer name
    kernelized: dict  # class name -> names of the functions use_kernelized_func gives it, in order


def layer_name_of(cls: type) -> str | None:
    """The kernel layer name of a class: its ``kernel_layer_name``, else what transformers' source marks it."""
    marked = getattr(cls, "kernel_layer_name", None)
    if isinstance(marked, str):
        return marked
    module = _transformers_module(cls)
    return None if module is None else _transformers_layer_name(cls.__name__, module)


def marked_class(cls: type) -> type | None:
    """The class in ``cls``'s bases (or ``cls``) that carries the ``kernel_layer_name`` mark, if any."""
    return next((c for c in cls.__mro__ if isinstance(vars(c).get("kernel_layer_name"), str)), None)


def stock_functions_of(cls: type) -> dict[str, tuple[object, str]]:
    """``{global name: (function, layer name)}`` for each function transformers' source gives a stock class
    with ``use_kernelized_func`` and marks for a hub kernel, where the function is still a plain function.

    With a ``kernels`` package transformers accepts, those functions are modules that instances hold (the
    ``_kernel_funcs`` path kernelize follows already), so they are left out here.
    """
    module_name = _transformers_module(cls)
    markers = None if module_name is None else markers_of(module_name)
    module = sys.modules.get(module_name)
    if markers is None or module is None or cls.__name__ not in markers.kernelized:
        return {}
    namespace = vars(module)
    found = {}
    for name in markers.kernelized[cls.__name__]:
        function = namespace.get(name)
        if function is None or isinstance(getattr(function, "kernel_layer_name", None), str):
            continue
        layer_name = _function_layer_name(function, name, module_name, markers)
        if layer_name is not None:
            found[name] = (function, layer_name)
    return found


def _function_layer_name(function, name: str, module_name: str, markers: Markers) -> str | None:
    """The layer name of a function a module names: marked there, or where it was defined (imported)."""
    home = getattr(function, "__module__", None)
    if home == module_name or not isinstance(home, str):
        return markers.functions.get(name)
    elsewhere = markers_of(home) if _is_transformers(home) else None
    return None if elsewhere is None else elsewhere.functions.get(getattr(function, "__name__", name))


def _transformers_module(cls: type) -> str | None:
    module = getattr(cls, "__module__", "") or ""
    return module if _is_transformers(module) else None


def _is_transformers(module_name: str) -> bool:
    return module_name == "transformers" or module_name.startswith("transformers.")


@functools.lru_cache(maxsize=None)
def _transformers_layer_name(class_name: str, module_name: str) -> str | None:
    markers = markers_of(module_name)
    if markers is None:  # no source to read: trust exact names only
        return WITHOUT_SOURCE.get(class_name)
    layer_name = markers.classes.get(class_name)
    if layer_name is None and (class_name in WITHOUT_SOURCE or class_name.endswith(("RMSNorm", "RMSNormGated"))):
        logger.debug("%s.%s is not marked for hub kernels by transformers; left alone", module_name, class_name)
    return layer_name


@functools.lru_cache(maxsize=None)
def markers_of(module_name: str) -> Markers | None:
    """What an imported module's source marks (read once per module), or None without readable source."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return read_markers(f.read())
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        logger.debug("kernelize: cannot read %s (%s): %s; its classes are taken by exact name only", path,
                     module_name, exc)
        return None


def read_markers(source: str) -> Markers:
    """The hub-kernel markers of a module's top-level classes and functions, read from its source.

    Raises:
        SyntaxError, ValueError: the source does not parse.
    """
    markers = Markers({}, {}, {})
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            _read_class(node, markers)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            layer_name = _first_name_argument(node.decorator_list, _FUNCTION_MARKS)
            if layer_name is not None:
                markers.functions[node.name] = layer_name
    return markers


def _read_class(node: ast.ClassDef, markers: Markers) -> None:
    layer_name = _first_name_argument(node.decorator_list, _LAYER_MARKS)
    if layer_name is not None:
        markers.classes[node.name] = layer_name
    functions = [name for call in _calls(node.decorator_list, (_KERNELIZED_MARK,)) for name in _function_names(call)]
    if functions:
        markers.kernelized[node.name] = functions


def _calls(decorators: list, names: tuple) -> list[ast.Call]:
    """The decorator calls whose callee is one of ``names`` (``name(...)`` or ``module.name(...)``)."""
    return [d for d in decorators if isinstance(d, ast.Call) and _callee(d.func) in names]


def _callee(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def _first_name_argument(decorators: list, names: tuple) -> str | None:
    for call in _calls(decorators, names):
        first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "layer_name"), None)
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
            return first.value
    return None


def _function_names(call: ast.Call) -> list[str]:
    """``use_kernelized_func(fn)``, ``(fn1, fn2)``, ``([fn1, fn2])``: the names of the functions given."""
    names = []
    for argument in call.args:
        items = argument.elts if isinstance(argument, (ast.List, ast.Tuple)) else [argument]
        names += [item.id for item in items if isinstance(item, ast.Name)]
    return names
