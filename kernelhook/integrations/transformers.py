"""transformers' ``use_kernels`` through kernelhook: ``enable()`` and ``disable()``.

transformers kernelizes models through the ``kernels`` package, and only through a
release it accepts (``is_kernels_available()``); without one,
``from_pretrained(..., use_kernels=True)`` raises "Kernels are not available".
Every way transformers turns kernels on goes through one public method,
``PreTrainedModel.set_use_kernels``: ``from_pretrained(use_kernels=True)``,
``model.use_kernels = True``, ``model.set_use_kernels(True)``, and ``train()`` /
``eval()``, which call it again when the mode changes while kernels are on.

``enable()`` replaces that one method, and nothing else, with ``set_use_kernels``
below, which kernelizes through kernelhook (the model's device; TRAINING when
``model.training``, else INFERENCE, as transformers does), and offers
transformers' own kernel table (transformers_table.py) as an implicit mapping:
the user's registrations come first, then that table, then kernelhook's defaults,
and offered entries load only from trusted orgs. ``disable()`` puts transformers'
method back (so ``use_kernels=True`` raises transformers' error again) and
withdraws the table. Both are idempotent and thread-safe.

When a ``kernels`` package transformers accepts is installed, transformers' own
path works, and ``enable()`` leaves it alone and logs that it did.
"""

from __future__ import annotations

import logging
import threading

from ..binding.kernelize import kernelize
from ..binding.layers import Mode
from ..binding.mapping import offer_kernel_mapping, withdraw_kernel_mapping
from ..errors import TransformersOptionError
from .transformers_table import transformers_kernel_table

logger = logging.getLogger("kernelhook")

OFFERED_BY = "transformers' kernel table"
METHOD = "set_use_kernels"

_lock = threading.Lock()
_replaced: list = []  # [(PreTrainedModel, transformers' own set_use_kernels)] while enabled


def enable() -> bool:
    """Make transformers' ``use_kernels`` kernelize through kernelhook: replaces ``PreTrainedModel.set_use_kernels``
    and offers transformers' kernel table. Calling it again changes nothing.

    Returns:
        True when kernelhook serves ``use_kernels`` (now or already); False when the installed ``kernels`` package
        is one transformers accepts, so its own path is left alone (logged at INFO).

    Raises:
        ImportError: transformers is not installed.
    """
    with _lock:
        if _replaced:
            return True
        from transformers.utils import import_utils

        if import_utils.is_kernels_available():
            logger.info("kernelhook.transformers.enable(): transformers accepts the installed kernels package, so "
                        "use_kernels=True goes through transformers' own path; kernelhook left it alone")
            return False
        from transformers.modeling_utils import PreTrainedModel

        table = transformers_kernel_table()
        offer_kernel_mapping(table.mapping, OFFERED_BY)
        _replaced.append((PreTrainedModel, PreTrainedModel.__dict__[METHOD]))
        setattr(PreTrainedModel, METHOD, set_use_kernels)
    logger.info("kernelhook.transformers.enable(): PreTrainedModel.set_use_kernels kernelizes through kernelhook; "
                "transformers' kernel table offered (%d layer names from %s, %d entries skipped)", len(table.mapping),
                table.path, len(table.skipped))
    return True


def disable() -> None:
    """Undo ``enable()``: transformers' own ``set_use_kernels`` again (``use_kernels=True`` raises transformers'
    error without a ``kernels`` package it accepts), and its table withdrawn. Calling it again changes nothing.
    Models kernelized meanwhile keep their kernels until kernelized again."""
    with _lock:
        if not _replaced:
            return
        cls, original = _replaced.pop()
        if cls.__dict__.get(METHOD) is set_use_kernels:
            setattr(cls, METHOD, original)
        else:  # someone replaced it after enable(): theirs stays, and may call ours
            logger.warning("kernelhook.transformers.disable(): PreTrainedModel.set_use_kernels was replaced by %r "
                           "after enable(); it stays as it is", cls.__dict__.get(METHOD))
        withdraw_kernel_mapping(OFFERED_BY)
    logger.info("kernelhook.transformers.disable(): transformers' own set_use_kernels is back")


def is_enabled() -> bool:
    """Whether ``enable()`` is in effect (False too when it left transformers' own path alone)."""
    with _lock:
        return bool(_replaced)


def set_use_kernels(self, use_kernels, kernel_config=None, mode=None) -> None:
    """``PreTrainedModel.set_use_kernels`` while enabled: kernelize the model through kernelhook.

    Args:
        use_kernels: True kernelizes (again: each call starts from the modules' own classes); False only
            records it, as transformers does (kernels already bound stay until the model is kernelized again).
        kernel_config: not supported; register mappings with ``kernelhook.register_kernel_mapping`` instead.
        mode: a ``kernelhook.Mode`` (or the kernels package's Mode, by name); default TRAINING when
            ``self.training``, else INFERENCE.

    Raises:
        TransformersOptionError: ``kernel_config`` was given, or ``mode`` is not a mode.
        KernelizeError, KernelLayerError: as kernelize raises them (unfit kernels fall back, as in transformers).
    """
    if not use_kernels:
        self._use_kernels = False
        return
    if kernel_config is not None:
        raise TransformersOptionError(_kernel_config_message(self, kernel_config))
    kernelize(self, mode=_as_mode(mode))
    self._use_kernels = True


def _kernel_config_message(model, kernel_config) -> str:
    mapping = getattr(kernel_config, "kernel_mapping", kernel_config)
    return (f"{type(model).__name__}.set_use_kernels(True, kernel_config={type(kernel_config).__name__}(kernel_mapping="
            f"{mapping!r})): kernelhook's transformers integration (kernelhook.transformers.enable()) does not read "
            f"transformers' KernelConfig, which it builds from the kernels package's classes. Fix: register the "
            f"kernels with kernelhook.register_kernel_mapping({{'RMSNorm': {{'cuda': 'org/repo@v1:Layer'}}}}) (or "
            f"scope them with kernelhook.use_kernel_mapping) and pass use_kernels=True without kernel_config.")


def _as_mode(mode) -> Mode | None:
    """kernelhook's Mode from kernelhook's or the kernels package's (read by flag names)."""
    if mode is None or isinstance(mode, Mode):
        return mode
    names = [member.name for member in type(mode) if member.value and member in mode] if _is_flag(mode) else []
    if not names or any(name not in Mode.__members__ for name in names):
        raise TransformersOptionError(f"set_use_kernels(True, mode={mode!r}): not a mode kernelhook can read. Fix: "
                                      f"pass kernelhook.Mode.INFERENCE or Mode.TRAINING (| Mode.TORCH_COMPILE).")
    combined = Mode[names[0]]
    for name in names[1:]:
        combined |= Mode[name]
    return combined


def _is_flag(value) -> bool:
    import enum

    return isinstance(value, enum.Flag)
