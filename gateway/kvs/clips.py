"""GetClip and GetImages (botocore ``kinesis-video-archived-media``): recorded video as MP4 or stills.

Both pick stored fragments by producer or server time, then do the media work (remux, decode,
encode) in a thread with the ``kvs`` library, so the event loop only moves bytes.

GetClip returns whole fragments overlapping the range (as KVS does), at most ``MAX_CLIP_FRAGMENTS``
fragments / ``MAX_CLIP_BYTES`` bytes: a longer range is cut at that limit, and so is a clip whose
camera changed codec or resolution. It reads the fragments twice (sample table, then data) and
streams the MP4, so memory stays at one fragment.

GetImages returns one entry per sampling time; times with no fragment get ``Error: NO_MEDIA``,
fragments that cannot be decoded ``MEDIA_ERROR``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.kvs.request import invalid, optional_str, parse_timestamp, read_json, store_of, stream_of
from gateway.kvs.store import BY_PRODUCER, BY_SERVER, FragmentInfo, FragmentNotFoundError, StreamRecord, VideoStore
from gateway.wire import decode_token, encode_token
from kvs import MkvError, images, remux
from kvs.reader import FragmentContent, read_fragment

log = logging.getLogger("gateway.kvs.clips")

MAX_CLIP_FRAGMENTS = 200
MAX_CLIP_BYTES = 100 * 1024 * 1024
MAX_RANGE_MS = 24 * 3600 * 1000
MIN_SAMPLING_MS = 200
DEFAULT_SAMPLING_MS = 3000
DEFAULT_IMAGE_RESULTS = 25
MAX_IMAGE_RESULTS = 100


def _selector_type(value: Any, name: str) -> str:
    if value not in (BY_PRODUCER, BY_SERVER):
        raise invalid(f"{name} must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP")
    return str(value)


def _time_range(container: dict[str, Any], prefix: str) -> tuple[int, int]:
    start = parse_timestamp(container.get("StartTimestamp"), f"{prefix}StartTimestamp")
    end = parse_timestamp(container.get("EndTimestamp"), f"{prefix}EndTimestamp")
    if end <= start:
        raise invalid(f"{prefix}EndTimestamp must be after StartTimestamp")
    if end - start > MAX_RANGE_MS:
        raise invalid("The timestamp range must not exceed 24 hours")
    return start, end


def media_error(exc: Exception) -> AwsError:
    """Translate the media library's refusals into the API's error codes."""
    if isinstance(exc, remux.UnsupportedCodecError):
        return AwsError("UnsupportedStreamMediaTypeException", str(exc), 400)
    if isinstance(exc, remux.MissingCodecPrivateDataError):
        return AwsError("MissingCodecPrivateDataException", str(exc), 400)
    return AwsError("InvalidMediaFrameException", f"a stored fragment could not be read: {exc}", 400)


# -- GetClip ----------------------------------------------------------------------------------------


@dataclass
class ClipPlan:
    """A clip measured but not assembled: its MP4 header and the fragments whose samples follow it."""

    header: bytes
    numbers: list[str]
    size: int


def _track_key(content: FragmentContent) -> tuple[str, bytes, int, int]:
    track = content.track
    return track.codec_id, track.codec_private, track.width, track.height


def plan_clip(store: VideoStore, stream: StreamRecord, start: int, end: int, by: str) -> ClipPlan:
    """First pass: read each fragment once for its sample table (frame data is not kept)."""
    infos = store.list_fragments_by_id(stream.id, start, end, by, MAX_CLIP_FRAGMENTS)
    infos.sort(key=lambda i: i.producer_ts_ms)
    first: FragmentContent | None = None
    parts: list[remux.ClipPart] = []
    numbers: list[str] = []
    total = 0
    try:
        for info in infos:
            if total + info.size > MAX_CLIP_BYTES and parts:
                break
            try:
                content = read_fragment(store.read_fragment_by_id(stream.id, info.fragment_number))
            except FragmentNotFoundError:
                continue  # removed by retention while we were reading
            if first is not None and _track_key(content) != _track_key(first):
                break  # the camera changed codec or resolution: one MP4 track cannot hold both, so the clip ends here
            first = first or content
            parts.append(remux.clip_part(content))
            numbers.append(info.fragment_number)
            total += info.size
        if first is None:
            raise AwsError("ResourceNotFoundException", "No fragments found in the requested time range", 404)
        header = remux.clip_header(first, parts)
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc
    return ClipPlan(header, numbers, len(header) + sum(sum(p.sizes) for p in parts))


def clip_data(store: VideoStore, stream_id: int, number: str) -> bytes:
    """Second pass: one fragment's samples, exactly as measured by :func:`plan_clip`."""
    return remux.clip_part_data(read_fragment(store.read_fragment_by_id(stream_id, number)))


async def get_clip(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream = await stream_of(request, body)
    selector = body.get("ClipFragmentSelector")
    if not isinstance(selector, dict):
        raise invalid("ClipFragmentSelector is required")
    by = _selector_type(selector.get("FragmentSelectorType"), "ClipFragmentSelector.FragmentSelectorType")
    time_range = selector.get("TimestampRange")
    if not isinstance(time_range, dict):
        raise invalid("ClipFragmentSelector.TimestampRange is required")
    start, end = _time_range(time_range, "TimestampRange.")
    store = store_of(request)
    plan = await asyncio.to_thread(plan_clip, store, stream, start, end, by)
    # streamed fragment by fragment: memory stays at one fragment however long the clip is
    response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(plan.size)})
    await response.prepare(request)
    try:
        await response.write(plan.header)
        for number in plan.numbers:
            try:
                await response.write(await asyncio.to_thread(clip_data, store, stream.id, number))
            except FragmentNotFoundError:
                log.warning("GetClip %s: fragment %s deleted while streaming the clip; response cut short", stream.name, number)
                if request.transport is not None:
                    request.transport.close()  # a short body must not look complete
                return response
        await response.write_eof()
    except (ConnectionError, RuntimeError, OSError):
        pass  # the client went away
    return response


# -- GetImages --------------------------------------------------------------------------------------


def _token(next_ms: int) -> str:
    return encode_token({"n": next_ms})


def _untoken(token: str) -> int:
    try:
        return int(decode_token(token)["n"])
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid("NextToken is not valid") from exc


def _fragment_start(info: FragmentInfo, by: str) -> int:
    return info.producer_ts_ms if by == BY_PRODUCER else info.server_ts_ms


def build_images(store: VideoStore, stream: StreamRecord, times: list[int], by: str, fmt: str,
                 width: int | None, height: int | None, quality: int) -> list[dict[str, Any]]:
    """One image entry per sample time: the first frame at or after it in the fragment holding it."""
    infos = store.list_fragments_by_id(stream.id, times[0], times[-1], by, 1000)
    infos.sort(key=lambda i: _fragment_start(i, by))
    wanted: dict[str, list[int]] = {}
    holder: dict[int, FragmentInfo] = {}
    for t in times:
        for info in infos:
            if _fragment_start(info, by) <= t < _fragment_start(info, by) + max(info.duration_ms, 1):
                holder[t] = info
                wanted.setdefault(info.fragment_number, []).append(t)
                break
    found: dict[int, dict[str, Any]] = {}
    for number, sample_times in wanted.items():
        info = holder[sample_times[0]]
        try:
            data = store.read_fragment_by_id(stream.id, number)
            # offsets into the fragment: its own timecodes may be RELATIVE (from the producer's start)
            media_times = {t - _fragment_start(info, by): t for t in sample_times}
            got = images.images_from_fragment(data, list(media_times), fmt, width, height, quality, offsets=True)
        except FragmentNotFoundError:
            continue
        except Exception as exc:  # a fragment PyAV cannot decode is reported per image, not as a failure
            log.warning("GetImages: fragment %s could not be decoded: %s", number, exc)
            for t in sample_times:
                found[t] = {"TimeStamp": t / 1000, "Error": "MEDIA_ERROR"}
            continue
        for media_t, t in media_times.items():
            image = got.get(media_t)
            if image is not None:
                found[t] = {"TimeStamp": t / 1000, "ImageContent": base64.b64encode(image.data).decode()}
    return [found.get(t, {"TimeStamp": t / 1000, "Error": "NO_MEDIA"}) for t in times]


def _dimension(body: dict[str, Any], key: str, maximum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise invalid(f"{key} must be an integer between 1 and {maximum}")
    return value


async def get_images(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    by = _selector_type(body.get("ImageSelectorType"), "ImageSelectorType")
    start, end = _time_range(body, "")
    fmt = body.get("Format")
    if fmt not in images.FORMATS:
        raise invalid("Format must be JPEG or PNG")
    interval = body.get("SamplingInterval", DEFAULT_SAMPLING_MS)
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < MIN_SAMPLING_MS:
        raise invalid(f"SamplingInterval must be an integer of at least {MIN_SAMPLING_MS} ms")
    limit = body.get("MaxResults", DEFAULT_IMAGE_RESULTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_IMAGE_RESULTS:
        raise invalid(f"MaxResults must be between 1 and {MAX_IMAGE_RESULTS}")
    quality = images.DEFAULT_JPEG_QUALITY
    config = body.get("FormatConfig") or {}
    if not isinstance(config, dict) or set(config) - {"JPEGQuality"}:
        raise invalid("FormatConfig supports only JPEGQuality")
    if "JPEGQuality" in config:
        try:
            quality = int(config["JPEGQuality"])
        except (TypeError, ValueError) as exc:
            raise invalid("FormatConfig.JPEGQuality must be a number from 1 to 100") from exc
        if not 1 <= quality <= 100:
            raise invalid("FormatConfig.JPEGQuality must be a number from 1 to 100")
    width = _dimension(body, "WidthPixels", 3840)
    height = _dimension(body, "HeightPixels", 2160)
    token = optional_str(body, "NextToken")
    first = _untoken(token) if token else start
    if not start <= first < end:
        raise invalid("NextToken does not belong to this time range")
    times = list(range(first, end, interval)[: limit + 1])  # a range slice: never materialises a day of samples
    page, rest = times[:limit], times[limit:]
    entries = await asyncio.to_thread(build_images, store_of(request), stream, page, by, fmt, width, height, quality)
    out: dict[str, Any] = {"Images": entries}
    if rest:
        out["NextToken"] = _token(rest[0])
    return web.json_response(out)


ROUTES: list[web.RouteDef] = [
    web.post("/getClip", get_clip),
    web.post("/getImages", get_images),
]
