"""Small loopback servers the transport tests put between kernelhook and the LocalHub.

`Forwarder` relays every request to an upstream server and records what it was sent.
It reads both kinds of request line: an absolute URI (`GET http://host:port/path`, what a
client sends to a forward proxy; the host is never resolved, so a name only the proxy
knows works) and a plain path (what a client sends to a server: a reverse proxy, or the
target of a redirect). Without an upstream it answers 403 to everything, as a firewall
that blocks a direct route does. It can also start closed: listening, with one connection
filling its accept queue so that every further connect times out, until `open()`.

Every wait is bounded and `stop()` ends what `start()` began.
"""

from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

WAIT_S = 30  # bound on every wait here; far above what a healthy run needs
# Headers about one connection, not the request: never relayed.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
               "trailers", "transfer-encoding", "upgrade", "content-length"}


@dataclass(frozen=True)
class Seen:
    """One request as the Forwarder received it: `target` as on the request line, header names lower-cased."""

    method: str
    target: str
    headers: dict

    @property
    def path(self) -> str:
        """The target's path, without the query, for an absolute URI and a plain path alike."""
        return urlsplit(self.target).path

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else Nagle and delayed ACKs add ~40 ms per request

    def setup(self) -> None:
        super().setup()
        self.server.live.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.live.discard(self.connection)

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        forwarder: Forwarder = self.server.forwarder
        forwarder.record(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if forwarder.upstream is None:
            self._answer(403, [("Content-Type", "text/plain")], b"blocked: this route is closed\n")
            return
        parts = urlsplit(self.path)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = http.client.HTTPConnection(*forwarder.upstream, timeout=WAIT_S)
        try:
            conn.request(self.command, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            relayed = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        finally:
            conn.close()
        self._answer(resp.status, relayed, data, length)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _answer(self, status: int, headers: list, body: bytes, length: str | None = None) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    live: set  # open connections, hung up by stop(): a client's idle keep-alive would hold a handler

    def get_request(self):
        request = super().get_request()
        self.forwarder.accepted.set()
        return request


class Forwarder:
    """Relays requests to `upstream` (a base URL, or None: answer 403); `seen` lists what it received."""

    def __init__(self, upstream: str | None, *, closed: bool = False) -> None:
        self.upstream = None if upstream is None else (urlsplit(upstream).hostname, urlsplit(upstream).port)
        self.seen: list[Seen] = []
        self.accepted = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self._server.forwarder = self
        self._server.live = set()
        self._thread: threading.Thread | None = None
        self._filler: socket.socket | None = None
        self._closed = closed

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def start(self) -> "Forwarder":
        """Listen, and serve unless started closed; returns self."""
        server = self._server
        if self._closed:
            server.request_queue_size = 0  # the queue holds one connection, which _filler takes
        server.server_bind()
        server.server_activate()
        if self._closed:
            self._filler = socket.create_connection(server.server_address[:2], timeout=WAIT_S)
        else:
            self._serve()
        return self

    def open(self) -> None:
        """Start serving a closed Forwarder, and return once its queue has room for a new connection."""
        if self._thread is None:
            self._serve()
            self.accepted.wait(WAIT_S)  # the filler is out of the queue
            self._filler.close()

    def _serve(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; returns None."""
        if self._filler is not None:
            self._filler.close()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(WAIT_S)
        for conn in list(self._server.live):
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler waiting for the next request
            except OSError:
                pass
        self._server.server_close()

    def __enter__(self) -> "Forwarder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
