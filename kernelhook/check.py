"""``kernelhook check DIR``: validate a kernel repo before it is published.

Rules, each reported with the file it concerns:
  * build/ exists and holds only variant folders whose names parse (variants.py);
  * each variant holds a Python package: build/<variant>/__init__.py, or exactly
    one build/<variant>/<Name>/__init__.py;
  * metadata.json, where present, is a JSON object with well-typed fields;
  * every layer class in the package's layers.py passes kernelize's own rules.
Variants this machine can import are imported (in a throwaway module name,
removed afterwards); the rest (torch_npu or triton missing, say) are checked
from their source, without running it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import uuid
from pathlib import Path
from typing import NamedTuple

from .layers import FLAGS, layer_problem
from .loader import forget
from .variants import parse_variant


class Problem(NamedTuple):
    path: str  # relative to the repo folder
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


class VariantResult(NamedTuple):
    variant: str
    how: str  # "imported" or "static (<why>)"
    layers: tuple[str, ...]


def check_repo(root: Path) -> tuple[list[Problem], list[VariantResult]]:
    root = Path(root)
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
        result = _check_variant(root, folder, problems)
        if result is not None:
            results.append(result)
    return problems, results


def _check_variant(root: Path, folder: Path, problems: list[Problem]) -> VariantResult | None:
    _check_metadata(root, folder / "metadata.json", problems)
    package = _package(root, folder, problems)
    if package is None:
        return None
    layers_py = package / "layers.py"
    if not layers_py.is_file():
        problems.append(Problem(_rel(root, package), "no layers.py: kernelize takes layer classes from it"))
        return None
    try:
        names = _check_imported(root, package, problems)
        how = "imported"
    except ImportError as exc:  # a dependency this machine lacks: read the source instead
        names = _check_static(root, layers_py, problems)
        how = f"static ({exc.name or exc} is not importable here)"
    return VariantResult(folder.name, how, tuple(names))


def _package(root: Path, folder: Path, problems: list[Problem]) -> Path | None:
    if (folder / "__init__.py").is_file():
        return folder
    packages = [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "__init__.py").is_file()]
    if len(packages) == 1:
        return packages[0]
    found = ", ".join(p.name for p in packages) or "none"
    problems.append(Problem(_rel(root, folder), f"needs __init__.py, or exactly one package folder (found: {found})"))
    return None


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


def _check_imported(root: Path, package: Path, problems: list[Problem]) -> list[str]:
    name = f"_kernelhook_check_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        layers = importlib.import_module(f"{name}.layers")
    except ImportError:
        raise
    except Exception as exc:
        problems.append(Problem(_rel(root, package / "__init__.py"), f"raises on import: {type(exc).__name__}: {exc}"))
        return []
    finally:
        forget(name)
    classes = [v for v in vars(layers).values() if isinstance(v, type) and v.__module__ == layers.__name__]
    for layer in classes:
        problem = layer_problem(layer)
        if problem:
            problems.append(Problem(_rel(root, package / "layers.py"), f"layer {layer.__name__} {problem}"))
    return [layer.__name__ for layer in classes]


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
