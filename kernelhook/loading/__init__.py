"""The import path: from ``kernels_hub.<org>.<repo>[@rev]`` (or ``get_kernel``) to a module.

    names.py        what the user typed -> KernelName                (pure)
    resolve.py      KernelName -> repo and commit                    (refs, lockfile, offline fallback)
    fetch.py        the chosen variant's files, verified, into the cache
    loader.py       execute a variant under a module name digested from repo, commit and content
    finder.py       the sys.meta_path finder for kernels_hub.*
    api.py          the path end to end: get_kernel, load_kernel
    distributed.py  one resolution per torchrun job

Importing this package imports nothing below it: ``import kernels_hub`` pulls in
only the finder and the names it parses.
"""
