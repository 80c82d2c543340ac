"""Transport for the loopback Hub: a threaded HTTP/1.1 server that can be stopped cleanly.

The server knows no routes: it asks a responder for each answer, lets the fault set
reshape it, logs the request and writes the answer out.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .faults import FaultSet, send_body, shape
from .responses import ErrorResponse, Response, apply_range, json_response

logger = logging.getLogger("kernelhook.testing")

_JOIN_TIMEOUT_S = 5.0

# (method, path, query, body, request headers) -> the answer; raises ErrorResponse to answer an error.
Responder = Callable[[str, str, str, bytes, Message], Response]


@dataclass(frozen=True)
class RequestRecord:
    """One served request: the path as sent (still URL-quoted), without the query."""

    method: str
    path: str
    query: str
    status: int
    authorization: str | None = None  # the Authorization header as sent, to check tokens
    fault: bool = False  # an injected fault (hub.inject) shaped this response
    # Every request header as sent, names lower-cased (the last of repeated ones): to check what
    # a client's transport added. Left out of comparisons and hashes, so records compare by what happened.
    headers: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


class RequestLog:
    """Every served request in order; handlers append from their own threads."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        """Log one request; returns None, raises nothing."""
        with self._lock:
            self.records.append(record)

    def clear(self) -> None:
        """Forget every logged request (the list stays the same object); returns None."""
        with self._lock:
            self.records.clear()

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        """Return how many logged requests have this method and a path containing this text."""
        with self._lock:
            records = list(self.records)
        return sum(1 for r in records
                   if (method is None or r.method == method.upper())
                   and (path_contains is None or path_contains in r.path))


class RequestHandler(BaseHTTPRequestHandler):
    """Serves every method the same way: fault, responder, log, answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms per request
    server_version = "kernelhook-localhub/1"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, threading.current_thread())

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = self.rfile.read(length) if length else b""  # drained so the next request parses
        path, _, query = self.path.partition("?")
        server = self.server
        stopping = server.stopping
        fault = server.faults.take(self.command, path)
        if fault is not None and fault.delay_s and stopping.wait(fault.delay_s):
            self.close_connection = True  # stop() woke the delay: answer nothing
            return
        resp = None if fault is not None and fault.status is not None else self._respond(path, query, form)
        if fault is not None:
            resp = shape(fault, resp)
        record = RequestRecord(self.command, path, query, resp.status, self.headers.get("authorization"),
                               fault is not None, {name.lower(): value for name, value in self.headers.items()})
        # Logged before the body goes out, so a client that has its answer sees the record.
        server.log.append(record)
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))  # the full length even when cut short
        self.end_headers()
        send_body(self, b"" if self.command == "HEAD" else resp.body, fault, stopping)

    def _respond(self, path: str, query: str, form: bytes) -> Response:
        try:
            answer = self.server.respond(self.command, path, query, form, self.headers)
            return apply_range(answer, self.headers.get("Range"))
        except ErrorResponse as err:
            return err.response
        except Exception:
            logger.exception("local hub failed on %s %s", self.command, self.path)
            return json_response({"error": "internal error"}, 500)

    def log_message(self, format: str, *args) -> None:
        logger.debug("local hub: " + format, *args)


class LoopbackServer(ThreadingHTTPServer):
    """One thread per connection; it tracks live connections so stopping never waits on an idle one."""

    daemon_threads = True
    # Idle keep-alive connections would block server_close(); stop_server closes them itself.
    block_on_close = False

    def __init__(self, address, respond: Responder, faults: FaultSet, log: RequestLog) -> None:
        super().__init__(address, RequestHandler)
        self.respond, self.faults, self.log = respond, faults, log
        self._live: dict[socket.socket, threading.Thread] = {}
        self._live_lock = threading.Lock()
        self._closing = False
        self.stopping = threading.Event()  # wakes handlers that injected faults keep waiting

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response (or stop() closing a connection) is routine here.
        logger.debug("local hub: connection from %s ended with an error", client_address, exc_info=True)

    def track(self, conn: socket.socket, thread: threading.Thread) -> None:
        """Remember a live connection and its handler thread; returns None, raises nothing."""
        with self._live_lock:
            self._live[conn] = thread
            closing = self._closing
        if closing:  # accepted just as stop() began: close it rather than serve it forever
            _hang_up(conn)

    def untrack(self, conn: socket.socket) -> None:
        """Forget a connection that has ended; returns None, raises nothing."""
        with self._live_lock:
            self._live.pop(conn, None)

    def close_connections(self) -> list[threading.Thread]:
        """Wake waiting handlers and hang up every live connection; returns their threads, to join."""
        with self._live_lock:
            self._closing = True
            live = list(self._live.items())
        self.stopping.set()
        for conn, _ in live:
            _hang_up(conn)
        return [thread for _, thread in live]


def _hang_up(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading the next request
    except OSError:
        pass


def start_server(host: str, port: int, respond: Responder, faults: FaultSet,
                 log: RequestLog) -> tuple[LoopbackServer, threading.Thread]:
    """Bind `host:port` (port 0: any free one) and serve from a daemon thread.

    Returns the server and its thread; raises OSError when the address cannot be bound.
    """
    server = LoopbackServer((host, port), respond, faults, log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"localhub-{server.server_address[1]}", daemon=True)
    thread.start()
    return server, thread


def stop_server(server: LoopbackServer, thread: threading.Thread | None) -> None:
    """Stop serving, hang up every open connection and wait (boundedly) for the threads; returns None."""
    server.shutdown()
    handlers = server.close_connections()
    server.server_close()
    for t in [thread, *handlers]:
        if t is not None and t is not threading.current_thread():
            t.join(_JOIN_TIMEOUT_S)
