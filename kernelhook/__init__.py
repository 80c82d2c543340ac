"""kernelhook: import Hugging Face Hub compute kernels as Python modules.

    import kernels_hub.kernels_ext_npu.RMSNorm                      # newest vN branch (or the lockfile pin)
    importlib.import_module("kernels_hub.kernels_ext_npu.RMSNorm@v1")   # pinned
    kernelhook.get_kernel("kernels-ext-npu/RMSNorm", revision="v1.0.0")  # any name, any revision
    kernelhook.kernelize(model, device="npu")                        # bind mapped layers onto a model

Importing this package is cheap: it imports neither torch nor huggingface_hub.
"""

from __future__ import annotations

from .errors import (
    CacheError,
    KernelizeError,
    KernelLayerError,
    DownloadError,
    HubUnreachableError,
    InvalidKernelName,
    InvalidRevision,
    KernelHookError,
    KernelImportError,
    KernelLoadError,
    KernelNotFoundError,
    LockfileError,
    LockMismatchError,
    NoBuildError,
    NoCompatibleVariantError,
    RevisionNotFoundError,
)
from .finder import install, uninstall

__version__ = "0.1.0"

# Loaded on first use: `import kernels_hub` must stay cheap (no logging, platform, torch...).
_LAZY = {
    "SystemInfo": "system",
    "current_system": "system",
    "set_system": "system",
    "Mode": "layers",
    "LayerRepository": "layers",
    "use_kernel_forward_from_hub": "layers",
    "Device": "mapping",
    "CUDAProperties": "mapping",
    "ROCMProperties": "mapping",
    "register_kernel_mapping": "mapping",
    "use_kernel_mapping": "mapping",
    "kernelize": "bind",
    "kernelize_report": "bind",
    "KernelizeReport": "bind",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'kernelhook' has no attribute {name!r}")


def get_kernel(repo_id: str, revision: str | None = None, *, version: int | None = None):
    """Load a Hub kernel by its exact repo id: ``get_kernel("org/repo", revision=..., version=N)``.

    Returns the very module object that ``import kernels_hub.<org>.<repo>@<rev>``
    gives for the same commit and variant.
    """
    from .api import get_kernel as _get_kernel

    return _get_kernel(repo_id, revision, version=version)


def origin(module):
    """Where a kernel module came from: repo, commit, variant and cache folder (or None)."""
    from .loader import origin_of

    return origin_of(module)


__all__ = [
    "CUDAProperties",
    "CacheError",
    "Device",
    "KernelLayerError",
    "KernelizeError",
    "KernelizeReport",
    "LayerRepository",
    "Mode",
    "ROCMProperties",
    "kernelize",
    "kernelize_report",
    "register_kernel_mapping",
    "use_kernel_forward_from_hub",
    "use_kernel_mapping",
    "DownloadError",
    "HubUnreachableError",
    "InvalidKernelName",
    "InvalidRevision",
    "KernelHookError",
    "KernelImportError",
    "KernelLoadError",
    "KernelNotFoundError",
    "LockMismatchError",
    "LockfileError",
    "NoBuildError",
    "NoCompatibleVariantError",
    "RevisionNotFoundError",
    "SystemInfo",
    "current_system",
    "get_kernel",
    "install",
    "origin",
    "set_system",
    "uninstall",
]
