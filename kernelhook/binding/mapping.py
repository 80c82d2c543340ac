"""Kernel mappings: which Hub layer serves a layer name, per device and mode.

    {"RMSNorm": {"npu": LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm"),
                 "cuda": {Mode.INFERENCE: "acme/rmsnorm@v2:RMSNorm", Mode.TRAINING: ...},
                 Device("cuda", CUDAProperties(80, 90)): "acme/rmsnorm-hopper:RMSNorm"}}

Across threads: ``register_kernel_mapping`` outside any ``use_kernel_mapping``
changes the process-wide mapping, which every thread sees. ``use_kernel_mapping``
is scoped to the current context: the thread (or asyncio task) that entered it,
and tasks it starts; other threads keep seeing the process-wide mapping.
Inside such a block, ``register_kernel_mapping`` adds to that block's mapping.
Registering another mode for a layer and device adds to the modes already
registered there; registering the same mode again replaces that one entry.

Each entry remembers who put it there. The user's registrations are the user's
choice of code. Entries a library offers on the user's behalf (``offer_kernel_mapping``:
kernelhook's defaults, and any table an integration offers) are implicit: they
never replace the user's, and kernelize loads them only from trusted orgs
(trust.py). kernelhook offers one default: RMSNorm on ``npu`` from
``kernels-ext-npu/RMSNorm``, major version 1.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from dataclasses import dataclass
from typing import NamedTuple

from . import repositories
from .layers import MODE_PRIORITY, KernelizeFallback, Mode
from .repositories import LayerRepository

DEVICE_TYPES = ("cuda", "rocm", "npu", "xpu", "mps", "cpu")
_CAPABILITY_DEVICES = ("cuda", "rocm")


@dataclass(frozen=True)
class CUDAProperties:
    """Compute capabilities a CUDA (or ROCm) kernel supports, as major*10+minor: 75 to 90 is sm75..sm90."""

    min_capability: int
    max_capability: int

    def __post_init__(self):
        if not 0 <= self.min_capability <= self.max_capability:
            raise ValueError(f"capability range {self.min_capability}..{self.max_capability} is empty or negative")


ROCMProperties = CUDAProperties


@dataclass(frozen=True)
class Device:
    type: str
    properties: CUDAProperties | None = None

    def __post_init__(self):
        if self.type not in DEVICE_TYPES:
            raise ValueError(f"unknown device type {self.type!r}: use one of {', '.join(DEVICE_TYPES)}")
        if self.properties is not None and self.type not in _CAPABILITY_DEVICES:
            raise ValueError(f"capability ranges apply to cuda and rocm devices, not {self.type!r}")

    @property
    def capability_range(self) -> tuple[int, int] | None:
        p = self.properties
        return None if p is None else (p.min_capability, p.max_capability)


class Entry(NamedTuple):
    """One mapped repository and who registered it."""

    repo: object  # a repository (repositories.py)
    offered_by: str | None = None  # None: the user; else the library that offered it ("kernelhook's defaults")


# layer name -> device type -> capability range (None: any) -> mode -> entry
Table = dict[str, dict[str, dict[tuple | None, dict[Mode, Entry]]]]

# Pinned to major version 1 (the branch v1): a v2 published on the Hub may change the layer's API or
# numerics, and a default the user never chose must not change a model's output silently.
DEFAULT_MAPPING = {"RMSNorm": {"npu": LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1)}}
DEFAULTS_OFFERED_BY = "kernelhook's default mapping"

_lock = threading.Lock()
_base: Table = {}
_scoped: contextvars.ContextVar[Table | None] = contextvars.ContextVar("kernelhook_mapping", default=None)


def register_kernel_mapping(mapping: dict, inherit_mapping: bool = True) -> None:
    """Add a mapping to the ``use_kernel_mapping`` block in effect, else process-wide.

    Args:
        mapping: ``{layer name: {device: repository or {Mode: repository}}}``; a device is a type
            (``"npu"``) or a ``Device``; a repository a ``LayerRepository`` or ``"org/repo[@rev]:Layer"``.
        inherit_mapping: False drops what was registered before (in that block, or process-wide).

    Raises:
        TypeError, ValueError, InvalidKernelName: the mapping is malformed; nothing was changed.
    """
    entries = _entries(mapping)  # validate everything before changing anything
    scoped = _scoped.get()
    if scoped is not None:
        _apply(scoped, entries, inherit_mapping)
        return
    with _lock:
        _apply(_base, entries, inherit_mapping)


def offer_kernel_mapping(mapping: dict, offered_by: str) -> None:
    """Add a library's mapping process-wide, as implicit entries: they fill what the user has not
    registered (replacing earlier offers), and kernelize loads them only from trusted orgs.

    Raises the same errors as ``register_kernel_mapping``; nothing is changed then.
    """
    entries = _entries(mapping)
    with _lock:
        _apply(_base, entries, inherit=True, offered_by=offered_by)


def withdraw_kernel_mapping(offered_by: str) -> None:
    """Remove, process-wide, every entry ``offer_kernel_mapping`` added for ``offered_by``."""
    with _lock:
        for per_device in _base.values():
            for ranges in per_device.values():
                for modes in ranges.values():
                    for mode in [m for m, entry in modes.items() if entry.offered_by == offered_by]:
                        del modes[mode]
        _prune(_base)


def _prune(table: Table) -> None:
    """Drop the levels left empty, so a withdrawn layer name or device reads as never mapped."""
    for name, per_device in list(table.items()):
        for device, ranges in list(per_device.items()):
            for capability_range in [r for r, modes in ranges.items() if not modes]:
                del ranges[capability_range]
            if not ranges:
                del per_device[device]
        if not per_device:
            del table[name]


@contextlib.contextmanager
def use_kernel_mapping(mapping: dict, *, inherit_mapping: bool = True):
    """Within the block (this thread or asyncio task only), use ``mapping`` on top of, or instead of,
    the current one. Raises like ``register_kernel_mapping`` on entry."""
    table = snapshot() if inherit_mapping else {}
    _apply(table, _entries(mapping), inherit=True)
    token = _scoped.set(table)
    try:
        yield
    finally:
        _scoped.reset(token)


def snapshot() -> Table:
    """A copy of the mapping in effect here, safe from other threads' registrations."""
    scoped = _scoped.get()
    if scoped is not None:
        return _copy(scoped)
    with _lock:
        return _copy(_base)


class Selection(NamedTuple):
    repo: object  # a repository (repositories.py)
    registered_for: Mode
    offered_by: str | None  # None: the user's registration


class NoSelection(NamedTuple):
    """Why nothing is mapped, and which fallback case (KernelizeFallback) that is."""

    reason: str
    case: KernelizeFallback


def select(table: Table, layer_name: str, device: str, capability: int | None, mode: Mode) -> Selection | NoSelection:
    """The repository for a layer on a device in a mode, or why there is none."""
    per_device = table.get(layer_name)
    if per_device is None:
        return NoSelection(f"no mapping for the layer name {layer_name!r}", KernelizeFallback.NO_LAYER)
    ranges = per_device.get(device)
    if not ranges:
        mapped = ", ".join(sorted(per_device)) or "nothing"
        return NoSelection(f"no mapping for {layer_name!r} on {device} (mapped on: {mapped})", KernelizeFallback.NO_DEVICE)
    modes = _narrowest(ranges, capability)
    if modes is None:
        return NoSelection(f"no mapping for {layer_name!r} on {device} covers compute capability {capability}",
                           KernelizeFallback.NO_COMPATIBLE_PROPERTIES)
    for wanted in MODE_PRIORITY[mode]:
        if wanted in modes:
            entry = modes[wanted]
            return Selection(entry.repo, wanted, entry.offered_by)
    return NoSelection(f"no mapping for {layer_name!r} on {device} serves {mode} (registered: {_mode_names(modes)})",
                       KernelizeFallback.NO_COMPATIBLE_MODE)


def _narrowest(ranges: dict, capability: int | None) -> dict | None:
    holding = [(r[1] - r[0], r) for r in ranges if r is not None and capability is not None and r[0] <= capability <= r[1]]
    if holding:
        return ranges[min(holding)[1]]
    return ranges.get(None)


def _entries(mapping: dict) -> list[tuple[str, Device, dict[Mode, LayerRepository]]]:
    if not isinstance(mapping, dict):
        raise TypeError(f"a kernel mapping is a dict {{layer name: {{device: repository}}}}, got {mapping!r}")
    entries = []
    for layer_name, per_device in mapping.items():
        if not isinstance(layer_name, str) or not isinstance(per_device, dict):
            raise TypeError(f"mapping entry {layer_name!r}: expected a layer name and a {{device: repository}} dict")
        for device, value in per_device.items():
            device = Device(device) if isinstance(device, str) else device
            if not isinstance(device, Device):
                raise TypeError(f"mapping for {layer_name!r}: {device!r} is not a device type or Device")
            entries.append((layer_name, device, _modes(layer_name, value)))
    return entries


def _modes(layer_name: str, value) -> dict[Mode, LayerRepository]:
    if not isinstance(value, dict):
        return {Mode.FALLBACK: repositories.coerce(value)}
    modes = {}
    for mode, repo in value.items():
        if not isinstance(mode, Mode) or (mode not in MODE_PRIORITY and mode is not Mode.FALLBACK):
            raise ValueError(f"mapping for {layer_name!r}: {mode!r} is not a mode kernelize uses")
        modes[mode] = repositories.coerce(repo)
    return modes


def _apply(table: Table, entries, inherit: bool, offered_by: str | None = None) -> None:
    if not inherit:
        table.clear()
    for layer_name, device, modes in entries:
        by_range = table.setdefault(layer_name, {}).setdefault(device.type, {})
        registered = by_range.setdefault(device.capability_range, {})
        for mode, repo in modes.items():  # adds modes, never drops others
            if offered_by is None or registered.get(mode, Entry(repo, offered_by)).offered_by is not None:
                registered[mode] = Entry(repo, offered_by)  # an offer never replaces the user's entry


def _copy(table: Table) -> Table:
    return {
        name: {device: {r: dict(modes) for r, modes in ranges.items()} for device, ranges in per_device.items()}
        for name, per_device in table.items()
    }


def _mode_names(modes: dict) -> str:
    return ", ".join(str(m) for m in modes)


offer_kernel_mapping(DEFAULT_MAPPING, DEFAULTS_OFFERED_BY)
