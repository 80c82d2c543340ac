"""What this machine is, in the vocabulary of build-variant names.

The probe runs once per process and its result is an injectable value:
``set_system(SystemInfo.parse("torch27-cxx11-cann82-aarch64-linux"))`` in
code, or ``KERNELHOOK_SYSTEM=torch27-cxx11-cann82-aarch64-linux`` in the
environment, describes an Ascend box on any machine (tests do this).

Compute tags put the minor version in the last digit(s) by a fixed rule per
backend and are parsed with anchored regexes, never by slicing: ``cu126`` is
CUDA 12.6, ``rocm64`` ROCm 6.4, ``cann82`` CANN 8.2 and ``cann100`` CANN 10.0
(CANN's minor is its last digit; CUDA's too).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import threading
from typing import NamedTuple

logger = logging.getLogger("kernelhook")

# backend -> (regex of its versioned tag, how to write a version as a tag)
_COMPUTE_TAGS = {
    "cuda": (re.compile(r"cu(\d+)(\d)"), "cu{0}{1}"),
    "rocm": (re.compile(r"rocm(\d)(\d+)"), "rocm{0}{1}"),
    "cann": (re.compile(r"cann(\d+)(\d)"), "cann{0}{1}"),
    "xpu": (re.compile(r"xpu(\d{4})(\d+)"), "xpu{0}{1}"),
}
_UNVERSIONED = {"cpu": "cpu", "metal": "metal", "mps": "metal"}
# The name a backend goes by in no-arch variants (`torch-npu`, `torch-cuda`, ...).
NOARCH_NAMES = {"cuda": "cuda", "rocm": "rocm", "cann": "npu", "xpu": "xpu", "metal": "metal", "cpu": "cpu"}
_VERSION_PREFIX = re.compile(r"\s*(\d+)\.(\d+)")


class Compute(NamedTuple):
    """A compute backend and, where builds depend on it, its major.minor version."""

    backend: str  # cpu | cuda | rocm | xpu | cann | metal
    version: tuple[int, int] | None = None

    @property
    def tag(self) -> str:
        if self.version is None:
            return self.backend
        return _COMPUTE_TAGS[self.backend][1].format(*self.version)

    @property
    def noarch_name(self) -> str:
        return NOARCH_NAMES[self.backend]

    def __str__(self) -> str:
        names = {"cuda": "CUDA", "rocm": "ROCm", "xpu": "XPU", "cann": "CANN", "metal": "Metal", "cpu": "CPU"}
        version = "" if self.version is None else " {}.{}".format(*self.version)
        return names[self.backend] + version


def parse_compute(tag: str) -> Compute | None:
    """``cu126`` -> Compute("cuda", (12, 6)); None for an unknown tag."""
    if tag in _UNVERSIONED:
        return Compute(_UNVERSIONED[tag])
    for backend, (pattern, _) in _COMPUTE_TAGS.items():
        match = pattern.fullmatch(tag)
        if match:
            return Compute(backend, (int(match.group(1)), int(match.group(2))))
    return None


def parse_version_prefix(text: object) -> tuple[int, int] | None:
    """``"8.2.RC1"`` -> (8, 2); ``"12.6"`` -> (12, 6); anything else -> None."""
    match = _VERSION_PREFIX.match(text) if isinstance(text, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


class SystemInfo(NamedTuple):
    """This machine, as build variants see it."""

    torch_version: tuple[int, int] | None
    cxx11_abi: bool | None  # None off Linux, where variants carry no ABI tag
    compute: Compute
    arch: str  # x86_64 | aarch64 | ...
    os: str  # linux | darwin | windows

    @property
    def strict_variant(self) -> str | None:
        """The strict variant name built for exactly this system."""
        if self.torch_version is None:
            return None
        abi = "" if self.cxx11_abi is None else ("-cxx11" if self.cxx11_abi else "-cxx98")
        major, minor = self.torch_version
        return f"torch{major}{minor}{abi}-{self.compute.tag}-{self.arch}-{self.os}"

    def __str__(self) -> str:
        torch = "no torch" if self.torch_version is None else "torch {}.{}".format(*self.torch_version)
        abi = "" if self.cxx11_abi is None else (", cxx11 ABI" if self.cxx11_abi else ", pre-cxx11 ABI")
        return f"{torch}{abi}, {self.compute}, {self.arch} {self.os}"

    @classmethod
    def parse(cls, text: str) -> "SystemInfo":
        """Describe a system by the strict variant that fits it, e.g. ``torch27-cxx11-cann82-aarch64-linux``."""
        from .variants import StrictVariant, parse_variant  # variants builds on this module

        variant = parse_variant(text.strip())
        if not isinstance(variant, StrictVariant):
            raise ValueError(
                f"{text!r} does not describe a system: write a strict variant name such as "
                "torch27-cxx11-cann82-aarch64-linux or torch213-cxx11-cpu-x86_64-linux"
            )
        return cls(variant.torch_version, variant.cxx11_abi, variant.compute, variant.arch, variant.os)


_lock = threading.Lock()
_current: SystemInfo | None = None


def current_system() -> SystemInfo:
    """The system variants are chosen for: the injected one, else the probe (run once)."""
    global _current
    with _lock:
        if _current is None:
            override = os.environ.get("KERNELHOOK_SYSTEM")
            _current = SystemInfo.parse(override) if override else probe_system()
            logger.debug("system: %s", _current)
        return _current


def set_system(system: SystemInfo | None) -> SystemInfo | None:
    """Inject a system description (None: probe again on next use). Returns the previous one."""
    global _current
    with _lock:
        previous, _current = _current, system
        return previous


def probe_system() -> SystemInfo:
    """Ask torch (and torch_npu, when it is loaded) what this machine is."""
    import torch

    parsed = parse_version_prefix(torch.__version__)
    os_name = platform.system().lower()
    cxx11_abi = bool(torch.compiled_with_cxx11_abi()) if os_name == "linux" else None
    return SystemInfo(parsed, cxx11_abi, _probe_compute(torch), _normalise_arch(platform.machine()), os_name)


def _normalise_arch(machine: str) -> str:
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())


def _probe_compute(torch) -> Compute:
    if getattr(torch.version, "hip", None):
        return Compute("rocm", parse_version_prefix(torch.version.hip))
    if getattr(torch.version, "cuda", None):
        return Compute("cuda", parse_version_prefix(torch.version.cuda))
    cann = _probe_cann(torch)
    if cann is not None:
        return cann
    xpu = getattr(torch.version, "xpu", None)
    if xpu and getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        match = re.match(r"(\d{4})(\d{2})?", str(xpu))
        return Compute("xpu", (int(match.group(1)), int(match.group(2) or 0)) if match else None)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Compute("metal")
    return Compute("cpu")


def _probe_cann(torch) -> Compute | None:
    """CANN, when torch_npu has registered the `npu` device.

    torch_npu reports the version two ways: importing it sets ``torch.version.cann``
    from the install-info file (or "not known"), and ``get_cann_version()`` asks the
    runtime. Use the first that parses; both give strings like ``8.2.RC1``.
    """
    try:
        if torch._C._get_privateuse1_backend_name() != "npu":
            return None
    except AttributeError:
        return None
    version = parse_version_prefix(getattr(torch.version, "cann", None))
    if version is None:
        try:
            from torch_npu.npu.utils import get_cann_version

            version = parse_version_prefix(get_cann_version())
        except Exception:  # torch_npu without its CANN libraries: version unknown
            logger.debug("torch_npu did not report a CANN version", exc_info=True)
    return Compute("cann", version)
