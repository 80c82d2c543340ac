"""The package's shape, as rules a change cannot break unnoticed.

Module-level imports between kernelhook's own modules form no cycle, no module
imports another's private names, every module says what it is, and the public
API is what editors and type checkers can see.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kernelhook
from kernelhook.binding import mapping
from kernelhook.errors import KernelHookError
from kernelhook.files import file_digest, hash_stream, write_atomic
from kernelhook.hub import HubError
from kernelhook.repo import split_build_path

PACKAGE = Path(kernelhook.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_level_imports(module: str):
    """(imported kernelhook module, names taken from it) for each import run when the module is imported."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in tree.body:  # top level only: imports inside functions run on use
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            if target not in MODULES:
                continue
            submodules = [a.name for a in node.names if f"{target}.{a.name}" in MODULES]
            names = tuple(a.name for a in node.names if a.name not in submodules)
            # `from . import sibling` names the package only to reach the sibling: no edge to the package.
            if names or not submodules:
                yield target, names
            for sub in submodules:
                yield f"{target}.{sub}", ()


def test_the_module_list_is_what_the_layout_says():
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", ".")) or p.name == "__init__.py")
    assert top == ["__init__.py", "binding", "cache", "cli", "errors.py", "files.py", "hub", "integrations",
                   "loading", "platform.py", "project.py", "records.py", "repo.py", "settings.py", "testing", "transformers.py"]


def test_no_import_cycles_at_module_level():
    # A module's own packages are imported before it, so naming them never makes a cycle.
    graph = {m: {t for t, _ in _module_level_imports(m) if not (m == t or m.startswith(t + "."))} for m in MODULES}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(target):] + [node, target]))
            if target not in state:
                visit(target, path + [node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # function-level imports too
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            if target.startswith("kernelhook") and target != module:
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{module} imports {private} from {target}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_is(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{module} has no module docstring"


def test_the_public_api_is_visible_sorted_and_resolves():
    assert kernelhook.__all__ == sorted(kernelhook.__all__, key=lambda n: (n.lower(), n))
    assert set(kernelhook.__all__) <= set(dir(kernelhook))
    for name in kernelhook.__all__:
        assert getattr(kernelhook, name) is not None
    for returned_type in ("KernelOrigin", "HookHandle", "Bound", "Kept", "KernelizeReport"):
        assert returned_type in kernelhook.__all__


def test_public_names_are_imported_for_type_checkers():
    tree = ast.parse(MODULES["kernelhook"].read_text(encoding="utf-8"))
    checked = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            checked |= {a.asname or a.name for n in node.body if isinstance(n, ast.ImportFrom) for a in n.names}
    eager = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert set(kernelhook.__all__) <= checked | eager


def test_every_error_is_a_kernelhook_error():
    assert issubclass(HubError, KernelHookError)


def test_importing_kernels_hub_imports_only_the_finder_path():
    code = "import sys, kernels_hub; print(sorted(m for m in sys.modules if m.startswith('kernelhook')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert eval(out) == ["kernelhook", "kernelhook.errors", "kernelhook.loading", "kernelhook.loading.finder",
                         "kernelhook.loading.names", "kernelhook.records"]


# -- the shared pieces, one rule each --------------------------------------------------------------


@pytest.mark.parametrize(
    "path, split",
    [
        ("build/torch-universal/RMSNorm/__init__.py", ("torch-universal", "RMSNorm/__init__.py")),
        ("build/torch-universal/metadata.json", ("torch-universal", "metadata.json")),
        ("build/torch-universal", None),  # the folder itself, no file in it
        ("build//x.py", None),  # no variant name
        ("src/torch-universal/x.py", None),  # outside build/
    ],
)
def test_build_paths_split_into_variant_and_file(path, split):
    assert split_build_path(path) == split


def test_one_read_gives_the_hubs_and_the_caches_digests(tmp_path):
    import hashlib

    data = b"kernel bytes\n" * 1000
    target = tmp_path / "f"
    write_atomic(target, data)
    with open(target, "rb") as f:
        size, sha256, git_sha1 = hash_stream(f)
    assert size == len(data) and sha256 == hashlib.sha256(data).hexdigest()
    assert git_sha1 == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert file_digest(target, "sha256") == sha256 and file_digest(target, "git_sha1") == git_sha1
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary file left behind


def test_a_failed_atomic_write_leaves_neither_file_nor_temporary(tmp_path):
    class Unwritable:
        def __len__(self):
            raise OSError("boom")

    with pytest.raises(TypeError):
        write_atomic(tmp_path / "f", Unwritable())
    assert list(tmp_path.iterdir()) == []


# -- offered mappings: implicit entries never override the user ------------------------------------


def test_an_offer_fills_gaps_but_never_replaces_the_users_entry():
    offered_by = "a test library"

    def chosen(device):
        selection = mapping.select(mapping.snapshot(), "OfferTest", device, None, kernelhook.Mode.INFERENCE)
        return str(selection.repo), selection.offered_by

    try:
        mapping.register_kernel_mapping({"OfferTest": {"cpu": "acme/mine@v1:Norm"}})
        mapping.offer_kernel_mapping({"OfferTest": {"cpu": "acme/theirs@v1:Norm", "npu": "acme/theirs@v1:Norm"}},
                                     offered_by)
        assert chosen("cpu") == ("acme/mine@v1:Norm", None)
        assert chosen("npu") == ("acme/theirs@v1:Norm", offered_by)
        mapping.register_kernel_mapping({"OfferTest": {"npu": "acme/mine@v1:Norm"}})  # the user's choice wins
        assert chosen("npu") == ("acme/mine@v1:Norm", None)
        mapping.offer_kernel_mapping({"OfferTest": {"npu": "acme/theirs@v2:Norm"}}, offered_by)
        assert chosen("npu") == ("acme/mine@v1:Norm", None)  # and stays when offered again
        mapping.withdraw_kernel_mapping(offered_by)
        assert chosen("cpu") == chosen("npu") == ("acme/mine@v1:Norm", None)  # the user's entries stay
    finally:
        mapping.withdraw_kernel_mapping(offered_by)
        with mapping._lock:  # the user's registrations above are process-wide: take them out again
            mapping._base.pop("OfferTest", None)


def test_withdrawing_an_offer_leaves_no_empty_layer_behind():
    mapping.offer_kernel_mapping({"OnlyOffered": {"npu": "acme/theirs@v1:Norm"}}, "a test library")
    assert "OnlyOffered" in mapping.snapshot()
    mapping.withdraw_kernel_mapping("a test library")
    assert "OnlyOffered" not in mapping.snapshot()


def _chosen(layer_name, device="cpu", mode=None):
    selection = mapping.select(mapping.snapshot(), layer_name, device, None, mode or kernelhook.Mode.INFERENCE)
    return (str(selection.repo), selection.offered_by) if isinstance(selection, mapping.Selection) else None


def test_the_users_plain_entry_comes_before_an_offered_entry_for_the_exact_mode():
    try:
        mapping.register_kernel_mapping({"TierTest": {"cpu": "acme/mine@v1:Norm"}})  # Mode.FALLBACK
        mapping.offer_kernel_mapping({"TierTest": {"cpu": {kernelhook.Mode.INFERENCE: "acme/theirs@v1:Norm"}}},
                                     "a test library")
        assert _chosen("TierTest") == ("acme/mine@v1:Norm", None)
    finally:
        mapping.withdraw_kernel_mapping("a test library")
        with mapping._lock:
            mapping._base.pop("TierTest", None)


def test_the_latest_offer_comes_first_and_withdrawing_it_brings_back_the_earlier_one():
    inference = kernelhook.Mode.INFERENCE
    try:
        mapping.offer_kernel_mapping({"LayerTest": {"npu": {inference: "acme/first@v1:Norm"}}}, "first library")
        mapping.offer_kernel_mapping({"LayerTest": {"npu": "acme/second@v1:Norm"}}, "second library")
        assert _chosen("LayerTest", "npu") == ("acme/second@v1:Norm", "second library")  # its FALLBACK, before
        mapping.offer_kernel_mapping({"LayerTest": {"npu": {inference: "acme/second@v2:Norm"}}}, "second library")
        assert _chosen("LayerTest", "npu") == ("acme/second@v2:Norm", "second library")  # the same slot: replaced
        mapping.withdraw_kernel_mapping("second library")
        assert _chosen("LayerTest", "npu") == ("acme/first@v1:Norm", "first library")  # not lost under it
    finally:
        mapping.withdraw_kernel_mapping("first library")
        mapping.withdraw_kernel_mapping("second library")
    assert _chosen("LayerTest", "npu") is None
