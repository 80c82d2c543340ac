"""What mirrors and proxies in front of a Hub do to its answers, for the loopback Hub.

Between a client and the Hub there may be a mirror or proxy whose behaviour the Hub's
own routes do not show, and which clients must cope with safely:

  * redirects of API requests to another host (a mirror moving a path, a proxy sending
    the client on): whoever follows them decides whether the user's token goes along;
  * tree listings paged at some page size whose `Link: <...>; rel="next"` URLs name
    another host, typically https://huggingface.co even when the mirror was asked.

A `Mirror` holds these switches and answers each request through them: a matching
redirect instead of the Hub's answer, paging around it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qsl, urlencode

from .responses import Response

__all__ = ["Mirror", "Paging", "Redirect"]

# (method, path, query, body) -> the Hub's own answer, as the server's responder gives it.
Route = Callable[[str, str, str, bytes], Response]

REDIRECT_STATUSES = (301, 302, 303, 307, 308)


@dataclass
class Redirect:
    """Send matching requests to the same path and query under `to`; `used` counts the requests sent on."""

    path_contains: str
    to: str  # a base URL, scheme://host:port, with no path
    status: int = 302
    method: str | None = "GET"
    times: int | None = None  # None: every matching request
    used: int = 0

    def __post_init__(self) -> None:
        self.method = self.method.upper() if self.method else None
        self.to = self.to.rstrip("/")
        if self.status not in REDIRECT_STATUSES:
            raise ValueError(f"status must be one of {REDIRECT_STATUSES}, not {self.status!r}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1, not {self.times!r}")
        if "://" not in self.to:
            raise ValueError(f"to must be a base URL like http://127.0.0.1:8000, not {self.to!r}")

    def matches(self, method: str, path: str) -> bool:
        """Return True if this redirect has uses left and applies to a request with this method and path."""
        return ((self.method is None or self.method == method) and self.path_contains in path
                and (self.times is None or self.used < self.times))


@dataclass(frozen=True)
class Paging:
    """Tree listings in pages of `page_size` entries, their next-page Link on `link_base` (None: the hub's own)."""

    page_size: int
    link_base: str | None = None

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {self.page_size!r}")


class Mirror:
    """The switches in effect; handlers read them from their own threads, tests set them from theirs."""

    def __init__(self) -> None:
        self._redirects: list[Redirect] = []
        self._paging: Paging | None = None
        self._lock = threading.Lock()

    def add_redirect(self, redirect: Redirect) -> Redirect:
        """Add a redirect, tried after those added before it; returns it, raises nothing."""
        with self._lock:
            self._redirects.append(redirect)
        return redirect

    def set_paging(self, paging: Paging | None) -> None:
        """Page tree listings as `paging` says (None: one page unless the client asks); raises nothing."""
        with self._lock:
            self._paging = paging

    def clear(self) -> None:
        """Drop every redirect and stop paging; raises nothing."""
        with self._lock:
            self._redirects.clear()
            self._paging = None

    def answer(self, route: Route, base_url: str, method: str, path: str, query: str, form: bytes) -> Response:
        """The answer to one request: a matching redirect's, else the Hub's (`route`), paged if asked.

        `base_url` is the hub's own address, which paging swaps for the Link base. Returns the
        answer; raises what `route` raises.
        """
        with self._lock:
            redirect = next((r for r in self._redirects if r.matches(method, path)), None)
            if redirect is not None:
                redirect.used += 1
            paging = self._paging
        if redirect is not None:
            location = redirect.to + path + (f"?{query}" if query else "")
            return Response(redirect.status, b"", {"Location": location})
        if paging is None or method != "GET" or not _is_tree_listing(path):
            return route(method, path, query, form)
        resp = route(method, path, _with_page_size(query, paging.page_size), form)
        link = resp.headers.get("Link")
        if link and paging.link_base:
            resp.headers["Link"] = link.replace(f"<{base_url}/", f"<{paging.link_base.rstrip('/')}/", 1)
        return resp


def _is_tree_listing(path: str) -> bool:
    segs = path.split("/")  # "", "api", "models", org, name, "tree", rev, ...
    return len(segs) >= 7 and segs[1] == "api" and segs[2] in ("models", "kernels") and segs[5] == "tree"


def _with_page_size(query: str, page_size: int) -> str:
    """The query with `limit` at most page_size: the routes page when a client sends one."""
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "limit"]
    asked = [int(v) for k, v in parse_qsl(query) if k == "limit" and v.isdigit()]
    return urlencode(params + [("limit", str(min([page_size, *asked])))])
