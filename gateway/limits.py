"""Request-level limits: bodies bounded in size and in time, and HTTP errors in the AWS shape.

Every API body except PutMedia's is read whole here, before its signature is checked and the
handler runs (who signed is checked earlier, so unknown callers never get a body buffered),
so a client that trickles its body is cut off after ``server.body_timeout_seconds`` with a
``RequestTimeoutException`` (408) instead of holding a handler forever, and an oversize body
gets an ``InvalidArgumentException`` (413) -- from its Content-Length when declared, before a
byte of it is read. Handlers then read the cached body (``request.read()`` / ``.json()``).

Bodies held in memory at once are capped across requests (``server.max_buffered_body_bytes``):
a body reserves its declared length before it is read and gives it back when its request is
answered, so a crowd of clients each sending 16 MiB cannot exhaust a Raspberry Pi's memory.

PutMedia bodies stream for as long as the producer runs, so they get an idle watchdog instead:
no new byte for ``server.body_idle_seconds`` while the handler waits for one closes the
connection (the handler sees a client disconnect, as with a producer that lost power).

JSON nested deeper than Python's parser can recurse would make every handler's ``json.loads``
raise ``RecursionError`` (a 500); such bodies get a ``SerializationException`` here instead.

aiohttp's own HTTP errors (unknown path, wrong method, body over ``client_max_size``) leave as
AWS errors too, so a client never has to parse an HTML error page.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config import ServerConfig
from gateway.errors import AwsError

log = logging.getLogger("gateway.limits")

#: A body with fewer opening brackets than this cannot nest deep enough to exhaust the JSON
#: parser's stack (Python's recursion limit is 1000), so only bodies above it are test-parsed.
NESTING_SCAN_BRACKETS = 800
#: Bodies larger than this are test-parsed in a worker thread.
PARSE_IN_THREAD_BYTES = 256 * 1024

#: Request paths whose body is streamed to the handler, never read whole before it.
STREAMING_PATHS = frozenset({"/putMedia"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def too_large(limit: int, size: int | None = None) -> AwsError:
    got = f"of {size} bytes " if size is not None else ""
    return AwsError("InvalidArgumentException", f"Request body {got}exceeds the gateway's limit of {limit} bytes.", 413)


def http_error_as_aws(exc: web.HTTPException, limit: int) -> AwsError:
    """The AWS error a client should see for an HTTP-level error aiohttp raised."""
    if exc.status == 413:
        return too_large(limit)
    if exc.status in (404, 405):
        return AwsError("UnknownOperationException", f"{exc.reason}: this gateway has no such operation.", exc.status)
    if exc.status >= 500:
        return AwsError("InternalFailure", exc.reason, exc.status)
    return AwsError("InvalidArgumentException", exc.text or exc.reason, exc.status)


#: Longest a request waits for room in the body budget before it gets a 503.
BUDGET_WAIT_SECONDS = 5.0


class BodyBudget:
    """Bytes of request bodies in memory across all requests; ``reserve`` waits (FIFO) for room.

    Only the event loop thread touches it, so plain counters suffice and ``release`` never blocks.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.capacity  # one request is always let through alone

    async def reserve(self, size: int, timeout: float = BUDGET_WAIT_SECONDS) -> int:
        """Hold ``size`` bytes; returns what the caller must ``release``."""
        if not self.capacity or size <= 0:
            return 0
        if not self._waiters and self._fits(size):
            self.used += size
            return size
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, turn))
        try:
            await asyncio.wait_for(asyncio.shield(turn), timeout)
        except asyncio.TimeoutError:
            if turn.done():  # granted at the last moment: keep it
                return size
            self._waiters.remove((size, turn))
            raise AwsError(
                "ServiceUnavailableException", "The gateway is holding as many request bodies as it can; retry later.", 503
            ) from None
        except BaseException:
            if turn.done():
                self.release(size)
            else:
                self._waiters.remove((size, turn))
            raise
        return size

    def release(self, size: int) -> None:
        self.used -= size
        while self._waiters and self._fits(self._waiters[0][0]):
            size, turn = self._waiters.popleft()
            self.used += size
            turn.set_result(None)


async def read_body(request: web.Request, limit: int, timeout: float, budget: BodyBudget) -> int:
    """Read (and cache on ``request``) a whole body within ``limit`` bytes and ``timeout`` seconds.

    Returns the bytes reserved in ``budget``, which the caller releases once the request is answered.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit, declared)
    reserved = await budget.reserve(declared if declared is not None else limit)
    try:
        await _read_within(request, timeout)
    except BaseException:
        budget.release(reserved)
        raise
    return reserved


async def _read_within(request: web.Request, timeout: float) -> None:
    try:
        body = await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        log.warning("%s %s: body not received within %.0f s, closing", request.method, request.path, timeout)
        raise AwsError("RequestTimeoutException", f"Request body not received within {timeout:g} seconds.", 408) from None
    await check_nesting(request, body)


def _nests_too_deep(body: bytes) -> bool:
    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:  # not JSON at all: the handler says so
        pass
    return False


async def check_nesting(request: web.Request, body: bytes) -> None:
    """Refuse JSON nested so deep that parsing it would exhaust the stack."""
    if "cbor" in request.content_type or body.count(b"[") + body.count(b"{") < NESTING_SCAN_BRACKETS:
        return  # cbor2 enforces its own nesting limit
    too_deep = await asyncio.to_thread(_nests_too_deep, body) if len(body) > PARSE_IN_THREAD_BYTES else _nests_too_deep(body)
    if too_deep:
        raise AwsError("SerializationException", "Request body is nested too deeply to parse.", 400)


async def watch_idle_body(request: web.Request, idle_seconds: float) -> None:
    """Close the connection when a streamed body stops arriving while the handler waits for it."""
    loop = asyncio.get_running_loop()
    content = request.content
    last_total, last_progress = content.total_bytes, loop.time()
    tick = max(0.05, min(1.0, idle_seconds / 4))
    while not content.is_eof():
        await asyncio.sleep(tick)
        # bytes already received but not yet consumed mean the handler is the slow one, not the client
        buffered = getattr(content, "_size", 0)
        if content.total_bytes != last_total or buffered:
            last_total, last_progress = content.total_bytes, loop.time()
        elif loop.time() - last_progress > idle_seconds:
            log.warning("%s %s: no body bytes for %.0f s, closing the connection", request.method, request.path, idle_seconds)
            if request.transport is not None:
                request.transport.close()
            return


def request_limits(max_body_bytes: int, server: ServerConfig) -> Middleware:
    """The middleware enforcing body limits; registered inside ``aws_errors`` so its errors render."""

    budget = BodyBudget(server.max_buffered_body_bytes)

    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        watchdog: asyncio.Task[None] | None = None
        reserved = 0
        try:
            if request.path in STREAMING_PATHS:
                watchdog = asyncio.create_task(watch_idle_body(request, server.body_idle_seconds))
            elif request.body_exists:
                reserved = await read_body(request, max_body_bytes, server.body_timeout_seconds, budget)
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            raise http_error_as_aws(exc, max_body_bytes) from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            budget.release(reserved)

    return limits
