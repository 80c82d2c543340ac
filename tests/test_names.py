"""The name grammar: module names and repo ids -> KernelName, and the spelling rule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelhook.errors import InvalidKernelName, InvalidRevision
from kernelhook.loading.names import (
    KernelName,
    is_full_sha,
    is_pull_request,
    is_short_sha,
    parse_module_name,
    parse_repo_id,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "fullname, org, repo, revision, submodule",
    [
        ("kernels_hub.kernels_ext_npu.RMSNorm", "kernels_ext_npu", "RMSNorm", None, None),
        ("kernels_hub.kernels_ext_npu.RMSNorm@v1", "kernels_ext_npu", "RMSNorm", "v1", None),
        ("kernels_hub.kernels-ext-npu.RMSNorm", "kernels-ext-npu", "RMSNorm", None, None),
        (f"kernels_hub.org.repo@{SHA}", "org", "repo", SHA, None),
        ("kernels_hub.org.repo@main.layers", "org", "repo", "main", "layers"),
        ("kernels_hub.org.repo.layers.deep", "org", "repo", None, "layers.deep"),
        ("kernels_hub.org.liger_kernels@release_2", "org", "liger_kernels", "release_2", None),
        ("kernels_hub.org.repo@refs/pr/12.layers", "org", "repo", "refs/pr/12", "layers"),  # through importlib
    ],
)
def test_module_names_parse(fullname, org, repo, revision, submodule):
    parsed = parse_module_name(fullname)
    assert (parsed.kernel.org, parsed.kernel.repo, parsed.kernel.revision) == (org, repo, revision)
    assert parsed.submodule == submodule
    assert parsed.kernel.typed == fullname


def test_root_and_org_levels_carry_no_kernel():
    assert parse_module_name("kernels_hub").kernel is None
    org = parse_module_name("kernels_hub.kernels_ext_npu")
    assert org.org == "kernels_ext_npu" and org.kernel is None


@pytest.mark.parametrize("fullname", ["os", "kernels_hubx.a.b", "kernelhook.api", "kernels", ""])
def test_names_outside_the_namespace_are_not_ours(fullname):
    assert parse_module_name(fullname) is None


@pytest.mark.parametrize(
    "fullname",
    [
        "kernels_hub.org.repo@",  # '@' with nothing after it
        "kernels_hub.org.repo@v1@v2",  # two revisions
        "kernels_hub.org.@v1",  # no repo name
        "kernels_hub.-org.repo",  # Hub names start with a letter or digit
        "kernels_hub.org.re po",  # space
        "kernels_hub.org.repo@-x",  # revision starting with '-'
        "kernels_hub.org.repo@v1 x",  # space in the revision
        "kernels_hub.o/rg.repo",  # slash in an org
    ],
)
def test_malformed_module_names_raise_a_typed_error(fullname):
    with pytest.raises((InvalidKernelName, InvalidRevision)) as info:
        parse_module_name(fullname)
    assert isinstance(info.value, ImportError)
    assert fullname in str(info.value)  # the message names what the user typed


def test_spelling_rule_tries_literal_first_then_hyphens_per_part():
    name = KernelName("kernels_ext_npu", "liger_kernels", None, typed="x")
    assert name.repo_id_candidates() == (
        "kernels_ext_npu/liger_kernels",
        "kernels_ext_npu/liger-kernels",
        "kernels-ext-npu/liger_kernels",
        "kernels-ext-npu/liger-kernels",
    )
    assert KernelName("kernels-ext-npu", "RMSNorm", None, "x").repo_id_candidates() == ("kernels-ext-npu/RMSNorm",)


@pytest.mark.parametrize(
    "repo_id, revision, version, expected",
    [
        ("kernels-ext-npu/RMSNorm", None, None, None),
        ("kernels-ext-npu/RMSNorm", "v1.0.0", None, "v1.0.0"),  # dots: only get_kernel can say this
        ("acme/my.kernel", "refs/pr/3", None, "refs/pr/3"),
        ("acme/relu", None, 2, "v2"),
        ("acme/relu", SHA, None, SHA),
    ],
)
def test_repo_ids_parse(repo_id, revision, version, expected):
    name = parse_repo_id(repo_id, revision, version)
    assert f"{name.org}/{name.repo}" == repo_id and name.revision == expected


@pytest.mark.parametrize(
    "repo_id, revision, version, error",
    [
        ("RMSNorm", None, None, InvalidKernelName),  # no org
        ("a/b/c", None, None, InvalidKernelName),  # too many parts
        ("acme/re..lu", None, None, InvalidKernelName),  # '..' is refused by the Hub
        ("acme/relu", "v1", 1, InvalidRevision),  # both revision and version
        ("acme/relu", None, -1, InvalidRevision),  # negative version
        ("acme/relu", None, True, InvalidRevision),  # bool is not a version
        ("acme/relu", "../main", None, InvalidRevision),  # path tricks
        ("acme/relu", "a b", None, InvalidRevision),  # space
        ("acme/relu", "", None, InvalidRevision),  # empty
    ],
)
def test_bad_repo_ids_and_revisions(repo_id, revision, version, error):
    with pytest.raises(error) as info:
        parse_repo_id(repo_id, revision, version)
    assert repo_id in str(info.value)


@pytest.mark.parametrize(
    "revision, is_pr",
    [
        ("refs/pr/1", True),
        ("refs/pr/120", True),
        ("refs/pr/0", False),  # the Hub numbers pull requests from 1
        ("refs/pr/01", False),  # numbers are written without leading zeros
        ("refs/pr/", False),
        ("refs/pr/1/head", False),  # GitHub's spelling, not the Hub's
        ("refs/heads/main", False),
        ("pr/1", False),
    ],
)
def test_pull_request_revisions(revision, is_pr):
    assert is_pull_request(revision) is is_pr


def test_commit_forms():
    assert is_full_sha(SHA) and not is_short_sha(SHA)
    assert is_short_sha(SHA[:7]) and not is_short_sha(SHA[:6])
    assert not is_short_sha("v1") and not is_full_sha("main")


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_a_kernelhook_error(text):
    try:
        parsed = parse_module_name("kernels_hub." + text)
    except (InvalidKernelName, InvalidRevision):
        return
    if parsed.kernel is not None:
        assert "/" not in parsed.kernel.repo and ".." not in (parsed.kernel.revision or "")
