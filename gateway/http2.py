"""HTTP/2 on the gateway's port: each stream becomes an aiohttp request served by the same app.

aiohttp has no HTTP/2 server. Rather than move the gateway to another framework (and rewrite every
handler and middleware), this module speaks HTTP/2 with the sans-I/O ``h2`` library (it parses and
builds frames; we own the socket) and turns each stream into an aiohttp ``web.Request`` made by the
app's own request factory and handed to the app's own handler: the same routes, the same
middleware chain (SigV4, AWS error shapes, body limits). ``gateway.server`` decides per connection
which protocol it speaks (the h2 preface on plain TCP, ALPN on TLS).

How a stream looks to the app:

- it presents as HTTP/1.1 (aiohttp's response code knows only 1.x), and the hop-by-hop headers
  that code adds (Connection, Transfer-Encoding) are dropped, as HTTP/2 forbids them;
- ``:authority`` stays as a header (the AWS SDKs sign it instead of Host over HTTP/2) and is copied
  to ``Host`` when the client sent none;
- the body is an aiohttp ``StreamReader`` fed from DATA frames; the client's flow-control window is
  given back only while the reader keeps up, so a slow handler throttles its producer (PutMedia);
- the response is written by ``Http2StreamWriter``: write() sends DATA frames as the client's
  window allows and waits when it is spent, so a GetMedia or event stream never holds more than
  one window in memory;
- ``request.transport`` is the stream: ``close()`` resets that stream, not the whole connection.

Per-connection limits (from ``[server]``): SETTINGS_MAX_CONCURRENT_STREAMS and
SETTINGS_MAX_HEADER_LIST_SIZE; more than ``max_headers`` fields, or one longer than
``max_header_bytes``, gets an AWS-shaped 400 on that stream; a connection with no open stream for
``header_timeout_seconds`` gets GOAWAY; a response whose window stays shut for
``write_stall_seconds`` is reset; a client that resets more than ``RESETS_PER_WINDOW`` streams in
``RESET_WINDOW_SECONDS`` (the "rapid reset" attack) gets GOAWAY ENHANCE_YOUR_CALM; any frame h2
rejects gets GOAWAY PROTOCOL_ERROR and the connection closes. Body size and time limits are the
app's own middleware, as for HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import ServerConfig

log = logging.getLogger("gateway.http2")

#: What an HTTP/2 client with prior knowledge sends first (RFC 9113, section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_CONCURRENT_STREAMS = 100
#: Bytes a client may send on one stream before we give window back (SETTINGS_INITIAL_WINDOW_SIZE).
STREAM_WINDOW = 1024 * 1024
#: Bytes a client may have in flight across all streams of a connection.
CONNECTION_WINDOW = 4 * 1024 * 1024
#: Largest frame a client may send (SETTINGS_MAX_FRAME_SIZE): fewer, larger DATA frames cost less CPU.
MAX_FRAME_BYTES = 256 * 1024
#: A body reader above twice this many buffered bytes stops giving window back.
READ_BUFFER_BYTES = 256 * 1024
#: Client stream resets tolerated per window before the connection is refused (rapid reset).
RESETS_PER_WINDOW = 200
RESET_WINDOW_SECONDS = 10.0
#: Seconds a connection that got GOAWAY for an error is still read (and discarded) before closing.
FAIL_LINGER_SECONDS = 1.0
#: Response headers HTTP/2 forbids (RFC 9113, section 8.2.2); aiohttp's 1.x code may add them.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


def _data_frame_repr(frame: hyperframe.frame.DataFrame) -> str:
    return f"<{len(frame.data)} bytes>"


# h2 formats every frame it receives for a trace log, even with logging off, and a DATA frame's
# repr hexlifies its whole payload before truncating it: measured at about a third of the
# gateway's CPU per PutRecords call over HTTP/2. Only that repr changes: the length instead.
hyperframe.frame.DataFrame._body_repr = _data_frame_repr  # type: ignore[method-assign,assignment]


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()


class Http2Server:
    """The protocol factory for HTTP/2 connections, and their registry for a graceful shutdown."""

    def __init__(self, server: Server, limits: ServerConfig) -> None:
        self.server = server
        self.limits = limits
        self.connections: set[Http2Connection] = set()

    def __call__(self) -> Http2Connection:
        return Http2Connection(self)

    async def shutdown(self, timeout: float) -> None:
        """GOAWAY to every connection, then wait up to ``timeout`` for their streams to finish."""
        for connection in list(self.connections):
            connection.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.streams for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in and out through ``h2``, one app request per stream."""

    def __init__(self, owner: Http2Server) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.loop = asyncio.get_running_loop()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True)
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.closing = False
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._resets = 0
        self._reset_window_start = 0.0
        self._failed = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.owner.connections.add(self)
        max_header_list = self.limits.max_headers * 64 + self.limits.max_header_bytes * 4
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_BYTES,
        })
        # settings set this way apply at once (h2 applies the ones it sends only when acknowledged)
        self.h2.decoder.max_header_list_size = max_header_list
        self.h2.max_inbound_frame_size = MAX_FRAME_BYTES
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # lingering after GOAWAY: discard
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:  # h2 has queued the GOAWAY that says why
            log.info("HTTP/2 protocol error from %s: %s", self.peername, exc)
            self._fail()
            return
        try:
            for event in events:
                if self._failed:
                    return
                self._handle(event)
        except h2.exceptions.ProtocolError as exc:
            log.info("HTTP/2 error on the connection from %s: %s", self.peername, exc)
            try:
                self.h2.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            except h2.exceptions.ProtocolError:
                pass  # already closed: its GOAWAY is out
            self._fail()
            return
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connections.discard(self)
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
        for stream in list(self.streams.values()):
            stream.closed_by_peer("connection closed")
        self._wake_writers()

    def pause_writing(self) -> None:
        """Our send buffer is full: writers wait, and we read no frames we would have to answer."""
        self._paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._wake_writers()

    # -- what streams use ---------------------------------------------------------------------------

    @property
    def peername(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport is not None else None

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    async def writable(self) -> None:
        """Return once the transport takes more bytes; ConnectionResetError once it is gone."""
        while self._paused and not self._gone():
            if self._writable is None:
                self._writable = self.loop.create_future()
            await asyncio.shield(self._writable)
        if self._gone():
            raise ConnectionResetError("HTTP/2 connection closed")

    def go_away(self) -> None:
        """Refuse new streams; the open ones finish, then the connection closes."""
        if self.closing or self._gone():
            if not self.streams:
                self.close()
            return
        self.closing = True
        if not self.streams:
            self.h2.close_connection()
            self.flush()
            self.close()
            return
        # h2 sends nothing more once it sent GOAWAY itself, so the open streams could not finish:
        # announce it with a frame of our own; streams the client opens after it are refused
        frame = hyperframe.frame.GoAwayFrame(0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = h2.errors.ErrorCodes.NO_ERROR
        self.flush()
        if self.transport is not None:
            self.transport.write(frame.serialize())

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._open(event.stream_id or 0, event.headers or [], has_body=event.stream_ended is None)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event.stream_id, event.data or b"", event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self.streams.get(event.stream_id or 0)) is not None:
                stream.payload.feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            self._reset_by_client(event.stream_id or 0)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            for stream in self.streams.values():
                stream.wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closing = True
            if not self.streams or event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self.close()
            else:
                # A graceful GOAWAY lets the streams already open finish (RFC 9113, 6.8): the AWS SDK
                # for JavaScript sends one right after an event stream's response headers
                # (SubscribeToShard) and keeps reading. h2 refuses to send anything once it has
                # received GOAWAY, so its state machine goes back to open (a server with streams is
                # SERVER_OPEN); ``closing`` still refuses new streams.
                self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN

    # -- internals ----------------------------------------------------------------------------------

    def _gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _wake_writers(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        for stream in self.streams.values():
            stream.wake()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(self.limits.header_timeout_seconds, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if not self.streams:
            log.debug("HTTP/2 connection from %s idle: GOAWAY", self.peername)
            self.go_away()

    def _open(self, stream_id: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> None:
        if self.closing:  # after our GOAWAY (RFC 9113, 6.8)
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        message, problem = self._message(headers)
        if message is None:
            self._refuse(stream_id, problem)
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        stream = _Stream(self, stream_id, has_body)
        self.streams[stream_id] = stream
        stream.task = self.loop.create_task(self._serve(stream, message))

    def _message(self, headers: list[tuple[bytes, bytes]]) -> tuple[RawRequestMessage | None, str]:
        """The request head aiohttp expects, or (None, why it is refused)."""
        if len(headers) > self.limits.max_headers + 4:  # + the pseudo-headers
            return None, f"Too many headers: more than {self.limits.max_headers}."
        pseudo: dict[bytes, bytes] = {}
        fields: CIMultiDict[str] = CIMultiDict()
        for name, value in headers:
            if len(name) + len(value) > self.limits.max_header_bytes:
                return None, f"Header {name[:40]!r} is longer than {self.limits.max_header_bytes} bytes."
            if name.startswith(b":"):
                pseudo[name] = value
                if name != b":authority":
                    continue
            fields.add(name.decode("ascii", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        method = pseudo.get(b":method", b"").decode("ascii", "surrogateescape")
        path = pseudo.get(b":path", b"").decode("ascii", "surrogateescape")
        if not path.startswith("/"):
            return None, f"Unsupported request target {path[:100]!r} for {method}."
        if b":authority" in pseudo and "Host" not in fields:
            fields["Host"] = fields[":authority"]
        path_part, _, query = path.partition("#")[0].partition("?")
        url = URL.build(path=path_part, query_string=query, encoded=True)
        raw = tuple((n, v) for n, v in headers if not n.startswith(b":"))
        return RawRequestMessage(method, path, HttpVersion11, CIMultiDictProxy(fields), raw, False, None, False, False, url), ""

    def _refuse(self, stream_id: int, message: str) -> None:
        """Answer a request we will not hand to the app with an AWS-shaped 400."""
        log.info("refused HTTP/2 request from %s: %s", self.peername, message)
        body = _error_body("InvalidArgumentException", message)
        self.h2.send_headers(stream_id, [
            (b":status", b"400"), (b"content-type", b"application/x-amz-json-1.1"),
            (b"x-amzn-errortype", b"InvalidArgumentException"), (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
            (b"content-length", str(len(body)).encode()),
        ])
        self.h2.send_data(stream_id, body, end_stream=True)
        self._end_early(stream_id)

    def _end_early(self, stream_id: int) -> None:
        """We answered before the client finished sending: tell it to stop (RFC 9113, 8.1)."""
        try:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            pass  # it had finished after all

    def _data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed:
            self.h2.acknowledge_received_data(flow_controlled, stream_id)  # keep the connection's window open
            return
        stream.receive(data, flow_controlled)

    def _reset_by_client(self, stream_id: int) -> None:
        if (stream := self.streams.get(stream_id)) is not None:
            stream.closed_by_peer("stream reset by the client")
        now = self.loop.time()
        if now - self._reset_window_start > RESET_WINDOW_SECONDS:
            self._reset_window_start, self._resets = now, 0
        self._resets += 1
        if self._resets > RESETS_PER_WINDOW:
            log.warning("HTTP/2 client %s reset %d streams in %.0f s: GOAWAY", self.peername, self._resets, RESET_WINDOW_SECONDS)
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._fail()

    def _fail(self) -> None:
        """Send the queued GOAWAY, then close once the client had time to read it: closing at once,
        with its frames still unread on our side, would send a TCP reset that can destroy the GOAWAY."""
        self._failed = self.closing = True
        self.flush()
        for stream in list(self.streams.values()):
            stream.closed_by_peer("connection failed")
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(FAIL_LINGER_SECONDS, self.close)

    async def _serve(self, stream: _Stream, message: RawRequestMessage) -> None:
        """Run one request through the app, as aiohttp's own RequestHandler does for HTTP/1.1."""
        server = self.owner.server
        request = server.request_factory(message, stream.payload, cast(Any, stream), stream.writer, cast(Any, stream.task))
        try:
            try:
                response = await server.request_handler(request)
            except web.HTTPException as exc:
                response = exc
            except Exception:
                log.exception("unexpected error serving %s %s over HTTP/2", request.method, request.path)
                response = web.Response(
                    status=500, body=_error_body("InternalFailure", "internal error, see the gateway log"),
                    content_type="application/x-amz-json-1.1", headers={"x-amzn-ErrorType": "InternalFailure"},
                )
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            log.debug("HTTP/2 stream %d from %s ended by the client", stream.id, self.peername)
        except Exception:
            log.exception("HTTP/2 stream %d from %s failed", stream.id, self.peername)
            stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        del self.streams[stream.id]
        stream.give_back_window()
        if not stream.closed and not stream.payload.is_eof():
            self._end_early(stream.id)
        stream.closed = True
        self.flush()
        if not self.streams:
            if self.closing:
                self.close()
            elif not self._gone():
                self._arm_idle()


class _Stream:
    """One request/response exchange. It is also what aiohttp's ``StreamReader`` and ``BaseRequest``
    take as their "protocol" (pause/resume reading, peer addresses, ``transport``)."""

    def __init__(self, connection: Http2Connection, stream_id: int, has_body: bool) -> None:
        self.connection = connection
        self.id = stream_id
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.transport = _StreamTransport(self)
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
        if self.closed or self.connection._gone():
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
            self.closed_by_peer("stream reset by the gateway")

    def closed_by_peer(self, why: str) -> None:
        self.closed = True
        if not self.payload.is_eof():
            self.payload.set_exception(ConnectionResetError(why))
        self.wake()


class _StreamTransport(asyncio.Transport):
    """``request.transport`` for an HTTP/2 stream: closing it resets the stream only."""

    def __init__(self, stream: _Stream) -> None:
        super().__init__()
        self._stream = stream

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._stream.connection.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def is_closing(self) -> bool:
        return self._stream.closed or self._stream.connection._gone()

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

    def __init__(self, stream: _Stream) -> None:
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
