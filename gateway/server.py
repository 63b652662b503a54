"""Serving the app on a socket: TLS, header caps, slow-client timeouts and a connection cap.

``web.run_app`` has no cap on open connections and no TLS from config, so the gateway runs its
own loop around aiohttp's public ``AppRunner``:

- header caps: ``max_line_size`` / ``max_field_size`` / ``max_headers`` from ``[server]``; an
  oversize or malformed head never reaches the app: ``AwsRequestHandler`` answers it with an
  AWS-shaped 400 (``InvalidArgumentException``) and closes the connection;
- slow heads: aiohttp's keep-alive timer starts when a connection opens and closes it if no
  complete request head arrived by then, so ``header_timeout_seconds`` bounds a slowloris;
  slow bodies are ``gateway.limits``' job; a client that stops reading its response (a stalled
  GetMedia consumer: our send buffer full and not one byte of it drained for
  ``write_stall_seconds``) is aborted so its handler does not hang forever;
- connection cap: each accepted connection goes through ``ConnectionCap``; above
  ``max_connections`` it is answered at once with a 503 ``ServiceUnavailableException`` (which
  botocore retries with backoff) and closed, before any parsing or handler work;
- TLS: ``[tls] certfile/keyfile`` wrap the listening socket;
- HTTP/2 on the same port (``gateway.http2``): ``ConnectionCap`` picks the protocol per connection
  (ALPN ``h2`` on TLS, the HTTP/2 preface on plain TCP: "prior knowledge", as the AWS SDKs for
  JavaScript v3 and Java v2 connect, or an ``Upgrade: h2c`` request); the same app serves both.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import signal
import ssl
import struct
import termios
import uuid
from collections.abc import Callable
from typing import Any

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_request import BaseRequest

from gateway.config import ConfigError, GatewayConfig, ServerConfig, TlsConfig
from gateway.http2 import PREFACE, SWITCHING_PROTOCOLS, H2cUpgrade, Http2Server, h2c_upgrade

log = logging.getLogger("gateway")

#: Seconds aiohttp keeps reading (and discarding) the rest of a body it answered early.
LINGERING_SECONDS = 2.0
#: Seconds a rejected connection may keep sending its request before it is closed.
REJECT_GRACE_SECONDS = 0.5
LISTEN_BACKLOG = 512
#: Seconds in-flight requests (PutMedia sessions, GetMedia tails) get to finish on SIGTERM; aiohttp
#: waits up to twice this (finish, then after cancelling the request) before it cancels handlers.
SHUTDOWN_SECONDS = 4.0
#: What the start-up line says is served: every subsystem ``gateway.app.create_app`` mounts.
SERVES = "Kinesis Data Streams, Kinesis Video Streams, Data Firehose, Glue Data Catalog and analytics APIs"


def _reject_response(limit: int) -> bytes:
    """The whole 503 a refused connection gets (``{request_id}`` filled in per connection)."""
    body = json.dumps(
        {"__type": "ServiceUnavailableException", "message": f"The gateway is at its limit of {limit} open connections; retry later."}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/x-amz-json-1.1\r\n"
        "x-amzn-ErrorType: ServiceUnavailableException\r\n"
        "Retry-After: 1\r\n"
        "x-amzn-RequestId: {request_id}\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class AwsRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, answering requests it cannot parse in the AWS error shape."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0 or status >= 500:
            return super().handle_error(request, status, exc, message)  # a bug or a broken stream: logged in full
        text = (message or HTTPStatus(status).phrase).strip().splitlines()[0]
        log.info("unparsable request from %s: %s", request.remote, text)
        body = json.dumps({"__type": "InvalidArgumentException", "message": text})
        response = web.Response(
            status=status, text=body, content_type="application/x-amz-json-1.1",
            headers={"x-amzn-ErrorType": "InvalidArgumentException", "x-amzn-RequestId": str(uuid.uuid4())},
        )
        response.force_close()
        return response


class ConnectionCap:
    """A protocol factory that admits at most ``limit`` connections, hands each to HTTP/1.1
    (``factory``, aiohttp's) or HTTP/2 (``http2``, ``gateway.http2``), and aborts a connection
    whose client stopped reading for ``write_stall_seconds`` (0 = never).

    Which protocol a connection speaks: on TLS the ALPN result; on plain TCP its first bytes: the
    HTTP/2 connection preface, a first HTTP/1.1 request that asks to upgrade to h2c (answered
    101, then HTTP/2), or any other HTTP/1.1; a connection that does not complete its first
    request head within ``sniff_seconds`` is closed.
    """

    def __init__(
        self, factory: Callable[[], asyncio.Protocol], limit: int, write_stall_seconds: float = 0.0,
        http2: Callable[[], asyncio.Protocol] | None = None, sniff_seconds: float = 15.0,
    ) -> None:
        self.factory = factory
        self.http2 = http2
        self.limit = limit
        self.write_stall_seconds = write_stall_seconds
        self.sniff_seconds = sniff_seconds
        self.active = 0
        self.rejected = 0
        self._reject = _reject_response(limit)

    def __call__(self) -> asyncio.Protocol:
        return _CappedProtocol(self)


class _CappedProtocol(asyncio.Protocol):
    """Forwards to the chosen protocol when admitted; otherwise answers 503 and closes."""

    def __init__(self, cap: ConnectionCap) -> None:
        self._cap = cap
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._sniff: asyncio.TimerHandle | None = None
        self._head = b""
        self._buffered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cap = self._cap
        if cap.active >= cap.limit:
            cap.rejected += 1
            if cap.rejected == 1 or cap.rejected % 100 == 0:
                log.warning("connection limit %d reached: refused %d connection(s) so far", cap.limit, cap.rejected)
            assert isinstance(transport, asyncio.Transport)
            transport.write(cap._reject.replace(b"{request_id}", str(uuid.uuid4()).encode()))
            asyncio.get_running_loop().call_later(REJECT_GRACE_SECONDS, transport.close)
            return
        cap.active += 1
        self._transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if cap.http2 is None:
            self._start(cap.factory)
        elif ssl_object is not None:
            self._start(cap.http2 if ssl_object.selected_alpn_protocol() == "h2" else cap.factory)
        else:
            self._sniff = asyncio.get_running_loop().call_later(cap.sniff_seconds, transport.close)

    def _start(self, factory: Callable[[], asyncio.Protocol]) -> None:
        if self._sniff is not None:
            self._sniff.cancel()
            self._sniff = None
        self._inner = factory()
        self._inner.connection_made(self._transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            if self._transport is None:
                return  # refused: its 503 is on the way
            self._head += data
            if len(self._head) < len(PREFACE) and PREFACE.startswith(self._head):
                return  # may still become the HTTP/2 preface
            assert self._cap.http2 is not None
            if self._head.startswith(PREFACE):
                self._start(self._cap.http2)
            elif (upgrade := h2c_upgrade(self._head)) is False:
                return  # an HTTP/1.1 request still arriving: it may ask to upgrade to h2c
            elif isinstance(upgrade, H2cUpgrade):
                self._upgrade(upgrade)
                return
            else:
                self._start(self._cap.factory)
            data, self._head = self._head, b""
        self._inner.data_received(data)

    def _upgrade(self, upgrade: H2cUpgrade) -> None:
        assert self._transport is not None and self._cap.http2 is not None
        if self._sniff is not None:
            self._sniff.cancel()
            self._sniff = None
        self._transport.write(SWITCHING_PROTOCOLS)
        self._inner = self._cap.http2()
        self._inner.upgraded(self._transport, upgrade)
        rest, self._head = self._head[upgrade.consumed:], b""
        if rest:
            self._inner.data_received(rest)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall()
        if self._sniff is not None:
            self._sniff.cancel()
            self._sniff = None
        if self._transport is not None:
            self._transport = None
            self._cap.active -= 1
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        """Our send buffer is full: the client must drain some of it every ``write_stall_seconds``."""
        if self._inner is not None:
            self._inner.pause_writing()
            if self._cap.write_stall_seconds > 0 and self._stall is None:
                self._watch_stall()

    def _pending(self) -> int:
        """Bytes written but not yet taken by the client: our buffer plus the kernel's send queue
        (which a slow reader drains a little at a time, too little to wake asyncio's writer)."""
        assert self._transport is not None
        pending = self._transport.get_write_buffer_size()
        sock = self._transport.get_extra_info("socket")
        if sock is not None and hasattr(termios, "TIOCOUTQ"):
            try:
                pending += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                pass
        return pending

    def _watch_stall(self) -> None:
        self._buffered = self._pending()
        self._stall = asyncio.get_running_loop().call_later(self._cap.write_stall_seconds, self._stalled)

    def resume_writing(self) -> None:
        self._cancel_stall()
        if self._inner is not None:
            self._inner.resume_writing()

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if self._transport is None or self._transport.is_closing():
            return
        if self._pending() < self._buffered:
            self._watch_stall()  # a slow reader, but a reader: it drained something since the last look
            return
        peer = self._transport.get_extra_info("peername")
        log.warning("client %s stopped reading for %.0f s: aborting the connection", peer, self._cap.write_stall_seconds)
        self._transport.abort()  # close() would wait to flush a buffer that never drains


def ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The server-side TLS context for ``[tls]``, or None for plain HTTP."""
    if not tls.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certfile {tls.certfile!r} / keyfile {tls.keyfile!r}: {exc}") from exc
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security_summary(config: GatewayConfig) -> tuple[str, str | None]:
    """(what the start line says about auth, a warning to log or None)."""
    keys = len(config.auth.credentials)
    if keys:
        summary = f"SigV4 required ({keys} access key{'s' if keys != 1 else ''})"
        warning = None
        if not config.tls.certfile and not is_loopback(config.host):
            warning = f"listening on {config.host} without TLS: requests are signed but travel in clear text; set [tls] certfile/keyfile"
        return summary, warning
    summary = "no credentials configured: unsigned requests accepted"
    if is_loopback(config.host):
        return summary + " (loopback only)", None
    return summary, (
        f"listening on {config.host} WITHOUT credentials: anyone who can reach port {config.port} can read, write "
        "and delete every stream; set [auth] credentials or EDGE_GATEWAY_CREDENTIALS_FILE"
    )


async def serve(app: web.Application, config: GatewayConfig, context: ssl.SSLContext | None) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then shut down cleanly (stores closed via cleanup_ctx)."""
    limits = config.server
    handler_args: dict[str, Any] = dict(
        access_log=None,
        keepalive_timeout=limits.header_timeout_seconds,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
        lingering_time=LINGERING_SECONDS,
    )
    http2: list[Http2Server] = []

    async def finish_http2_streams(app: web.Application) -> None:
        for h in http2:
            await h.shutdown(SHUTDOWN_SECONDS)

    async def on_startup(app: web.Application) -> None:
        # registered now, after the subsystems' startup registered their on_shutdown (which tell
        # live streams to wind up), so HTTP/2 streams get their GOAWAY and wait after those ran
        app.on_shutdown.append(finish_http2_streams)

    app.on_startup.append(on_startup)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS, **handler_args)
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listener = None
    try:
        server = runner.server
        assert server is not None
        http2.append(Http2Server(server, limits))
        cap = ConnectionCap(
            lambda: AwsRequestHandler(server, loop=loop, **handler_args), limits.max_connections, limits.write_stall_seconds,
            http2=http2[0], sniff_seconds=limits.header_timeout_seconds,
        )
        listener = await loop.create_server(cap, config.host, config.port, ssl=context, backlog=LISTEN_BACKLOG, reuse_address=True)
        summary, warning = security_summary(config)
        log.info("serving %s on %s (data in %s); %s", SERVES, config.base_url, config.data_path.resolve(), summary)
        if warning:
            log.warning("%s", warning)
        await stop.wait()
        log.info("shutting down")
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
