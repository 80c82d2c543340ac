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

Precedence is by who registered first, then by capability range and mode: for a
layer on a device, the user's entries are tried first (narrowest capability range,
then the modes in order), then each library's offer, the latest offer first. So a
plain repository the user registers (Mode.FALLBACK) is used before an offered
entry for Mode.INFERENCE. Offers are kept apart from the user's registrations, so
withdrawing one brings back what it covered (an earlier offer's entries).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
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
    rank: int = 0  # among offers, the later offer ranks higher and is tried first


# layer name -> device type -> capability range (None: any) -> mode -> entry
Table = dict[str, dict[str, dict[tuple | None, dict[Mode, Entry]]]]

# Pinned to major version 1 (the branch v1): a v2 published on the Hub may change the layer's API or
# numerics, and a default the user never chose must not change a model's output silently.
DEFAULT_MAPPING = {"RMSNorm": {"npu": LayerRepository("kernels-ext-npu/RMSNorm", "RMSNorm", version=1)}}
DEFAULTS_OFFERED_BY = "kernelhook's default mapping"

_lock = threading.Lock()
_base: Table = {}  # the user's process-wide registrations
_offers: dict[str, tuple[int, list]] = {}  # library -> (rank, its entries); merged into snapshots
_ranks = itertools.count(1)
_scoped: contextvars.ContextVar[Table | None] = contextvars.ContextVar("kernelhook_mapping", default=None)


def register_kernel_mapping(mapping: dict, inherit_mapping: bool = True) -> None:
    """Add a mapping to the ``use_kernel_mapping`` block in effect, else process-wide.

    Args:
        mapping: ``{layer name: {device: repository or {Mode: repository}}}``; a device is a type
            (``"npu"``) or a ``Device``; a repository a ``LayerRepository`` or ``"org/repo[@rev]:Layer"``.
        inherit_mapping: False drops what was registered before (in that block, or process-wide,
            where the libraries' offers go too).

    Raises:
        TypeError, ValueError, InvalidKernelName: the mapping is malformed; nothing was changed.
    """
    entries = _entries(mapping)  # validate everything before changing anything
    scoped = _scoped.get()
    if scoped is not None:
        _apply(scoped, entries, inherit_mapping)
        return
    with _lock:
        if not inherit_mapping:
            _offers.clear()
        _apply(_base, entries, inherit_mapping)


def offer_kernel_mapping(mapping: dict, offered_by: str) -> None:
    """Add a library's mapping process-wide, as implicit entries: they come after the user's
    registrations and before earlier offers (offering again replaces the library's previous offer
    and makes it the latest), and kernelize loads them only from trusted orgs.

    Raises the same errors as ``register_kernel_mapping``; nothing is changed then.
    """
    entries = _entries(mapping)
    with _lock:
        _offers.pop(offered_by, None)
        _offers[offered_by] = (next(_ranks), entries)


def withdraw_kernel_mapping(offered_by: str) -> None:
    """Remove, process-wide, what ``offer_kernel_mapping`` offered for ``offered_by``; the user's
    entries and other libraries' offers stay. Withdrawing what was never offered does nothing."""
    with _lock:
        _offers.pop(offered_by, None)


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
        table: Table = {}
        for offered_by, (rank, entries) in _offers.items():
            _apply(table, entries, inherit=True, offered_by=offered_by, rank=rank)
        _overlay(table, _base)
        return table


def _overlay(table: Table, user: Table) -> None:
    """Put the user's entries over the offered ones, slot by slot."""
    for name, per_device in user.items():
        for device, ranges in per_device.items():
            for capability_range, modes in ranges.items():
                table.setdefault(name, {}).setdefault(device, {}).setdefault(capability_range, {}).update(modes)


class Selection(NamedTuple):
    repo: object  # a repository (repositories.py)
    registered_for: Mode
    offered_by: str | None  # None: the user's registration


class NoSelection(NamedTuple):
    """Why nothing is mapped, and which fallback case (KernelizeFallback) that is."""

    reason: str
    case: KernelizeFallback


def select(table: Table, layer_name: str, device: str, capability: int | None, mode: Mode) -> Selection | NoSelection:
    """The repository for a layer on a device in a mode, or why there is none: the user's entries
    first, then each offer's, the latest first (within each, the narrowest capability range that
    holds the device, then the modes in MODE_PRIORITY's order)."""
    per_device = table.get(layer_name)
    if per_device is None:
        return NoSelection(f"no mapping for the layer name {layer_name!r}", KernelizeFallback.NO_LAYER)
    ranges = per_device.get(device)
    if not ranges:
        mapped = ", ".join(sorted(per_device)) or "nothing"
        return NoSelection(f"no mapping for {layer_name!r} on {device} (mapped on: {mapped})", KernelizeFallback.NO_DEVICE)
    covered = {}
    for tier in _tiers(ranges):
        modes = _narrowest(_of_tier(ranges, tier), capability)
        if modes is None:
            continue
        covered.update(modes)
        for wanted in MODE_PRIORITY[mode]:
            if wanted in modes:
                entry = modes[wanted]
                return Selection(entry.repo, wanted, entry.offered_by)
    if not covered:
        return NoSelection(f"no mapping for {layer_name!r} on {device} covers compute capability {capability}",
                           KernelizeFallback.NO_COMPATIBLE_PROPERTIES)
    return NoSelection(f"no mapping for {layer_name!r} on {device} serves {mode} (registered: {_mode_names(covered)})",
                       KernelizeFallback.NO_COMPATIBLE_MODE)


def _tiers(ranges: dict) -> list[tuple[bool, int]]:
    """Who registered entries here, in the order they are tried: the user, then offers, latest first."""
    return sorted({_tier(entry) for modes in ranges.values() for entry in modes.values()})


def _tier(entry: Entry) -> tuple[bool, int]:
    return (entry.offered_by is not None, -entry.rank)


def _of_tier(ranges: dict, tier: tuple[bool, int]) -> dict:
    own = {r: {m: e for m, e in modes.items() if _tier(e) == tier} for r, modes in ranges.items()}
    return {r: modes for r, modes in own.items() if modes}


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


def _apply(table: Table, entries, inherit: bool, offered_by: str | None = None, rank: int = 0) -> None:
    if not inherit:
        table.clear()
    for layer_name, device, modes in entries:
        by_range = table.setdefault(layer_name, {}).setdefault(device.type, {})
        registered = by_range.setdefault(device.capability_range, {})
        for mode, repo in modes.items():  # adds modes, never drops others
            registered[mode] = Entry(repo, offered_by, rank)


def _copy(table: Table) -> Table:
    return {
        name: {device: {r: dict(modes) for r, modes in ranges.items()} for device, ranges in per_device.items()}
        for name, per_device in table.items()
    }


def _mode_names(modes: dict) -> str:
    return ", ".join(str(m) for m in modes)


offer_kernel_mapping(DEFAULT_MAPPING, DEFAULTS_OFFERED_BY)
