"""This machine and the build variants it accepts, as ``packaging.tags`` is for wheels.

One module for both halves of the question "which folder under ``build/`` fits
here?": what this machine is (probed once per process, injectable), and how
variant names parse and rank. Both speak the same vocabulary of compute tags.

The probe's result is an injectable value:
``set_system(SystemInfo.parse("torch27-cxx11-cann82-aarch64-linux"))`` in
code, or ``KERNELHOOK_SYSTEM=torch27-cxx11-cann82-aarch64-linux`` in the
environment, describes an Ascend box on any machine (tests do this).

Compute tags put the minor version in the last digit(s) by a fixed rule per
backend and are parsed with anchored regexes, never by slicing: ``cu126`` is
CUDA 12.6, ``rocm64`` ROCm 6.4, ``cann82`` CANN 8.2 and ``cann100`` CANN 10.0
(CANN's minor is its last digit; CUDA's too).

Variant names (step 3 of the data path chooses one), as the kernel Hub writes them:

* strict      ``torch{M}{m}[-cxx11|-cxx98]-{compute}-{arch}-{os}``   e.g. ``torch27-cxx11-cann82-aarch64-linux``
* stable ABI  ``torch-stable-abi{M}{m}-{compute}-{arch}-{os}``       works with torch >= M.m
* no-arch     ``torch-{backend}`` (``torch-npu``, ``torch-cuda``, ``torch-cpu``, ...) and ``torch-universal``

Preference: strict, then stable ABI (newest ABI first), then ``torch-{backend}``,
then ``torch-universal``. Among strict ones the highest compatible compute
version wins, then the tagless name (newer builds drop the ABI tag). CUDA
variants built for 12.x load on CUDA 12.y when x <= y; every other compute
backend must match its version exactly. Choosing is pure: the system is an argument.
"""

from __future__ import annotations

import logging
import platform
import re
import threading

from . import settings
from .errors import InvalidBackend
from .records import Record

logger = logging.getLogger("kernelhook")

# Regexes here are compiled on first use (re keeps them), so a load compiles only those the
# variant names it meets need; records are Records, not namedtuples, for the same reason (records.py).

# backend -> (regex of its versioned tag, how to write a version as a tag)
_COMPUTE_TAGS = {
    "cuda": (r"cu(\d+)(\d)", "cu{0}{1}"),
    "rocm": (r"rocm(\d)(\d+)", "rocm{0}{1}"),
    "cann": (r"cann(\d+)(\d)", "cann{0}{1}"),
    "xpu": (r"xpu(\d{4})(\d+)", "xpu{0}{1}"),
}
_UNVERSIONED = {"cpu": "cpu", "metal": "metal", "mps": "metal"}
# The name a backend goes by in no-arch variants (`torch-npu`, `torch-cuda`, ...).
NOARCH_NAMES = {"cuda": "cuda", "rocm": "rocm", "cann": "npu", "xpu": "xpu", "metal": "metal", "cpu": "cpu"}
_VERSION_PREFIX = r"\s*(\d+)\.(\d+)"


class Compute(Record, fields="backend version", defaults=(None,)):
    """A compute ``backend`` (cpu, cuda, rocm, xpu, cann or metal) and, where builds depend on it,
    its major.minor ``version`` as a pair of ints (else None)."""

    __slots__ = ()

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
        match = re.fullmatch(pattern, tag)
        if match:
            return Compute(backend, (int(match.group(1)), int(match.group(2))))
    return None


def parse_version_prefix(text: object) -> tuple[int, int] | None:
    """``"8.2.RC1"`` -> (8, 2); ``"12.6"`` -> (12, 6); anything else -> None."""
    match = re.match(_VERSION_PREFIX, text) if isinstance(text, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


# -- variant names ------------------------------------------------------------------------------



_STRICT = r"torch(\d)(\d+)(?:-(cxx11|cxx98))?-([a-z0-9]+)-([a-z0-9_]+)-([a-z0-9]+)"
_STABLE = r"torch-stable-abi(\d)(\d+)-([a-z0-9]+)-([a-z0-9_]+)-([a-z0-9]+)"
_NOARCH = r"torch-([a-z0-9]+)"

# Parsed variant names. Versions are (major, minor) pairs of ints; cxx11_abi is None when the name
# carries no ABI tag; a no-arch backend is "universal" or a backend's no-arch name such as "npu".
class StrictVariant(Record, fields="name torch_version cxx11_abi compute arch os"):
    __slots__ = ()


class StableAbiVariant(Record, fields="name abi_version compute arch os"):
    __slots__ = ()


class NoarchVariant(Record, fields="name backend"):
    __slots__ = ()


Variant = StrictVariant | StableAbiVariant | NoarchVariant


def parse_variant(name: str) -> Variant:
    """Parse a variant folder name; ValueError (with the reason) when it is not one."""
    # Each form has a prefix of its own, so only the one pattern that can match is tried (and compiled).
    if name.startswith("torch-stable-abi"):
        if match := re.fullmatch(_STABLE, name):
            major, minor, tag, arch, os_name = match.groups()
            return StableAbiVariant(name, (int(major), int(minor)), _compute(tag, name), arch, os_name)
    elif name.startswith("torch-"):
        if match := re.fullmatch(_NOARCH, name):
            return NoarchVariant(name, match.group(1))
    elif match := re.fullmatch(_STRICT, name):
        major, minor, abi, tag, arch, os_name = match.groups()
        cxx11 = None if abi is None else abi == "cxx11"
        return StrictVariant(name, (int(major), int(minor)), cxx11, _compute(tag, name), arch, os_name)
    raise ValueError(f"{name!r} is not a build variant name (e.g. torch27-cxx11-cu126-x86_64-linux, torch-universal)")


def _compute(tag: str, name: str) -> Compute:
    compute = parse_compute(tag)
    if compute is None:
        raise ValueError(f"{name!r}: unknown compute tag {tag!r} (cpu, cuXY, rocmXY, cannXY, xpuYYYYN, metal)")
    return compute


# -- this system ----------------------------------------------------------------------------------

class SystemInfo(Record, fields="torch_version cxx11_abi compute arch os"):
    """This machine, as build variants see it: ``torch_version`` (major, minor) or None without
    torch; ``cxx11_abi``, None off Linux, where variants carry no ABI tag; ``compute``, a Compute;
    ``arch`` (x86_64, aarch64...) and ``os`` (linux, darwin, windows)."""

    __slots__ = ()

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
    """The system variants are chosen for: the injected one (``set_system``, ``KERNELHOOK_SYSTEM``),
    else the probe, which runs once per process and imports torch.

    Returns:
        The description, the same one for the rest of the process (until ``set_system``).

    Raises:
        SettingError: KERNELHOOK_SYSTEM is set but is not a strict variant name (read again on the next call).
    """
    global _current
    with _lock:
        if _current is None:
            override = settings.parsed(
                "KERNELHOOK_SYSTEM", None, SystemInfo.parse, "a strict variant name that describes a machine",
                "torch27-cxx11-cann82-aarch64-linux", unset="this machine's own probe",
            )
            _current = override if override is not None else probe_system()
            logger.debug("system: %s", _current)
        return _current


def set_system(system: SystemInfo | None) -> SystemInfo | None:
    """Inject a system description (None: probe again on next use).

    Returns:
        The description in effect before, or None if none was made yet.
    """
    global _current
    with _lock:
        previous, _current = _current, system
        return previous


# What the kernels package and torch call some backends, as this module names them.
_BACKEND_ALIASES = {"npu": "cann", "mps": "metal", "hip": "rocm"}


def system_for_backend(backend: str | None, system: SystemInfo | None = None) -> SystemInfo:
    """The system to choose variants for when a caller names a backend (the ``kernels`` package's
    ``backend=``): this machine's own backend, or ``"cpu"``, which CPU builds serve on any machine.

    Args:
        backend: None or this machine's backend (``cuda``, ``rocm``, ``cann``/``npu``, ``xpu``,
            ``metal``/``mps``, ``cpu``): this machine; ``"cpu"``: this machine with CPU compute.
        system: the machine (default: ``current_system()``).

    Returns:
        The system description to rank variants for.

    Raises:
        InvalidBackend: any other backend, which this machine could not run.
        SettingError: KERNELHOOK_SYSTEM is malformed (from ``current_system``).
    """
    system = system if system is not None else current_system()
    if backend is None:
        return system
    wanted = _BACKEND_ALIASES.get(str(backend).lower(), str(backend).lower())
    if wanted == system.compute.backend:
        return system
    if wanted == "cpu":
        return system._replace(compute=Compute("cpu"))
    raise InvalidBackend(
        f"backend={backend!r}: this system ({system}) loads builds for {system.compute.backend} or cpu only. "
        f"Fix: pass backend={system.compute.backend!r}, backend='cpu', or no backend for this machine's own."
    )


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


# -- choosing a variant ---------------------------------------------------------------------------

class Decision:
    """One variant's verdict for one system: its ``name``, whether it is ``accepted``, the ``reason``
    (why it was rejected, or what kind of match it is) and, when accepted, its ``rank`` (lower is better)."""

    __slots__ = ("name", "accepted", "reason", "rank")

    def __init__(self, name: str, accepted: bool, reason: str, rank: tuple = ()):
        self.name, self.accepted, self.reason, self.rank = name, accepted, reason, rank

    def __repr__(self) -> str:
        return f"Decision({self.name!r}, accepted={self.accepted}, reason={self.reason!r})"


# Bump when choose_variant would pick otherwise for the same names and system: the cache keeps each commit's
# choice per system (fetch.py), under a key that holds this number, so older choices are then made anew.
CHOICE_RULES = 1


def choice_key(system: SystemInfo) -> str:
    """What a remembered choice of variant is kept under: every field of the system, and the rules' number."""
    torch = "notorch" if system.torch_version is None else "torch{}.{}".format(*system.torch_version)
    abi = {None: "", True: "-cxx11", False: "-cxx98"}[system.cxx11_abi]
    return f"{torch}{abi}-{system.compute.tag}-{system.arch}-{system.os}-rules{CHOICE_RULES}"


def rank_variants(names, system: SystemInfo) -> list[Decision]:
    """Every name's verdict: accepted ones first, best first; then the rejected ones."""
    decisions = [_decide(name, system) for name in sorted(set(names))]
    accepted = sorted((d for d in decisions if d.accepted), key=lambda d: (d.rank, d.name))
    return accepted + [d for d in decisions if not d.accepted]


def choose_variant(names, system: SystemInfo) -> str | None:
    ranked = rank_variants(names, system)
    return ranked[0].name if ranked and ranked[0].accepted else None


def candidate_patterns(system: SystemInfo) -> list[str]:
    """The variant names this system accepts, in order of preference, for people to read."""
    arch_os = f"{system.arch}-{system.os}"
    compute = system.compute.tag
    if system.compute.backend == "cuda" and system.compute.version:
        compute = f"cu{system.compute.version[0]}{{0..{system.compute.version[1]}}}"
    patterns = []
    if system.torch_version is not None:
        major, minor = system.torch_version
        patterns.append(f"torch{major}{minor}-{compute}-{arch_os}")
        if system.cxx11_abi is not None:
            patterns.append(f"torch{major}{minor}-{'cxx11' if system.cxx11_abi else 'cxx98'}-{compute}-{arch_os}")
        patterns.append(f"torch-stable-abi{{<= {major}.{minor}}}-{compute}-{arch_os}")
    return patterns + [f"torch-{system.compute.noarch_name}", "torch-universal"]


def _decide(name: str, system: SystemInfo) -> Decision:
    try:
        variant = parse_variant(name)
    except ValueError as exc:
        return Decision(name, False, str(exc))
    if isinstance(variant, NoarchVariant):
        return _decide_noarch(variant, system)
    problem = _platform_problem(variant, system) or _compute_problem(variant.compute, system.compute)
    if isinstance(variant, StrictVariant):
        problem = problem or _torch_problem(variant, system)
        kind = 0
    else:
        problem = problem or _stable_abi_problem(variant, system)
        kind = 1
    if problem:
        return Decision(name, False, problem)
    return Decision(name, True, "strict" if kind == 0 else "stable ABI", _arch_rank(variant, kind))


def _arch_rank(variant: StrictVariant | StableAbiVariant, kind: int) -> tuple:
    compute_minor = variant.compute.version[1] if variant.compute.version else 0
    if kind == 0:
        return (0, -compute_minor, variant.cxx11_abi is not None)
    return (1, -variant.abi_version[0], -variant.abi_version[1], -compute_minor)


def _decide_noarch(variant: NoarchVariant, system: SystemInfo) -> Decision:
    if variant.backend == "universal":
        return Decision(variant.name, True, "universal", (3,))
    if variant.backend == system.compute.noarch_name:
        return Decision(variant.name, True, f"no-arch {variant.backend}", (2,))
    return Decision(
        variant.name, False, f"for the {variant.backend} backend; this system's is {system.compute.noarch_name}"
    )


def _platform_problem(variant: StrictVariant | StableAbiVariant, system: SystemInfo) -> str | None:
    if variant.arch != system.arch:
        return f"built for {variant.arch}; this system is {system.arch}"
    if variant.os != system.os:
        return f"built for {variant.os}; this system runs {system.os}"
    return None


def _compute_problem(built: Compute, have: Compute) -> str | None:
    if built.backend != have.backend:
        return f"built for {built}; this system has {have}"
    if built.version == have.version or built.version is None:
        return None
    if built.backend == "cuda" and have.version and built.version[0] == have.version[0]:
        if built.version[1] <= have.version[1]:
            return None
        return f"built for {built}; this system has {have} (CUDA {have.version[0]}.x variants need x <= {have.version[1]})"
    return f"built for {built}; this system has {have}"


def _torch_problem(variant: StrictVariant, system: SystemInfo) -> str | None:
    if variant.torch_version != system.torch_version:
        return f"built for torch {variant.torch_version[0]}.{variant.torch_version[1]}; this system has {_torch(system)}"
    if variant.cxx11_abi is not None and variant.cxx11_abi != system.cxx11_abi:
        wanted = "cxx11" if variant.cxx11_abi else "pre-cxx11 (cxx98)"
        have = "no C++ ABI tag" if system.cxx11_abi is None else ("cxx11" if system.cxx11_abi else "cxx98")
        return f"built for the {wanted} C++ ABI; this system's torch uses {have}"
    return None


def _stable_abi_problem(variant: StableAbiVariant, system: SystemInfo) -> str | None:
    if system.torch_version is None or variant.abi_version > system.torch_version:
        major, minor = variant.abi_version
        return f"needs torch >= {major}.{minor} (stable ABI); this system has {_torch(system)}"
    return None


def _torch(system: SystemInfo) -> str:
    return "no torch" if system.torch_version is None else "torch {}.{}".format(*system.torch_version)
