"""Step 5 of the data path: execute a variant tree as a module, from the store.

The module's name is a digest of what was asked for and what was found: the
repo (type and id), the commit, the variant, the tree's content digest and the
package folder inside it; never a name found in the repo. So:
  * two versions are two modules, each with its own ``.layers``, ``._ops``...
  * two pins of one commit (``@v1`` and ``@<sha>``) are one module;
  * two commits or two repos with byte-identical builds are two modules, each
    with its own true origin (``kernelhook.origin``, kernelize's report);
  * a hostile ``metadata.json`` cannot claim ``os`` or ``torch``.
The package is found through its own ``__path__`` in the store, never through
sys.path. A failed import leaves no entry behind in sys.modules. ``importlib.reload``
of a loaded kernel executes its source from the store again (``_ReloadFinder``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import re
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from ..errors import KernelLoadError
from .names import CONTENT_PREFIX


class KernelOrigin(NamedTuple):
    """Where a loaded kernel came from; ``kernelhook.origin(module)`` returns it."""

    repo_id: str
    repo_type: str
    commit: str
    variant: str
    tree: Path  # the variant folder in the cache
    package: Path  # the folder the module executes from
    module_name: str
    how: str  # how the revision was resolved

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.commit[:12]} [{self.variant}] from {self.package}"


_locks_guard = threading.Lock()
_locks: dict[str, threading.RLock] = {}


def _lock_for(name: str) -> threading.RLock:
    # One lock per content module: two threads never execute the same kernel twice,
    # and kernels that import other kernels never wait on an unrelated lock.
    with _locks_guard:
        return _locks.setdefault(name, threading.RLock())


def module_name(origin: KernelOrigin, digest: str) -> str:
    """The name a variant executes under: ``_kernelhook_`` and a digest of the repo, commit, variant,
    tree digest and package folder, so that module identity follows what was asked for."""
    relative = origin.package.relative_to(origin.tree).as_posix()
    key = "\0".join((origin.repo_type, origin.repo_id, origin.commit, origin.variant, digest, relative))
    return CONTENT_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


def load(origin_without_name: KernelOrigin, digest: str) -> ModuleType:
    """The kernel module for a variant tree, executed once per process.

    Args:
        origin_without_name: where the package comes from (its ``module_name`` is filled in here).
        digest: the tree's content digest, part of what the module's name derives from.

    Returns:
        The module ``_kernelhook_<digest...>``, already in sys.modules; the same object on every call
        for the same repo, commit and variant.

    Raises:
        KernelLoadError: executing the package raised; nothing is left in sys.modules.
    """
    name = module_name(origin_without_name, digest)
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    with _lock_for(name):
        existing = sys.modules.get(name)
        if existing is not None:
            return existing
        origin = origin_without_name._replace(module_name=name)
        return execute_package(name, origin.package, origin)


class _StoreSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles kernel sources from the store, and only sources.

    It never reads ``__pycache__``: a SourceFileLoader would take a .pyc found there
    in place of the source (an unchecked hash-based one without even looking at
    the source), and a .pyc in a tree came from the repo, not from this machine.
    Nor does it write one: trees are immutable content, and may be read-only or shared.
    """

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)

    def set_data(self, path, data, *, _mode=0o666):
        pass


_STORE_TREE = re.compile(r"[/\\]v1[/\\]trees[/\\][0-9a-f]{64}(?:[/\\]|$)")
_hook_lock = threading.Lock()


def _store_path_hook(path: str):
    """Finds a kernel's submodules in its store folder with the loader above.

    Only source and extension modules: sourceless bytecode (``BYTECODE_SUFFIXES``) is never a module here.
    """
    if not _STORE_TREE.search(path):
        raise ImportError("not a kernelhook store folder")
    return importlib.machinery.FileFinder(
        path,
        (_StoreSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )


class _ReloadFinder:
    """Answers one question on sys.meta_path: ``importlib.reload`` asking again for a loaded kernel
    by its own ``_kernelhook_...`` name. Submodules are found through the kernel's ``__path__``."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(CONTENT_PREFIX) or "." in fullname:
            return None
        origin = getattr(sys.modules.get(fullname), "__kernelhook__", None)
        return None if origin is None else package_spec(fullname, origin.package)


_reload_finder = _ReloadFinder()


def _install_hooks() -> None:
    """The store path hook and the reload finder, both independent of the kernels_hub finder (a user may
    uninstall that one). The reload finder goes first, so a reload never finds the name on sys.path: it
    costs any other import one ``str.startswith``."""
    with _hook_lock:
        if _store_path_hook not in sys.path_hooks:
            sys.path_hooks.insert(0, _store_path_hook)
        if _reload_finder not in sys.meta_path:
            sys.meta_path.insert(0, _reload_finder)


def execute_package(name: str, package: Path, origin: KernelOrigin | None = None) -> ModuleType:
    """Execute the package folder ``package`` as the module ``name`` (``kernelhook check`` uses it too).

    Returns:
        The module, in sys.modules, with ``__kernelhook__`` set to ``origin``.

    Raises:
        KernelLoadError: the package raised while executing (the exception is its ``__cause__``);
            nothing of it is left in sys.modules.
    """
    spec = package_spec(name, package)
    if spec is None or spec.loader is None:
        raise KernelLoadError(f"{origin or package}: cannot make a module of {package / '__init__.py'}")
    module = importlib.util.module_from_spec(spec)
    module.__kernelhook__ = origin
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        forget(name)
        if isinstance(exc, Exception):
            where = f"{origin.repo_id}@{origin.commit[:12]} [{origin.variant}]" if origin else str(package)
            raise KernelLoadError(
                f"{where}: executing the kernel failed: {type(exc).__name__}: {exc}. Nothing was left in "
                f"sys.modules. Fix: see the traceback above this error; a missing dependency of the kernel "
                f"must be installed."
            ) from exc
        raise
    return module


def package_spec(name: str, package: Path) -> importlib.machinery.ModuleSpec | None:
    """The spec that executes the package folder ``package`` as the module ``name``, from its source
    (``_ReloadFinder`` hands it to ``importlib.reload`` too, which executes the kernel again).

    Returns:
        The spec (executing it fails when ``package`` holds no ``__init__.py``).
    """
    _install_hooks()
    init = package / "__init__.py"
    return importlib.util.spec_from_file_location(
        name, init, loader=_StoreSourceLoader(name, str(init)), submodule_search_locations=[str(package)]
    )


def forget(name: str) -> None:
    """Remove a module and every submodule of it from sys.modules; absent names are fine."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        sys.modules.pop(key, None)


def origin(module: ModuleType) -> KernelOrigin | None:
    """Where a kernel module came from: repo, commit, variant and cache folder; None for any other object."""
    return getattr(module, "__kernelhook__", None)
