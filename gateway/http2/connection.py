"""One HTTP/2 connection (``h2`` frames in and out) and the factory that makes and tracks them."""

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
from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import ServerConfig
from gateway.http2.stream import Stream
from gateway.http2.upgrade import H2cUpgrade

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
#: Per ``FLOOD_WINDOW_SECONDS``, what a client may send before it gets GOAWAY ENHANCE_YOUR_CALM:
#: stream resets (the "rapid reset" attack) and frames that make us work for nothing (PING,
#: SETTINGS, PRIORITY, empty DATA: the 2019 "ping/settings/empty frames flood" attacks).
RESETS_PER_WINDOW = 200
IDLE_FRAMES_PER_WINDOW = 2000
FLOOD_WINDOW_SECONDS = 10.0
#: Seconds a connection that got GOAWAY for an error is still read (and discarded) before closing.
FAIL_LINGER_SECONDS = 1.0


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
        self.streams: dict[int, Stream] = {}
        self.closing = False
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._flood_window_start = 0.0
        self._flood = {"stream resets": 0, "idle frames": 0}
        self._failed = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._setup(transport)
        self.h2.initiate_connection()
        self._started()

    def upgraded(self, transport: asyncio.BaseTransport, upgrade: H2cUpgrade) -> None:
        """Take over a connection whose first HTTP/1.1 request asked for h2c (its 101 is sent):
        that request is stream 1, answered over HTTP/2."""
        self._setup(transport)
        try:
            self.h2.initiate_upgrade_connection(upgrade.settings)
        except h2.exceptions.ProtocolError as exc:  # settings no HTTP/2 peer may send
            log.info("h2c upgrade from %s refused: %s", self.peername, exc)
            self._fail()
            return
        self._started()
        self._open(1, upgrade.headers, has_body=bool(upgrade.body))
        if upgrade.body and (stream := self.streams.get(1)) is not None:
            stream.payload.feed_data(upgrade.body)
            stream.payload.feed_eof()
        self.flush()

    def _setup(self, transport: asyncio.BaseTransport) -> None:
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

    def _started(self) -> None:
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
            stream.mark_closed("connection closed")
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
        while self._paused and not self.gone():
            if self._writable is None:
                self._writable = self.loop.create_future()
            await asyncio.shield(self._writable)
        if self.gone():
            raise ConnectionResetError("HTTP/2 connection closed")

    def go_away(self) -> None:
        """Refuse new streams; the open ones finish, then the connection closes."""
        if self.closing or self.gone():
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
            self._data(event.stream_id, event.data or b"", event.flow_controlled_length or 0, event.stream_ended is not None)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self.streams.get(event.stream_id or 0)) is not None:
                stream.payload.feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            if (stream := self.streams.get(event.stream_id or 0)) is not None:
                stream.mark_closed("stream reset by the client")
            self._count("stream resets", RESETS_PER_WINDOW)
        elif isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged, h2.events.PriorityUpdated)):
            self._count("idle frames", IDLE_FRAMES_PER_WINDOW)
            if isinstance(event, h2.events.RemoteSettingsChanged):
                for stream in self.streams.values():
                    stream.wake()
        elif isinstance(event, h2.events.WindowUpdated):
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

    def gone(self) -> bool:
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
        stream = Stream(self, stream_id, has_body)
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

    def _data(self, stream_id: int, data: bytes, flow_controlled: int, ends: bool) -> None:
        if not flow_controlled and not ends:
            self._count("idle frames", IDLE_FRAMES_PER_WINDOW)
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed:
            self.h2.acknowledge_received_data(flow_controlled, stream_id)  # keep the connection's window open
            return
        stream.receive(data, flow_controlled)

    def _count(self, what: str, allowed: int) -> None:
        """Count a frame of a kind a client may only send so many of; GOAWAY once it sent more."""
        now = self.loop.time()
        if now - self._flood_window_start > FLOOD_WINDOW_SECONDS:
            self._flood_window_start = now
            self._flood = dict.fromkeys(self._flood, 0)
        self._flood[what] += 1
        if self._flood[what] > allowed:
            log.warning("HTTP/2 client %s sent %d %s in %.0f s: GOAWAY", self.peername, self._flood[what], what, FLOOD_WINDOW_SECONDS)
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._fail()

    def _fail(self) -> None:
        """Send the queued GOAWAY, then close once the client had time to read it: closing at once,
        with its frames still unread on our side, would send a TCP reset that can destroy the GOAWAY."""
        self._failed = self.closing = True
        self.flush()
        for stream in list(self.streams.values()):
            stream.mark_closed("connection failed")
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(FAIL_LINGER_SECONDS, self.close)

    async def _serve(self, stream: Stream, message: RawRequestMessage) -> None:
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

    def _finish(self, stream: Stream) -> None:
        del self.streams[stream.id]
        stream.give_back_window()
        if not stream.closed and not stream.payload.is_eof():
            self._end_early(stream.id)
        stream.closed = True
        self.flush()
        if not self.streams:
            if self.closing:
                self.close()
            elif not self.gone():
                self._arm_idle()
