"""HTTP answers of the loopback Hub: a response value, JSON bodies, error answers and byte ranges.

Routes build these, faults reshape them and the server writes them out; this
module knows nothing of repos or sockets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Response:
    """One HTTP answer: status, body and headers (Content-Length is the server's to add)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class ErrorResponse(Exception):
    """Raised to answer with an error; an `X-Error-Code` lets the client map it to its own exception.

    `response` holds the JSON answer the server sends in place of the route's.
    """

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.response = json_response({"error": message}, status)
        self.response.headers.update(headers or {})
        if code:
            # Header values must be latin-1; a unicode file name would otherwise break the response.
            header_message = message.encode("ascii", "backslashreplace").decode("ascii")
            self.response.headers.update({"X-Error-Code": code, "X-Error-Message": header_message})


def json_response(obj, status: int = 200) -> Response:
    """Return a response whose body is `obj` as compact JSON; raises TypeError if `obj` is not JSON."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json; charset=utf-8"})


def apply_range(resp: Response, header: str | None) -> Response:
    """Serve `Range: bytes=a-b` (one range), the way resumed downloads ask.

    Returns `resp` itself when there is no usable range, a 206 with the slice, or a 416
    for a range outside the body. Raises nothing.
    """
    if resp.status != 200 or not header or not header.startswith("bytes=") or "," in header:
        return resp
    size, (first, _, last) = len(resp.body), header[len("bytes="):].strip().partition("-")
    try:
        start = size - int(last) if first == "" else int(first)
        end = size - 1 if first == "" or last == "" else min(int(last), size - 1)
    except ValueError:
        return resp
    if start < 0 or start >= size or end < start:
        return Response(416, b"", {**resp.headers, "Content-Range": f"bytes */{size}"})
    resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(206, resp.body[start:end + 1], resp.headers)
