"""One resolution per job: under torch.distributed, every rank loads the same commit.

When a process group is initialised (torchrun), the first rank to ask for an
unpinned or branch-pinned kernel claims it in torch.distributed's key-value
store (compare_set: no collective, so no rank waits for ranks that never ask),
resolves it against the Hub, and publishes the commit; every other rank that
asks later reads that commit, even if the branch moved meanwhile. A rank that
finds a claim but no answer waits a bounded time for it, then resolves on its
own. Downloads are shared per node by the cache's per-object locks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Callable

from .. import settings

logger = logging.getLogger("kernelhook")

_PREFIX = "kernelhook/resolve/"
_CLAIM = "claim:"
# How long a rank waits for another's answer: the default; KERNELHOOK_DIST_WAIT_S overrides it.
WAIT_S = 300.0


def job_store():
    """torch.distributed's default store when a process group is up, else None (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # a backend without a store: resolve per rank
        logger.debug("no torch.distributed store to share resolutions through", exc_info=True)
        return None


def shared(store, key: str, resolve: Callable[[], dict]) -> dict:
    """The job-wide answer for key: computed here if this rank claims it first, else read.

    Returns:
        resolve()'s answer, from this rank or the one that claimed the key.

    Raises:
        SettingError: KERNELHOOK_DIST_WAIT_S is malformed; read on every rank, so all fail alike.
        What resolve() raises, on the rank that runs it.
    """
    wait_s = settings.seconds("KERNELHOOK_DIST_WAIT_S", WAIT_S, example="300")
    full_key = _PREFIX + key
    me = f"{_CLAIM}{os.getpid()}@{os.uname().nodename}"
    current = store.compare_set(full_key, "", me).decode()
    if current == me:
        try:
            answer = resolve()
        except BaseException:
            store.set(full_key, json.dumps({"error": True}))  # others resolve for themselves, and fail alike
            raise
        store.set(full_key, json.dumps(answer))
        logger.info("kernelhook: resolved %s for the whole job: %s", key, answer.get("commit"))
        return answer
    return _await(store, full_key, current, resolve, wait_s)


def _await(store, full_key: str, current: str, resolve: Callable[[], dict], wait_s: float) -> dict:
    deadline = time.monotonic() + wait_s
    pause = 0.01
    while current.startswith(_CLAIM):
        if time.monotonic() > deadline:
            logger.warning("kernelhook: no answer for %s from %s after %.0f s; resolving on this rank",
                           full_key, current[len(_CLAIM):], wait_s)
            return resolve()
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
        current = store.get(full_key).decode()
    answer = json.loads(current)
    return resolve() if answer.get("error") else answer
