"""Which kernel layer a module class is, if any.

1. A ``kernel_layer_name`` class attribute: set by kernelhook's or the ``kernels``
   package's ``use_kernel_forward_from_hub``.
2. A stock transformers class. transformers marks its layers only when a
   compatible ``kernels`` package is installed; without it, a class whose name is
   in the table below is taken as that layer, but only when transformers' own
   source decorates it with ``use_kernel_forward_from_hub``, and with the name it
   gives there. Many classes end in ``RMSNorm`` yet compute something else
   (GemmaRMSNorm scales by ``1 + weight``; Qwen3.5's norms are zero-centred and
   marked "RMSNormZeroCentered"): binding a plain RMSNorm kernel to them would
   silently change the model's output, so the name alone never decides.

    class name               layer name
    *RMSNormGated            RMSNormGated
    *RMSNorm                 RMSNorm (or what transformers' decorator says)
    SiLUActivation           SiLU
    GELUActivation           GeLU
    FastGELUActivation       FastGELU
    NewGELUActivation        NewGELU
    QuickGELUActivation      QuickGELU
    GELUTanh                 GeluTanh
    MultiScaleDeformableAttention, Llama4TextMoe   themselves
"""

from __future__ import annotations

import functools
import logging
import re
import sys

logger = logging.getLogger("kernelhook")

TRANSFORMERS_TABLE = (
    (re.compile(r".+RMSNormGated"), "RMSNormGated"),
    (re.compile(r".+RMSNorm"), "RMSNorm"),
    (re.compile(r"SiLUActivation"), "SiLU"),
    (re.compile(r"GELUActivation"), "GeLU"),
    (re.compile(r"FastGELUActivation"), "FastGELU"),
    (re.compile(r"NewGELUActivation"), "NewGELU"),
    (re.compile(r"QuickGELUActivation"), "QuickGELU"),
    (re.compile(r"GELUTanh"), "GeluTanh"),
    (re.compile(r"MultiScaleDeformableAttention"), "MultiScaleDeformableAttention"),
    (re.compile(r"Llama4TextMoe"), "Llama4TextMoe"),
)
_DECORATED = re.compile(r'@use_kernel_forward_from_hub\(\s*["\'](\w+)["\']\s*\)\s*\n(?:\s*@[^\n]*\n)*\s*class\s+(\w+)\b')


def layer_name_of(cls: type) -> str | None:
    marked = getattr(cls, "kernel_layer_name", None)
    if isinstance(marked, str):
        return marked
    module = getattr(cls, "__module__", "") or ""
    if module == "transformers" or module.startswith("transformers."):
        return _transformers_layer_name(cls.__name__, module)
    return None


def marked_class(cls: type) -> type | None:
    """The class in ``cls``'s bases (or ``cls``) that carries the ``kernel_layer_name`` mark, if any."""
    return next((c for c in cls.__mro__ if isinstance(vars(c).get("kernel_layer_name"), str)), None)


@functools.lru_cache(maxsize=None)
def _transformers_layer_name(class_name: str, module_name: str) -> str | None:
    table_name = next((name for pattern, name in TRANSFORMERS_TABLE if pattern.fullmatch(class_name)), None)
    if table_name is None:
        return None
    decorated = _decorated_in_source(module_name)
    if decorated is None:  # no source to read: trust the table only where the name is exact
        return table_name if not class_name.endswith("RMSNorm") and not class_name.endswith("RMSNormGated") else None
    if class_name not in decorated:
        logger.debug("%s.%s is not marked for hub kernels by transformers; left alone", module_name, class_name)
        return None
    return decorated[class_name]


@functools.lru_cache(maxsize=None)
def _decorated_in_source(module_name: str) -> dict[str, str] | None:
    """{class name: layer name} for each class a transformers module decorates, or None without source."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return None
    return {cls: layer for layer, cls in _DECORATED.findall(source)}
