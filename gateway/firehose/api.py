"""The Amazon Data Firehose wire API: ``POST /`` with ``X-Amz-Target: Firehose_20150804.<Action>``.

One table maps each action to a thin async handler ``(Call, params) -> response dict``; bodies are
JSON 1.1, checked against botocore's Firehose model (``gateway.kds.validate`` with this model).
Puts are committed to the durable buffer (``store``) before they are answered.

Throughput per delivery stream (``[firehose] stream_*_per_sec``, AWS's us-east-1 defaults):
a call over the request rate, or whose records do not fit at all, is refused whole with
``ServiceUnavailableException: Slow down.``; a PutRecordBatch that fits only in part keeps the
records that fit and reports the rest per record (``FailedPutCount``), as AWS does.
"""

from __future__ import annotations

import asyncio
import binascii
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from gateway.config import FirehoseConfig
from gateway.errors import AwsError, serialization
from gateway.firehose import streams as model
from gateway.firehose.channels import is_channel_stream
from gateway.firehose.naming import invalid
from gateway.firehose.processors import check_processors, lanes_of
from gateway.firehose.sources import check_source
from gateway.firehose.store import BufferStore
from gateway.firehose.streams import DeliveryStream, check_conversion, check_destination, describe, merge
from gateway.wire import RECORD_SEQS_HEADER, producer_seqs, region_of
from gateway.kds.limits import TokenBucket
from gateway.kds.protocol import JSON, target_action
from gateway.kds.validate import validate, validation_error

TARGET_PREFIX = "Firehose_20150804"
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1_024_000
MAX_BATCH_RECORDS = 500
MAX_TAGS = 50
SLOW_DOWN = "Slow down."


def slow_down() -> AwsError:
    return AwsError("ServiceUnavailableException", SLOW_DOWN)


class StreamLimits:
    """Requests, records and bytes per second one delivery stream accepts."""

    def __init__(self, config: FirehoseConfig) -> None:
        self.requests = TokenBucket(config.stream_requests_per_sec)
        self.records = TokenBucket(config.stream_records_per_sec)
        self.bytes = TokenBucket(config.stream_bytes_per_sec)

    def admit(self, sizes: list[int], now: float) -> int:
        """How many of ``sizes`` (in order) fit; charges them. Raises when the call does not fit at all."""
        if not self.requests.take(1, now):
            raise slow_down()
        records = int(self.records.refill(now))
        budget = self.bytes.refill(now)
        n = 0
        used = 0
        for size in sizes:
            if n >= records or used + size > budget:
                break
            n += 1
            used += size
        if n == 0:
            raise slow_down()
        self.records.tokens -= n
        self.bytes.tokens -= used
        return n


@dataclass
class Services:
    """What the handlers share (one per app)."""

    store: BufferStore
    config: FirehoseConfig
    limits_enabled: bool
    account: str
    #: resolves a Kinesis data stream ARN to whether the gateway has that stream
    has_data_stream: Callable[[str], bool]

    def __post_init__(self) -> None:
        self.limits: dict[str, StreamLimits] = {}

    def admit(self, name: str, sizes: list[int]) -> int:
        if not self.limits_enabled:
            return len(sizes)
        limits = self.limits.get(name)
        if limits is None:
            limits = self.limits[name] = StreamLimits(self.config)
        return limits.admit(sizes, time.monotonic())


@dataclass
class Call:
    request: web.Request
    services: Services
    region: str

    @property
    def store(self) -> BufferStore:
        return self.services.store


Handler = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


def _check_processing(call: Call, kind: str, destination: dict[str, Any]) -> None:
    partitioned = kind == "Iceberg" or (kind == "ExtendedS3" and bool(destination.get("DynamicPartitioningConfiguration", {}).get("Enabled")))
    check_processors(destination, partitioned, call.services.config.transforms)
    if kind == "ExtendedS3":
        check_conversion(destination)


def record_id(name: str, seq: int) -> str:
    return f"{zlib.crc32(name.encode()):08x}{seq:048x}"


async def create_delivery_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    name = p["DeliveryStreamName"]
    stream_type = p.get("DeliveryStreamType", "DirectPut")
    if stream_type not in ("DirectPut", "KinesisStreamAsSource"):
        raise invalid(f"DeliveryStreamType {stream_type} is not supported by this gateway (DirectPut, KinesisStreamAsSource).")
    source = p.get("KinesisStreamSourceConfiguration")
    if stream_type == "KinesisStreamAsSource":
        if source is None:
            raise invalid("KinesisStreamSourceConfiguration is required for a KinesisStreamAsSource delivery stream.")
        check_source(source, call.services.has_data_stream)
    elif source is not None:
        raise invalid("KinesisStreamSourceConfiguration is only valid for a KinesisStreamAsSource delivery stream.")
    kind, destination = model.destination_of(p)
    _check_processing(call, kind, destination)
    tags = {t["Key"]: t.get("Value", "") for t in p.get("Tags", [])}
    if len(tags) > MAX_TAGS:
        raise AwsError("LimitExceededException", f"A delivery stream can have at most {MAX_TAGS} tags.")
    now = time.time()
    encryption = p.get("DeliveryStreamEncryptionConfigurationInput")
    stream = DeliveryStream(name, stream_type, kind, destination, source, 1, now, now, call.region, tags, call.services.account,
                            _encryption(encryption) if encryption else None)
    await call.store.save_stream(stream, create=True)
    return {"DeliveryStreamARN": stream.arn}


async def delete_delivery_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    call.store.stream(p["DeliveryStreamName"])
    await call.store.delete_stream(p["DeliveryStreamName"])
    call.services.limits.pop(p["DeliveryStreamName"], None)
    return {}


async def describe_delivery_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    return {"DeliveryStreamDescription": describe(call.store.stream(p["DeliveryStreamName"]))}


async def list_delivery_streams(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    limit = p.get("Limit", 10)
    after = p.get("ExclusiveStartDeliveryStreamName")
    wanted = p.get("DeliveryStreamType")
    names = sorted(s.name for s in call.store.iter_streams()
                   if (wanted is None or s.type == wanted) and (after is None or s.name > after) and not is_channel_stream(s.name))
    return {"DeliveryStreamNames": names[:limit], "HasMoreDeliveryStreams": len(names) > limit}


def _direct_put_stream(call: Call, name: str) -> DeliveryStream:
    stream = call.store.stream(name)
    if stream.type != "DirectPut":
        raise invalid(f"This operation is not permitted on KinesisStreamAsSource delivery stream type (delivery stream {name}).")
    return stream


def _check_sizes(records: list[bytes], path: str) -> None:
    """The model's 1,000 KiB ``Data`` limit (blobs are not length-checked by the validator)."""
    errors = [
        f"Value at '{path.format(i + 1)}' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORD_BYTES}"
        for i, r in enumerate(records) if len(r) > MAX_RECORD_BYTES
    ]
    if errors:
        raise validation_error(errors)


def _check_room(call: Call) -> None:
    if call.store.buffered_bytes() >= call.services.config.max_buffered_bytes:
        raise AwsError("ServiceUnavailableException", "Slow down. The gateway's Firehose buffer is full; delivery is behind.")


async def put_record(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = _direct_put_stream(call, p["DeliveryStreamName"])
    data = p["Record"]["Data"]
    _check_sizes([data], "record.data")
    _check_room(call)
    call.services.admit(stream.name, [len(data)])
    [seq] = await call.store.put(stream.name, [data], time.time(), lanes=lanes_of(stream, [data]))
    return {"RecordId": record_id(stream.name, seq), "Encrypted": stream.encryption is not None}


async def put_record_batch(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = _direct_put_stream(call, p["DeliveryStreamName"])
    records = [r["Data"] for r in p["Records"]]
    _check_sizes(records, "records.{}.member.data")
    total = sum(map(len, records))
    if total > MAX_BATCH_BYTES:
        raise invalid(f"Records size {total} exceeds the PutRecordBatch limit of {MAX_BATCH_BYTES} bytes (4 MiB).")
    _check_room(call)
    try:
        producer, pseqs = producer_seqs(call.request.headers, RECORD_SEQS_HEADER)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    if producer is not None and len(pseqs) != len(records):
        raise invalid(f"{RECORD_SEQS_HEADER} has {len(pseqs)} numbers for {len(records)} records.")
    admitted = call.services.admit(stream.name, [len(r) for r in records])
    # the JQ query of a partitioned stream costs ~10 µs a record: off the event loop
    lanes = await asyncio.to_thread(lanes_of, stream, records[:admitted]) if stream.partitioned else None
    if producer is not None:
        seqs = await call.store.put_once(stream.name, records[:admitted], time.time(), producer, pseqs[:admitted], lanes)
    else:
        seqs = await call.store.put(stream.name, records[:admitted], time.time(), lanes=lanes)
    responses: list[dict[str, Any]] = [{"RecordId": record_id(stream.name, seq)} for seq in seqs]
    failed = len(records) - admitted
    responses += [{"ErrorCode": "ServiceUnavailableException", "ErrorMessage": SLOW_DOWN}] * failed
    return {"FailedPutCount": failed, "Encrypted": stream.encryption is not None, "RequestResponses": responses}


async def update_destination(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.store.stream(p["DeliveryStreamName"])
    if p["CurrentDeliveryStreamVersionId"] != str(stream.version):
        raise AwsError(
            "ConcurrentModificationException",
            f"Cannot update the delivery stream {stream.name}: CurrentDeliveryStreamVersionId {p['CurrentDeliveryStreamVersionId']} is not the current version {stream.version}.",
        )
    if p["DestinationId"] != model.DESTINATION_ID:
        raise invalid(f"Destination {p['DestinationId']} not found in delivery stream {stream.name}.")
    updates = [k for k in p if k.endswith("DestinationUpdate")]
    if len(updates) != 1:
        raise invalid("Exactly one destination update must be provided.")
    kind = updates[0][: -len("DestinationUpdate")]
    if kind == "S3":
        kind = "ExtendedS3"
    if kind not in model.DESTINATIONS:
        raise invalid(f"{updates[0]} is not supported by this gateway.")
    update = dict(p[updates[0]])
    s3_update = update.pop("S3Update", None)
    backup_update = update.pop("S3BackupUpdate", None)
    destination = merge(stream.destination if kind == stream.kind else {}, update)
    if s3_update is not None:
        destination["S3Configuration"] = merge(destination.get("S3Configuration", {}), s3_update)
    if backup_update is not None:
        destination["S3BackupConfiguration"] = merge(destination.get("S3BackupConfiguration", {}), backup_update)
    check_destination(kind, destination)
    _check_processing(call, kind, destination)
    stream = replace(stream, kind=kind, destination=destination, version=stream.version + 1, updated=time.time())
    await call.store.save_stream(stream)
    return {}


async def tag_delivery_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.store.stream(p["DeliveryStreamName"])
    tags = {**stream.tags, **{t["Key"]: t.get("Value", "") for t in p["Tags"]}}
    if len(tags) > MAX_TAGS:
        raise AwsError("LimitExceededException", f"A delivery stream can have at most {MAX_TAGS} tags.")
    await call.store.save_stream(replace(stream, tags=tags))
    return {}


async def untag_delivery_stream(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.store.stream(p["DeliveryStreamName"])
    await call.store.save_stream(replace(stream, tags={k: v for k, v in stream.tags.items() if k not in set(p["TagKeys"])}))
    return {}


async def list_tags(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.store.stream(p["DeliveryStreamName"])
    limit = p.get("Limit", 50)
    after = p.get("ExclusiveStartTagKey")
    keys = sorted(k for k in stream.tags if after is None or k > after)
    return {"Tags": [{"Key": k, "Value": stream.tags[k]} for k in keys[:limit]], "HasMoreTags": len(keys) > limit}


def _encryption(given: dict[str, Any]) -> dict[str, str]:
    if given.get("KeyType") == "CUSTOMER_MANAGED_CMK" and not given.get("KeyARN"):
        raise invalid("KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK.")
    if given.get("KeyType") == "AWS_OWNED_CMK" and given.get("KeyARN"):
        raise invalid("KeyARN must not be given when KeyType is AWS_OWNED_CMK.")
    return {k: given[k] for k in ("KeyType", "KeyARN") if k in given}


async def start_encryption(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.store.stream(p["DeliveryStreamName"])
    if stream.type != "DirectPut":
        raise invalid(f"Encryption is set on the source data stream of a {stream.type} delivery stream, not on {stream.name}.")
    given = p.get("DeliveryStreamEncryptionConfigurationInput") or {"KeyType": "AWS_OWNED_CMK"}
    await call.store.save_stream(replace(stream, encryption=_encryption(given)))
    return {}


async def stop_encryption(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.store.stream(p["DeliveryStreamName"])
    await call.store.save_stream(replace(stream, encryption=None))
    return {}


HANDLERS: dict[str, Handler] = {
    "CreateDeliveryStream": create_delivery_stream,
    "DeleteDeliveryStream": delete_delivery_stream,
    "DescribeDeliveryStream": describe_delivery_stream,
    "ListDeliveryStreams": list_delivery_streams,
    "ListTagsForDeliveryStream": list_tags,
    "PutRecord": put_record,
    "PutRecordBatch": put_record_batch,
    "StartDeliveryStreamEncryption": start_encryption,
    "StopDeliveryStreamEncryption": stop_encryption,
    "TagDeliveryStream": tag_delivery_stream,
    "UntagDeliveryStream": untag_delivery_stream,
    "UpdateDestination": update_destination,
}


def _decode_records(raw: list[Any]) -> list[dict[str, bytes]]:
    """PutRecordBatch's ``Records`` (the hot path: 500 base64 blobs a call), with the errors the
    model checker gives: wrong types are SerializationException."""
    out: list[dict[str, bytes]] = []
    for i, entry in enumerate(raw):
        data = entry.get("Data") if isinstance(entry, dict) else None
        if not isinstance(data, str):
            raise serialization(f"records.{i + 1}.member.data: expected a base64 string, got {type(data).__name__}")
        try:
            out.append({"Data": binascii.a2b_base64(data, strict_mode=True)})
        except ValueError as exc:
            raise serialization(f"records.{i + 1}.member.data: not valid base64: {exc}") from exc
    return out


def _mask_loopback_http(body: dict[str, Any]) -> tuple[str, str] | None:
    """The model allows only https:// endpoints; we also take plain http:// on loopback (tests, a
    local receiver). Such a URL is validated as if it were https:// and put back afterwards."""
    for member in ("HttpEndpointDestinationConfiguration", "HttpEndpointDestinationUpdate"):
        endpoint = body.get(member, {}).get("EndpointConfiguration") if isinstance(body.get(member), dict) else None
        url = endpoint.get("Url") if isinstance(endpoint, dict) else None
        if isinstance(url, str) and model.loopback_http(url):
            endpoint["Url"] = "https://" + url[len("http://"):]  # type: ignore[index]
            return member, url
    return None


def make_handler(get_services: Callable[[web.Request], Services]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        action, handler = target_action(request.headers, HANDLERS, "Firehose endpoint")
        body = JSON.decode(await request.read())
        loopback = _mask_loopback_http(body)
        raw_records = body.get("Records") if action == "PutRecordBatch" else None
        fast = isinstance(raw_records, list) and 1 <= len(raw_records) <= MAX_BATCH_RECORDS
        if fast:
            body["Records"] = [{"Data": ""}]  # decoded below: 500 records through the generic checker cost ~10x more
        params = validate(action, body, JSON, "firehose")
        if fast:
            params["Records"] = _decode_records(raw_records)  # type: ignore[arg-type]
        if loopback is not None:
            params[loopback[0]]["EndpointConfiguration"]["Url"] = loopback[1]
        result = await handler(Call(request, get_services(request), region_of(request.headers)), params)
        return web.Response(body=JSON.encode(result), content_type=JSON.content_type)

    return handle
