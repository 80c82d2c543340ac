"""transformers' own kernel table, read from its source rather than run.

transformers keeps its table in ``_build_kernel_mapping`` (the ``_KERNEL_MAPPING``
dict literal) in ``transformers/integrations/hub_kernels.py``, and builds it only
when a ``kernels`` package it accepts is importable, out of that package's classes.
kernelhook reads the same literal with ``ast`` and evaluates it with a small
evaluator that knows only what such a table holds:

    LayerRepository(...), FuncRepository(...), Device(...), CUDAProperties(...),
    ROCMProperties(...)    called with constant arguments (positional or keyword)
    Mode.INFERENCE | Mode.TORCH_COMPILE ...                        modes
    strings, numbers, True/False/None, dicts                        constants

and builds kernelhook's equivalents. Nothing is executed. An entry holding anything
else (a name, another call, an argument kernelhook's classes refuse) is skipped,
and each skipped entry is reported at DEBUG with its line.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import os
from typing import NamedTuple

logger = logging.getLogger("kernelhook")

SOURCE_FILE = ("integrations", "hub_kernels.py")  # under the transformers package
BUILDER = "_build_kernel_mapping"
TABLE_NAME = "_KERNEL_MAPPING"


class Skipped(NamedTuple):
    """An entry of the table that was not taken, and why."""

    where: str  # "RMSNorm" or "RMSNorm/npu"
    line: int
    reason: str


class KernelTable(NamedTuple):
    """transformers' kernel table as kernelhook mapping entries, and what was left out."""

    mapping: dict  # {layer name: {device: repository or {Mode: repository}}}
    skipped: list
    path: str | None


class _Unsupported(Exception):
    """An expression the evaluator does not evaluate."""

    def __init__(self, node: ast.AST, what: str):
        super().__init__(what)
        self.line = getattr(node, "lineno", 0)


def transformers_kernel_table() -> KernelTable:
    """transformers' ``_KERNEL_MAPPING``, read from the installed transformers' source (never imported or run).

    Returns:
        A KernelTable; its mapping is empty (and ``path`` None) when transformers or the table is missing.
    """
    spec = importlib.util.find_spec("transformers")  # the top-level package: found, not imported
    origin = getattr(spec, "origin", None)
    path = os.path.join(os.path.dirname(origin), *SOURCE_FILE) if origin else None
    if path is None or not os.path.isfile(path):
        return KernelTable({}, [], None)
    return _read_file(path)


@functools.lru_cache(maxsize=8)
def _read_file(path: str) -> KernelTable:
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        table = read_kernel_table(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        logger.debug("transformers' kernel table: cannot read %s: %s", path, exc)
        return KernelTable({}, [Skipped("<all>", 0, str(exc))], path)
    for skipped in table.skipped:
        logger.debug("transformers' kernel table (%s, line %d): %s skipped: %s", path, skipped.line, skipped.where,
                     skipped.reason)
    return table._replace(path=path)


def read_kernel_table(source: str) -> KernelTable:
    """The ``_KERNEL_MAPPING`` literal in ``_build_kernel_mapping`` of hub_kernels.py's source, evaluated.

    Raises:
        SyntaxError, ValueError: the source does not parse.
    """
    literal = _find_literal(ast.parse(source))
    if literal is None:
        return KernelTable({}, [Skipped("<all>", 0, f"no {TABLE_NAME} dict in {BUILDER}")], None)
    mapping, skipped = {}, []
    for key, value in zip(literal.keys, literal.values):
        _take(key, value, mapping, skipped)
    return KernelTable(mapping, skipped, None)


def _find_literal(tree: ast.Module) -> ast.Dict | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == BUILDER:
            for statement in ast.walk(node):
                target = _assigned(statement)
                if target == TABLE_NAME and isinstance(statement.value, ast.Dict):
                    return statement.value
    return None


def _assigned(statement) -> str | None:
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.target.id
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id
    return None


def _take(key, value, mapping: dict, skipped: list) -> None:
    """One layer's entry, device by device: a device that cannot be evaluated is skipped alone."""
    try:
        layer_name = _evaluate(key)
        if not isinstance(layer_name, str) or not isinstance(value, ast.Dict):
            raise _Unsupported(value, "not a layer name with a {device: ...} dict")
    except _Unsupported as exc:
        skipped.append(Skipped(ast.unparse(key) if key is not None else "**", exc.line, str(exc)))
        return
    for device_node, entry_node in zip(value.keys, value.values):
        where = f"{layer_name}/{ast.unparse(device_node) if device_node is not None else '**'}"
        try:
            device, entry = _device(device_node), _evaluate(entry_node)
            _check_entry(entry, entry_node)
            mapping.setdefault(layer_name, {})[device] = entry
        except _Unsupported as exc:
            skipped.append(Skipped(where, exc.line, str(exc)))
    if not mapping.get(layer_name):
        mapping.pop(layer_name, None)


def _device(node):
    """A device key: a device type kernelhook knows, or a Device."""
    from ..binding.mapping import Device

    device = _evaluate(node)
    if isinstance(device, str):
        try:
            Device(device)
        except ValueError as exc:
            raise _Unsupported(node, str(exc)) from None
    elif not isinstance(device, Device):
        raise _Unsupported(node, f"{ast.unparse(node)!r} is not a device")
    return device


def _check_entry(entry, node) -> None:
    """A repository, or {Mode: repository}."""
    from ..binding.layers import Mode
    from ..binding.repositories import HubRepository

    modes = entry if isinstance(entry, dict) else {Mode.FALLBACK: entry}
    for mode, repo in modes.items():
        if not isinstance(mode, Mode) or not isinstance(repo, HubRepository):
            raise _Unsupported(node, f"{ast.unparse(node)!r} is not a repository or {{Mode: repository}}")


def _evaluate(node):
    """The value of a table expression, built from kernelhook's classes; _Unsupported for anything else."""
    if node is None:
        raise _Unsupported(node, "a ** expansion")
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Dict):
        return {_evaluate(k): _evaluate(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Mode":
        return _mode(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _combined(node)
    if isinstance(node, ast.Call):
        return _construct(node)
    raise _Unsupported(node, f"{ast.unparse(node)!r} is not something the table evaluator knows")


def _mode(node: ast.Attribute):
    from ..binding.layers import Mode

    if node.attr not in Mode.__members__:
        raise _Unsupported(node, f"Mode.{node.attr} is not a mode kernelhook knows")
    return Mode[node.attr]


def _combined(node: ast.BinOp):
    from ..binding.layers import Mode

    left, right = _evaluate(node.left), _evaluate(node.right)
    if not isinstance(left, Mode) or not isinstance(right, Mode):
        raise _Unsupported(node, f"{ast.unparse(node)!r} combines what are not modes")
    try:
        return left | right
    except ValueError as exc:
        raise _Unsupported(node, str(exc)) from None


def _constructors() -> dict:
    from ..binding.mapping import CUDAProperties, Device, ROCMProperties
    from ..binding.repositories import FuncRepository, LayerRepository

    return {"LayerRepository": LayerRepository, "FuncRepository": FuncRepository, "Device": Device,
            "CUDAProperties": CUDAProperties, "ROCMProperties": ROCMProperties}


def _construct(node: ast.Call):
    name = node.func.id if isinstance(node.func, ast.Name) else None
    constructor = _constructors().get(name)
    if constructor is None:
        raise _Unsupported(node, f"the call {ast.unparse(node.func)}(...) is not one the table evaluator knows")
    if any(k.arg is None for k in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
        raise _Unsupported(node, f"{name}(...) with * or ** arguments")
    args = [_evaluate(a) for a in node.args]
    kwargs = {k.arg: _evaluate(k.value) for k in node.keywords}
    try:
        return constructor(*args, **kwargs)
    except (TypeError, ValueError) as exc:  # kernelhook's own classes refuse it (InvalidKernelName is a ValueError)
        raise _Unsupported(node, f"{ast.unparse(node)}: {exc}") from None
