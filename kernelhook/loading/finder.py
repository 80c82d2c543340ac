"""The import hook: a sys.meta_path finder that owns the ``kernels_hub`` namespace.

    kernels_hub                          the shipped package; importing it installs this finder
    kernels_hub.<org>                    an empty namespace module, made here, no I/O
    kernels_hub.<org>.<repo>[@rev]       the kernel: the whole data path, via api.load_kernel
    kernels_hub.<org>.<repo>.<sub>       an alias of the kernel module's own submodule

A name outside ``kernels_hub`` costs one ``str.startswith``. The finder calls
the other modules and holds no state but its place in sys.meta_path.
"""

from __future__ import annotations

import _thread  # not threading: importing kernels_hub stays cheap
import importlib
import importlib.machinery
import sys
import types

from .names import CONTENT_PREFIX, ROOT, ModuleName, parse_module_name

_PREFIX = ROOT + "."


class KernelHubFinder:
    # Duck-typed like importlib.abc.MetaPathFinder: importing importlib.abc costs ~6 ms.

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX):
            return None
        try:
            parsed = parse_module_name(fullname)
        except ImportError:  # a malformed name: typed error, and no namespace left behind for it
            _drop_empty_org(fullname.split(".")[1])
            raise
        if parsed.kernel is None:
            return _spec(fullname, _OrgLoader(parsed), is_package=True)
        if parsed.submodule is None:
            _count_importing(parsed.org, +1)  # until its loader is done: the org namespace must stay
            return _spec(fullname, _KernelLoader(parsed), is_package=True)
        return _submodule_spec(fullname)

    def __repr__(self) -> str:
        return "<kernelhook finder for kernels_hub.*>"


def _spec(fullname: str, loader, is_package: bool) -> importlib.machinery.ModuleSpec:
    return importlib.machinery.ModuleSpec(fullname, loader, is_package=is_package)


class _OrgLoader:
    """``kernels_hub.<org>``: a namespace holding the org's kernels as attributes."""

    def __init__(self, parsed: ModuleName):
        self.parsed = parsed

    def create_module(self, spec):
        module = types.ModuleType(spec.name, f"Hub kernels of the org {self.parsed.org!r}.")
        module.__path__ = []  # a package, whose children only this finder resolves
        return module

    def exec_module(self, module):
        pass


class _AliasLoader:
    """Hands an already loaded module to the import system under another name.

    The import system stamps its own spec onto whatever create_module returns;
    exec_module puts the module's real spec back, so the module keeps naming
    its own ``_kernelhook_...`` home.
    """

    def __init__(self, module: types.ModuleType | None = None):
        self.module = module

    def create_module(self, spec):
        self.real_spec = self.module.__spec__  # before the import system overwrites it
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.real_spec


class _KernelLoader(_AliasLoader):
    """``kernels_hub.<org>.<repo>[@rev]``: runs the data path, then aliases."""

    def __init__(self, parsed: ModuleName):
        super().__init__()
        self.parsed = parsed

    def create_module(self, spec):
        from .api import load_kernel  # the data path loads only when a kernel is asked for

        try:
            self.module = load_kernel(self.parsed.kernel)
        except BaseException:
            _count_importing(self.parsed.org, -1)
            _drop_empty_org(self.parsed.org)
            raise
        _count_importing(self.parsed.org, -1)
        return super().create_module(spec)

    def exec_module(self, module):
        public = module.__spec__.name  # the import system's spec names the public module
        super().exec_module(module)
        _alias_submodules(module, public)


def _alias_submodules(module: types.ModuleType, public: str) -> None:
    """Make ``kernels_hub.<org>.<repo>.layers`` the kernel's own ``.layers`` (already imported ones).

    The submodules are found as the import system leaves them: each an attribute of its package. (Not by
    scanning sys.modules, a thousand names after torch; one imported and then deleted from its package
    is aliased when imported by its public name, by ``_submodule_spec``.)
    """
    real = module.__name__ + "."
    packages, seen = [module], {id(module)}
    while packages:
        for value in list(vars(packages.pop()).values()):
            name = getattr(value, "__name__", None)
            if (isinstance(value, types.ModuleType) and id(value) not in seen and isinstance(name, str)
                    and name.startswith(real) and sys.modules.get(name) is value):
                seen.add(id(value))
                sys.modules.setdefault(public + "." + name[len(real):], value)
                packages.append(value)


def _submodule_spec(fullname: str):
    """``kernels_hub.<org>.<repo>.<sub>``: import the kernel module's own submodule and alias it."""
    parent_name, _, child = fullname.rpartition(".")
    parent = sys.modules.get(parent_name)
    if parent is None or not getattr(parent, "__name__", "").startswith(CONTENT_PREFIX):
        return None
    real_name = f"{parent.__name__}.{child}"
    try:
        real = importlib.import_module(real_name)
    except ModuleNotFoundError as exc:
        if exc.name != real_name:  # something the submodule itself imports is missing: its own error
            raise
        raise ModuleNotFoundError(_no_submodule(fullname, parent, child), name=fullname) from None
    return _spec(fullname, _AliasLoader(real), is_package=hasattr(real, "__path__"))


def _no_submodule(fullname: str, parent: types.ModuleType, child: str) -> str:
    """The message for a submodule the kernel does not have, in the names the user typed."""
    import pkgutil

    kernel = sys.modules.get(parent.__name__.split(".")[0])
    origin = getattr(kernel, "__kernelhook__", None)
    where = f"{origin.repo_id}@{origin.commit[:12]} [{origin.variant}]" if origin else parent.__name__
    children = sorted(m.name for m in pkgutil.iter_modules(getattr(parent, "__path__", None) or []))
    has = f"it holds {', '.join(children)}" if children else "it holds no modules"
    return (f"No module named {fullname!r}: {fullname.rpartition('.')[0]} (the kernel {where}) holds no "
            f"module {child!r}; {has}. Fix: check the name against the kernel's files.")


# org -> kernel imports under it that are between find_spec and the end of their loading.
_importing: dict[str, int] = {}
_importing_lock = _thread.allocate_lock()


def _count_importing(org: str, step: int) -> None:
    with _importing_lock:
        count = _importing.get(org, 0) + step
        if count > 0:
            _importing[org] = count
        else:
            _importing.pop(org, None)


def _drop_empty_org(org: str) -> None:
    """A failed kernel import leaves no namespace behind that only it created.

    Not while another thread imports a kernel under the same org: the import system looks
    the namespace up in sys.modules again once that kernel is loaded.
    """
    org_name = f"{ROOT}.{org}"
    with _importing_lock:
        module = sys.modules.get(org_name)
        if module is None or not isinstance(getattr(module, "__loader__", None), _OrgLoader):
            return
        if org in _importing or any(name.startswith(org_name + ".") for name in list(sys.modules)):
            return
        if any(isinstance(value, types.ModuleType) for value in vars(module).values()):
            return
        sys.modules.pop(org_name, None)
        root = sys.modules.get(ROOT)
        if root is not None and getattr(root, org, None) is module:
            delattr(root, org)


class HookHandle:
    """What ``install()`` returns: ``uninstall()`` takes the finder off sys.meta_path, any number of times."""

    def __init__(self, finder: KernelHubFinder):
        self.finder = finder

    def uninstall(self) -> None:
        while self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)


_finder = KernelHubFinder()


def install() -> HookHandle:
    """Put the finder first in sys.meta_path (once; importing kernels_hub does this).

    Returns:
        A handle whose ``uninstall()`` removes it again.
    """
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return HookHandle(_finder)


def uninstall() -> None:
    """Take the finder off sys.meta_path; kernels already imported stay usable."""
    HookHandle(_finder).uninstall()
