"""Where a mapped kernel comes from: the repository kinds a kernel mapping names.

    LayerRepository("org/repo", "Layer", revision=..., version=...)   a class in the kernel's ``layers``
    FuncRepository("org/repo", func_name="f", revision=..., ...)       a function of the kernel module
    LocalLayerRepository(path, layer_name=...), LocalFuncRepository(path, func_name=...)
                                                                       the same, from a folder (loading/local.py)
    LockedLayerRepository("org/repo", layer_name=..., lockfile=...), LockedFuncRepository(...)
                                                                       the same, at a lock's commit (loading/locked.py)

Every kind answers the same three questions, so kernelize treats them alike:
``module(load_kernel)`` loads the kernel module, ``layer_in(module)`` is the
layer class whose ``forward`` kernelize binds (a function becomes a class with
one ``forward`` that calls it, as the ``kernels`` package does), and
``pinned(commit)`` is the same repository at exactly one commit, which is what
a pickled model records (a folder or a lock is one already, and pins itself).

Names and semantics follow the ``kernels`` package; ``trust_remote_code`` is
accepted and has no effect (kernelhook's trust rule is in trust.py: an explicit
mapping is the user's own choice of code).
"""

from __future__ import annotations

import inspect
import re
import threading
from pathlib import Path
from types import ModuleType

from ..errors import InvalidKernelName, KernelLayerError
from ..loading.names import KernelName, parse_repo_id

_SHORT_FORM = re.compile(r"(?P<repo>[^@:\s]+/[^@:\s]+)(?:@(?P<rev>[^:\s]+))?:(?P<layer>[A-Za-z_][A-Za-z0-9_]*)")


class Repository:
    """What every repository kind shares: equality and hashing by ``key()``, which names the kind,
    the source and the layer or function; ``kind`` is "layer" or "function"."""

    __slots__ = ()
    kind = "layer"

    @property
    def name(self) -> str:
        """The layer or function name inside the kernel."""
        raise NotImplementedError

    def key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class HubRepository(Repository):
    """What Layer- and FuncRepository share: a Hub repo id, pinned by revision or version (or neither:
    then the lockfile's pin, else the highest ``vN`` branch, else ``main``)."""

    __slots__ = ("repo_id", "revision", "version", "_name")

    def __init__(self, repo_id: str, revision: str | None, version: int | None):
        self._name: KernelName = parse_repo_id(repo_id, revision, version)  # bad input fails here, early
        self.repo_id, self.revision, self.version = repo_id, revision, version

    @property
    def kernel_name(self) -> KernelName:
        return self._name

    def module(self, load_kernel) -> ModuleType:
        """The kernel module, through the loading path (resolve, fetch, verify, load)."""
        return load_kernel(self._name)

    def key(self) -> tuple:
        return (type(self).__name__, self.repo_id, self.name, self._name.revision)

    def __str__(self) -> str:
        revision = f"@{self._name.revision}" if self._name.revision else ""
        return f"{self.repo_id}{revision}:{self.name}"


class LayerRepository(HubRepository):
    """A layer class in a Hub kernel repo: ``LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1)``.

    ``layer_name`` may be given by keyword, as the ``kernels`` package requires. The short form
    ``"org/repo[@rev]:Layer"`` is accepted wherever a repository is expected. Bad input fails here,
    when the repository is made: InvalidKernelName, InvalidRevision.
    """

    __slots__ = ("layer_name",)

    def __init__(self, repo_id: str, layer_name: str | None = None, revision: str | None = None,
                 version: int | None = None, *, trust_remote_code: bool | list[str] = False):
        super().__init__(repo_id, revision, version)
        if not isinstance(layer_name, str) or not layer_name.isidentifier():
            raise InvalidKernelName(f"{layer_name!r} is not a layer name (a Python identifier such as 'RMSNorm').")
        self.layer_name = layer_name

    @property
    def name(self) -> str:
        return self.layer_name

    @classmethod
    def parse(cls, text: str) -> "LayerRepository":
        """``"org/repo[@rev]:Layer"`` as a LayerRepository. Raises InvalidKernelName for anything else."""
        match = _SHORT_FORM.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidKernelName(
                f"{text!r} is not a layer repository: write 'org/repo:Layer' or 'org/repo@revision:Layer', "
                f"e.g. 'kernels-ext-npu/RMSNorm@v1:RMSNorm'."
            )
        return cls(match["repo"], match["layer"], revision=match["rev"])

    def layer_in(self, module: ModuleType) -> type:
        return layer_class(self, module, self.layer_name)

    def pinned(self, commit: str) -> "LayerRepository":
        return LayerRepository(self.repo_id, self.layer_name, revision=commit)


class FuncRepository(HubRepository):
    """A function of a Hub kernel module: ``FuncRepository("acme/rotary", func_name="apply_rotary", version=1)``.

    kernelize binds it to functions marked ``use_kernel_func_from_hub(name)`` (or
    ``use_kernel_forward_from_hub(name)`` on a function) under the mapped name.
    """

    __slots__ = ("func_name",)
    kind = "function"

    def __init__(self, repo_id: str, *, func_name: str, revision: str | None = None, version: int | None = None,
                 trust_remote_code: bool | list[str] = False):
        super().__init__(repo_id, revision, version)
        if not isinstance(func_name, str) or not func_name.isidentifier():
            raise InvalidKernelName(f"{func_name!r} is not a function name (a Python identifier such as 'rotary').")
        self.func_name = func_name

    @property
    def name(self) -> str:
        return self.func_name

    def layer_in(self, module: ModuleType) -> type:
        return function_class(self, module, self.func_name)

    def pinned(self, commit: str) -> "FuncRepository":
        return FuncRepository(self.repo_id, func_name=self.func_name, revision=commit)


def layer_class(repo, module: ModuleType, layer_name: str) -> type:
    """The class ``layer_name`` in a kernel module's ``layers``. Raises KernelLayerError when there is none."""
    layers = getattr(module, "layers", None)
    layer = getattr(layers, layer_name, None)
    if not isinstance(layer, type):
        where = "has no layers submodule" if layers is None else f"has no class {layer_name} in its layers"
        raise KernelLayerError(f"{describe(repo, module)} {where}. Fix: check the layer name in the mapping.")
    return layer


def function_class(repo, module: ModuleType, func_name: str) -> type:
    """The layer class made of a kernel module's function ``func_name``. Raises KernelLayerError when there is none."""
    func = getattr(module, func_name, None)
    if not callable(func):
        raise KernelLayerError(f"{describe(repo, module)} has no function {func_name}. Fix: check the "
                               f"function name in the mapping.")
    return function_layer(func)


def _identifier(value, what: str) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise InvalidKernelName(f"{value!r} is not a {what} name (a Python identifier).")
    return value


class LocalRepository(Repository):
    """What Local- Layer and Func repositories share: a kernel folder on this machine (``get_local_kernel``).

    Each load hashes the folder's chosen variant, so an edited folder loads as a new module; ``pinned``
    returns the repository itself, as a folder has no commits.
    """

    __slots__ = ("repo_path", "package_name", "repo_id")

    def __init__(self, repo_path, package_name: str | None):
        self.repo_path = Path(repo_path).expanduser().resolve()
        self.package_name = package_name
        self.repo_id = str(self.repo_path)  # what messages and the trust check name it by

    def module(self, load_kernel) -> ModuleType:
        """The kernel module from the folder (loading/local.py); ``load_kernel`` is not needed."""
        from ..loading.local import get_local_kernel

        return get_local_kernel(self.repo_path, self.package_name)

    def pinned(self, commit: str):
        return self

    def key(self) -> tuple:
        return (type(self).__name__, self.repo_id, self.name, self.package_name)

    def __str__(self) -> str:
        return f"{self.repo_id}:{self.name}"


class LocalLayerRepository(LocalRepository):
    """A layer class of a kernel in a local folder: ``LocalLayerRepository(path, layer_name="RMSNorm")``.

    ``package_name`` (older ``kernels`` releases required it) picks the package when a variant holds several.
    Raises InvalidKernelName for a layer name that is not an identifier.
    """

    __slots__ = ("layer_name",)

    def __init__(self, repo_path, *, layer_name: str, package_name: str | None = None):
        super().__init__(repo_path, package_name)
        self.layer_name = _identifier(layer_name, "layer")

    @property
    def name(self) -> str:
        return self.layer_name

    def layer_in(self, module: ModuleType) -> type:
        return layer_class(self, module, self.layer_name)


class LocalFuncRepository(LocalRepository):
    """A function of a kernel in a local folder: ``LocalFuncRepository(path, func_name="rotary")``."""

    __slots__ = ("func_name",)
    kind = "function"

    def __init__(self, repo_path, *, func_name: str, package_name: str | None = None):
        super().__init__(repo_path, package_name)
        self.func_name = _identifier(func_name, "function")

    @property
    def name(self) -> str:
        return self.func_name

    def layer_in(self, module: ModuleType) -> type:
        return function_class(self, module, self.func_name)


class LockedRepository(Repository):
    """What Locked- Layer and Func repositories share: a repo at the commit a lock pins it to.

    The lock is read when the repository is made (as the ``kernels`` package does), from ``lockfile``
    or, without one, from where ``get_locked_kernel`` looks; every load hashes the locked variant against
    it before it executes. ``pinned`` returns the repository itself: it is pinned already, and a pickle
    of it keeps the lock's hashes.
    """

    __slots__ = ("repo_id", "lockfile", "pin")

    def __init__(self, repo_id: str, lockfile):
        from ..cache.kernels_lock import find_pin
        from ..loading.locked import caller_package

        parse_repo_id(repo_id)  # bad input fails here, early
        self.repo_id, self.lockfile = repo_id, lockfile
        self.pin = find_pin(repo_id, lockfile, caller_package())

    def module(self, load_kernel) -> ModuleType:
        """The locked kernel module (loading/locked.py); ``load_kernel`` is not needed."""
        from ..loading.locked import load_pinned

        return load_pinned(self.pin)

    def pinned(self, commit: str):
        return self

    def key(self) -> tuple:
        return (type(self).__name__, self.repo_id, self.name, self.pin.commit, self.pin.source)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.pin.commit}:{self.name}"


class LockedLayerRepository(LockedRepository):
    """A layer class of a locked kernel: ``LockedLayerRepository("org/repo", layer_name="RMSNorm")``.

    Raises LockfileError when no lock pins the repo (or cannot be read), InvalidKernelName for bad names.
    """

    __slots__ = ("layer_name",)

    def __init__(self, repo_id: str, *, lockfile=None, layer_name: str, trust_remote_code: bool | list[str] = False):
        self.layer_name = _identifier(layer_name, "layer")
        super().__init__(repo_id, lockfile)

    @property
    def name(self) -> str:
        return self.layer_name

    def layer_in(self, module: ModuleType) -> type:
        return layer_class(self, module, self.layer_name)


class LockedFuncRepository(LockedRepository):
    """A function of a locked kernel: ``LockedFuncRepository("org/repo", func_name="rotary")``."""

    __slots__ = ("func_name",)
    kind = "function"

    def __init__(self, repo_id: str, *, lockfile=None, func_name: str, trust_remote_code: bool | list[str] = False):
        self.func_name = _identifier(func_name, "function")
        super().__init__(repo_id, lockfile)

    @property
    def name(self) -> str:
        return self.func_name

    def layer_in(self, module: ModuleType) -> type:
        return function_class(self, module, self.func_name)


def coerce(value):
    """A repository from what a mapping may hold: any repository, or the short form ``"org/repo[@rev]:Layer"``.

    Raises:
        TypeError: ``value`` is neither.
        InvalidKernelName, InvalidRevision: the short form is malformed.
    """
    if isinstance(value, str):
        return LayerRepository.parse(value)
    if callable(getattr(value, "layer_in", None)) and callable(getattr(value, "module", None)):
        return value
    raise TypeError(f"expected a repository (LayerRepository, FuncRepository, ...) or 'org/repo[@rev]:Layer', "
                    f"got {value!r}")


def describe(repo, module: ModuleType) -> str:
    """``repo@commit [variant]`` of a loaded kernel, for messages."""
    origin = getattr(module, "__kernelhook__", None)
    repo_id = getattr(repo, "repo_id", None) or str(repo)
    return f"{repo_id}@{origin.commit[:12]} [{origin.variant}]" if origin else str(repo)


# -- functions as layers -------------------------------------------------------------------------------

_function_layers_lock = threading.Lock()
_function_layers: dict = {}


def function_layer(func) -> type:
    """A layer class whose ``forward(self, *args)`` calls ``func(*args)``, made once per function.

    Its forward's signature is ``func``'s with ``self`` in front, so kernelize compares it with the
    function it replaces like any layer; ``has_backward`` and ``can_torch_compile`` are taken from
    ``func`` (defaults True and False, as the ``kernels`` package reads them).
    """
    with _function_layers_lock:
        made = _function_layers.get(func)
    if made is None:
        made = function_module_class(func)
        with _function_layers_lock:
            made = _function_layers.setdefault(func, made)
    return made


def function_module_class(func) -> type:
    """A new ``nn.Module`` class whose forward calls ``func``, with ``func``'s signature after ``self``."""
    import torch.nn as nn

    def forward(self, *args, **kwargs):
        return func(*args, **kwargs)

    signature = inspect.signature(func)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = signature.replace(parameters=[self_param, *signature.parameters.values()])
    name = getattr(func, "__name__", "function")
    forward.__qualname__ = f"{name}.forward"
    forward.__wrapped__ = func  # what kernelize puts in place of a stock function (classes.kernel_callable)
    forward.__module__ = getattr(func, "__module__", None)
    return type(name, (nn.Module,), {
        "forward": forward,
        "has_backward": bool(getattr(func, "has_backward", True)),
        "can_torch_compile": bool(getattr(func, "can_torch_compile", False)),
        "__module__": getattr(func, "__module__", None),
        "__qualname__": getattr(func, "__qualname__", name),
        "__doc__": getattr(func, "__doc__", None),
    })
