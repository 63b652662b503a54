"""AWS-exact answers, table-driven: per operation its success, each validation rule of the model
and each documented business error, with AWS's exception name and wording.

One gateway for the module, configured with its own account id (it must show in every ARN and
message). Each row is sent as raw JSON so the test sees exactly what goes over the wire.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import GatewayProcess
from kds_support import raw_call

ACCOUNT = "123456789012"
ARN = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/e-base"
B64 = base64.b64encode(b"ok").decode()
METRICS = "IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded, ReadProvisionedThroughputExceeded, IteratorAgeMilliseconds, ALL"


def v(*entries: str) -> str:
    """AWS's ValidationException message for these "Value ... at ..." entries."""
    n = len(entries)
    return f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(entries)


def at(value: str | None, path: str, constraint: str) -> str:
    shown = "null" if value is None else f"'{value}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"


NOT_NULL = "Member must not be null"
NAME_PATTERN = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
SERIAL = "SerializationException"
VALID = "ValidationException"
INVALID = "InvalidArgumentException"
NOT_FOUND = "ResourceNotFoundException"
LIMIT = "LimitExceededException"
IN_USE = "ResourceInUseException"

#: (action, body, expected __type, expected message: exact, or a regex when it starts with "re:").
ERRORS: list[tuple[str, dict[str, Any] | bytes, str, str]] = [
    # -- deserialization: wrong JSON types, bad base64, bad bodies
    ("CreateStream", {"StreamName": 5}, SERIAL, "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String"),
    ("CreateStream", {"StreamName": True}, SERIAL, "class java.lang.Boolean can not be converted to an String"),
    ("CreateStream", {"StreamName": ["a"]}, SERIAL, "Start of list found where not expected"),
    ("CreateStream", {"StreamName": {"a": 1}}, SERIAL, "Start of structure or map found where not expected."),
    ("CreateStream", {"StreamName": "x", "ShardCount": "one"}, SERIAL, "class java.lang.String can not be converted to an Integer"),
    ("CreateStream", {"StreamName": "x", "StreamModeDetails": "ON_DEMAND"}, SERIAL, "Expected null"),
    ("AddTagsToStream", {"StreamName": "e-base", "Tags": ["a"]}, SERIAL, "Start of list found where not expected"),
    ("AddTagsToStream", {"StreamName": "e-base", "Tags": "a"}, SERIAL, "Expected map or null"),
    ("RemoveTagsFromStream", {"StreamName": "e-base", "TagKeys": "a"}, SERIAL, "Expected list or null"),
    ("PutRecord", {"StreamName": "e-base", "Data": "abc", "PartitionKey": "k"}, SERIAL, "'abc' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 3"),
    ("PutRecord", {"StreamName": "e-base", "Data": "ab!=", "PartitionKey": "k"}, SERIAL, "'ab!=' can not be converted to a Blob: Invalid Base64 character: '!'"),
    ("PutRecord", {"StreamName": "e-base", "Data": 12, "PartitionKey": "k"}, SERIAL, "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to a Blob"),
    ("GetShardIterator", {"StreamName": "e-base", "ShardId": "shardId-0", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": "yesterday"}, SERIAL, "class java.lang.String can not be converted to milliseconds since epoch"),
    ("GetShardIterator", {"StreamName": "e-base", "ShardId": "shardId-0", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": True}, SERIAL, "class java.lang.Boolean can not be converted to milliseconds since epoch"),
    ("ListStreams", b"[1]", SERIAL, "Start of list found where not expected"),
    ("ListStreams", b"{nope", SERIAL, "re:Request body is not valid JSON"),
    # -- CreateStream: every violation, in the model's member order
    ("CreateStream", {}, VALID, v(at(None, "streamName", NOT_NULL))),
    ("CreateStream", {"StreamName": "bad name!", "ShardCount": 0}, VALID, v(at("bad name!", "streamName", NAME_PATTERN), at("0", "shardCount", "Member must have value greater than or equal to 1"))),
    ("CreateStream", {"StreamName": "é" * 129}, VALID, v(at("é" * 129, "streamName", NAME_PATTERN), at("é" * 129, "streamName", "Member must have length less than or equal to 128"))),
    ("CreateStream", {"StreamName": "", "ShardCount": 1}, VALID, v(at("", "streamName", NAME_PATTERN), at("", "streamName", "Member must have length greater than or equal to 1"))),
    ("CreateStream", {"StreamName": "x", "StreamModeDetails": {"StreamMode": "FAST"}}, VALID, v(at("FAST", "streamModeDetails.streamMode", "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]"))),
    ("CreateStream", {"StreamName": "x", "StreamModeDetails": {}}, VALID, v(at(None, "streamModeDetails.streamMode", NOT_NULL))),
    ("CreateStream", {"StreamName": "x", "ShardCount": 1, "Tags": {"k" * 129: "v"}}, VALID, v(at("{" + "k" * 129 + "=v}", "tags", "Map keys must satisfy constraint: [Member must have length less than or equal to 128]"))),
    ("CreateStream", {"StreamName": "x", "ShardCount": 1, "Tags": {}}, VALID, v(at("{}", "tags", "Map must have length greater than or equal to 1"))),
    ("CreateStream", {"StreamName": "e-base", "ShardCount": 1}, IN_USE, f"Stream e-base under account {ACCOUNT} already exists."),
    ("CreateStream", {"StreamName": "e-huge", "ShardCount": 100000}, LIMIT, rf"re:This request would exceed the shard limit for the account {ACCOUNT} in us-east-1\. Current shard count for the account: \d+\. Limit: 500\. Number of additional shards that would have resulted from this request: 100000\."),
    ("CreateStream", {"StreamName": "e-noshards"}, INVALID, "re:ShardCount"),
    # -- PutRecord / PutRecords
    ("PutRecord", {"StreamName": "e-base", "PartitionKey": "k"}, VALID, v(at(None, "data", NOT_NULL))),
    ("PutRecord", {"StreamName": "e-base", "Data": B64, "PartitionKey": ""}, VALID, v(at("", "partitionKey", "Member must have length greater than or equal to 1"))),
    ("PutRecord", {"StreamName": "e-base", "Data": B64, "PartitionKey": "k", "ExplicitHashKey": "x1"}, VALID, v(at("x1", "explicitHashKey", r"Member must satisfy regular expression pattern: ^(0|([1-9]\d{0,38}))$"))),
    ("PutRecord", {"StreamName": "e-base", "Data": base64.b64encode(b"x" * (1024 * 1024 + 1)).decode(), "PartitionKey": "k"}, VALID, v(at("java.nio.HeapByteBuffer[pos=0 lim=1048577 cap=1048577]", "data", "Member must have length less than or equal to 1048576"))),
    ("PutRecord", {"StreamName": "e-base", "Data": B64, "PartitionKey": "k", "ExplicitHashKey": str(2**128)}, INVALID, f"Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {2**128}"),
    ("PutRecord", {"StreamName": "e-nope", "Data": B64, "PartitionKey": "k"}, NOT_FOUND, f"Stream e-nope under account {ACCOUNT} not found."),
    ("PutRecord", {"StreamARN": "arn:aws:kinesis:us-east-1:1:stream/x", "Data": B64, "PartitionKey": "k"}, VALID, v(at("arn:aws:kinesis:us-east-1:1:stream/x", "streamARN", r"Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\d{12}:stream/\S+"))),
    ("PutRecords", {"StreamName": "e-base", "Records": []}, VALID, v(at("[]", "records", "Member must have length greater than or equal to 1"))),
    ("PutRecords", {"StreamName": "e-base"}, VALID, v(at(None, "records", NOT_NULL))),
    ("PutRecords", {"StreamName": "e-base", "Records": [{"Data": B64, "PartitionKey": "k"}, {"Data": B64, "PartitionKey": ""}]}, VALID, v(at("", "records.2.member.partitionKey", "Member must have length greater than or equal to 1"))),
    ("PutRecords", {"StreamName": "e-nope", "Records": [{"Data": B64, "PartitionKey": "k"}]}, NOT_FOUND, f"Stream e-nope under account {ACCOUNT} not found."),
    ("PutRecords", {"StreamName": "e-base", "Records": [{"Data": base64.b64encode(b"x" * 1_000_000).decode(), "PartitionKey": "k"}] * 6}, INVALID, "Records size exceeds 5 MB limit"),
    # -- GetShardIterator / GetRecords
    ("GetShardIterator", {"StreamName": "e-base"}, VALID, v(at(None, "shardId", NOT_NULL), at(None, "shardIteratorType", NOT_NULL))),
    ("GetShardIterator", {"StreamName": "e-base", "ShardId": "shardId-0", "ShardIteratorType": "NOW"}, VALID, v(at("NOW", "shardIteratorType", "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"))),
    ("GetShardIterator", {"StreamName": "e-base", "ShardId": "shardId-7", "ShardIteratorType": "LATEST"}, NOT_FOUND, f"Shard shardId-000000000007 in stream e-base under account {ACCOUNT} does not exist"),
    ("GetShardIterator", {"StreamName": "e-base", "ShardId": "0", "ShardIteratorType": "LATEST"}, NOT_FOUND, f"Shard 0 in stream e-base under account {ACCOUNT} does not exist"),
    ("GetRecords", {"ShardIterator": "x", "Limit": 0}, VALID, v(at("0", "limit", "Member must have value greater than or equal to 1"))),
    ("GetRecords", {"ShardIterator": "", "Limit": 10001}, VALID, v(at("", "shardIterator", "Member must have length greater than or equal to 1"), at("10001", "limit", "Member must have value less than or equal to 10000"))),
    # -- streams, shards, retention, tags, limits
    ("DescribeStream", {"StreamName": "e-nope"}, NOT_FOUND, f"Stream e-nope under account {ACCOUNT} not found."),
    ("DescribeStream", {"StreamName": "e-base", "Limit": 0}, VALID, v(at("0", "limit", "Member must have value greater than or equal to 1"))),
    ("DescribeStreamSummary", {"StreamName": "e-nope"}, NOT_FOUND, f"Stream e-nope under account {ACCOUNT} not found."),
    ("DeleteStream", {"StreamName": "e-nope"}, NOT_FOUND, f"Stream e-nope under account {ACCOUNT} not found."),
    ("ListStreams", {"Limit": 10001}, VALID, v(at("10001", "limit", "Member must have value less than or equal to 10000"))),
    ("ListShards", {"StreamName": "e-base", "MaxResults": 0}, VALID, v(at("0", "maxResults", "Member must have value greater than or equal to 1"))),
    ("ListShards", {"StreamName": "e-base", "ShardFilter": {"Type": "SOME"}}, VALID, v(at("SOME", "shardFilter.type", "Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]"))),
    ("SplitShard", {"StreamName": "e-base", "ShardToSplit": "shardId-0", "NewStartingHashKey": "-1"}, VALID, v(at("-1", "newStartingHashKey", r"Member must satisfy regular expression pattern: ^(0|([1-9]\d{0,38}))$"))),
    ("SplitShard", {"StreamName": "e-base", "ShardToSplit": "shardId-0", "NewStartingHashKey": "0"}, INVALID, f"NewStartingHashKey 0 used in SplitShard() on shard shardId-000000000000 in stream e-base under account {ACCOUNT} is not both greater than one plus the shard's StartingHashKey 0 and less than the shard's EndingHashKey {2**128 - 1}."),
    ("SplitShard", {"StreamName": "e-three", "ShardToSplit": "shardId-9", "NewStartingHashKey": "5"}, NOT_FOUND, f"Shard shardId-000000000009 in stream e-three under account {ACCOUNT} does not exist"),
    ("MergeShards", {"StreamName": "e-three", "ShardToMerge": "shardId-0", "AdjacentShardToMerge": "shardId-2"}, INVALID, f"Shards shardId-000000000000 and shardId-000000000002 in stream e-three under account {ACCOUNT} are not an adjacent pair of shards eligible for merging"),
    ("UpdateShardCount", {"StreamName": "e-base", "TargetShardCount": 3, "ScalingType": "UNIFORM_SCALING"}, LIMIT, "UpdateShardCount cannot scale up over double your current open shard count. Current open shard count: 1 Target shard count: 3"),
    ("UpdateShardCount", {"StreamName": "e-three", "TargetShardCount": 1, "ScalingType": "UNIFORM_SCALING"}, LIMIT, "UpdateShardCount cannot scale down below half your current open shard count. Current open shard count: 3 Target shard count: 1"),
    ("UpdateShardCount", {"StreamName": "e-base", "TargetShardCount": 0, "ScalingType": "FAST"}, VALID, v(at("0", "targetShardCount", "Member must have value greater than or equal to 1"), at("FAST", "scalingType", "Member must satisfy enum value set: [UNIFORM_SCALING]"))),
    ("IncreaseStreamRetentionPeriod", {"StreamName": "e-base", "RetentionPeriodHours": 8761}, INVALID, "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long."),
    ("DecreaseStreamRetentionPeriod", {"StreamName": "e-base", "RetentionPeriodHours": 23}, INVALID, "Minimum allowed retention period is 24 hours. Requested retention period (23 hours) is too short."),
    ("DecreaseStreamRetentionPeriod", {"StreamName": "e-base", "RetentionPeriodHours": 48}, INVALID, "Requested retention period (48 hours) for stream e-base can not be longer than existing retention period (24 hours). Use IncreaseRetentionPeriod API."),
    ("IncreaseStreamRetentionPeriod", {"StreamName": "e-base"}, VALID, v(at(None, "retentionPeriodHours", NOT_NULL))),
    ("AddTagsToStream", {"StreamName": "e-base", "Tags": {f"k{i}": "v" for i in range(51)}}, LIMIT, f"Failed to add tags to stream e-base under account {ACCOUNT} because a given stream cannot have more than 50 tags associated with it."),
    ("RemoveTagsFromStream", {"StreamName": "e-base", "TagKeys": []}, VALID, v(at("[]", "tagKeys", "Member must have length greater than or equal to 1"))),
    ("RemoveTagsFromStream", {"StreamName": "e-base", "TagKeys": ["", "ok"]}, VALID, v(at("[, ok]", "tagKeys", "Member must satisfy constraint: [Member must have length greater than or equal to 1]"))),
    ("ListTagsForStream", {"StreamName": "e-base", "Limit": 51}, VALID, v(at("51", "limit", "Member must have value less than or equal to 50"))),
    ("FlyToTheMoon", {}, "UnknownOperationException", "re:FlyToTheMoon"),
]

#: (action, body): succeeds; a ``None`` reply means AWS's empty body.
SUCCESSES: list[tuple[str, dict[str, Any], set[str] | None]] = [
    ("CreateStream", {"StreamName": "e-ok", "ShardCount": 1}, None),
    ("AddTagsToStream", {"StreamName": "e-ok", "Tags": {"team": "edge"}}, None),
    ("ListTagsForStream", {"StreamName": "e-ok"}, {"Tags", "HasMoreTags"}),
    ("RemoveTagsFromStream", {"StreamName": "e-ok", "TagKeys": ["team"]}, None),
    ("IncreaseStreamRetentionPeriod", {"StreamName": "e-ok", "RetentionPeriodHours": 48}, None),
    ("DecreaseStreamRetentionPeriod", {"StreamName": "e-ok", "RetentionPeriodHours": 24}, None),
    ("PutRecord", {"StreamName": "e-ok", "Data": B64, "PartitionKey": "k"}, {"ShardId", "SequenceNumber", "EncryptionType"}),
    ("PutRecords", {"StreamARN": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/e-ok", "Records": [{"Data": B64, "PartitionKey": "k"}]}, {"FailedRecordCount", "Records", "EncryptionType"}),
    ("GetShardIterator", {"StreamName": "e-ok", "ShardId": "shardId-0", "ShardIteratorType": "TRIM_HORIZON"}, {"ShardIterator"}),
    ("GetShardIterator", {"StreamName": "e-ok", "ShardId": "anything-000", "ShardIteratorType": "LATEST"}, {"ShardIterator"}),
    ("ListShards", {"StreamName": "e-ok"}, {"Shards"}),
    ("DescribeStream", {"StreamName": "e-ok"}, {"StreamDescription"}),
    ("DescribeStreamSummary", {"StreamName": "e-ok"}, {"StreamDescriptionSummary"}),
    ("ListStreams", {}, {"StreamNames", "HasMoreStreams", "StreamSummaries"}),
    ("DescribeLimits", {}, {"ShardLimit", "OpenShardCount", "OnDemandStreamCount", "OnDemandStreamCountLimit"}),
    ("UpdateShardCount", {"StreamName": "e-ok", "TargetShardCount": 2, "ScalingType": "UNIFORM_SCALING"}, {"StreamName", "StreamARN", "CurrentShardCount", "TargetShardCount"}),
    ("SplitShard", {"StreamName": "e-ok", "ShardToSplit": "shardId-2", "NewStartingHashKey": str(2**127 + 2**125)}, None),
    ("MergeShards", {"StreamName": "e-ok", "ShardToMerge": "shardId-3", "AdjacentShardToMerge": "shardId-4"}, None),
    ("DeleteStream", {"StreamName": "e-ok"}, None),
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("kds-errors")
    config = root / "gateway.toml"
    config.write_text(f'account_id = "{ACCOUNT}"\n')
    gateway = GatewayProcess(root / "data", "--config", str(config), "--no-limits").start()
    kinesis = gateway.client("kinesis")
    kinesis.create_stream(StreamName="e-base", ShardCount=1)
    kinesis.create_stream(StreamName="e-three", ShardCount=3)
    yield gateway
    gateway.kill()


@pytest.mark.parametrize(("action", "body", "code", "message"), ERRORS, ids=[f"{i}-{row[0]}" for i, row in enumerate(ERRORS)])
def test_errors_as_aws_words_them(gw: GatewayProcess, action: str, body: dict[str, Any] | bytes, code: str, message: str) -> None:
    status, payload = raw_call(gw, action, body)
    error = json.loads(payload)
    assert (status, error["__type"]) == (400, code), error
    if message.startswith("re:"):
        assert re.search(message[3:], error["message"]), error["message"]
    else:
        assert error["message"] == message


def test_successes_in_order(gw: GatewayProcess) -> None:
    """Each operation works; those without an output shape answer with an empty body."""
    for action, body, keys in SUCCESSES:
        status, payload = raw_call(gw, action, body)
        assert status == 200, (action, payload)
        if keys is None:
            assert payload == b"", action
        else:
            assert keys <= set(json.loads(payload)), (action, payload)


def test_arns_carry_the_configured_account(gw: GatewayProcess) -> None:
    summary = gw.client("kinesis").describe_stream_summary(StreamName="e-base")["StreamDescriptionSummary"]
    assert summary["StreamARN"] == ARN
    video = gw.client("kinesisvideo").create_stream(StreamName="e-video", DataRetentionInHours=1)["StreamARN"]
    assert video.startswith(f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:stream/e-video/")


def test_every_constraint_is_listed(gw: GatewayProcess) -> None:
    """Three broken members, three entries, in the model's member order (not the body's)."""
    body = {"ShardCount": 0, "StreamModeDetails": {"StreamMode": "X"}, "StreamName": "a b"}
    _, payload = raw_call(gw, "CreateStream", body)
    message = json.loads(payload)["message"]
    assert message.startswith("3 validation errors detected: ")
    paths = re.findall(r"at '([^']+)'", message)
    assert paths == ["streamName", "shardCount", "streamModeDetails.streamMode"]


def test_loose_shard_ids(gw: GatewayProcess) -> None:
    """AWS reads any ``<prefix>-<number>`` as shard <number>, in every member that names a shard."""
    kinesis = gw.client("kinesis")
    after = kinesis.list_shards(StreamName="e-three", ExclusiveStartShardId="shardId-0")["Shards"]
    assert [s["ShardId"] for s in after] == ["shardId-000000000001", "shardId-000000000002"]
    described = kinesis.describe_stream(StreamName="e-three", ExclusiveStartShardId="x-1")["StreamDescription"]["Shards"]
    assert [s["ShardId"] for s in described] == ["shardId-000000000002"]
    it = kinesis.get_shard_iterator(StreamName="e-three", ShardId="whatever-2", ShardIteratorType="LATEST")["ShardIterator"]
    assert kinesis.get_records(ShardIterator=it)["Records"] == []
