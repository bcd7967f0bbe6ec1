"""A fault-injecting HTTP proxy on 127.0.0.1, for tests: real network faults for any engine.

``FaultProxy(upstream)`` listens on a free loopback port and forwards each HTTP/1.1 request to
``upstream`` (a test server's ``http://127.0.0.1:PORT``), one upstream connection per request,
and injects, by rule (:class:`HttpFault`), on the k-th matching request:

* ``503``    answers ``503 SlowDown`` itself (S3's throttling reply; Azure and GCS clients read
  the status), without forwarding;
* ``403``    answers ``403 AccessDenied`` itself;
* ``reset``  reads the request, then resets the connection (RST) without an answer;
* ``cut``    forwards, relays the answer's headers and half of its body, then resets.

Unlike ``tests/faults.py`` (which wraps fsspec file systems in-process), this exercises the
engines' own HTTP stacks (obstore's Rust client, aiobotocore, aiohttp, the Azure SDK) and
their error mapping. Modelled on ``benchmarks/proxy.py`` (a delay proxy); nothing imported
from there. ``Expect: 100-continue`` is answered by the proxy; the request reaches upstream
with ``Connection: close``, so the client opens a new connection per request.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

_S3_BODIES = {
    503: (b"Slow Down", b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown"
          b"</Code><Message>Please reduce your request rate.</Message></Error>"),
    403: (b"Forbidden", b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
          b"AccessDenied</Code><Message>Access Denied</Message></Error>"),
}


@dataclass
class HttpFault:
    """``kind`` fires on requests whose method is in ``methods`` (empty: any) and whose path
    contains ``match``: it skips ``after`` of them, then fires ``times`` times (``None``:
    forever)."""

    kind: str
    match: str = ""
    methods: tuple[str, ...] = ()
    times: int | None = 1
    after: int = 0
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def wants(self, method: str, path: str) -> bool:
        if (self.methods and method not in self.methods) or self.match not in path:
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; ``faults`` may be changed between
    requests; ``requests`` lists ``(method, path, fault kind or "")`` as they came."""

    def __init__(self, upstream: str, faults: list[HttpFault] | None = None) -> None:
        hostport = upstream.split("://", 1)[-1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.faults = list(faults or [])
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def fired(self, kind: str) -> int:
        """How many requests got ``kind``."""
        with self._lock:
            return sum(1 for _, _, k in self.requests if k == kind)

    def close(self) -> None:
        """Stop listening and drop every connection: a client's pooled keep-alive connection
        must not outlive the proxy (fsspec caches file systems by options, and a later proxy
        may get the same port: the stale connection would bypass it)."""
        self._closed = True
        self._sock.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _decide(self, method: str, path: str) -> str:
        with self._lock:
            kind = next((f.kind for f in self.faults if f.wants(method, path)), "")
            self.requests.append((method, path, kind))
        return kind

    def _serve(self, conn: socket.socket) -> None:
        buf = _Buffered(conn)
        try:
            while True:
                head = buf.read_until(b"\r\n\r\n")
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = [(k.strip(), v.strip()) for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)]
                low = {k.lower(): v for k, v in headers}
                if low.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(buf, low)
                kind = self._decide(method, path)
                if kind == "reset":
                    _reset(conn)
                    return
                if kind in ("503", "403"):
                    reason, payload = _S3_BODIES[int(kind)]
                    conn.sendall(b"HTTP/1.1 %s %s\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: %d\r\nx-amz-request-id: fault\r\n\r\n"
                                 % (kind.encode(), reason, len(payload)))
                    if method != "HEAD":
                        conn.sendall(payload)
                    continue
                keep = [(k, v) for k, v in headers if k.lower() not in
                        ("connection", "keep-alive", "expect", "transfer-encoding",
                         "content-length")]
                keep += [("Content-Length", str(len(body))), ("Connection", "close")]
                request = (f"{method} {path} HTTP/1.1\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in keep) + "\r\n").encode("latin-1") + body
                answer = _forward(self.upstream, request)
                if kind == "cut":
                    split = answer.find(b"\r\n\r\n") + 4
                    rest = len(answer) - split
                    conn.sendall(answer[:split + max(0, rest // 2)])
                    _reset(conn)
                    return
                conn.sendall(answer)
                if not _framed(answer, method):
                    conn.close()
                    return
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass


class _Buffered:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""

    def _more(self) -> bool:
        data = self.conn.recv(1 << 16)
        self.buf += data
        return bool(data)

    def read_until(self, sep: bytes) -> bytes | None:
        while sep not in self.buf:
            if not self._more():
                return None
        head, self.buf = self.buf.split(sep, 1)
        return head

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise ValueError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _read_body(buf: _Buffered, low: dict[str, str]) -> bytes:
    if "chunked" in low.get("transfer-encoding", "").lower():
        out = b""
        while True:
            size_line = buf.read_until(b"\r\n")
            if size_line is None:
                raise ValueError("closed in a chunked body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                buf.read_until(b"\r\n")  # trailers end with an empty line
                return out
            out += buf.read(size)
            buf.read(2)
    return buf.read(int(low.get("content-length", "0") or 0))


def _forward(upstream: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(upstream, timeout=30) as up:
        up.sendall(request)
        parts = []
        while True:
            data = up.recv(1 << 16)
            if not data:
                return b"".join(parts)
            parts.append(data)


def _framed(answer: bytes, method: str) -> bool:
    """Whether the client can tell where this answer ends (else close after it)."""
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    return method == "HEAD" or b"content-length:" in head or b"chunked" in head or \
        head.startswith((b"http/1.1 204", b"http/1.1 304"))


def _reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the client sees "connection reset by peer"."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        conn.close()


def remote_under_test(request: Any, kind: str) -> tuple[Any, str]:
    """The running server for ``kind`` (``"s3"``: SeaweedFS, else Azurite) and a fresh folder
    URL on it, for a test that puts a :class:`FaultProxy` in front of it."""
    if kind.startswith("s3"):
        return (request.getfixturevalue("s3_server"),
                request.getfixturevalue("s3_bucket") + "/proj")
    return (request.getfixturevalue("azurite_server"),
            request.getfixturevalue("az_container") + "/proj")
