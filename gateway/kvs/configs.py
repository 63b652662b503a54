"""The rest of the Kinesis Video control plane: tags by ARN and a stream's configurations.

TagResource / UntagResource / ListTagsForResource (the stream's tags, by ARN);
Update/DescribeImageGenerationConfiguration (images written on a schedule, see ``imagegen``);
Update/DescribeNotificationConfiguration (fragment notifications, see ``notify``);
Update/DescribeStreamStorageConfiguration (the default storage tier, kept and shown);
StartEdgeConfigurationUpdate / DescribeEdgeConfiguration / DeleteEdgeConfiguration /
ListEdgeAgentConfigurations, and the two calls our edge agent makes to fetch its configuration and
report back (``POST /edgeAgent/configurations``, ``POST /edgeAgent/status``, see ``edge_agent/edge_config.py``).

Requests are checked against botocore's ``kinesisvideo`` model (constraint violations answer
``InvalidArgumentException`` with AWS's "N validation error(s) detected" wording). Configurations
live in ``configstore``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.kds.protocol import JSON
from gateway.kds.validate import validate
from gateway.kvs.configstore import CONFIGS, StreamConfigs
from gateway.kvs.imagegen import destination_of
from gateway.kvs.notify import target_of
from gateway.kvs.request import read_json, resolve_stream, store_of
from gateway.kvs.store import StreamRecord

Handler = Callable[[web.Request], Awaitable[web.Response]]


async def checked(request: web.Request, operation: str) -> dict[str, Any]:
    """The body, checked against the kinesisvideo model (violations are InvalidArgumentException)."""
    body = await read_json(request)
    try:
        return validate(operation, body, JSON, service="kinesisvideo")
    except AwsError as exc:
        if exc.code == "ValidationException":
            raise AwsError("InvalidArgumentException", exc.message, 400) from exc
        raise


async def _stream(request: web.Request, body: dict[str, Any]) -> StreamRecord:
    return await resolve_stream(request, body.get("StreamName"), body.get("StreamARN"))


def _configs(request: web.Request) -> StreamConfigs:
    return request.app[CONFIGS]


def _ts(seconds: float) -> float:
    return round(seconds, 3)


# -- tags by ARN --------------------------------------------------------------------------------


async def _stream_by_arn(request: web.Request, arn: str) -> StreamRecord:
    if ":stream/" not in arn:
        raise AwsError("ResourceNotFoundException", f"The resource {arn} does not exist (signaling channels are not served here)", 404)
    return await resolve_stream(request, None, arn)


async def tag_resource(request: web.Request) -> web.Response:
    body = await checked(request, "TagResource")
    stream = await _stream_by_arn(request, body["ResourceARN"])
    tags = {t["Key"]: t.get("Value", "") for t in body["Tags"]}
    await asyncio.to_thread(store_of(request).change_tags, stream.id, tags, [])
    return web.json_response({})


async def untag_resource(request: web.Request) -> web.Response:
    body = await checked(request, "UntagResource")
    stream = await _stream_by_arn(request, body["ResourceARN"])
    await asyncio.to_thread(store_of(request).change_tags, stream.id, {}, body["TagKeyList"])
    return web.json_response({})


async def list_tags_for_resource(request: web.Request) -> web.Response:
    body = await checked(request, "ListTagsForResource")
    stream = await _stream_by_arn(request, body["ResourceARN"])
    return web.json_response({"Tags": await asyncio.to_thread(store_of(request).tags, stream.id)})


# -- image generation and notifications -----------------------------------------------------------


def _config_handlers(member: str, kind: str, check: Callable[[web.Request, dict[str, Any]], None]) -> tuple[Handler, Handler]:
    """``Update<member>`` and ``Describe<member>`` for one kind of stream configuration: a null
    configuration deletes it, an ENABLED one passes ``check`` before it is kept."""

    async def update(request: web.Request) -> web.Response:
        body = await checked(request, f"Update{member}")
        stream = await _stream(request, body)
        config = body.get(member)
        if config is None:
            await asyncio.to_thread(_configs(request).delete, stream.arn, kind)
            return web.json_response({})
        if config["Status"] == "ENABLED":
            check(request, config)
        await asyncio.to_thread(_configs(request).put, stream.arn, kind, config)
        return web.json_response({})

    async def describe(request: web.Request) -> web.Response:
        stream = await _stream(request, await checked(request, f"Describe{member}"))
        found = await asyncio.to_thread(_configs(request).get, stream.arn, kind)
        return web.json_response({} if found is None else {member: found[0]})

    return update, describe


def _check_image_generation(request: web.Request, config: dict[str, Any]) -> None:
    destination_of(request.app, config)  # refuses a destination the gateway cannot write to
    if not 200 <= config["SamplingInterval"] <= 20000:
        raise AwsError("InvalidArgumentException", "SamplingInterval must be between 200 and 20000 milliseconds", 400)


def _check_notification(request: web.Request, config: dict[str, Any]) -> None:
    target_of(config["DestinationConfig"]["Uri"])


update_image_generation, describe_image_generation = _config_handlers("ImageGenerationConfiguration", "image", _check_image_generation)
update_notification, describe_notification = _config_handlers("NotificationConfiguration", "notification", _check_notification)


# -- storage tier ---------------------------------------------------------------------------------


async def describe_storage(request: web.Request) -> web.Response:
    """The stream's default storage tier (HOT unless set; one local disk serves both tiers alike)."""
    stream = await _stream(request, await checked(request, "DescribeStreamStorageConfiguration"))
    found = await asyncio.to_thread(_configs(request).get, stream.arn, "storage")
    config = found[0] if found is not None else {"DefaultStorageTier": "HOT"}
    return web.json_response({"StreamName": stream.name, "StreamARN": stream.arn, "StreamStorageConfiguration": config})


async def update_storage(request: web.Request) -> web.Response:
    body = await checked(request, "UpdateStreamStorageConfiguration")
    stream = await _stream(request, body)
    if body["CurrentVersion"] != stream.version:
        raise AwsError("VersionMismatchException", f"The stream version {body['CurrentVersion']} does not match the current version {stream.version}.", 400)
    await asyncio.to_thread(_configs(request).put, stream.arn, "storage", body["StreamStorageConfiguration"])
    return web.json_response({})


# -- edge configuration ---------------------------------------------------------------------------


def _edge_view(stream: StreamRecord | None, arn: str, value: dict[str, Any], created: float, updated: float, agent: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "StreamName": stream.name if stream is not None else arn.split(":stream/")[1].split("/")[0],
        "StreamARN": arn,
        "CreationTime": _ts(created),
        "LastUpdatedTime": _ts(updated),
        "SyncStatus": value["SyncStatus"],
        "EdgeConfig": value["EdgeConfig"],
    }
    if value.get("FailedStatusDetails"):
        out["FailedStatusDetails"] = value["FailedStatusDetails"]
    if agent and value.get("EdgeAgentStatus"):
        out["EdgeAgentStatus"] = value["EdgeAgentStatus"]
    return out


async def start_edge_update(request: web.Request) -> web.Response:
    body = await checked(request, "StartEdgeConfigurationUpdate")
    stream = await _stream(request, body)
    configs = _configs(request)
    found = await asyncio.to_thread(configs.get, stream.arn, "edge")
    if found is not None and found[0]["SyncStatus"] in ("SYNCING", "DELETING"):
        raise AwsError("ResourceInUseException", f"The edge configuration of stream {stream.name} is still {found[0]['SyncStatus']}; try again once the agent has it.", 400)
    value = {"SyncStatus": "SYNCING", "EdgeConfig": body["EdgeConfig"]}
    created, updated = await asyncio.to_thread(configs.put, stream.arn, "edge", value)
    return web.json_response(_edge_view(stream, stream.arn, value, created, updated, agent=False))


async def _edge_config(request: web.Request, operation: str) -> tuple[StreamRecord, tuple[dict[str, Any], float, float]]:
    """The stream an edge-configuration call names and its configuration (value, created, updated)."""
    stream = await _stream(request, await checked(request, operation))
    found = await asyncio.to_thread(_configs(request).get, stream.arn, "edge")
    if found is None:
        raise AwsError("StreamEdgeConfigurationNotFoundException", f"Stream {stream.name} has no edge configuration.", 404)
    return stream, found


async def describe_edge(request: web.Request) -> web.Response:
    stream, found = await _edge_config(request, "DescribeEdgeConfiguration")
    return web.json_response(_edge_view(stream, stream.arn, *found))


async def delete_edge(request: web.Request) -> web.Response:
    stream, found = await _edge_config(request, "DeleteEdgeConfiguration")
    # The agent drops it on its next fetch (DELETING -> gone), as AWS's agent acknowledges a delete.
    await asyncio.to_thread(_configs(request).put, stream.arn, "edge", {**found[0], "SyncStatus": "DELETING"})
    return web.json_response({})


async def list_edge_agent_configurations(request: web.Request) -> web.Response:
    body = await checked(request, "ListEdgeAgentConfigurations")
    limit = body.get("MaxResults", 10)
    after = body.get("NextToken", "")
    rows = [r for r in await asyncio.to_thread(_configs(request).all, "edge") if r[1]["EdgeConfig"]["HubDeviceArn"] == body["HubDeviceArn"] and r[0] > after]
    out: dict[str, Any] = {"EdgeConfigs": [_edge_view(None, arn, value, c, u, agent=False) for arn, value, c, u in rows[:limit]]}
    if len(rows) > limit:
        out["NextToken"] = rows[limit - 1][0]
    return web.json_response(out)


async def agent_configurations(request: web.Request) -> web.Response:
    """Our edge agent's fetch (by HubDeviceArn, or by its thing name: the agent id): the hub's
    configurations; SYNCING ones become ACKNOWLEDGED, and a
    deleted one is handed over once more (SyncStatus DELETING) and then removed."""
    body = await read_json(request)
    hub, thing = body.get("HubDeviceArn"), body.get("ThingName")
    if not isinstance(hub, str) and not isinstance(thing, str):
        raise AwsError("InvalidArgumentException", "HubDeviceArn or ThingName is required", 400)
    configs = _configs(request)
    out = []
    for arn, value, created, updated in await asyncio.to_thread(configs.all, "edge"):
        device = value["EdgeConfig"]["HubDeviceArn"]
        if device != hub and not (isinstance(thing, str) and device.endswith(f":thing/{thing}")):
            continue
        out.append(_edge_view(None, arn, value, created, updated, agent=False))
        if value["SyncStatus"] == "SYNCING":
            await asyncio.to_thread(configs.put, arn, "edge", {**value, "SyncStatus": "ACKNOWLEDGED"})
        elif value["SyncStatus"] == "DELETING":
            await asyncio.to_thread(configs.delete, arn, "edge")
    return web.json_response({"EdgeConfigs": out})


async def agent_status(request: web.Request) -> web.Response:
    """Our edge agent's report: the configuration applied (IN_SYNC) or not (SYNC_FAILED), and its
    recorder/uploader status (EdgeAgentStatus in DescribeEdgeConfiguration)."""
    body = await read_json(request)
    arn = body.get("StreamARN")
    status = body.get("SyncStatus")
    if not isinstance(arn, str) or status not in ("IN_SYNC", "SYNC_FAILED"):
        raise AwsError("InvalidArgumentException", "StreamARN and SyncStatus (IN_SYNC or SYNC_FAILED) are required", 400)
    configs = _configs(request)
    found = await asyncio.to_thread(configs.get, arn, "edge")
    if found is None:
        raise AwsError("StreamEdgeConfigurationNotFoundException", f"No edge configuration for {arn}.", 404)
    value = {**found[0], "SyncStatus": status, "FailedStatusDetails": body.get("FailedStatusDetails", "")}
    if isinstance(body.get("EdgeAgentStatus"), dict):
        value["EdgeAgentStatus"] = body["EdgeAgentStatus"]
    await asyncio.to_thread(configs.put, arn, "edge", value)
    return web.json_response({})


ROUTES: list[web.RouteDef] = [
    web.post("/TagResource", tag_resource),
    web.post("/UntagResource", untag_resource),
    web.post("/ListTagsForResource", list_tags_for_resource),
    web.post("/updateImageGenerationConfiguration", update_image_generation),
    web.post("/describeImageGenerationConfiguration", describe_image_generation),
    web.post("/updateNotificationConfiguration", update_notification),
    web.post("/describeNotificationConfiguration", describe_notification),
    web.post("/describeStreamStorageConfiguration", describe_storage),
    web.post("/updateStreamStorageConfiguration", update_storage),
    web.post("/startEdgeConfigurationUpdate", start_edge_update),
    web.post("/describeEdgeConfiguration", describe_edge),
    web.post("/deleteEdgeConfiguration", delete_edge),
    web.post("/listEdgeAgentConfigurations", list_edge_agent_configurations),
    web.post("/edgeAgent/configurations", agent_configurations),
    web.post("/edgeAgent/status", agent_status),
]
