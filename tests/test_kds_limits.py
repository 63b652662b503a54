"""Per-shard throughput limits: the backpressure signal producers and readers see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError


def test_default_limits_partial_failure_and_put_record_400(gateway_factory: Any) -> None:
    kinesis = gateway_factory().client("kinesis")  # AWS defaults: 1 MiB/s, 1000 records/s per shard
    kinesis.create_stream(StreamName="hot", ShardCount=2)
    big = b"x" * 3000
    resp = kinesis.put_records(StreamName="hot", Records=[{"Data": big, "PartitionKey": "same"} for _ in range(500)])
    failed = [r for r in resp["Records"] if "ErrorCode" in r]
    assert 0 < resp["FailedRecordCount"] == len(failed) < 500
    assert {r["ErrorCode"] for r in failed} == {"ProvisionedThroughputExceededException"}
    ok = [r for r in resp["Records"] if "SequenceNumber" in r]
    assert len(ok) * 3004 <= 1024 * 1024 + 3004 * 50  # about one second's worth (the bucket refills while we work)
    with pytest.raises(ClientError) as exc:
        for _ in range(20):  # each call takes (nearly) a whole second's budget of the shard
            kinesis.put_record(StreamName="hot", Data=b"z" * 1_000_000, PartitionKey="same")
    assert exc.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # the other shard is not affected
    other = next(k for k in (f"k{i}" for i in range(100)) if kinesis.put_record(StreamName="hot", Data=b"y", PartitionKey=k)["ShardId"] != ok[0]["ShardId"])
    assert other


def test_read_call_limit_and_configured_limits(gateway_factory: Any, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[limits]\nshard_write_records_per_sec = 100\nshard_read_calls_per_sec = 1\n")
    kinesis = gateway_factory("--config", str(config)).client("kinesis")
    kinesis.create_stream(StreamName="slow", ShardCount=1)
    resp = kinesis.put_records(StreamName="slow", Records=[{"Data": b"r", "PartitionKey": str(i)} for i in range(300)])
    assert 190 <= resp["FailedRecordCount"] <= 200
    it = kinesis.get_shard_iterator(StreamName="slow", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    with pytest.raises(ClientError) as exc:
        for _ in range(10):
            it = kinesis.get_records(ShardIterator=it)["NextShardIterator"]
    assert exc.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
