"""Small loopback servers the transport tests put between kernelhook and the LocalHub.

`Forwarder` relays every request to an upstream server and records what it was sent.
It reads both kinds of request line: an absolute URI (`GET http://host:port/path`, what a
client sends to a forward proxy; the host is never resolved, so a name only the proxy
knows works) and a plain path (what a client sends to a server: a reverse proxy, or the
target of a redirect). Without an upstream it answers 403 to everything, as a firewall
that blocks a direct route does. It can also start closed: listening, with one connection
filling its accept queue so that every further connect times out, until `open()`.

`Socks5Proxy` is a SOCKS5 proxy (no authentication, CONNECT only) that records the host and
port each connection asks for, and resolves names itself (socks5h), from a table it is given.

Every wait is bounded and `stop()` (or leaving the `with` block) ends what was started.
"""

from __future__ import annotations

import http.client
import socket
import socketserver
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


class _SocksHandler(socketserver.BaseRequestHandler):
    """One SOCKS5 client (RFC 1928): no authentication, CONNECT only; then bytes both ways until either side ends."""

    def handle(self) -> None:
        proxy: Socks5Proxy = self.server.proxy
        client = self.request
        client.settimeout(WAIT_S)
        proxy.live.add(client)
        try:
            version, methods = _read(client, 2)
            _read(client, methods)
            client.sendall(b"\x05\x00")  # version 5, no authentication
            version, command, _, address_type = _read(client, 4)
            if address_type == 3:  # a name, resolved here (socks5h): the client never looked it up
                host = _read(client, _read(client, 1)[0]).decode("ascii")
            elif address_type == 1:
                host = socket.inet_ntoa(_read(client, 4))
            else:
                client.sendall(b"\x05\x08\x00\x01" + bytes(6))  # address type not supported
                return
            port = int.from_bytes(_read(client, 2), "big")
            proxy.record(f"{host}:{port}")
            if version != 5 or command != 1:
                client.sendall(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
                return
            upstream = socket.create_connection((proxy.resolve.get(host, host), port), timeout=WAIT_S)
        except (OSError, ValueError):
            return
        finally:
            proxy.live.discard(client)
        with upstream:
            client.sendall(b"\x05\x00\x00\x01" + bytes(6))  # succeeded (bound address unused by clients)
            _relay(client, upstream, proxy.live)


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ValueError("the client hung up mid-handshake")
        data += chunk
    return data


def _relay(one: socket.socket, other: socket.socket, live: set) -> None:
    """Copy bytes between two sockets until one side closes (or stop() shuts them)."""
    live.update((one, other))
    pumps = [threading.Thread(target=_pump, args=pair, daemon=True) for pair in ((one, other), (other, one))]
    for pump in pumps:
        pump.start()
    for pump in pumps:
        pump.join(WAIT_S)
    live.difference_update((one, other))


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class Socks5Proxy:
    """A SOCKS5 proxy on loopback; `targets` lists the "host:port" each connection asked for. Names in
    `resolve` ({name: address}) are resolved as given, so a name only the proxy knows works (socks5h)."""

    def __init__(self, resolve: dict[str, str] | None = None) -> None:
        self.resolve = dict(resolve or {})
        self.targets: list[str] = []
        self.live: set = set()
        self._lock = threading.Lock()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SocksHandler, bind_and_activate=True)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"socks5h://{host}:{port}"

    def record(self, target: str) -> None:
        with self._lock:
            self.targets.append(target)

    def __enter__(self) -> "Socks5Proxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(WAIT_S)
        for sock in list(self.live):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
