"""Stream and shard shapes as the Kinesis API returns them (DescribeStream, ListShards, ...)."""

from __future__ import annotations

from typing import Any

from gateway.errors import invalid_argument
from gateway.kds.protocol import Codec
from gateway.kds.sequence import external
from gateway.kds.shards import Shard, canonical_shard_id
from gateway.kds.store import Stream

def stream_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:kinesis:{region}:{account}:stream/{name}"


def shard(s: Shard) -> dict[str, Any]:
    out: dict[str, Any] = {"ShardId": s.shard_id}
    if s.parent:
        out["ParentShardId"] = s.parent
    if s.adjacent_parent:
        out["AdjacentParentShardId"] = s.adjacent_parent
    out["HashKeyRange"] = hash_range(s)
    seqs = {"StartingSequenceNumber": external(s.start_seq)}
    if s.end_seq is not None:
        seqs["EndingSequenceNumber"] = external(s.end_seq)
    out["SequenceNumberRange"] = seqs
    return out


def hash_range(s: Shard) -> dict[str, str]:
    return {"StartingHashKey": str(s.start_hash), "EndingHashKey": str(s.end_hash)}


def child_shards(stream: Stream, parent: Shard) -> list[dict[str, Any]]:
    children = []
    for s in stream.shards:
        if parent.shard_id in (s.parent, s.adjacent_parent):
            parents = [p for p in (s.parent, s.adjacent_parent) if p]
            children.append({"ShardId": s.shard_id, "ParentShards": parents, "HashKeyRange": hash_range(s)})
    return children


def stream_summary(arn: str, stream: Stream, codec: Codec) -> dict[str, Any]:
    return {
        "StreamName": stream.name,
        "StreamARN": arn,
        "StreamStatus": stream.status,
        "StreamModeDetails": {"StreamMode": stream.mode},
        "StreamCreationTimestamp": codec.ts(stream.created),
    }


def summary(arn: str, stream: Stream, codec: Codec) -> dict[str, Any]:
    """DescribeStreamSummary's shape (DescribeStream takes the members its own shape has)."""
    settings = stream.settings
    out = stream_summary(arn, stream, codec)
    out["RetentionPeriodHours"] = stream.retention_hours
    out["EnhancedMonitoring"] = [{"ShardLevelMetrics": list(settings.metrics)}]
    out["EncryptionType"] = settings.encryption_type
    if settings.encryption_type == "KMS":
        out["KeyId"] = settings.key_id
    out["OpenShardCount"] = len(stream.open_shards)
    out["ConsumerCount"] = 0
    if stream.mode == "ON_DEMAND":
        out["WarmThroughput"] = {"TargetMiBps": settings.warm_mibps, "CurrentMiBps": settings.warm_mibps}
    out["MaxRecordSizeInKiB"] = settings.max_record_kib
    out["RecordDistributionStrategy"] = settings.distribution
    return out


def filter_shards(stream: Stream, shard_filter: dict[str, Any] | None) -> list[Shard]:
    """Apply a ListShards ShardFilter (types as in the API reference)."""
    shards = sorted(stream.shards, key=lambda s: s.shard_id)
    if not shard_filter:
        return shards
    kind = shard_filter.get("Type")
    ts = shard_filter.get("Timestamp")
    if kind == "AFTER_SHARD_ID":
        after = shard_filter.get("ShardId")
        if after:
            after = canonical_shard_id(after)
        if not after:
            raise invalid_argument("ShardFilter AFTER_SHARD_ID needs a ShardId.")
        return [s for s in shards if s.shard_id > after]
    if kind == "AT_LATEST":
        return [s for s in shards if s.is_open]
    if kind == "FROM_TRIM_HORIZON":
        return shards
    if kind == "AT_TRIM_HORIZON":
        present = {s.shard_id for s in shards}
        return [s for s in shards if not (s.parent in present or s.adjacent_parent in present)]
    if kind in ("AT_TIMESTAMP", "FROM_TIMESTAMP"):
        if ts is None:
            raise invalid_argument(f"ShardFilter {kind} needs a Timestamp.")
        if kind == "AT_TIMESTAMP":
            return [s for s in shards if s.created <= ts and (s.closed is None or s.closed > ts)]
        return [s for s in shards if s.closed is None or s.closed >= ts]
    raise invalid_argument(f"Unknown ShardFilter type {kind}.")
