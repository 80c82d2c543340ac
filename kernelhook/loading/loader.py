"""Step 5 of the data path: execute a variant tree as a module, from the store.

The module's name is a digest of what was asked for and what was found: the
repo (type and id), the commit, the variant, the tree's content digest and the
package folder inside it; never a name found in the repo. So:
  * two versions are two modules, each with its own ``.layers``, ``._ops``...
  * two pins of one commit (``@v1`` and ``@<sha>``) are one module;
  * two commits or two repos with byte-identical builds are two modules, each
    with its own true origin (``kernelhook.origin``, kernelize's report);
  * a hostile ``metadata.json`` cannot claim ``os`` or ``torch``.
The package is imported by the import system, through a finder that knows only
the names this module gave out, so its per-module locks make other threads wait
for a kernel being executed, and ``importlib.reload`` executes it from the store
again; its submodules are found through its own ``__path__`` in the store, never
through sys.path, and run from their source. A failed import leaves no entry
behind in sys.modules.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import sys
import threading
from pathlib import Path
from types import ModuleType

from ..errors import KernelLoadError
from ..records import Record
from .names import CONTENT_PREFIX


class KernelOrigin(Record, fields="repo_id repo_type commit variant tree package module_name how"):
    """Where a loaded kernel came from; ``kernelhook.origin(module)`` returns it.

    ``repo_id``, ``repo_type`` and ``commit`` name the Hub repo and commit, ``variant`` the build
    folder; ``tree`` is that folder in the cache and ``package`` the folder the module executes
    from (a Path each); ``module_name`` is the module's content-derived name and ``how`` says how
    the revision was resolved.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.commit[:12]} [{self.variant}] from {self.package}"


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
        The module ``_kernelhook_<digest...>``, already in sys.modules, fully executed; the same
        object on every call for the same repo, commit and variant. A thread asking while another
        executes it waits, as for any import.

    Raises:
        KernelLoadError: executing the package raised; nothing is left in sys.modules.
    """
    name = module_name(origin_without_name, digest)
    return execute_package(name, origin_without_name.package, origin_without_name._replace(module_name=name))


class _StoreSourceLoader(importlib.machinery.SourceFileLoader):
    """Runs kernel sources from the store, compiled from the source every time: no __pycache__ is
    read or written there. Trees are immutable content and may be read-only or shared, and only
    their sources are verified (by the store's hashes and the lockfile): bytecode found beside
    them could run code nothing checked."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


_hook_lock = threading.Lock()
# content module name -> (package folder, origin): what _ContentFinder makes a spec of. Kept for the
# process: a thread still waiting to import a name must find it even after another's import failed.
_packages: dict[str, tuple[Path, KernelOrigin | None]] = {}


def _in_store_tree(path: str) -> bool:
    """Whether a folder lies inside a store tree (``.../v1/trees/<sha256 hex>[/...]``); no regex, as
    compiling one would cost a warm load more than every call of this does."""
    parts = path.replace("\\", "/").split("/")
    return any(parts[i] == "v1" and parts[i + 1] == "trees" and len(parts[i + 2]) == 64
               and not parts[i + 2].strip("0123456789abcdef") for i in range(len(parts) - 2))


def _store_path_hook(path: str):
    """Finds a kernel's submodules in its store folder with the loader above."""
    if not _in_store_tree(path):
        raise ImportError("not a kernelhook store folder")
    return importlib.machinery.FileFinder(
        path,
        (_StoreSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )


def execute_package(name: str, package: Path, origin: KernelOrigin | None = None) -> ModuleType:
    """Import the package folder ``package`` as the module ``name`` (``kernelhook check`` uses it too).

    The import system does the work, so its per-module locks apply: a thread importing a
    module another thread is still executing waits for it, the executing thread itself (a
    kernel importing itself or its submodules) gets the module as it stands, and a cycle of
    threads waiting on each other is broken rather than hung.

    Returns:
        The module, in sys.modules, with ``__kernelhook__`` set to ``origin``.

    Raises:
        KernelLoadError: the package raised while executing (the exception is its ``__cause__``);
            nothing of it is left in sys.modules.
    """
    _install_hooks()
    with _hook_lock:
        _packages[name] = (package, origin)
    return importlib.import_module(name)


class _ContentFinder:
    """Finds ``_kernelhook_*`` modules, and only those ``execute_package`` was given a folder for.

    Duck-typed like importlib.abc.MetaPathFinder (importing importlib.abc costs ~6 ms).
    """

    def find_spec(self, fullname, path=None, target=None):
        found = _packages.get(fullname) if path is None else None
        if found is None:
            return None
        package, origin = found
        init = str(package / "__init__.py")
        spec = importlib.machinery.ModuleSpec(
            fullname, _PackageLoader(fullname, init, origin), origin=init, is_package=True
        )
        spec.submodule_search_locations = [str(package)]
        spec.has_location = True  # so the module gets __file__ and __cached__
        return spec

    def __repr__(self) -> str:
        return "<kernelhook finder for kernel packages in the store>"


class _PackageLoader(_StoreSourceLoader):
    """A kernel package's ``__init__.py``, executed with ``__kernelhook__`` already set."""

    def __init__(self, fullname: str, path: str, origin: KernelOrigin | None):
        super().__init__(fullname, path)
        self.origin = origin

    def exec_module(self, module):
        module.__kernelhook__ = self.origin
        try:
            super().exec_module(module)
        except BaseException as exc:
            # Here, not around the import: only the thread that executed the kernel may clean up after it.
            forget(module.__name__)
            if not isinstance(exc, Exception):
                raise
            origin = self.origin
            where = f"{origin.repo_id}@{origin.commit[:12]} [{origin.variant}]" if origin else str(Path(self.path).parent)
            raise KernelLoadError(
                f"{where}: executing the kernel failed: {type(exc).__name__}: {exc}. Nothing was left in "
                f"sys.modules. Fix: see the traceback above this error; a missing dependency of the kernel "
                f"must be installed."
            ) from exc


_content_finder = _ContentFinder()


def _install_hooks() -> None:
    with _hook_lock:
        if _store_path_hook not in sys.path_hooks:
            sys.path_hooks.insert(0, _store_path_hook)
        if _content_finder not in sys.meta_path:
            # First: no folder on sys.path may answer for a content-derived name.
            sys.meta_path.insert(0, _content_finder)


def forget(name: str) -> None:
    """Remove a module and every submodule of it from sys.modules; absent names are fine."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        sys.modules.pop(key, None)


def origin(module: ModuleType) -> KernelOrigin | None:
    """Where a kernel module came from: repo, commit, variant and cache folder; None for any other object."""
    return getattr(module, "__kernelhook__", None)
