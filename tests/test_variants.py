"""Variant names, the system probe's vocabulary, and which variant each system loads."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelhook.platform import (
    Compute,
    NoarchVariant,
    StableAbiVariant,
    StrictVariant,
    SystemInfo,
    choose_variant,
    parse_compute,
    parse_variant,
    parse_version_prefix,
    probe_system,
    rank_variants,
)

REPO = [
    "torch27-cxx11-cann82-aarch64-linux",
    "torch213-cxx11-cann82-aarch64-linux",
    "torch27-cxx11-cu124-x86_64-linux",
    "torch27-cxx11-cu126-x86_64-linux",
    "torch27-cu128-x86_64-linux",
    "torch28-cxx11-rocm64-x86_64-linux",
    "torch-stable-abi26-cu126-x86_64-linux",
    "torch-npu",
    "torch-cuda",
    "torch-universal",
    "README",  # not a variant: ignored with a reason
]

ASCEND = "torch27-cxx11-cann82-aarch64-linux"
CUDA126 = "torch27-cxx11-cu126-x86_64-linux"
ROCM = "torch28-cxx11-rocm64-x86_64-linux"
CPU = "torch213-cxx11-cpu-x86_64-linux"


@pytest.mark.parametrize(
    "system, expected_order",
    [
        (ASCEND, ["torch27-cxx11-cann82-aarch64-linux", "torch-npu", "torch-universal"]),
        # the closest CUDA minor first; 12.8 builds are too new for 12.6
        (CUDA126, [CUDA126, "torch27-cxx11-cu124-x86_64-linux", "torch-stable-abi26-cu126-x86_64-linux",
                   "torch-cuda", "torch-universal"]),
        (ROCM, [ROCM, "torch-universal"]),
        (CPU, ["torch-universal"]),
        # torch 2.13 on Ascend takes the 2.13 build, never the 2.7 one
        ("torch213-cxx11-cann82-aarch64-linux", ["torch213-cxx11-cann82-aarch64-linux", "torch-npu", "torch-universal"]),
    ],
)
def test_accepted_variants_in_order_of_preference(system, expected_order):
    ranked = rank_variants(REPO, SystemInfo.parse(system))
    assert [d.name for d in ranked if d.accepted] == expected_order
    assert choose_variant(REPO, SystemInfo.parse(system)) == expected_order[0]


@pytest.mark.parametrize(
    "system, variant, reason_part",
    [
        (ASCEND, "torch27-cxx11-cu126-x86_64-linux", "built for x86_64; this system is aarch64"),
        (CUDA126, "torch27-cu128-x86_64-linux", "CUDA 12.8; this system has CUDA 12.6"),
        (CUDA126, "torch-npu", "for the npu backend"),
        (ROCM, "torch-stable-abi26-cu126-x86_64-linux", "built for CUDA 12.6; this system has ROCm 6.4"),
        ("torch26-cxx11-cu126-x86_64-linux", "torch-stable-abi27-cu126-x86_64-linux", "needs torch >= 2.7"),
        ("torch27-cxx98-cu126-x86_64-linux", CUDA126, "cxx11 C++ ABI"),
        (CPU, "README", "not a build variant name"),
        (CPU, "torch27-cxx11-tpu9-x86_64-linux", "unknown compute tag"),
    ],
)
def test_every_rejection_says_why(system, variant, reason_part):
    [decision] = rank_variants([variant], SystemInfo.parse(system))
    assert not decision.accepted and reason_part in decision.reason


def test_stable_abi_takes_newest_abi_not_newer_than_torch():
    names = ["torch-stable-abi26-cu126-x86_64-linux", "torch-stable-abi27-cu126-x86_64-linux",
             "torch-stable-abi29-cu126-x86_64-linux"]
    assert choose_variant(names, SystemInfo.parse("torch28-cxx11-cu126-x86_64-linux")) == names[1]


def test_nothing_fits_gives_none():
    assert choose_variant(["torch-cuda", "torch27-cxx11-cu126-x86_64-linux"], SystemInfo.parse(CPU)) is None


@pytest.mark.parametrize(
    "name, expected",
    [
        ("torch27-cxx11-cann82-aarch64-linux",
         StrictVariant("torch27-cxx11-cann82-aarch64-linux", (2, 7), True, Compute("cann", (8, 2)), "aarch64", "linux")),
        ("torch210-cu130-x86_64-linux",
         StrictVariant("torch210-cu130-x86_64-linux", (2, 10), None, Compute("cuda", (13, 0)), "x86_64", "linux")),
        ("torch213-cxx11-cann100-aarch64-linux",  # CANN 10.0: a two-digit major
         StrictVariant("torch213-cxx11-cann100-aarch64-linux", (2, 13), True, Compute("cann", (10, 0)), "aarch64", "linux")),
        ("torch-stable-abi29-rocm71-x86_64-linux",
         StableAbiVariant("torch-stable-abi29-rocm71-x86_64-linux", (2, 9), Compute("rocm", (7, 1)), "x86_64", "linux")),
        ("torch-universal", NoarchVariant("torch-universal", "universal")),
        ("torch-npu", NoarchVariant("torch-npu", "npu")),
    ],
)
def test_variant_names_parse(name, expected):
    assert parse_variant(name) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8.2.RC1", (8, 2)),  # torch_npu's get_cann_version() form
        ("9.1.0", (9, 1)),
        ("10.12.0", (10, 12)),  # two-digit parts parse as numbers, not slices
        ("12.6", (12, 6)),  # torch.version.cuda
        ("6.4.43482-0f2d60242", (6, 4)),  # torch.version.hip
        ("not known", None),  # torch.version.cann without an install-info file
        ("", None),  # get_cann_version() on failure
        (None, None),
    ],
)
def test_version_strings(text, expected):
    assert parse_version_prefix(text) == expected


@pytest.mark.parametrize("tag", ["cpu", "cu126", "cu118", "cu130", "rocm64", "rocm710", "cann82", "cann100", "metal"])
def test_compute_tags_round_trip(tag):
    assert parse_compute(tag).tag == tag


def test_system_described_by_its_strict_variant_round_trips():
    for text in (ASCEND, CUDA126, ROCM, CPU, "torch27-cann82-aarch64-linux"):
        assert SystemInfo.parse(text).strict_variant == text


@pytest.mark.parametrize("text", ["torch-universal", "torch-stable-abi27-cu126-x86_64-linux", "nonsense"])
def test_a_system_needs_a_strict_description(text):
    with pytest.raises(ValueError):
        SystemInfo.parse(text)


def test_probe_describes_this_machine():
    import platform

    import torch

    system = probe_system()
    assert system.torch_version == tuple(int(x) for x in torch.__version__.split(".")[:2])
    assert system.os == platform.system().lower()
    assert system.compute.backend in {"cpu", "cuda", "rocm", "xpu", "cann", "metal"}


def test_kernelhook_system_environment_variable_injects_a_system():
    code = "import kernelhook; print(kernelhook.current_system().strict_variant)"
    env = {"KERNELHOOK_SYSTEM": ASCEND, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == ASCEND, out.stderr


@given(st.text(alphabet="torchxabicuepnmv0123456789-_.", max_size=40))
def test_any_folder_name_is_parsed_or_rejected_with_a_reason(text):
    [decision] = rank_variants([text], SystemInfo.parse(CPU))
    assert decision.accepted == (text == "torch-universal")
    assert decision.reason
