"""Kernels from a folder on this machine: ``get_local_kernel``, local repositories and ``LOCAL_KERNELS``.

A kernel author's folder loads as a Hub kernel does: the variant that fits this machine is chosen
by the same rules (platform.py) from ``<folder>/build/<variant>/`` (or ``<folder>/<variant>/``, or
the folder itself when it is one variant), and either layout inside it is a package
(``<Name>/__init__.py``, or ``__init__.py`` beside ``metadata.json``). The variant's files are
copied into the content-addressed cache and executed from there, under a module name digested
from the folder and that content, never from the folder itself. Copying costs one read of each
file per load, and buys three things:

  * module identity follows content: edit the folder and load again, and a new module runs beside
    the old one; each imports its submodules from its own immutable snapshot, so a lazy
    ``from . import x`` in the old module never reads bytes written after it was loaded;
  * the store's loader: sources only, never a ``__pycache__/*.pyc`` an author's test run left;
  * a folder's module and the Hub's builds of the same repo coexist (module names differ by origin).

Snapshots are not referenced by any revision ref, so ``kernelhook cache prune`` removes them once
they are older than its grace period.

``LOCAL_KERNELS=org/repo=/path[:org2/repo2=/path2]``, the ``kernels`` package's variable, sends
every load of those repo ids (``get_kernel``, ``import kernels_hub...``, mappings) to the folders
for as long as it names them; each such load logs at INFO where it came from.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

from .. import settings
from ..cache.store import Store
from ..errors import KernelLoadError, KernelNotFoundError, NoCompatibleVariantError
from ..platform import SystemInfo, candidate_patterns, choose_variant, rank_variants, system_for_backend
from ..repo import BUILD_DIR, find_package, is_bytecode
from .loader import KernelOrigin, load
from .names import KernelName, parse_repo_id

logger = logging.getLogger("kernelhook")

LOCAL_REPO_TYPE = "local"  # KernelOrigin.repo_type of a kernel loaded from a folder
_EXAMPLE = "kernels-community/relu=/home/me/relu:acme/norm=/home/me/norm"


def get_local_kernel(repo_path, package_name: str | None = None, *, backend: str | None = None,
                     trust_remote_code: bool | list[str] = False, user_agent: str | dict | None = None) -> ModuleType:
    """Load a kernel from a folder on this machine, as the ``kernels`` package's ``get_local_kernel`` does.

    Args:
        repo_path: a kernel repo folder (holding ``build/<variant>/``), its ``build`` folder, or one variant folder.
        package_name: which package folder of the variant to load when it holds several (default: the one
            named like the folder, or the only one). Older ``kernels`` releases required it.
        backend: load the build for this backend (None: this machine's; ``"cpu"``: a CPU build).
        trust_remote_code, user_agent: accepted for the ``kernels`` package's signature; a folder is
            the caller's own choice of code, and no request is made.

    Returns:
        The kernel module, executed from a snapshot of the variant in the cache; the same module
        object again while the folder's content is unchanged, a new one after it changes.

    Raises:
        KernelNotFoundError: ``repo_path`` is not a folder.
        NoCompatibleVariantError: no variant in it fits this machine (each is listed with the reason).
        KernelLoadError: the variant holds no single package, a file cannot be read, or executing it failed.
        CacheError: the cache cannot be written.
        InvalidBackend: ``backend`` is not one this machine can load.
    """
    folder = Path(repo_path).expanduser().resolve()
    name = package_name or folder.name
    return load_folder(folder, str(folder), name, f"local folder {folder}", system_for_backend(backend), Store())


def load_folder(folder: Path, label: str, package_name: str, how: str, system: SystemInfo, store: Store) -> ModuleType:
    """Choose the variant of ``folder`` that fits ``system``, snapshot it into ``store`` and execute it.

    Args:
        folder: the kernel folder (see ``get_local_kernel``).
        label: what the kernel is called in its origin and module name (a repo id, or the folder).
        package_name: picks the package when a variant holds several.
        how: how it was found, for ``kernelhook.origin`` and logs.

    Returns:
        The module; its origin's ``commit`` is the snapshot's content digest.

    Raises:
        What ``get_local_kernel`` raises.
    """
    variant_path, variant = variant_in(folder, system)
    digest, tree = snapshot(variant_path, store)
    package = find_package(tree, package_name, f"{variant_path} (copied to {tree})")
    origin = KernelOrigin(label, LOCAL_REPO_TYPE, digest, variant, tree, package, module_name="", how=how)
    return load(origin, digest)


def variant_in(folder: Path, system: SystemInfo) -> tuple[Path, str]:
    """The variant folder that fits ``system``: among ``folder``'s sub-folders, then ``folder/build``'s
    (either may hold the variants), else ``folder`` itself when it holds a package.

    Returns:
        (the variant folder, its name).

    Raises:
        KernelNotFoundError: ``folder`` is not a folder.
        NoCompatibleVariantError: it holds variants, none of which fits.
    """
    if not folder.is_dir():
        raise KernelNotFoundError(f"{folder} is not a folder, so it holds no kernel. Fix: point at a kernel repo "
                                  f"folder (one holding build/<variant>/), its build folder, or one variant folder.")
    for base in (folder, folder / BUILD_DIR):
        chosen = choose_variant(_sub_folders(base), system)
        if chosen is not None:
            return base / chosen, chosen
    if any((folder / marker).is_file() for marker in ("metadata.json", "__init__.py")) or choose_variant(
            [folder.name], system) is not None:
        return folder, folder.name
    raise _no_variant(folder, system)


def local_variants(folder: Path, system: SystemInfo):
    """Every variant folder of a local kernel with this system's verdict on it (``platform.Decision``s)."""
    base = folder / BUILD_DIR if (folder / BUILD_DIR).is_dir() else folder
    return rank_variants(_sub_folders(base), system)


def _sub_folders(base: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in base.iterdir() if entry.is_dir())
    except OSError:
        return []


def _no_variant(folder: Path, system: SystemInfo) -> NoCompatibleVariantError:
    decisions = local_variants(folder, system)
    lines = "\n".join(f"  {d.name}: {d.reason}" for d in decisions) or "  (no variant folders)"
    return NoCompatibleVariantError(
        f"{folder} has no build variant for this system ({system}; it would load "
        f"{', '.join(candidate_patterns(system))}).\nFolders found:\n{lines}\n"
        f"Fix: build the variant for this system into {folder / BUILD_DIR}, or point at a variant folder."
    )


def snapshot(variant_path: Path, store: Store) -> tuple[str, Path]:
    """Copy a variant folder's files (bytecode left out) into the store as one tree.

    Returns:
        (the tree's content digest, its folder in the store); the same for the same content.

    Raises:
        KernelLoadError: a file of the folder cannot be read.
        CacheError: the store cannot be written.
    """
    objects = {}
    for root, folders, files in os.walk(variant_path):
        folders[:] = sorted(f for f in folders if f != "__pycache__")
        for file_name in sorted(files):
            path = Path(root, file_name)
            relative = path.relative_to(variant_path).as_posix()
            if not is_bytecode(relative):
                objects[relative] = _copy_in(path, store)
    return store.make_tree(objects)


def _copy_in(path: Path, store: Store) -> str:
    try:
        with open(path, "rb") as source:
            return store.copy_in(source)
    except OSError as exc:
        raise KernelLoadError(f"could not read {path} of a local kernel: {exc.strerror or exc}. Fix: check the "
                              f"file's permissions, or rebuild the variant.") from exc


# -- LOCAL_KERNELS --------------------------------------------------------------------------------------


def local_kernels() -> dict[str, Path]:
    """``LOCAL_KERNELS`` as {repo id: folder}, read now (empty when unset).

    Raises:
        SettingError: the value is not ``org/repo=/path`` entries separated by ``:``.
    """
    return settings.parsed("LOCAL_KERNELS", {}, _parse_local_kernels,
                           "org/repo=/path entries separated by ':'", _EXAMPLE, unset="no local overrides")


def _parse_local_kernels(text: str) -> dict[str, Path]:
    overrides = {}
    for entry in text.split(":"):
        repo_id, equals, path = entry.partition("=")
        repo_id, path = repo_id.strip(), path.strip()
        if not equals or not path:
            raise ValueError(f"the entry {entry!r} is not org/repo=/path")
        try:
            parse_repo_id(repo_id)
        except ValueError as exc:
            raise ValueError(f"the entry {entry!r} does not start with a Hub repo id ({exc})") from None
        overrides[repo_id] = Path(path).expanduser()
    return overrides


def override_for(name: KernelName) -> tuple[str, Path] | None:
    """The (repo id, folder) ``LOCAL_KERNELS`` sends this name to, trying its spellings in discovery's
    order; None when it names none of them.

    Raises:
        SettingError: LOCAL_KERNELS is malformed.
    """
    if not os.environ.get("LOCAL_KERNELS"):  # the common case costs one lookup
        return None
    overrides = local_kernels()
    return next(((repo_id, overrides[repo_id]) for repo_id in name.repo_id_candidates() if repo_id in overrides), None)


def load_override(name: KernelName, system: SystemInfo, store: Store) -> ModuleType | None:
    """The module for ``name`` from its ``LOCAL_KERNELS`` folder, or None when it has none.

    Raises:
        SettingError: LOCAL_KERNELS is malformed; else what ``get_local_kernel`` raises.
    """
    found = override_for(name)
    if found is None:
        return None
    repo_id, folder = found
    folder = folder.resolve()
    module = load_folder(folder, repo_id, repo_id.split("/")[1], f"LOCAL_KERNELS folder {folder}", system, store)
    origin = module.__kernelhook__
    logger.info("%s: LOCAL_KERNELS sends %s to %s; loaded variant %s (content %s) from there", name.typed, repo_id,
                folder, origin.variant, origin.commit[:12])
    return module
