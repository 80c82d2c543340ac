"""Transport for the loopback Hub: a threaded HTTP/1.1 server that can be stopped cleanly."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from .faults import send_body, shape
from .responses import ErrorResponse, Response, apply_range, json_response
from .routes import route

if TYPE_CHECKING:
    from .localhub import LocalHub

logger = logging.getLogger("kernelhook.testing")

_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RequestRecord:
    """One served request: the path as sent (still URL-quoted), without the query."""

    method: str
    path: str
    query: str
    status: int
    authorization: str | None = None  # the Authorization header as sent, to check tokens
    fault: bool = False  # an injected fault (hub.inject) shaped this response


class RequestHandler(BaseHTTPRequestHandler):
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
        hub, stopping = self.server.hub, self.server.stopping
        fault = hub._faults.take(self.command, path)
        if fault is not None and fault.delay_s and stopping.wait(fault.delay_s):
            self.close_connection = True  # stop() woke the delay: answer nothing
            return
        resp = None if fault is not None and fault.status is not None else self._respond(hub, path, query, form)
        if fault is not None:
            resp = shape(fault, resp)
        # Logged before the body goes out, so a client that has its answer sees the record.
        hub._record(RequestRecord(self.command, path, query, resp.status, self.headers.get("authorization"),
                                  fault is not None))
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))  # the full length even when cut short
        self.end_headers()
        send_body(self, b"" if self.command == "HEAD" else resp.body, fault, stopping)

    def _respond(self, hub: "LocalHub", path: str, query: str, form: bytes) -> Response:
        try:
            return apply_range(route(hub, self.command, path, query, form), self.headers.get("Range"))
        except ErrorResponse as err:
            return err.response
        except Exception:
            logger.exception("local hub failed on %s %s", self.command, self.path)
            return json_response({"error": "internal error"}, 500)

    def log_message(self, format: str, *args) -> None:
        logger.debug("local hub: " + format, *args)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections would block server_close(); stop_server closes them itself.
    block_on_close = False

    def __init__(self, address, hub: "LocalHub") -> None:
        super().__init__(address, RequestHandler)
        self.hub = hub
        self._live: dict[socket.socket, threading.Thread] = {}
        self._live_lock = threading.Lock()
        self._closing = False
        self.stopping = threading.Event()  # wakes handlers that injected faults keep waiting

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response (or stop() closing a connection) is routine here.
        logger.debug("local hub: connection from %s ended with an error", client_address, exc_info=True)

    def track(self, conn: socket.socket, thread: threading.Thread) -> None:
        with self._live_lock:
            self._live[conn] = thread
            closing = self._closing
        if closing:  # accepted just as stop() began: close it rather than serve it forever
            _hang_up(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._live_lock:
            self._live.pop(conn, None)

    def close_connections(self) -> list[threading.Thread]:
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


def start_server(hub: "LocalHub", host: str, port: int) -> tuple[LoopbackServer, threading.Thread]:
    server = LoopbackServer((host, port), hub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"localhub-{server.server_address[1]}", daemon=True)
    thread.start()
    return server, thread


def stop_server(server: LoopbackServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    handlers = server.close_connections()
    server.server_close()
    for t in [thread, *handlers]:
        if t is not None and t is not threading.current_thread():
            t.join(_JOIN_TIMEOUT_S)
