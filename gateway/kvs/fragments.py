"""ListFragments and GetMediaForFragmentList (botocore ``kinesis-video-archived-media``).

ListFragments answers from the SQLite index only (never the file system): fragments overlapping the
TimestampRange on the chosen clock, in fragment-number order, ``MaxResults`` at a time with an opaque
``NextToken``. GetMediaForFragmentList checks every number first (so a wrong one is a clean 404), then
streams the stored MKV documents back to back as ``video/webm``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.kvs.request import invalid, optional_str, parse_timestamp, read_json, start_streaming, store_of, stream_of
from gateway.kvs.store import BY_PRODUCER, BY_SERVER, FragmentNotFoundError, parse_fragment_number
from gateway.wire import decode_token, encode_token

DEFAULT_MAX_RESULTS = 1000


def _token(after: str, start_ms: int | None, end_ms: int | None, by: str) -> str:
    return encode_token({"a": after, "s": start_ms, "e": end_ms, "b": by})


def _untoken(token: str) -> dict[str, Any]:
    try:
        value: dict[str, Any] | None = decode_token(token)
    except ValueError:
        value = None

    def bound(key: str) -> bool:
        v = value.get(key) if isinstance(value, dict) else None
        return v is None or (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53)

    if (isinstance(value, dict) and isinstance(value.get("a"), str) and bound("s") and bound("e")
            and value.get("b", BY_PRODUCER) in (BY_PRODUCER, BY_SERVER)):
        return value
    raise invalid("NextToken is not valid")


async def list_fragments(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    limit = body.get("MaxResults", DEFAULT_MAX_RESULTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise invalid("MaxResults must be between 1 and 1000")
    start_ms: int | None = None
    end_ms: int | None = None
    by = BY_PRODUCER
    after: str | None = None
    token = optional_str(body, "NextToken")
    if token:
        state = _untoken(token)
        after, start_ms, end_ms, by = state["a"], state.get("s"), state.get("e"), state.get("b", BY_PRODUCER)
    elif (selector := body.get("FragmentSelector")) is not None:
        if not isinstance(selector, dict) or selector.get("FragmentSelectorType") not in (BY_PRODUCER, BY_SERVER):
            raise invalid("FragmentSelector.FragmentSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP")
        by = selector["FragmentSelectorType"]
        time_range = selector.get("TimestampRange")
        if not isinstance(time_range, dict):
            raise invalid("FragmentSelector.TimestampRange is required")
        start_ms = parse_timestamp(time_range.get("StartTimestamp"), "TimestampRange.StartTimestamp")
        end_ms = parse_timestamp(time_range.get("EndTimestamp"), "TimestampRange.EndTimestamp")
        if end_ms < start_ms:
            raise invalid("TimestampRange.EndTimestamp is before StartTimestamp")
    infos = await asyncio.to_thread(store_of(request).list_fragments_by_id, stream.id, start_ms, end_ms, by, limit + 1, after, True)
    out: dict[str, Any] = {"Fragments": [
        {
            "FragmentNumber": info.fragment_number,
            "FragmentSizeInBytes": info.size,
            "ProducerTimestamp": info.producer_ts_ms / 1000,
            "ServerTimestamp": info.server_ts_ms / 1000,
            "FragmentLengthInMilliseconds": info.duration_ms,
        }
        for info in infos[:limit]
    ]}
    if len(infos) > limit:
        out["NextToken"] = _token(infos[limit - 1].fragment_number, start_ms, end_ms, by)
    return web.json_response(out)


async def get_media_for_fragment_list(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream = await stream_of(request, body)
    numbers = body.get("Fragments")
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= 1000 or not all(isinstance(n, str) for n in numbers):
        raise invalid("Fragments must be a list of 1 to 1000 fragment numbers")
    store = store_of(request)
    for number in numbers:
        if parse_fragment_number(number)[0] != stream.id:
            raise FragmentNotFoundError(number)
    first = await asyncio.to_thread(store.read_fragment_by_id, stream.id, numbers[0])  # raises 404 early
    missing = await asyncio.to_thread(_missing, store, stream.id, numbers[1:])
    if missing:
        raise FragmentNotFoundError(missing)
    response, connected = await start_streaming(request, "video/webm")
    if not connected:
        return response
    try:
        await response.write(first)
        for number in numbers[1:]:
            try:
                data = await asyncio.to_thread(store.read_fragment_by_id, stream.id, number)
            except FragmentNotFoundError:
                break  # deleted by retention since the check: end the payload early
            await response.write(data)
        await response.write_eof()
    except (ConnectionError, RuntimeError, OSError):
        pass
    return response


def _missing(store: Any, stream_id: int, numbers: list[str]) -> str | None:
    present = store.existing_numbers(stream_id, numbers)
    return next((n for n in numbers if n not in present), None)


ROUTES: list[web.RouteDef] = [
    web.post("/listFragments", list_fragments),
    web.post("/getMediaForFragmentList", get_media_for_fragment_list),
]
