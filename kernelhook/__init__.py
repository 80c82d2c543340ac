"""kernelhook: import Hugging Face Hub compute kernels as Python modules.

    import kernels_hub.kernels_ext_npu.RMSNorm                      # newest vN branch (or the lockfile pin)
    importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")   # pinned
    kernelhook.get_kernel("kernels-ext-npu/RMSNorm", revision="v1.0.0")  # any name, any revision
    kernelhook.kernelize(model, device="npu")                        # bind mapped layers onto a model

The package, by step of the data path:

    errors.py      every error kernelhook raises
    platform.py    this machine and the build variants it accepts
    repo.py        a repo's address, commit and build/ layout
    files.py       digests and atomic writes
    project.py     the user's pyproject.toml and lockfile, found from the working directory
    hub/           the only package that talks to the Hub
    cache/         the content-addressed store, its upkeep, and lockfiles
    loading/       names -> commit -> variant -> files -> module; the import hook
    binding/       kernelize: mappings, layers, binding onto models
    integrations/  other libraries, imported on use
    cli/           the kernelhook command and the kernel author's tools
    testing/       LocalHub, a Hub-compatible server on loopback for tests

Importing this package is cheap: it imports neither torch nor huggingface_hub,
and each public name below is imported on first use.
"""

from __future__ import annotations

from .errors import (
    CacheError,
    DownloadError,
    HubUnreachableError,
    InvalidKernelName,
    InvalidRevision,
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
)

# typing.TYPE_CHECKING without importing typing (~2 ms of `import kernels_hub` when torch has not
# imported it yet); type checkers take any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on use
    from .binding.kernelize import Bound, Kept, KernelizeReport, kernelize, kernelize_report
    from .binding.layers import LayerRepository, Mode, use_kernel_forward_from_hub
    from .binding.mapping import (
        CUDAProperties,
        Device,
        ROCMProperties,
        register_kernel_mapping,
        use_kernel_mapping,
    )
    from .loading.api import get_kernel
    from .loading.finder import HookHandle, install, uninstall
    from .loading.loader import KernelOrigin, origin
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
    "LayerRepository": "binding.layers",
    "Mode": "binding.layers",
    "use_kernel_forward_from_hub": "binding.layers",
    "CUDAProperties": "binding.mapping",
    "Device": "binding.mapping",
    "ROCMProperties": "binding.mapping",
    "register_kernel_mapping": "binding.mapping",
    "use_kernel_mapping": "binding.mapping",
    "get_kernel": "loading.api",
    "HookHandle": "loading.finder",
    "install": "loading.finder",
    "uninstall": "loading.finder",
    "KernelOrigin": "loading.loader",
    "origin": "loading.loader",
    "SystemInfo": "platform",
    "current_system": "platform",
    "set_system": "platform",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kernelhook' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Bound",
    "CacheError",
    "CUDAProperties",
    "current_system",
    "Device",
    "DownloadError",
    "get_kernel",
    "HookHandle",
    "HubUnreachableError",
    "install",
    "InvalidKernelName",
    "InvalidRevision",
    "Kept",
    "KernelHookError",
    "KernelImportError",
    "kernelize",
    "kernelize_report",
    "KernelizeError",
    "KernelizeReport",
    "KernelLayerError",
    "KernelLoadError",
    "KernelNotFoundError",
    "KernelOrigin",
    "LayerRepository",
    "LockfileError",
    "LockMismatchError",
    "Mode",
    "NoBuildError",
    "NoCompatibleVariantError",
    "origin",
    "register_kernel_mapping",
    "RevisionNotFoundError",
    "ROCMProperties",
    "set_system",
    "SystemInfo",
    "uninstall",
    "use_kernel_forward_from_hub",
    "use_kernel_mapping",
]
