"""``POST /getMedia`` (botocore ``kinesis-video-media``): stored fragments, then the live tail.

Each fragment goes out as the complete MKV document that was stored (carrying its KVS tags:
fragment number, server and producer timestamps) plus a trailing Tags element with
MILLIS_BEHIND_NOW and CONTINUATION_TOKEN, back to back, Content-Type ``video/webm``.
Once the stored fragments are sent the response keeps streaming new ones as they are PERSISTED;
it ends after ``LIVE_IDLE_END_SECONDS`` without a new fragment, when the stream is deleted, or
when the client goes away.
Start selectors: EARLIEST, NOW, FRAGMENT_NUMBER (from that fragment on, inclusive),
CONTINUATION_TOKEN (after the fragment it names: the last fragment number received),
PRODUCER_TIMESTAMP / SERVER_TIMESTAMP (the first fragment containing or following StartTimestamp).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.kvs.keys import SHUTTING_DOWN, VIDEO_EVENTS
from gateway.kvs.request import invalid, parse_timestamp, read_json, start_streaming, store_of, stream_of
from gateway.kvs.store import (BY_PRODUCER, BY_SERVER, FragmentInfo, FragmentNotFoundError, StreamRecord,
                               VideoStore, fragment_number, parse_fragment_number)
from kvs.tags import CONTINUATION_TOKEN, MILLIS_BEHIND_NOW, with_kvs_tags

log = logging.getLogger("gateway.kvs.media")

#: A live GetMedia ends after this long without a new fragment.
LIVE_IDLE_END_SECONDS = 30.0
#: Fragments fetched from the index per query.
BATCH = 32


@dataclass
class Start:
    """Where a GetMedia response starts: after fragment ``after`` (None: the first one) and, when a
    time selector found nothing stored yet, at the first fragment that reaches ``start_ms``."""

    after: str | None = None
    start_ms: int | None = None
    by: str = BY_PRODUCER


async def parse_start(store: VideoStore, stream: StreamRecord, selector: Any) -> Start:
    """The ``StartSelector`` of a GetMedia request, resolved against the stream's fragments."""
    if not isinstance(selector, dict):
        raise invalid("StartSelector is required")
    kind = selector.get("StartSelectorType")
    if kind == "EARLIEST":
        return Start()
    if kind == "NOW":
        return Start(await asyncio.to_thread(store.last_fragment_number, stream.id))
    if kind in ("FRAGMENT_NUMBER", "CONTINUATION_TOKEN"):
        key = "AfterFragmentNumber" if kind == "FRAGMENT_NUMBER" else "ContinuationToken"
        number = selector.get(key)
        if not isinstance(number, str) or not number:
            raise invalid(f"StartSelector.{key} is required with {kind}")
        owner, seq = parse_fragment_number(number)
        if owner != stream.id:
            raise FragmentNotFoundError(number)
        return Start(fragment_number(stream.id, max(seq - 1, 0)) if kind == "FRAGMENT_NUMBER" else number)
    if kind in (BY_PRODUCER, BY_SERVER):
        start_ms = parse_timestamp(selector.get("StartTimestamp"), "StartSelector.StartTimestamp")
        after = await asyncio.to_thread(store.number_before_time, stream.id, start_ms, kind)
        if after is None:  # nothing there yet: the first fragment to come that reaches start_ms
            return Start(await asyncio.to_thread(store.last_fragment_number, stream.id), start_ms, kind)
        return Start(after, None, kind)
    raise invalid("StartSelector.StartSelectorType must be one of EARLIEST, NOW, FRAGMENT_NUMBER, "
                  "PRODUCER_TIMESTAMP, SERVER_TIMESTAMP, CONTINUATION_TOKEN")


async def get_media(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream = await stream_of(request, body)
    store = store_of(request)
    start = await parse_start(store, stream, body.get("StartSelector"))
    response, connected = await start_streaming(request, "video/webm")
    if not connected:
        return response
    if not await _tail(request, response, store, stream, start):
        return response  # the client went away
    try:
        await response.write_eof()
    except (ConnectionError, RuntimeError, OSError):
        pass
    return response


async def _tail(request: web.Request, response: web.StreamResponse, store: VideoStore, stream: StreamRecord, start: Start) -> bool:
    """Send the stored fragments from ``start`` on, then new ones as they are PERSISTED, until the
    stream goes idle or away or the gateway shuts down (True), or the client leaves (False)."""
    after, start_ms, by = start.after, start.start_ms, start.by
    events = request.app[VIDEO_EVENTS]
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    while True:
        event = events.event(stream.name)
        try:
            infos = await asyncio.to_thread(store.list_fragments_by_id, stream.id, start_ms, None, by, BATCH, after)
        except AwsError:
            return True  # the stream was deleted
        for info in infos:
            after = info.fragment_number
            start_ms = None  # only the first fragment is found by time; then follow fragment numbers
            try:
                data = await asyncio.to_thread(_tagged_fragment, store, stream.id, info)
            except FragmentNotFoundError:
                continue  # removed by retention meanwhile
            except Exception:  # an unreadable file: skip it, keep the session
                log.exception("getMedia %s: cannot read fragment %s", stream.name, info.fragment_number)
                continue
            try:
                await response.write(data)
            except (ConnectionError, RuntimeError, OSError):
                return False
        if infos:
            idle_since = loop.time()
            continue
        if not await asyncio.to_thread(store.stream_exists, stream.id):
            return True  # deleted while we were tailing it
        left = LIVE_IDLE_END_SECONDS - (loop.time() - idle_since)
        if left <= 0 or request.transport is None or request.transport.is_closing() or request.app[SHUTTING_DOWN].is_set():
            return True
        await events.wait(event, min(left, 1.0))


def _tagged_fragment(store: VideoStore, stream_id: int, info: FragmentInfo) -> bytes:
    """The stored document plus the tags only known when sending: millis behind now, resume token."""
    data = store.read_fragment_by_id(stream_id, info.fragment_number)
    behind = max(0, int(time.time() * 1000) - info.server_ts_ms)
    return with_kvs_tags(data, {MILLIS_BEHIND_NOW: str(behind), CONTINUATION_TOKEN: info.fragment_number})


ROUTES: list[web.RouteDef] = [web.post("/getMedia", get_media)]
