"""Kinesis Data Streams channels (CreateChannel & co.): a data stream's own delivery to S3 or to
Iceberg tables (S3 Tables), built on the Firehose machinery.

A channel is kept as a document in the Firehose buffer (``channels`` table) and runs as one
internal KinesisStreamAsSource delivery stream per ``StreamConfigurationList`` entry, named
``channel:<channel>:<index>`` (a colon never appears in a Firehose name, so these never collide
with user streams, and ListDeliveryStreams leaves them out). So a channel inherits what delivery
streams do: positions committed with the buffered records, batches written once, redelivery
under the same keys after a crash.

Mapping: ``S3DestinationConfiguration.StorageConfiguration`` -> an ExtendedS3 destination
(``CompressionType`` NONE/GZIP/ZSTD, ``OutputKeyTemplate`` as the Prefix, default
``<stream>/yyyy/MM/dd/HH/``), ``DataFreshnessInSeconds`` -> IntervalInSeconds (default 60),
``DeadLetterQueueS3Configuration.ErrorOutputPrefix`` -> ErrorOutputPrefix (written to the
destination bucket). ``S3TablesDestinationConfiguration`` -> an Iceberg destination, one table
per ``S3TablesConfigurationList`` entry (``Namespace``/``TableName``, created on first data), in
the warehouse ``s3://<table bucket name>``. Channels are ACTIVE at once; as on AWS they are for
on-demand streams only.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from gateway.errors import AwsError
from gateway.firehose.store import BufferStore
from gateway.firehose.streams import DeliveryStream
from gateway.wire import stream_name_from_arn

PREFIX = "channel:"
DEFAULT_FRESHNESS = 60
COMPRESSION = {"NONE": "UNCOMPRESSED", "GZIP": "GZIP", "ZSTD": "ZSTD"}


def channel_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:kinesis:{region}:{account}:channel/{name}"


def name_from_arn(arn: str) -> str:
    _, sep, rest = arn.partition(":channel/")
    if not sep or not rest:
        raise AwsError("InvalidArgumentException", f"ChannelARN {arn} is not a Kinesis channel ARN.")
    return rest.split("/", 1)[0]


def is_channel_stream(name: str) -> bool:
    return name.startswith(PREFIX)


def _internal(channel: str, index: int) -> str:
    return f"{PREFIX}{channel}:{index}"


def _destination(doc: dict[str, Any], stream_name: str) -> tuple[str, dict[str, Any]]:
    """The (kind, destination config) of the internal delivery stream for one channel stream."""
    if "S3DestinationConfiguration" in doc:
        config = doc["S3DestinationConfiguration"]
        storage = config["StorageConfiguration"]
        compression = storage.get("CompressionType", "NONE")
        if compression not in COMPRESSION:
            raise AwsError("InvalidArgumentException", f"CompressionType {compression} is not supported by this gateway (NONE, GZIP, ZSTD).")
        dlq = config.get("DeadLetterQueueS3Configuration") or {}
        return "ExtendedS3", {
            "RoleARN": doc["ServiceExecutionRoleARN"], "BucketARN": storage["BucketARN"],
            "Prefix": storage.get("OutputKeyTemplate") or f"{stream_name}/",
            "ErrorOutputPrefix": dlq.get("ErrorOutputPrefix") or f"errors/{stream_name}/",
            "CompressionFormat": COMPRESSION[compression],
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": config.get("DataFreshnessInSeconds", DEFAULT_FRESHNESS)},
        }
    config = doc["S3TablesDestinationConfiguration"]
    tables = config["S3TablesConfigurationList"]
    if not tables:
        raise AwsError("InvalidArgumentException", "S3TablesConfigurationList must name at least one table.")
    bucket = tables[0]["TableBucketARN"].rsplit("/", 1)[-1]
    dlq = config["DeadLetterQueueS3Configuration"]
    return "Iceberg", {
        "RoleARN": doc["ServiceExecutionRoleARN"],
        "CatalogConfiguration": {"WarehouseLocation": f"s3://{bucket}"},
        "DestinationTableConfigurationList": [{"DestinationDatabaseName": t["Namespace"], "DestinationTableName": t["TableName"]} for t in tables],
        "TableCreationConfiguration": {"Enabled": True},
        "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": config.get("DataFreshnessInSeconds", DEFAULT_FRESHNESS)},
        "S3Configuration": {"RoleARN": doc["ServiceExecutionRoleARN"], "BucketARN": dlq["BucketARN"],
                            "ErrorOutputPrefix": dlq.get("ErrorOutputPrefix") or f"errors/{stream_name}/!{{firehose:error-output-type}}/"},
    }


def _check(doc: dict[str, Any], data_streams: Any) -> None:
    destinations = [k for k in ("S3DestinationConfiguration", "S3TablesDestinationConfiguration") if k in doc]
    if len(destinations) != 1:
        raise AwsError("InvalidArgumentException", "Specify either S3DestinationConfiguration or S3TablesDestinationConfiguration, but not both.")
    for entry in doc["StreamConfigurationList"]:
        stream = data_streams.streams.get(stream_name_from_arn(entry["StreamARN"]))
        if stream is None:
            raise AwsError("ResourceNotFoundException", f"Stream {entry['StreamARN']} not found.")
        if stream.mode != "ON_DEMAND":
            raise AwsError("InvalidArgumentException", f"Channels are supported for on-demand streams only; {stream.name} is {stream.mode}.")


async def _apply(store: BufferStore, doc: dict[str, Any], region: str, account: str, version: int) -> None:
    """(Re)create the internal delivery streams of channel ``doc``."""
    for index, entry in enumerate(doc["StreamConfigurationList"]):
        stream_name = stream_name_from_arn(entry["StreamARN"])
        kind, destination = _destination(doc, stream_name)
        name = _internal(doc["ChannelName"], index)
        old = store.streams.get(name)
        created = old.created if old else time.time()
        internal = DeliveryStream(name, "KinesisStreamAsSource", kind, destination, {"KinesisStreamARN": entry["StreamARN"], "RoleARN": doc["ServiceExecutionRoleARN"]},
                                  version, created, time.time(), region, {}, account)
        await store.save_stream(internal)


async def create(store: BufferStore, data_streams: Any, params: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    name = params["ChannelName"]
    if name in store.channels:
        raise AwsError("ResourceInUseException", f"Channel {name} under account {account} already exists.")
    _check(params, data_streams)
    now = time.time()
    doc = {
        **{k: v for k, v in params.items() if k != "Tags"},
        "ChannelARN": channel_arn(region, account, name), "ChannelId": hashlib.sha256(f"{account}/{region}/{name}/{now}".encode()).hexdigest()[:32],
        "ChannelCreationTimestamp": now, "Tags": params.get("Tags", {}), "Region": region, "Version": 1,
        "StreamCreationTimestamps": {e["StreamARN"]: data_streams.streams[stream_name_from_arn(e["StreamARN"])].created for e in params["StreamConfigurationList"]},
    }
    doc.setdefault("LoggingConfiguration", {"CloudWatchLogs": {"Enabled": False}})
    await store.save_channel(doc)
    await _apply(store, doc, region, account, 1)
    return {"ChannelDescription": describe(doc)}


def _channel(store: BufferStore, arn: str) -> dict[str, Any]:
    doc = store.channels.get(name_from_arn(arn))
    if doc is None:
        raise AwsError("ResourceNotFoundException", f"Channel {arn} not found.")
    return doc


async def update(store: BufferStore, data_streams: Any, params: dict[str, Any], account: str) -> dict[str, Any]:
    """UpdateChannel changes DataFreshnessInSeconds (of the channel's destination type) and logging."""
    doc = dict(_channel(store, params["ChannelARN"]))
    for key in ("S3DestinationConfiguration", "S3TablesDestinationConfiguration"):
        if key in params:
            if key not in doc:
                raise AwsError("InvalidArgumentException", f"Channel {doc['ChannelName']} has no {key}: a channel's destination type cannot change.")
            doc[key] = {**doc[key], **params[key]}
    if "LoggingConfiguration" in params:
        doc["LoggingConfiguration"] = {"CloudWatchLogs": {**doc["LoggingConfiguration"].get("CloudWatchLogs", {}), **params["LoggingConfiguration"].get("CloudWatchLogs", {})}}
    _check(doc, data_streams)
    doc["Version"] = doc.get("Version", 1) + 1
    await store.save_channel(doc)
    await _apply(store, doc, doc["Region"], account, doc["Version"])
    return {"ChannelDescription": describe(doc)}


async def delete(store: BufferStore, params: dict[str, Any]) -> dict[str, Any]:
    doc = _channel(store, params["ChannelARN"])
    for index in range(len(doc["StreamConfigurationList"])):
        if _internal(doc["ChannelName"], index) in store.streams:
            await store.delete_stream(_internal(doc["ChannelName"], index))
    await store.delete_channel(doc["ChannelName"])
    return {}


def describe_one(store: BufferStore, params: dict[str, Any]) -> dict[str, Any]:
    return {"ChannelDescription": describe(_channel(store, params["ChannelARN"]))}


def list_all(store: BufferStore, params: dict[str, Any]) -> dict[str, Any]:
    wanted = {f["StreamARN"] for f in params.get("StreamFilter") or []}
    summaries = []
    for name in sorted(store.channels):
        doc = store.channels[name]
        arns = [e["StreamARN"] for e in doc["StreamConfigurationList"]]
        if wanted and not wanted & set(arns):
            continue
        summaries.append({
            "ChannelName": name, "ChannelARN": doc["ChannelARN"], "ChannelId": doc["ChannelId"], "ChannelStatus": "ACTIVE",
            "ChannelCreationTimestamp": doc["ChannelCreationTimestamp"],
            "ChannelDestinationType": "S3" if "S3DestinationConfiguration" in doc else "S3_TABLES",
            "Streams": [{"StreamARN": a, "StreamCreationTimestamp": doc["StreamCreationTimestamps"].get(a, doc["ChannelCreationTimestamp"])} for a in arns],
        })
    start = int(params["NextToken"]) if str(params.get("NextToken", "")).isdigit() else 0
    limit = params.get("MaxResults", 100)
    out: dict[str, Any] = {"ChannelSummaries": summaries[start : start + limit]}
    if start + limit < len(summaries):
        out["NextToken"] = str(start + limit)
    return out


def describe(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: doc[k] for k in ("ChannelName", "ChannelARN", "ChannelId", "ChannelCreationTimestamp", "ServiceExecutionRoleARN", "LoggingConfiguration")}
    out["ChannelStatus"] = "ACTIVE"
    out["StreamConfigurationList"] = [
        {"StreamARN": e["StreamARN"], "StreamCreationTimestamp": doc["StreamCreationTimestamps"].get(e["StreamARN"], doc["ChannelCreationTimestamp"]),
         "RecordConfiguration": e["RecordConfiguration"]}
        for e in doc["StreamConfigurationList"]
    ]
    if "S3DestinationConfiguration" in doc:
        config = doc["S3DestinationConfiguration"]
        out["S3DestinationConfiguration"] = {"DataFreshnessInSeconds": config.get("DataFreshnessInSeconds", DEFAULT_FRESHNESS),
                                             "DeadLetterQueueS3Configuration": config.get("DeadLetterQueueS3Configuration") or {"BucketARN": config["StorageConfiguration"]["BucketARN"], "ExpectedBucketOwner": config["StorageConfiguration"]["ExpectedBucketOwner"]},
                                             "StorageConfiguration": config["StorageConfiguration"]}
    else:
        config = doc["S3TablesDestinationConfiguration"]
        out["S3TablesDestinationConfiguration"] = {"DataFreshnessInSeconds": config.get("DataFreshnessInSeconds", DEFAULT_FRESHNESS), **config}
    if "EncryptionConfiguration" in doc:
        out["EncryptionConfiguration"] = doc["EncryptionConfiguration"]
    return out
