"""The Kinesis Data Streams wire API: ``POST /`` with ``X-Amz-Target: Kinesis_20131202.<Action>``.

One table maps each action to a thin async handler ``(Call, params) -> response dict``. The
body is decoded (JSON or CBOR, see ``protocol``), checked against botocore's model (see
``validate``), handled, and encoded back in the protocol the client spoke. Data-plane
handlers (PutRecord(s), GetShardIterator, GetRecords) live in ``records``; rendering of
stream and shard shapes in ``render``. The two hot responses (PutRecords, GetRecords in JSON)
come back pre-encoded as ``RawJson``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.errors import AwsError, invalid_argument, validation
from gateway.auth import signer_of
from gateway.kds import channels, configure, consumers, control, encryption, policies, queue_delivery, queues, records, render, subscriptions
from gateway.kds.consumers import CONSUMERS
from gateway.kds.iterators import IteratorSigner
from gateway.kds.protocol import JSON, Codec, RawJson, codec_for, target_action
from gateway.kds.shards import canonical_shard_id
from gateway.kds.store import Store, Stream
from gateway.kds.validate import service_model, validate, validate_member
from gateway.wire import decode_token, encode_token, region_of, stream_name_from_arn

TARGET_PREFIX = "Kinesis_20131202"


@dataclass
class Call:
    """What a handler needs about one request."""

    request: web.Request
    codec: Codec
    store: Store
    signer: IteratorSigner
    region: str
    #: The action (X-Amz-Target's) and who signed the request (None: unsigned), for resource policies.
    action: str = ""
    access_key: str | None = None

    def arn(self, name: str) -> str:
        return render.stream_arn(self.region, self.store.account_id, name)

    def stream(self, params: dict[str, Any]) -> Stream:
        """The stream named by StreamName or StreamARN (both accepted, as AWS)."""
        name = params.get("StreamName")
        arn = params.get("StreamARN")
        if arn is not None:
            arn_name = stream_name_from_arn(arn)
            if not arn_name:
                raise invalid_argument(f"StreamARN {arn} is not a Kinesis stream ARN.")
            if name is not None and name != arn_name:
                raise invalid_argument("StreamARN and StreamName name different streams.")
            name = arn_name
        if name is None:
            raise validation("Either StreamName or StreamARN must be provided.")
        stream = self.store.stream(name)
        policies.check(self, stream, self.action, self.access_key)
        return stream


#: A handler answers a dict (encoded in the protocol the client spoke), pre-encoded JSON, or a
#: response it streams itself (SubscribeToShard).
Handler = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any] | RawJson | web.StreamResponse]]


async def create_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    mode = p.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
    count = p.get("ShardCount")
    if mode == "ON_DEMAND":
        count = control.ON_DEMAND_SHARDS
    elif count is None:
        raise invalid_argument("ShardCount is required for a PROVISIONED stream.")
    await control.create_stream(call.store, p["StreamName"], count, mode, p.get("Tags", {}), call.region)
    return {}


async def delete_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    await control.delete_stream(call.store, stream, p.get("EnforceConsumerDeletion", False))
    call.request.app[CONSUMERS].forget_stream(stream)
    return {}


async def describe_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    limit = p.get("Limit", 100)
    after = canonical_shard_id(p["ExclusiveStartShardId"]) if "ExclusiveStartShardId" in p else None
    shards = [s for s in stream.shards if after is None or s.shard_id > after]
    description = render.summary(call.arn(stream.name), stream, call.codec)
    members = service_model().shape_for("StreamDescription").members
    description = {k: v for k, v in description.items() if k in members}
    description["Shards"] = [render.shard(s) for s in shards[:limit]]
    description["HasMoreShards"] = len(shards) > limit
    return {"StreamDescription": description}


async def describe_stream_summary(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    summary = render.summary(call.arn(stream.name), stream, call.codec)
    summary["ConsumerCount"] = call.request.app[CONSUMERS].count(stream)
    return {"StreamDescriptionSummary": summary}


def _untoken(token: str, **fields: type) -> dict[str, Any]:
    """Decode a NextToken we issued; ``fields`` name the keys it must hold and their types."""
    try:
        value = decode_token(token)
    except ValueError as exc:
        raise invalid_argument("Invalid NextToken.") from exc
    if not all(isinstance(value.get(k), t) for k, t in fields.items()):
        raise invalid_argument("Invalid NextToken.")
    return value


async def list_streams(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    limit = p.get("Limit", 100)
    after = p.get("ExclusiveStartStreamName")
    if "NextToken" in p:
        after = _untoken(p["NextToken"], after=str)["after"]
    streams = call.store.streams  # one snapshot (the writer replaces the dict, never edits it)
    names = sorted(n for n in streams if after is None or n > after)
    page = names[:limit]
    out: dict[str, Any] = {
        "StreamNames": page,
        "HasMoreStreams": len(names) > limit,
        "StreamSummaries": [render.stream_summary(call.arn(n), streams[n], call.codec) for n in page],
    }
    if len(names) > limit:
        out["NextToken"] = encode_token({"after": page[-1]})
    return out


async def list_shards(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    if "NextToken" in p:
        if "StreamName" in p or "StreamARN" in p:
            raise invalid_argument("NextToken and StreamName cannot be provided together.")
        token = _untoken(p["NextToken"], stream=str, after=str)
        stream = call.stream({"StreamName": token["stream"]})
        after = token["after"]
        shard_filter = token.get("filter")
        if shard_filter is not None:  # tokens are not signed: check what comes back as input
            shard_filter = validate_member("ShardFilter", shard_filter, "nextToken.shardFilter", JSON)
    else:
        stream = call.stream(p)
        after = canonical_shard_id(p["ExclusiveStartShardId"]) if "ExclusiveStartShardId" in p else None
        shard_filter = p.get("ShardFilter")
    limit = p.get("MaxResults", 1000)
    shards = render.filter_shards(stream, shard_filter)
    shards = [s for s in shards if after is None or s.shard_id > after]
    out: dict[str, Any] = {"Shards": [render.shard(s) for s in shards[:limit]]}
    if len(shards) > limit:
        out["NextToken"] = encode_token({"stream": stream.name, "after": shards[limit - 1].shard_id, "filter": shard_filter})
    return out


async def split_shard(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await control.split_shard(call.store, call.stream(p), p["ShardToSplit"], int(p["NewStartingHashKey"]), call.region)
    return {}


async def merge_shards(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await control.merge_shards(call.store, call.stream(p), p["ShardToMerge"], p["AdjacentShardToMerge"])
    return {}


async def update_shard_count(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    current = await control.update_shard_count(call.store, stream, p["TargetShardCount"], call.region)
    return {"StreamName": stream.name, "StreamARN": call.arn(stream.name), "CurrentShardCount": current, "TargetShardCount": p["TargetShardCount"]}


async def increase_retention(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await control.set_retention(call.store, call.stream(p), p["RetentionPeriodHours"], increase=True)
    return {}


async def decrease_retention(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await control.set_retention(call.store, call.stream(p), p["RetentionPeriodHours"], increase=False)
    return {}


async def add_tags(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await control.add_tags(call.store, call.stream(p), p["Tags"])
    return {}


async def remove_tags(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await control.remove_tags(call.store, call.stream(p), p["TagKeys"])
    return {}


async def list_tags(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    limit = p.get("Limit", 50)
    after = p.get("ExclusiveStartTagKey")
    keys = sorted(k for k in stream.tags if after is None or k > after)
    return {"Tags": [{"Key": k, "Value": stream.tags[k]} for k in keys[:limit]], "HasMoreTags": len(keys) > limit}


async def describe_limits(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    streams = call.store.streams.values()
    return {
        "ShardLimit": control.SHARD_LIMIT,
        "OpenShardCount": control.open_shard_count(call.store),
        "OnDemandStreamCount": sum(s.mode == "ON_DEMAND" for s in streams),
        "OnDemandStreamCountLimit": control.ON_DEMAND_STREAM_LIMIT,
    }


HANDLERS: dict[str, Handler] = {
    "AddTagsToStream": add_tags,
    "CreateStream": create_stream,
    "DecreaseStreamRetentionPeriod": decrease_retention,
    "DeleteStream": delete_stream,
    "DescribeLimits": describe_limits,
    "DescribeStream": describe_stream,
    "DescribeStreamSummary": describe_stream_summary,
    "GetRecords": records.get_records,
    "GetShardIterator": records.get_shard_iterator,
    "IncreaseStreamRetentionPeriod": increase_retention,
    "ListShards": list_shards,
    "ListStreams": list_streams,
    "ListTagsForStream": list_tags,
    "MergeShards": merge_shards,
    "PutRecord": records.put_record,
    "PutRecords": records.put_records,
    "RemoveTagsFromStream": remove_tags,
    "SplitShard": split_shard,
    "UpdateShardCount": update_shard_count,
    **consumers.HANDLERS,
    "SubscribeToShard": subscriptions.subscribe_to_shard,
    **configure.HANDLERS,
    **encryption.HANDLERS,
    **policies.HANDLERS,
    **queues.HANDLERS,
    **queue_delivery.HANDLERS,
    **channels.HANDLERS,
}


#: Operations whose model has no output shape: AWS answers them with an empty body.
NO_OUTPUT = frozenset(name for name in HANDLERS if service_model().operation_model(name).output_shape is None)


def make_handler(get_store: Callable[[web.Request], Store], get_signer: Callable[[web.Request], IteratorSigner]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        action, handler = target_action(request.headers, HANDLERS, "Kinesis endpoint")
        codec = codec_for(request.content_type)
        params = validate(action, codec.decode(await request.read()), codec)
        call = Call(request, codec, get_store(request), get_signer(request), region_of(request.headers), action, signer_of(request))
        result = await handler(call, params)
        if isinstance(result, web.StreamResponse):
            return result
        if not result and action in NO_OUTPUT:
            return web.Response(body=b"", content_type=codec.content_type)  # as AWS: no body at all
        body = result if isinstance(result, RawJson) else codec.encode(result)
        return web.Response(body=body, content_type=codec.content_type)

    return handle
