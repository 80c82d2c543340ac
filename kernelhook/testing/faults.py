"""Fault injection for the loopback Hub: a failing, lying or slow server on demand.

Reliability tests need the Hub to misbehave in the ways a real one (or the
network in front of it) does: error statuses with `Retry-After`, bodies that
do not match their listed hash, bodies cut short by a clean close or by a TCP
reset, and downloads slow enough to kill a client mid-transfer. A fault is
matched per request (method and quoted URL path), used a bounded number of
times, and shapes the response the real routes produced.

Every wait here is an `Event.wait` on the server's stop event, so `stop()`
wakes a slow fault at once instead of waiting out its sleeps.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .responses import Response

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

__all__ = ["Fault", "FaultSet", "send_body", "shape"]

# SO_LINGER on, timeout 0: close() then sends RST instead of FIN, dropping unsent data.
_LINGER_RESET = struct.pack("ii", 1, 0)
# A fault used zero times, or sent in empty chunks, would never do anything.
_MINIMUMS = {"times": 1, "chunk_size": 1, "truncate_to": 0, "reset_after": 0}


@dataclass
class Fault:
    """One injected fault; `used` counts the requests it has changed so far."""

    path_contains: str
    method: str | None = "GET"
    times: int | None = 1
    status: int | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay_s: float = 0.0
    truncate_to: int | None = None
    reset_after: int | None = None
    chunk_size: int | None = None
    chunk_delay_s: float = 0.0
    used: int = 0

    def __post_init__(self) -> None:
        self.method = self.method.upper() if self.method else None
        for name, least in _MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, not {value!r}")
        if self.truncate_to is not None and self.reset_after is not None:
            raise ValueError("truncate_to and reset_after both end the body: give one")
        if self.delay_s < 0 or self.chunk_delay_s < 0 or (self.retry_after or 0) < 0:
            raise ValueError("delays must not be negative")

    def matches(self, method: str, path: str) -> bool:
        """Return True if this fault has uses left and applies to a request with this method and path."""
        return ((self.method is None or self.method == method) and self.path_contains in path
                and (self.times is None or self.used < self.times))

    @property
    def cut_at(self) -> int | None:
        """How many body bytes go out before the connection ends, or None for all of them."""
        return self.truncate_to if self.truncate_to is not None else self.reset_after


class FaultSet:
    """The hub's faults in injection order; taking one is atomic, since handlers run in threads."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        """Append `fault` and return it; raises nothing."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault; raises nothing."""
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first fault with uses left that matches this request, its use counted."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.used += 1
                    return fault
        return None


# -- applying a fault, called by the request handler ---------------------------

def shape(fault: Fault, real: Response | None) -> Response:
    """The response a fault sends in place of `real` (None when the real one was never built).

    Returns a new Response; `real` is left as it was. Raises nothing.
    """
    if fault.status is not None:
        default = fault.body is None
        body = json.dumps({"error": "injected"}).encode() if default else fault.body
        resp = Response(fault.status, body, {"Content-Type": "application/json; charset=utf-8"} if default else {})
    else:
        assert real is not None
        resp = Response(real.status, real.body if fault.body is None else fault.body, dict(real.headers))
    if fault.retry_after is not None:
        # The client parses only whole seconds; round up so it never retries early.
        resp.headers["Retry-After"] = str(math.ceil(fault.retry_after))
    resp.headers.update(fault.headers)
    return resp


def send_body(handler: "BaseHTTPRequestHandler", body: bytes, fault: Fault | None,
              stopping: threading.Event) -> None:
    """Write the body as the fault says; the headers (full Content-Length) are already out.

    Returns None; raises OSError when the client has gone away.
    """
    if fault is None:
        if body:
            handler.wfile.write(body)
        return
    cut = fault.cut_at
    data = body if cut is None else body[:cut]
    step = fault.chunk_size or max(len(data), 1)
    for start in range(0, len(data), step):
        if start and stopping.wait(fault.chunk_delay_s):
            break  # stop() is under way: give up the transfer rather than hold it up
        handler.wfile.write(data[start:start + step])
    if cut is not None or stopping.is_set():
        handler.close_connection = True  # the body is short: this connection cannot carry another
    if fault.reset_after is not None:
        _reset(handler.connection)


def _reset(conn: socket.socket) -> None:
    """Abort the connection with a TCP RST, as a crashed peer or middlebox would."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        # Closed here, not by socketserver: its shutdown(SHUT_WR) would send a FIN first and
        # the client would see a clean end of stream. The handler's rfile holds a reference
        # to the socket, so the descriptor really closes when finish() closes rfile.
        conn.close()
    except OSError:
        pass  # the client has already gone
