"""Control plane of the Kinesis Data Streams API through boto3 against a real gateway."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import GatewayProcess

from kds_support import MAX_HASH, kds_gateway  # noqa: F401  (fixture)


@pytest.fixture
def kinesis(kds_gateway: GatewayProcess) -> Any:
    return kds_gateway.client("kinesis")


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_create_describe_waiter_and_hash_ranges(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="orders", ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(StreamName="orders", WaiterConfig={"Delay": 1, "MaxAttempts": 3})
    desc = kinesis.describe_stream(StreamName="orders")["StreamDescription"]
    assert desc["StreamStatus"] == "ACTIVE"
    assert desc["StreamARN"] == "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
    assert desc["RetentionPeriodHours"] == 24 and desc["HasMoreShards"] is False
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in desc["Shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == MAX_HASH
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    assert [s["ShardId"] for s in desc["Shards"]] == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    summary = kinesis.describe_stream_summary(StreamARN=desc["StreamARN"])["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 3 and summary["StreamName"] == "orders"
    with pytest.raises(ClientError) as exc:
        kinesis.create_stream(StreamName="orders", ShardCount=1)
    assert error_code(exc) == "ResourceInUseException"


def test_on_demand_list_paging_and_delete(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="on-demand", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    summary = kinesis.describe_stream_summary(StreamName="on-demand")["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"]["StreamMode"] == "ON_DEMAND" and summary["OpenShardCount"] == 4
    for i in range(3):
        kinesis.create_stream(StreamName=f"page-{i}", ShardCount=1)
    first = kinesis.list_streams(Limit=2)
    assert first["HasMoreStreams"] is True and len(first["StreamNames"]) == 2
    rest = kinesis.list_streams(NextToken=first["NextToken"], Limit=100)
    names = first["StreamNames"] + rest["StreamNames"]
    assert names == sorted(names) and {"on-demand", "page-0", "page-1", "page-2"} <= set(names)
    assert rest["StreamSummaries"][0]["StreamStatus"] == "ACTIVE"
    limits = kinesis.describe_limits()
    assert limits["OnDemandStreamCount"] >= 1 and limits["OpenShardCount"] >= 7
    kinesis.delete_stream(StreamName="page-1")
    kinesis.get_waiter("stream_not_exists").wait(StreamName="page-1", WaiterConfig={"Delay": 1, "MaxAttempts": 3})
    assert "page-1" not in kinesis.list_streams()["StreamNames"]
    with pytest.raises(ClientError) as exc:
        kinesis.delete_stream(StreamName="page-1")
    assert error_code(exc) == "ResourceNotFoundException"


def test_list_shards_paging_and_filters(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="many", ShardCount=5)
    page = kinesis.list_shards(StreamName="many", MaxResults=2)
    assert len(page["Shards"]) == 2
    ids = [s["ShardId"] for s in page["Shards"]]
    while "NextToken" in page:
        page = kinesis.list_shards(NextToken=page["NextToken"], MaxResults=2)
        ids += [s["ShardId"] for s in page["Shards"]]
    assert ids == [f"shardId-{i:012d}" for i in range(5)]
    with pytest.raises(ClientError) as exc:
        kinesis.list_shards(StreamName="many", NextToken="abc")
    assert error_code(exc) == "InvalidArgumentException"
    after = kinesis.list_shards(StreamName="many", ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000002"})["Shards"]
    assert [s["ShardId"] for s in after] == ["shardId-000000000003", "shardId-000000000004"]
    kinesis.merge_shards(StreamName="many", ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001")
    latest = kinesis.list_shards(StreamName="many", ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert len(latest) == 4 and "shardId-000000000000" not in [s["ShardId"] for s in latest]
    horizon = kinesis.list_shards(StreamName="many", ShardFilter={"Type": "AT_TRIM_HORIZON"})["Shards"]
    assert [s["ShardId"] for s in horizon] == [f"shardId-{i:012d}" for i in range(5)]
    everything = kinesis.list_shards(StreamName="many", ShardFilter={"Type": "FROM_TRIM_HORIZON"})["Shards"]
    assert len(everything) == 6


def test_tags_and_retention(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="tagged", ShardCount=1, Tags={"team": "edge"})
    kinesis.add_tags_to_stream(StreamName="tagged", Tags={"env": "test", "site": "lab"})
    tags = kinesis.list_tags_for_stream(StreamName="tagged")
    assert tags["Tags"] == [{"Key": "env", "Value": "test"}, {"Key": "site", "Value": "lab"}, {"Key": "team", "Value": "edge"}]
    page = kinesis.list_tags_for_stream(StreamName="tagged", Limit=1, ExclusiveStartTagKey="env")
    assert page["Tags"] == [{"Key": "site", "Value": "lab"}] and page["HasMoreTags"] is True
    kinesis.remove_tags_from_stream(StreamName="tagged", TagKeys=["site"])
    assert [t["Key"] for t in kinesis.list_tags_for_stream(StreamName="tagged")["Tags"]] == ["env", "team"]
    kinesis.increase_stream_retention_period(StreamName="tagged", RetentionPeriodHours=8760)
    assert kinesis.describe_stream_summary(StreamName="tagged")["StreamDescriptionSummary"]["RetentionPeriodHours"] == 8760
    for call, hours in ((kinesis.increase_stream_retention_period, 8761), (kinesis.increase_stream_retention_period, 48), (kinesis.decrease_stream_retention_period, 10)):
        with pytest.raises(ClientError) as exc:
            call(StreamName="tagged", RetentionPeriodHours=hours)
        assert error_code(exc) == "InvalidArgumentException"
    kinesis.decrease_stream_retention_period(StreamName="tagged", RetentionPeriodHours=24)
    assert kinesis.describe_stream(StreamName="tagged")["StreamDescription"]["RetentionPeriodHours"] == 24


def test_validation_errors_from_the_model(kinesis: Any) -> None:
    with pytest.raises(ClientError) as exc:
        kinesis.describe_stream(StreamName="no-such-stream")
    assert error_code(exc) == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    kinesis.create_stream(StreamName="small", ShardCount=1)
    with pytest.raises(ClientError) as exc:
        kinesis.split_shard(StreamName="small", ShardToSplit="shardId-000000000000", NewStartingHashKey="0")
    assert error_code(exc) == "InvalidArgumentException"
    with pytest.raises(ClientError) as exc:
        kinesis.update_shard_count(StreamName="small", TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    assert error_code(exc) == "LimitExceededException"
    with pytest.raises(ClientError) as exc:
        kinesis.create_stream(StreamName="x" * 129, ShardCount=1)
    assert error_code(exc) == "ValidationException"
    kinesis.create_stream(StreamName="three", ShardCount=3)
    with pytest.raises(ClientError) as exc:  # not neighbours
        kinesis.merge_shards(StreamName="three", ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000002")
    assert error_code(exc) == "InvalidArgumentException"
    kinesis.merge_shards(StreamName="three", ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001")
    with pytest.raises(ClientError) as exc:  # already closed
        kinesis.split_shard(StreamName="three", ShardToSplit="shardId-000000000000", NewStartingHashKey="5")
    assert error_code(exc) == "InvalidArgumentException"
    with pytest.raises(ClientError) as exc:
        kinesis.merge_shards(StreamName="three", ShardToMerge="shardId-000000000003", AdjacentShardToMerge="shardId-000000000042")
    assert error_code(exc) == "ResourceNotFoundException"
