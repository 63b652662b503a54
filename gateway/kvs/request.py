"""What every video handler does with a request: read its JSON body, check typed members, find the
stream it names, parse a timestamp. Shared by the control plane, ingest and every reader, so none of
them imports another's helpers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.kvs.keys import VIDEO_STORE
from gateway.kvs.store import StreamRecord, VideoStore

STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,256}")
#: Timestamps beyond year ~5138 are refused rather than overflowing.
MAX_EPOCH_SECONDS = 10**11


def invalid(message: str) -> AwsError:
    return AwsError("InvalidArgumentException", message, 400)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AwsError("SerializationException", f"Request body is not valid JSON: {exc}", 400) from exc
    if not isinstance(body, dict):
        raise AwsError("SerializationException", "Request body must be a JSON object", 400)
    return body


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{key} must be a string")
    return value


def required_str(body: dict[str, Any], key: str) -> str:
    """``body[key]``, a non-empty string; InvalidArgumentException "<key> is required" otherwise."""
    value = optional_str(body, key)
    if not value:
        raise invalid(f"{key} is required")
    return value


def store_of(request: web.Request) -> VideoStore:
    return request.app[VIDEO_STORE]


async def resolve_stream(request: web.Request, name: str | None, arn: str | None) -> StreamRecord:
    """The stream named by ``StreamName`` or ``StreamARN`` (exactly one of them)."""
    if (name is None) == (arn is None):
        raise invalid("Specify either StreamName or StreamARN, not both and not neither")
    if name is not None and not STREAM_NAME.fullmatch(name):
        raise invalid(f"Invalid stream name {name!r}")
    return await asyncio.to_thread(store_of(request).describe, name, arn)


async def stream_of(request: web.Request, body: dict[str, Any]) -> StreamRecord:
    """The stream a JSON body names by its ``StreamName`` or ``StreamARN`` member."""
    return await resolve_stream(request, optional_str(body, "StreamName"), optional_str(body, "StreamARN"))


async def start_streaming(request: web.Request, content_type: str) -> tuple[web.StreamResponse, bool]:
    """A chunked 200 answer with its head sent, and whether the client is still there to read it."""
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
    except ConnectionError:  # the client left before the first byte of the answer
        return response, False
    return response, True


def _epoch_ms(seconds: float, name: str) -> int:
    if not math.isfinite(seconds) or abs(seconds) > MAX_EPOCH_SECONDS:
        raise invalid(f"{name} is out of range: {seconds!r}")
    return int(round(seconds * 1000))


def parse_timestamp(value: Any, name: str) -> int:
    """Epoch milliseconds of a rest-json timestamp (epoch seconds, or ISO 8601 text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _epoch_ms(value, name)
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            return _epoch_ms(seconds, name)
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise invalid(f"{name} is not a timestamp: {value!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return int(round(parsed.timestamp() * 1000))
    raise invalid(f"{name} is required")
