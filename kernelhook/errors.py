"""Every error kernelhook raises, one class per kind of failure.

Import failures subclass ImportError (or ModuleNotFoundError where a name is
not found), so `try: import kernels_hub... except ImportError` works as users
expect. Each message names what the user typed, what was tried, and the fix.
"""

from __future__ import annotations


class KernelHookError(Exception):
    """Base class of every kernelhook error."""


class KernelImportError(KernelHookError, ImportError):
    """A kernel could not be imported."""


class InvalidKernelName(KernelImportError, ValueError):
    """The typed module name or repo id does not follow the grammar."""


class InvalidRevision(KernelImportError, ValueError):
    """A revision or version argument is malformed or contradictory."""


class InvalidBackend(KernelImportError, ValueError):
    """A ``backend=`` argument names a backend this machine cannot load builds for."""


class KernelNotFoundError(KernelImportError, ModuleNotFoundError):
    """No Hub repo answers to the typed name."""


class RevisionNotFoundError(KernelImportError):
    """The repo exists but the revision does not."""


class HubUnreachableError(KernelImportError):
    """The Hub could not be asked and nothing usable is cached."""


class InvalidTokenError(HubUnreachableError):
    """The Hub refused the token sent (HF_TOKEN or the stored login) and nothing usable is cached."""


class NoBuildError(KernelImportError):
    """The repo has no `build/` folder at that commit."""


class NoCompatibleVariantError(KernelImportError):
    """No build variant in the repo fits this system."""


class DownloadError(KernelImportError):
    """A file could not be downloaded, or its bytes did not match the Hub's hash."""


class GatedKernelError(DownloadError):
    """The repo is gated: its files need the conditions accepted on the Hub and a token with access."""


class CacheError(KernelImportError):
    """The cache could not be read or written."""


class KernelLoadError(KernelImportError):
    """The variant's files are present but executing them failed."""


class KernelLayerError(KernelHookError, TypeError):
    """A kernel layer breaks a rule kernelize checks before binding it."""


class KernelizeError(KernelHookError, RuntimeError):
    """kernelize could not bind a kernel, and use_fallback=False asked it to raise."""


class LockMismatchError(KernelImportError):
    """A cached file does not match the lockfile's hash; nothing of its variant was imported."""


class LockfileError(KernelImportError, ValueError):
    """A lockfile, or the pyproject table it is made from, cannot be read."""


class SettingError(KernelImportError, ValueError):
    """A KERNELHOOK_* environment variable is malformed; the message names it, its value and the form it takes."""


class AttentionKernelError(KernelHookError, ValueError):
    """A kernel cannot be registered as a transformers attention function: the name or the function
    named is malformed or missing, or the registration name would be read by transformers as something else."""


class UnsupportedAttentionError(KernelHookError, ValueError):
    """A model asks a registered attention kernel for what it cannot compute (sliding window, softcap,
    attention sinks, a mask beyond causal with padding); the kernel refuses rather than give wrong output."""


class TransformersOptionError(KernelHookError, ValueError):
    """transformers was asked for something kernelhook's integration does not serve (``kernel_config=``, a mode
    it cannot read); the message names the option and what to use instead."""
