"""``kernelhook check DIR``: validate a kernel repo before it is published.

Rules, each reported with the file it concerns:
  * build/ exists and holds only variant folders whose names parse (variants.py);
  * each variant holds a Python package, found by the rule loading uses
    (repo.find_package): build/<variant>/__init__.py, or exactly one
    build/<variant>/<Name>/__init__.py, or the one named like the repo;
  * metadata.json, where present, is a JSON object with well-typed fields;
  * every layer class in the package's layers.py passes kernelize's own rules.
Variants this machine can import are imported, as the loader executes them
(in a throwaway module name, removed afterwards); the rest (torch_npu or triton missing, say) are checked
from their source, without running it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import uuid
from pathlib import Path
from typing import NamedTuple

from ..binding.layers import FLAGS, layer_problem
from ..errors import KernelLoadError
from ..loading.loader import execute_package, forget
from ..loading.names import CONTENT_PREFIX
from ..platform import parse_variant
from ..repo import find_package


class Problem(NamedTuple):
    path: str  # relative to the repo folder
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


class VariantResult(NamedTuple):
    variant: str
    how: str  # "imported" or "static (<why>)"
    layers: tuple[str, ...]
    functions: tuple[str, ...] = ()  # public functions of the package (a function kernel's FuncRepository names)


def check_repo(root: Path, repo_name: str | None = None) -> tuple[list[Problem], list[VariantResult]]:
    """Check a kernel repo folder against the rules above.

    Args:
        root: the folder that holds ``build/``.
        repo_name: the Hub repo's name (it picks a variant's package among several); default: the folder's name.

    Returns:
        (every problem found, one result per variant that holds a package); no problems means ready to publish.
    """
    root = Path(root)
    repo_name = repo_name or root.name
    build = root / "build"
    if not build.is_dir():
        return [Problem("build/", "missing: kernel builds live in build/<variant>/")], []
    problems, results = [], []
    for folder in sorted(build.iterdir()):
        rel = folder.relative_to(root).as_posix()
        if not folder.is_dir():
            problems.append(Problem(rel, "only variant folders belong in build/"))
            continue
        try:
            parse_variant(folder.name)
        except ValueError as exc:
            problems.append(Problem(rel, str(exc)))
            continue
        result = _check_variant(root, folder, repo_name, problems)
        if result is not None:
            results.append(result)
    return problems, results


def _check_variant(root: Path, folder: Path, repo_name: str, problems: list[Problem]) -> VariantResult | None:
    _check_metadata(root, folder / "metadata.json", problems)
    try:
        package = find_package(folder, repo_name, "this variant")
    except KernelLoadError as exc:
        problems.append(Problem(_rel(root, folder), str(exc)))
        return None
    layers_py = package / "layers.py"
    try:
        names, functions = _check_imported(root, package, problems)
        how = "imported"
    except ImportError as exc:  # a dependency this machine lacks: read the source instead
        names = _check_static(root, layers_py, problems) if layers_py.is_file() else []
        functions = _public_functions_static(root, package / "__init__.py", problems)
        how = f"static ({exc.name or exc} is not importable here)"
    if not layers_py.is_file() and not functions:
        problems.append(Problem(_rel(root, package), "no layers.py and no public function: kernelize takes layer "
                                                     "classes from layers.py, and function kernels from the package"))
        return None
    return VariantResult(folder.name, how, tuple(names), tuple(functions))


def _check_metadata(root: Path, path: Path, problems: list[Problem]) -> None:
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(_rel(root, path), f"not valid JSON ({exc})"))
        return
    if not isinstance(data, dict):
        problems.append(Problem(_rel(root, path), "must be a JSON object"))
        return
    expected = {"id": str, "name": str, "version": (int, str), "license": str, "python-depends": list, "backend": dict}
    for key, kind in expected.items():
        if key in data and not isinstance(data[key], kind):
            problems.append(Problem(_rel(root, path), f"{key!r} has the wrong type ({type(data[key]).__name__})"))
    if not all(isinstance(d, str) for d in data.get("python-depends", []) or []):
        problems.append(Problem(_rel(root, path), "'python-depends' must list package names"))


def _check_imported(root: Path, package: Path, problems: list[Problem]) -> tuple[list[str], list[str]]:
    """Import the package as the loader would; check its layer classes, list its public functions.

    Raises ImportError when the package needs what this machine lacks (torch_npu, triton...).
    """
    name = f"{CONTENT_PREFIX}check_{uuid.uuid4().hex}"
    try:
        module = execute_package(name, package)
        layers = importlib.import_module(f"{name}.layers") if (package / "layers.py").is_file() else None
    except Exception as exc:
        cause = (exc.__cause__ or exc) if isinstance(exc, KernelLoadError) else exc
        if isinstance(cause, ImportError):
            raise cause from None
        problems.append(Problem(_rel(root, package / "__init__.py"), f"raises on import: {type(cause).__name__}: {cause}"))
        return [], []
    finally:
        forget(name)
    functions = [n for n, v in vars(module).items()
                 if inspect.isfunction(v) and not n.startswith("_") and v.__module__ == module.__name__]
    for function in functions:
        for flag in FLAGS:
            value = getattr(vars(module)[function], flag, True)
            if not isinstance(value, bool):
                problems.append(Problem(_rel(root, package / "__init__.py"),
                                        f"function {function} sets {flag} to {value!r}: it must be True or False"))
    if layers is None:
        return [], functions
    classes = [v for v in vars(layers).values() if isinstance(v, type) and v.__module__ == layers.__name__]
    for layer in classes:
        problem = layer_problem(layer)
        if problem:
            problems.append(Problem(_rel(root, package / "layers.py"), f"layer {layer.__name__} {problem}"))
    return [layer.__name__ for layer in classes], functions


def _public_functions_static(root: Path, init_py: Path, problems: list[Problem]) -> list[str]:
    """The public functions an ``__init__.py`` defines, read from its source."""
    try:
        tree = ast.parse(init_py.read_text(encoding="utf-8"), filename=str(init_py))
    except SyntaxError as exc:
        problems.append(Problem(f"{_rel(root, init_py)}:{exc.lineno}", f"syntax error: {exc.msg}"))
        return []
    except OSError:
        return []
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]


def _check_static(root: Path, layers_py: Path, problems: list[Problem]) -> list[str]:
    rel = _rel(root, layers_py)
    try:
        tree = ast.parse(layers_py.read_text(encoding="utf-8"), filename=str(layers_py))
    except SyntaxError as exc:
        problems.append(Problem(f"{rel}:{exc.lineno}", f"syntax error: {exc.msg}"))
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
            problems.extend(Problem(f"{rel}:{line}", f"layer {node.name} {rule}") for line, rule in _class_rules(node))
    return names


def _class_rules(node: ast.ClassDef):
    """Kernelize's rules, read from a class's source: forward, the two flags, a docstring; nothing else."""
    has_forward = False
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if item.name == "__init__":
                yield item.lineno, "defines __init__: kernel layers must hold no state of their own"
            elif item.name == "forward":
                has_forward = True
            else:
                yield item.lineno, f"has a member beyond forward and the flags: {item.name}"
        elif isinstance(item, (ast.Assign, ast.AnnAssign)):
            targets = item.targets if isinstance(item, ast.Assign) else [item.target]
            for target in targets:
                name = getattr(target, "id", "?")
                value = item.value
                if name not in FLAGS:
                    yield item.lineno, f"has a member beyond forward and the flags: {name}"
                elif not (isinstance(value, ast.Constant) and isinstance(value.value, bool)):
                    yield item.lineno, f"sets {name} to something other than True or False"
        elif not (isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant)) and not isinstance(item, ast.Pass):
            yield item.lineno, "has a statement beyond forward, the flags and a docstring"
    if not has_forward:
        yield node.lineno, "has no forward"


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
