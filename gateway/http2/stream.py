"""One HTTP/2 stream as aiohttp sees it: the request's body reader and "protocol", its
``request.transport`` and the response writer that turns write()/drain() into DATA frames."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import h2.errors
import h2.exceptions
from aiohttp import StreamReader
from aiohttp.abc import AbstractStreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict

if TYPE_CHECKING:
    from gateway.http2.connection import Http2Connection

log = logging.getLogger("gateway.http2")

#: A body reader above twice this many buffered bytes stops giving window back.
READ_BUFFER_BYTES = 256 * 1024
#: Response headers HTTP/2 forbids (RFC 9113, section 8.2.2); aiohttp's 1.x code may add them.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


class Stream:
    """One request/response exchange. It is also what aiohttp's ``StreamReader`` and ``BaseRequest``
    take as their "protocol" (pause/resume reading, peer addresses, ``transport``)."""

    def __init__(self, connection: Http2Connection, stream_id: int, has_body: bool) -> None:
        self.connection = connection
        self.id = stream_id
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.transport = StreamTransport(self)
        # HEADERS with END_STREAM: no body, as aiohttp's parser says for a bodiless HTTP/1.1 request
        self.payload = StreamReader(cast(Any, self), READ_BUFFER_BYTES, loop=connection.loop) if has_body else EMPTY_PAYLOAD
        self.writer = Http2StreamWriter(self)
        self._reading_paused = False
        self._unacknowledged = 0
        self._window_open: asyncio.Future[None] | None = None

    # -- what aiohttp reads off a protocol ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self.closed

    @property
    def ssl_context(self) -> Any:
        transport = self.connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        return getattr(ssl_object, "context", None)

    @property
    def peername(self) -> Any:
        return self.connection.peername

    @property
    def sockname(self) -> Any:
        transport = self.connection.transport
        return transport.get_extra_info("sockname") if transport is not None else None

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        self.give_back_window()

    # -- inbound --------------------------------------------------------------------------------------

    def receive(self, data: bytes, flow_controlled: int) -> None:
        if data:
            self.payload.feed_data(data)
        if self._reading_paused:
            self._unacknowledged += flow_controlled
        else:
            self.connection.h2.acknowledge_received_data(flow_controlled, self.id)

    def give_back_window(self) -> None:
        if self._unacknowledged:
            size, self._unacknowledged = self._unacknowledged, 0
            self.connection.h2.acknowledge_received_data(size, self.id)
            self.connection.flush()

    # -- outbound -------------------------------------------------------------------------------------

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool, flush: bool = True) -> None:
        """Queue the HEADERS frame; ``flush=False`` when DATA follows at once (one write for both)."""
        self._check_open()
        try:
            self.connection.h2.send_headers(self.id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise ConnectionResetError(f"HTTP/2 stream {self.id}: {exc}") from None
        if flush:
            self.connection.flush()

    async def send_data(self, data: bytes | bytearray | memoryview, end_stream: bool) -> None:
        """Send ``data`` as DATA frames, waiting for the client's window as needed."""
        conn = self.connection
        view = memoryview(data).cast("B")
        while True:
            await conn.writable()
            self._check_open()
            try:
                window = conn.h2.local_flow_control_window(self.id)
                if window <= 0 and len(view):
                    conn.flush()  # what is queued (our HEADERS) goes out while we wait
                    await self._wait_for_window()
                    continue
                while True:  # as many frames as the window allows, then one write to the socket
                    n = min(len(view), window, conn.h2.max_outbound_frame_size)
                    last = n == len(view)
                    conn.h2.send_data(self.id, view[:n].tobytes(), end_stream=end_stream and last)
                    view, window = view[n:], window - n
                    if last or window <= 0:
                        break
            except h2.exceptions.ProtocolError as exc:
                raise ConnectionResetError(f"HTTP/2 stream {self.id}: {exc}") from None
            conn.flush()
            if last:
                return

    async def _wait_for_window(self) -> None:
        self._window_open = self.connection.loop.create_future()
        stall = self.connection.limits.write_stall_seconds
        try:
            await asyncio.wait_for(self._window_open, stall if stall > 0 else None)
        except asyncio.TimeoutError:
            log.warning("HTTP/2 client %s gave stream %d no window for %.0f s: resetting it", self.peername, self.id, stall)
            self.reset(h2.errors.ErrorCodes.CANCEL)
        finally:
            self._window_open = None

    def wake(self) -> None:
        if self._window_open is not None and not self._window_open.done():
            self._window_open.set_result(None)

    def _check_open(self) -> None:
        if self.closed or self.connection.gone():
            raise ConnectionResetError(f"HTTP/2 stream {self.id} is closed")

    # -- ending -------------------------------------------------------------------------------------

    def reset(self, code: int) -> None:
        """End this stream from our side (the handler's ``request.transport.close()``, a stall)."""
        if not self.closed:
            try:
                self.connection.h2.reset_stream(self.id, code)
            except h2.exceptions.ProtocolError:
                pass
            self.connection.flush()
            self.mark_closed("stream reset by the gateway")

    def mark_closed(self, why: str) -> None:
        """No more frames on this stream: a body read fails with ``why``, a waiting writer wakes (to fail)."""
        self.closed = True
        if not self.payload.is_eof():
            self.payload.set_exception(ConnectionResetError(why))
        self.wake()


class StreamTransport(asyncio.Transport):
    """``request.transport`` for an HTTP/2 stream: closing it resets the stream only."""

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self._stream = stream

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._stream.connection.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def is_closing(self) -> bool:
        return self._stream.closed or self._stream.connection.gone()

    def close(self) -> None:
        self._stream.reset(h2.errors.ErrorCodes.CANCEL)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        transport = self._stream.connection.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def _sendfile_compatible(self) -> Any:
        """asyncio's ``loop.sendfile`` asks this first; NotImplementedError makes aiohttp's
        FileResponse (the player's pages) write the file through the stream's writer instead."""
        raise NotImplementedError("sendfile over an HTTP/2 stream")


class Http2StreamWriter(AbstractStreamWriter):
    """aiohttp's response writer interface over one HTTP/2 stream (HEADERS, then DATA frames)."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._head: list[tuple[bytes, bytes]] | None = None
        self._head_sent = False
        self.length = None

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        status = status_line.split(" ", 2)[1]
        self._head = [(b":status", status.encode())] + [
            (name.lower().encode("ascii"), value.encode("utf-8"))
            for name, value in headers.items() if name.lower() not in HOP_BY_HOP
        ]

    def send_headers(self, flush: bool = True) -> None:
        if self._head is not None and not self._head_sent:
            self._head_sent = True
            self._stream.send_headers(self._head, end_stream=False, flush=flush)

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if not chunk:
            return
        self.send_headers(flush=False)
        size = len(chunk)
        self.output_size += size
        await self._stream.send_data(chunk, end_stream=False)
        if self.on_body_write is not None:
            self.on_body_write(size, self.output_size)

    async def write_eof(self, chunk: bytes = b"") -> None:
        if not chunk and not self._head_sent and self._head is not None:
            self._head_sent = True
            self._stream.send_headers(self._head, end_stream=True)  # a bodiless answer: one frame
            return
        self.send_headers(flush=False)
        self.output_size += len(chunk)
        await self._stream.send_data(chunk, end_stream=True)

    async def drain(self) -> None:
        await self._stream.connection.writable()

    def enable_chunking(self) -> None:
        """HTTP/2 frames bodies itself: chunked encoding does not exist there."""

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise NotImplementedError("response compression is not offered over HTTP/2")
