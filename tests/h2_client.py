"""A raw HTTP/2 client for tests: the ``h2`` library over a plain socket, so a test controls every
frame (a window it never opens, thousands of streams, garbage) and reads a response while it is
still sending its request, as PutMedia producers do."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings


class RawH2:
    """One HTTP/2 connection with prior knowledge; ``pump``/``wait`` read what the server sent."""

    def __init__(self, port: int, *, window: int | None = None, auto_ack: bool = True) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            })
        self.auto_ack = auto_ack
        self.status: dict[int, int] = {}
        self.data: dict[int, bytearray] = {}
        self.unacked: dict[int, int] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: int | None = None
        self.closed = False
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None,
                end_stream: bool = True) -> int:
        """Open a stream; with ``body`` it is sent (and ended when ``end_stream``)."""
        stream_id = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{self.port}"), *headers]
        self.conn.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in head], end_stream=end_stream and body is None)
        self.flush()
        if body is not None:
            self.send_body(stream_id, body, end_stream=end_stream)
        return stream_id

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        view = memoryview(data)
        while True:
            if stream_id in self.resets:
                return  # the server answered early and wants no more of this body
            room = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if room <= 0 and len(view):
                if not self.pump():
                    raise ConnectionError("closed while sending")
                continue
            n = min(room, len(view))
            self.conn.send_data(stream_id, bytes(view[:n]), end_stream=end_stream and n == len(view))
            self.flush()
            view = view[n:]
            if not len(view):
                return

    def pump(self, timeout: float = 5.0) -> bool:
        """Read once from the socket and handle what came; False once the connection is closed."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        for event in self.conn.receive_data(chunk):
            sid = getattr(event, "stream_id", 0) or 0
            if isinstance(event, h2.events.ResponseReceived):
                self.status[sid] = int(dict(event.headers or [])[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.data.setdefault(sid, bytearray()).extend(event.data or b"")
                if self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
                else:
                    self.unacked[sid] = self.unacked.get(sid, 0) + (event.flow_controlled_length or 0)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(sid)
            elif isinstance(event, h2.events.StreamReset):
                self.resets[sid] = int(event.error_code or 0)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = int(event.error_code or 0)
        self.flush()
        return True

    def wait(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            if not self.pump(min(left, 1.0)) and not condition():
                raise AssertionError(f"connection closed while waiting for {what} (GOAWAY {self.goaway})")

    def ack(self, stream_id: int) -> None:
        """Give the server window back for what it sent on ``stream_id``."""
        size = self.unacked.pop(stream_id, 0)
        if size:
            self.conn.acknowledge_received_data(size, stream_id)
            self.flush()

    def json(self, stream_id: int) -> Any:
        return json.loads(bytes(self.data.get(stream_id, b"")))

    def json_lines(self, stream_id: int) -> list[dict[str, Any]]:
        return [json.loads(line) for line in bytes(self.data.get(stream_id, b"")).split(b"\n") if line.strip()]

    def close(self) -> None:
        self.sock.close()
