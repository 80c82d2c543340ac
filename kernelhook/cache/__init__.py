"""What kernelhook keeps on disk, and the lock that pins it.

    store.py     the content-addressed cache (KERNELHOOK_CACHE): the only writer there
    admin.py     ls, verify and prune, for ``kernelhook cache``
    lockfile.py  kernelhook.lock: read, render, and check a variant's files against it
"""
