"""The Kinesis Video control plane (rest-json, botocore ``kinesisvideo`` model): streams and endpoints.

Deviation from AWS, on purpose: ``DataRetentionInHours = 0`` (the CreateStream default) keeps fragments
until the stream's disk budget needs the room, instead of not archiving them at all, so playback works
on streams created with defaults.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from gateway.keys import CONFIG
from gateway.kvs.request import STREAM_NAME, invalid, optional_str, read_json, required_str, store_of, stream_of
from gateway.kvs.store import StreamRecord
from gateway.wire import decode_token, encode_token, region_of

MEDIA_TYPE = re.compile(r"[\w\-.+]+/[\w\-.+]+(,[\w\-.+]+/[\w\-.+]+)*")
#: Longest retention KVS allows (ten years).
MAX_RETENTION_HOURS = 87_600
API_NAMES = {"PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST", "GET_HLS_STREAMING_SESSION_URL",
             "GET_DASH_STREAMING_SESSION_URL", "GET_CLIP", "GET_IMAGES"}


def stream_info(stream: StreamRecord) -> dict[str, Any]:
    info: dict[str, Any] = {
        "StreamName": stream.name,
        "StreamARN": stream.arn,
        "Version": stream.version,
        "Status": "ACTIVE",
        "CreationTime": stream.created_ms / 1000,
        "DataRetentionInHours": stream.retention_hours,
    }
    for key, value in (("DeviceName", stream.device_name), ("MediaType", stream.media_type), ("KmsKeyId", stream.kms_key_id)):
        if value:
            info[key] = value
    return info


def _int(body: dict[str, Any], key: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_RETENTION_HOURS) -> int:
    value = body.get(key, default)
    if value is None:
        raise invalid(f"{key} is required")
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise invalid(f"{key} must be an integer from {minimum} to {maximum}")
    return value


async def create_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = optional_str(body, "StreamName")
    if not name or not STREAM_NAME.fullmatch(name):
        raise invalid("StreamName must be 1-256 characters of [a-zA-Z0-9_.-]")
    media_type = optional_str(body, "MediaType")
    if media_type is not None and not MEDIA_TYPE.fullmatch(media_type):
        raise invalid(f"Invalid MediaType {media_type!r}")
    tags = _tag_map(body["Tags"]) if body.get("Tags") else {}
    stream = await asyncio.to_thread(
        store_of(request).create_stream, name,
        retention_hours=_int(body, "DataRetentionInHours", 0), media_type=media_type,
        device_name=optional_str(body, "DeviceName"), kms_key_id=optional_str(body, "KmsKeyId"),
        region=region_of(request.headers), tags=tags,
    )
    return web.json_response({"StreamARN": stream.arn})


async def describe_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    return web.json_response({"StreamInfo": stream_info(stream)})


async def list_streams(request: web.Request) -> web.Response:
    body = await read_json(request)
    limit = _int(body, "MaxResults", 10000, minimum=1, maximum=10000)
    token = optional_str(body, "NextToken")
    after = ""
    if token:
        try:
            state = decode_token(token)
        except ValueError as exc:
            raise invalid("Invalid NextToken") from exc
        if not isinstance(state.get("after"), str):
            raise invalid("Invalid NextToken")
        after = state["after"]
    prefix = ""
    condition = body.get("StreamNameCondition")
    if condition:
        if not isinstance(condition, dict) or condition.get("ComparisonOperator", "BEGINS_WITH") != "BEGINS_WITH":
            raise invalid("StreamNameCondition.ComparisonOperator must be BEGINS_WITH")
        prefix = str(condition.get("ComparisonValue") or "")
    streams = await asyncio.to_thread(store_of(request).list_streams, prefix, after, limit + 1)
    out: dict[str, Any] = {"StreamInfoList": [stream_info(s) for s in streams[:limit]]}
    if len(streams) > limit:
        out["NextToken"] = encode_token({"after": streams[limit - 1].name})
    return web.json_response(out)


async def delete_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    arn = required_str(body, "StreamARN")
    await asyncio.to_thread(store_of(request).delete_stream, arn, optional_str(body, "CurrentVersion"))
    return web.json_response({})


async def update_data_retention(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    version = required_str(body, "CurrentVersion")
    operation = body.get("Operation")
    if operation not in ("INCREASE_DATA_RETENTION", "DECREASE_DATA_RETENTION"):
        raise invalid("Operation must be INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION")
    change = _int(body, "DataRetentionChangeInHours", minimum=1)
    await asyncio.to_thread(store_of(request).update_retention, stream.name, None, version, change,
                            operation == "INCREASE_DATA_RETENTION")
    return web.json_response({})


async def update_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    version = required_str(body, "CurrentVersion")
    media_type = optional_str(body, "MediaType")
    if media_type is not None and not MEDIA_TYPE.fullmatch(media_type):
        raise invalid(f"Invalid MediaType {media_type!r}")
    await asyncio.to_thread(store_of(request).update_stream, stream, version, optional_str(body, "DeviceName"), media_type)
    return web.json_response({})


def _tag_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value or len(value) > 50:
        raise invalid("Tags must be a map of 1 to 50 tags")
    for key, tag in value.items():
        if not 1 <= len(key) <= 128 or not isinstance(tag, str) or len(tag) > 256:
            raise invalid(f"Invalid tag {key!r}")
    return {str(k): str(v) for k, v in value.items()}


async def tag_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    await asyncio.to_thread(store_of(request).change_tags, stream.id, _tag_map(body.get("Tags")), [])
    return web.json_response({})


async def untag_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    keys = body.get("TagKeyList")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise invalid("TagKeyList must be a list of tag keys")
    await asyncio.to_thread(store_of(request).change_tags, stream.id, {}, keys)
    return web.json_response({})


async def list_tags_for_stream(request: web.Request) -> web.Response:
    body = await read_json(request)
    stream = await stream_of(request, body)
    return web.json_response({"Tags": await asyncio.to_thread(store_of(request).tags, stream.id)})


async def get_data_endpoint(request: web.Request) -> web.Response:
    body = await read_json(request)
    api_name = body.get("APIName")
    if not isinstance(api_name, str) or api_name not in API_NAMES:
        raise invalid(f"APIName must be one of {', '.join(sorted(API_NAMES))}")
    await stream_of(request, body)
    return web.json_response({"DataEndpoint": request.app[CONFIG].base_url})


ROUTES: list[web.RouteDef] = [
    web.post("/createStream", create_stream),
    web.post("/describeStream", describe_stream),
    web.post("/listStreams", list_streams),
    web.post("/deleteStream", delete_stream),
    web.post("/updateDataRetention", update_data_retention),
    web.post("/getDataEndpoint", get_data_endpoint),
    web.post("/updateStream", update_stream),
    web.post("/tagStream", tag_stream),
    web.post("/untagStream", untag_stream),
    web.post("/listTagsForStream", list_tags_for_stream),
]
