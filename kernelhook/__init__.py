"""kernelhook: import Hugging Face Hub compute kernels as Python modules.

    import kernels_hub.kernels_ext_npu.RMSNorm                      # newest vN branch (or the lockfile pin)
    importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")   # pinned
    kernelhook.get_kernel("kernels-ext-npu/RMSNorm", revision="v1.0.0")  # any name, any revision
    kernelhook.kernelize(model, device="npu")                        # bind mapped layers onto a model

The public ``kernels`` package's loading API is here under its names and semantics too
(get_local_kernel, LOCAL_KERNELS, get_locked_kernel, load_kernel, has_kernel, install_kernel,
get_kernel_variants, get_loaded_kernels, the Local- and Locked- repositories).

The package, by step of the data path:

    errors.py      every error kernelhook raises
    platform.py    this machine and the build variants it accepts
    settings.py    KERNELHOOK_* environment variables, read on use
    repo.py        a repo's address, commit and build/ layout
    files.py       digests and atomic writes
    project.py     the user's pyproject.toml and lockfile, found from the working directory
    hub/           the only package that talks to the Hub
    cache/         the content-addressed store, its upkeep, and lockfiles
    loading/       names -> commit -> variant -> files -> module; the import hook
    binding/       kernelize: mappings, layers, binding onto models
    integrations/  other libraries, imported on use
    transformers.py  kernelhook.transformers.enable(): transformers' use_kernels through kernelhook
    cli/           the kernelhook command and the kernel author's tools
    testing/       LocalHub, a Hub-compatible server on loopback for tests

Importing this package is cheap: it imports neither torch nor huggingface_hub,
and each public name below is imported on first use.
"""

from __future__ import annotations

from .errors import (
    AttentionKernelError,
    CacheError,
    DownloadError,
    GatedKernelError,
    HubUnreachableError,
    InvalidBackend,
    InvalidKernelName,
    InvalidRevision,
    InvalidTokenError,
    KernelHookError,
    KernelImportError,
    KernelizeError,
    KernelLayerError,
    KernelLoadError,
    KernelNotFoundError,
    LockfileError,
    LockMismatchError,
    NoBuildError,
    NoCompatibleVariantError,
    RevisionNotFoundError,
    SettingError,
    TransformersOptionError,
    UnsupportedAttentionError,
)

# typing.TYPE_CHECKING without importing typing (~2 ms of `import kernels_hub` when torch has not
# imported it yet); type checkers take any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on use
    from .binding.kernelize import (
        Bound,
        Kept,
        KernelizeReport,
        kernelize,
        kernelize_report,
    )
    from .binding.layers import (
        KernelizeFallback,
        Mode,
        replace_kernel_forward_from_hub,
        use_kernel_forward_from_hub,
        use_kernel_func_from_hub,
        use_kernelized_func,
    )
    from .binding.mapping import (
        CUDAProperties,
        Device,
        ROCMProperties,
        register_kernel_mapping,
        use_kernel_mapping,
    )
    from .binding.repositories import (
        FuncRepository,
        LayerRepository,
        LocalFuncRepository,
        LocalLayerRepository,
        LockedFuncRepository,
        LockedLayerRepository,
    )
    from .loading.api import get_kernel
    from .loading.finder import HookHandle, install, uninstall
    from .loading.loaded import LoadedKernel, RepoInfo, get_loaded_kernels
    from .loading.loader import KernelOrigin, origin
    from .loading.local import get_local_kernel
    from .loading.locked import get_locked_kernel, load_kernel
    from .loading.query import VariantAccepted, VariantRejected, get_kernel_variants, has_kernel, install_kernel
    from .platform import SystemInfo, current_system, set_system

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first use: `import kernels_hub`
# must stay cheap (no logging, platform probing, torch...).
_LAZY = {
    "Bound": "binding.kernelize",
    "KernelizeReport": "binding.kernelize",
    "Kept": "binding.kernelize",
    "kernelize": "binding.kernelize",
    "kernelize_report": "binding.kernelize",
    "KernelizeFallback": "binding.layers",
    "Mode": "binding.layers",
    "replace_kernel_forward_from_hub": "binding.layers",
    "use_kernel_forward_from_hub": "binding.layers",
    "use_kernel_func_from_hub": "binding.layers",
    "use_kernelized_func": "binding.layers",
    "FuncRepository": "binding.repositories",
    "LayerRepository": "binding.repositories",
    "LocalFuncRepository": "binding.repositories",
    "LocalLayerRepository": "binding.repositories",
    "LockedFuncRepository": "binding.repositories",
    "LockedLayerRepository": "binding.repositories",
    "CUDAProperties": "binding.mapping",
    "Device": "binding.mapping",
    "ROCMProperties": "binding.mapping",
    "register_kernel_mapping": "binding.mapping",
    "use_kernel_mapping": "binding.mapping",
    "get_kernel": "loading.api",
    "HookHandle": "loading.finder",
    "install": "loading.finder",
    "uninstall": "loading.finder",
    "LoadedKernel": "loading.loaded",
    "RepoInfo": "loading.loaded",
    "get_loaded_kernels": "loading.loaded",
    "KernelOrigin": "loading.loader",
    "origin": "loading.loader",
    "get_local_kernel": "loading.local",
    "get_locked_kernel": "loading.locked",
    "load_kernel": "loading.locked",  # the kernels package's: a locked kernel from the cache (not loading.api's)
    "VariantAccepted": "loading.query",
    "VariantRejected": "loading.query",
    "get_kernel_variants": "loading.query",
    "has_kernel": "loading.query",
    "install_kernel": "loading.query",
    "SystemInfo": "platform",
    "current_system": "platform",
    "set_system": "platform",
}


_SUBMODULES = ("transformers",)  # kernelhook.transformers: reachable as an attribute, imported on first use


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None and name not in _SUBMODULES:
        raise AttributeError(f"module 'kernelhook' has no attribute {name!r}")
    import importlib

    if module is None:
        return importlib.import_module(f".{name}", __name__)  # the import system binds it as an attribute
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "AttentionKernelError",
    "Bound",
    "CacheError",
    "CUDAProperties",
    "current_system",
    "Device",
    "DownloadError",
    "FuncRepository",
    "GatedKernelError",
    "get_kernel",
    "get_kernel_variants",
    "get_loaded_kernels",
    "get_local_kernel",
    "get_locked_kernel",
    "has_kernel",
    "HookHandle",
    "HubUnreachableError",
    "install",
    "install_kernel",
    "InvalidBackend",
    "InvalidKernelName",
    "InvalidRevision",
    "InvalidTokenError",
    "Kept",
    "KernelHookError",
    "KernelImportError",
    "kernelize",
    "kernelize_report",
    "KernelizeError",
    "KernelizeFallback",
    "KernelizeReport",
    "KernelLayerError",
    "KernelLoadError",
    "KernelNotFoundError",
    "KernelOrigin",
    "LayerRepository",
    "load_kernel",
    "LoadedKernel",
    "LocalFuncRepository",
    "LocalLayerRepository",
    "LockedFuncRepository",
    "LockedLayerRepository",
    "LockfileError",
    "LockMismatchError",
    "Mode",
    "NoBuildError",
    "NoCompatibleVariantError",
    "origin",
    "register_kernel_mapping",
    "replace_kernel_forward_from_hub",
    "RepoInfo",
    "RevisionNotFoundError",
    "ROCMProperties",
    "set_system",
    "SettingError",
    "SystemInfo",
    "TransformersOptionError",
    "uninstall",
    "UnsupportedAttentionError",
    "use_kernel_forward_from_hub",
    "use_kernel_func_from_hub",
    "use_kernel_mapping",
    "use_kernelized_func",
    "VariantAccepted",
    "VariantRejected",
]
