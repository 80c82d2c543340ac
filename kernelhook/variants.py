"""Step 3 of the data path: which folder under ``build/`` fits this system.

Variant names, as the kernel Hub writes them:

* strict      ``torch{M}{m}[-cxx11|-cxx98]-{compute}-{arch}-{os}``   e.g. ``torch27-cxx11-cann82-aarch64-linux``
* stable ABI  ``torch-stable-abi{M}{m}-{compute}-{arch}-{os}``       works with torch >= M.m
* no-arch     ``torch-{backend}`` (``torch-npu``, ``torch-cuda``, ``torch-cpu``, ...) and ``torch-universal``

Preference: strict, then stable ABI (newest ABI first), then ``torch-{backend}``,
then ``torch-universal``. Among strict ones the highest compatible compute
version wins, then the tagless name (newer builds drop the ABI tag). CUDA
variants built for 12.x load on CUDA 12.y when x <= y; every other compute
backend must match its version exactly. Pure functions: the system is an argument.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .system import Compute, SystemInfo, parse_compute

_STRICT = re.compile(r"torch(\d)(\d+)(?:-(cxx11|cxx98))?-([a-z0-9]+)-([a-z0-9_]+)-([a-z0-9]+)")
_STABLE = re.compile(r"torch-stable-abi(\d)(\d+)-([a-z0-9]+)-([a-z0-9_]+)-([a-z0-9]+)")
_NOARCH = re.compile(r"torch-([a-z0-9]+)")


class StrictVariant(NamedTuple):
    name: str
    torch_version: tuple[int, int]
    cxx11_abi: bool | None  # None: the name carries no ABI tag
    compute: Compute
    arch: str
    os: str


class StableAbiVariant(NamedTuple):
    name: str
    abi_version: tuple[int, int]
    compute: Compute
    arch: str
    os: str


class NoarchVariant(NamedTuple):
    name: str
    backend: str  # "universal" or a no-arch backend name such as "npu"


Variant = StrictVariant | StableAbiVariant | NoarchVariant


def parse_variant(name: str) -> Variant:
    """Parse a variant folder name; ValueError (with the reason) when it is not one."""
    if match := _STABLE.fullmatch(name):
        major, minor, tag, arch, os_name = match.groups()
        return StableAbiVariant(name, (int(major), int(minor)), _compute(tag, name), arch, os_name)
    if match := _STRICT.fullmatch(name):
        major, minor, abi, tag, arch, os_name = match.groups()
        cxx11 = None if abi is None else abi == "cxx11"
        return StrictVariant(name, (int(major), int(minor)), cxx11, _compute(tag, name), arch, os_name)
    if match := _NOARCH.fullmatch(name):
        return NoarchVariant(name, match.group(1))
    raise ValueError(f"{name!r} is not a build variant name (e.g. torch27-cxx11-cu126-x86_64-linux, torch-universal)")


def _compute(tag: str, name: str) -> Compute:
    compute = parse_compute(tag)
    if compute is None:
        raise ValueError(f"{name!r}: unknown compute tag {tag!r} (cpu, cuXY, rocmXY, cannXY, xpuYYYYN, metal)")
    return compute


class Decision(NamedTuple):
    """One variant's verdict for one system."""

    name: str
    accepted: bool
    reason: str  # why it was rejected, or what kind of match it is
    rank: tuple = ()


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
