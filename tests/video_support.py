"""Helpers shared by the video tests: synthetic camera fragments and a raw PutMedia client.

The client speaks HTTP/1.1 over a plain socket so tests control every byte (garbage, truncation,
abrupt close) and read acknowledgements while the body is still being sent, as KVS producers do.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from kvs import Fragment, FragmentWriter


def camera_fragments(count: int, *, fps: int = 10, seconds: float = 1.0, width: int = 160, height: int = 120,
                     start_ms: int | None = None) -> list[Fragment]:
    """``count`` fragments of a synthetic camera (a moving gradient), timestamps from ``start_ms``."""
    start_ms = int(time.time() * 1000) - 60_000 if start_ms is None else start_ms
    writer = FragmentWriter(width, height, fps, fragment_seconds=seconds)
    out: list[Fragment] = []
    frame_ms = 1000 // fps
    x = np.arange(width, dtype=np.uint16)[None, :, None]
    y = np.arange(height, dtype=np.uint16)[:, None, None]
    i = 0
    while len(out) < count:
        bgr = ((x + y + i * 3 + np.array([0, 60, 120], dtype=np.uint16)) % 256).astype(np.uint8)
        out += writer.add_frame(bgr, start_ms + i * frame_ms)
        i += 1
    return out[:count]


class PutMediaClient:
    """One PutMedia request over a raw socket: ``send`` body bytes, ``acks`` read concurrently."""

    def __init__(self, url: str, stream: str | None, *, timecode_type: str | None = "ABSOLUTE",
                 start_ts: float | None = None, headers: dict[str, str] | None = None) -> None:
        host, port = url.split("//", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        lines = ["POST /putMedia HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked",
                 "Content-Type: application/octet-stream"]
        if stream is not None:
            lines.append(f"x-amzn-stream-name: {stream}")
        if timecode_type is not None:
            lines.append(f"x-amzn-fragment-timecode-type: {timecode_type}")
        lines.append(f"x-amzn-producer-start-timestamp: {start_ts if start_ts is not None else time.time():.3f}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.status: int | None = None
        self.error_body = b""
        self.acks: list[dict[str, Any]] = []
        self.done = threading.Event()
        self._cond = threading.Condition()
        self._file = self.sock.makefile("rb")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def send_all(self, chunks: Iterable[bytes], pause: float = 0.0) -> None:
        for chunk in chunks:
            self.send(chunk)
            if pause:
                time.sleep(pause)

    def end(self) -> None:
        """Finish the body (last chunk)."""
        self.sock.sendall(b"0\r\n\r\n")

    def abort(self) -> None:
        """Vanish like a producer losing power: a TCP reset, no last chunk."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._file.close()
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until ``predicate(acks)`` holds (or the response ended); return the acks."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.acks) and not self.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"acks so far: {self.acks}")
                self._cond.wait(left)
            return list(self.acks)

    def finish(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """End the body and return every ack once the response is complete."""
        self.end()
        if not self.done.wait(timeout):
            raise TimeoutError(f"response not finished; acks so far: {self.acks}")
        self.close()
        return list(self.acks)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.acks if kind is None or a["EventType"] == kind]

    def _read(self) -> None:
        f = self._file
        try:
            status_line = f.readline()
            if not status_line:
                return
            self.status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while (line := f.readline()) not in (b"\r\n", b"\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            if headers.get("transfer-encoding") != "chunked":
                self.error_body = f.read(int(headers.get("content-length", "0")))
                return
            buf = b""
            while True:
                size = int(f.readline().strip() or b"0", 16)
                if size == 0:
                    return
                buf += f.read(size)
                f.readline()
                *lines, buf = buf.split(b"\n")
                with self._cond:
                    self.acks += [json.loads(line) for line in lines if line.strip()]
                    self._cond.notify_all()
        except (OSError, ValueError):
            return
        finally:
            with self._cond:
                self.done.set()
                self._cond.notify_all()


def create_stream(gw: Any, name: str, **kwargs: Any) -> Any:
    """Create a video stream and return a ``kinesisvideo`` client (GetDataEndpoint-style usage)."""
    kv = gw.client("kinesisvideo")
    kv.create_stream(StreamName=name, DataRetentionInHours=kwargs.pop("retention", 24), MediaType="video/h264", **kwargs)
    return kv


def data_client(gw: Any, service: str, stream: str, api: str) -> Any:
    """A data-plane client at the endpoint GetDataEndpoint returns, as real consumers do."""
    from helpers import aws_client

    endpoint = gw.client("kinesisvideo").get_data_endpoint(StreamName=stream, APIName=api)["DataEndpoint"]
    return aws_client(service, endpoint)
