"""Hub kernels as modules: ``import kernels_hub.<org>.<repo>[@revision]``.

Importing this package installs kernelhook's finder, which resolves every
name below it; nothing below is searched for on sys.path.
"""

from kernelhook.loading.finder import install as _install

__path__ = []  # children come from the finder alone, never from a folder
_install()
