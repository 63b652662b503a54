"""A small keep-alive HTTP/1.1 client for the agent's few request shapes (``edge_agent.transport``
signs, sends through it and translates its errors).

The agent sends two shapes only: a POST with a small bytes body (PutRecords, PutRecordBatch,
GetDataEndpoint) and a POST streaming a chunked body whose answer streams back (PutMedia). A
general client's machinery (urllib3: pool managers, retry objects, header containers, http.client's
email-based header parsing, head and body in two sends) cost ~250 µs of x86 CPU per PutRecords,
about 1 ms on a Pi, and ~2 MiB of RSS; this one costs ~50 µs:

- a request's head and bytes body leave in one ``sendall`` (one TCP segment for a small body);
  a streamed body is sent with chunked encoding, one chunk per piece;
- the answer is read through one buffered reader per connection: the status line, the headers
  (names lower-cased), then the body by ``Content-Length``, chunked encoding, or until the server
  closes; 1xx interim answers are skipped;
- a connection is kept and reused when its answer allowed it (HTTP/1.1, no ``Connection: close``)
  and its body was read to the end. An idle one the server closed meanwhile (readable before we
  wrote anything) is replaced before use; a bytes request that gets no answer on a reused
  connection (the server closed it just as we sent) is sent once more on a fresh one;
- ``https`` verifies the server with the system CAs, or only ``ca_file`` when given, and checks
  the host name.

Every failure is an ``OSError``: the socket's and TLS's own, ``TimeoutError`` for the connect
and read timeouts, ``ProtocolError`` for an answer that is not the HTTP/1.x expected.
"""

from __future__ import annotations

import functools
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
#: Idle connections kept per origin (each sender thread uses one at a time).
POOL_SIZE = 2
#: Longest status, header or chunk-size line accepted, and most header lines in an answer.
MAX_LINE = 65536
MAX_HEADERS = 128
#: A bytes body up to this size is sent in the same ``sendall`` as the head (copied once).
JOIN_BODY_BYTES = 256 * 1024
USER_AGENT = "edge-agent"

_Origin = tuple[str, str, int]


class ProtocolError(ConnectionError):
    """The server's bytes are not the HTTP/1.x answer expected; the connection is dropped."""


class RemoteDisconnected(ProtocolError):
    """The server closed the connection without answering."""


def host_header(parts: SplitResult) -> str:
    """The ``Host`` of a URL as sent and signed: IPv6 in brackets, the port unless the scheme's default."""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


@functools.lru_cache(maxsize=64)
def _target(url: str) -> tuple[_Origin, str, str]:
    """(origin, request target, Host header) of ``url``; the agent posts to a handful of URLs."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]), target, host_header(parts)


class _Connection:
    """One socket to an origin and the buffered reader its answers are read through."""

    def __init__(self, origin: _Origin, sock: socket.socket) -> None:
        self.origin = origin
        self.sock = sock
        self.reader = sock.makefile("rb")
        #: Taken from the idle pool (it carried a request before).
        self.reused = False

    def readable(self) -> bool:
        """Bytes (or the end) are waiting: while idle, the server closed it or sent something unasked."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Response:
    """An answer: ``status``, ``headers`` (lower-case names), and its body through ``read`` or
    ``stream``. The connection goes back to the pool once the body was read to the end; ``close``
    an answer not read to the end (its connection is closed then)."""

    def __init__(self, status: int, headers: dict[str, str], conn: _Connection, length: int | None, chunked: bool,
                 keep_alive: bool, release: Callable[[_Connection], None]) -> None:
        self.status = status
        self.headers = headers
        self._conn: _Connection | None = conn
        self._length = length  # None: chunked, or until the server closes
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._release = release
        if length == 0 and not chunked:
            self._done()

    def read(self, limit: int | None = None) -> bytes:
        """The body (its first ``limit`` bytes when given; the rest is not read, the connection closed)."""
        conn = self._conn
        if conn is None:
            return b""
        if self._length is not None and (limit is None or limit >= self._length):
            data = conn.reader.read(self._length)  # the common case: one buffered read
            if len(data) < self._length:
                self.close()
                raise ProtocolError(f"answer body cut short ({len(data)} of {self._length} bytes)")
            self._done()
            return data
        parts: list[bytes] = []
        size = 0
        for piece in self.stream():
            parts.append(piece)
            size += len(piece)
            if limit is not None and size >= limit:
                break
        self.close()
        return b"".join(parts)[:limit]

    def stream(self, amt: int = 65536) -> Iterator[bytes]:
        """The body in pieces of at most ``amt`` bytes, each as soon as it arrived."""
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        try:
            if self._chunked:
                yield from self._chunks(reader, amt)
            elif self._length is not None:
                left = self._length
                while left:
                    piece = reader.read1(min(left, amt))
                    if not piece:
                        raise ProtocolError(f"answer body cut short ({self._length - left} of {self._length} bytes)")
                    left -= len(piece)
                    yield piece
            else:
                while piece := reader.read1(amt):
                    yield piece
        except BaseException:
            self.close()
            raise
        self._done()

    @staticmethod
    def _chunks(reader: Any, amt: int) -> Iterator[bytes]:
        while True:
            line = reader.readline(MAX_LINE)
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while (line := reader.readline(MAX_LINE)) not in (b"\r\n", b"\n"):  # trailers
                    if not line:
                        raise ProtocolError("answer cut short in its trailers")
                return
            while size:
                piece = reader.read(min(size, amt))
                if not piece:
                    raise ProtocolError("answer cut short in a chunk")
                size -= len(piece)
                yield piece
            if reader.readline(MAX_LINE) not in (b"\r\n", b"\n"):
                raise ProtocolError("chunk not followed by CRLF")

    def _done(self) -> None:
        """The body was read to the end: the connection is free for the next request."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep_alive:
                self._release(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Stop reading: the connection (if the body was not read to the end) is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Client:
    """Keep-alive connections to any http(s) origin; ``request`` sends one request, returns its answer."""

    def __init__(self, connect_timeout: float, read_timeout: float, ca_file: str = "") -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ca_file = ca_file
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | Iterable[bytes]) -> Response:
        """Send ``body`` (bytes, or an iterable of pieces sent chunked) and read the answer's head.

        A ``Response`` of any status; ``OSError`` when no answer came."""
        origin, target, host = _target(url)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"header {name} holds a line break")
            lines.append(f"{name}: {value}")
        streamed = not isinstance(body, bytes)
        lines.append(f"Content-Length: {len(body)}" if isinstance(body, bytes) else "Transfer-Encoding: chunked")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        fresh = False
        while True:
            conn = self._take(origin, fresh)
            try:
                if isinstance(body, bytes):
                    if len(body) <= JOIN_BODY_BYTES:
                        conn.sock.sendall(head + body)
                    else:
                        conn.sock.sendall(head)
                        conn.sock.sendall(body)
                else:
                    self._send_chunked(conn, head, body)
                return self._answer(conn)
            except (BrokenPipeError, ConnectionResetError, RemoteDisconnected):
                conn.close()
                if conn.reused and not streamed:  # the server dropped an idle connection as we used it
                    fresh = True
                    continue
                raise
            except BaseException:
                conn.close()
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    # -- connections -----------------------------------------------------------------------------

    def _take(self, origin: _Origin, fresh: bool) -> _Connection:
        """An idle connection to ``origin`` still open, else a new one."""
        while not fresh:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if not conn.readable():
                conn.reused = True
                return conn
            conn.close()
        return self._connect(origin)

    def _release(self, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.origin, [])
            if not self._closed and len(idle) < POOL_SIZE:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(origin, sock)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.ca_file or None)
        return self._tls

    # -- the exchange ----------------------------------------------------------------------------

    @staticmethod
    def _send_chunked(conn: _Connection, head: bytes, body: Iterable[bytes]) -> None:
        """Head, then each piece as one chunk, then the last chunk. If the server answers early
        and closes (an unknown stream), sending fails but its answer is still read."""
        sock = conn.sock
        sock.sendall(head)
        try:
            for piece in body:
                if piece:
                    sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            if not conn.readable():
                raise
            # an answer is waiting: the caller reads it

    def _answer(self, conn: _Connection) -> Response:
        """Read the status line and headers (skipping 1xx answers) and set up the body's reading."""
        reader = conn.reader
        first = True
        while True:
            line = reader.readline(MAX_LINE)
            if not line:
                raise RemoteDisconnected("the server closed the connection without answering") if first else ProtocolError("answer cut short")
            first = False
            version, _, rest = line.partition(b" ")
            try:
                status = int(rest[:3])
            except ValueError:
                raise ProtocolError(f"bad status line {line[:60]!r}") from None
            if not version.startswith(b"HTTP/1."):
                raise ProtocolError(f"bad status line {line[:60]!r}")
            headers: dict[str, str] = {}
            while (line := reader.readline(MAX_LINE)) not in (b"\r\n", b"\n"):
                if not line.endswith(b"\n") or len(headers) >= MAX_HEADERS:
                    raise ProtocolError("answer headers cut short or too long")
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            if status >= 200:
                break
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length: int | None = None
        if chunked:
            pass
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                length = -1
            if length < 0:
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
        elif status in (204, 304):
            length = 0
        keep_alive = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower() and (chunked or length is not None)
        return Response(status, headers, conn, length, chunked, keep_alive, self._release)
