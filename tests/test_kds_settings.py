"""The stream- and account-settings operations: encryption at rest, enhanced monitoring, stream
mode, record size, warm throughput, record distribution, account settings, tags by ARN.

Table-driven errors (AWS's exception and wording) plus one flow per operation that checks it
does what its documentation says, on a real gateway process (restarted once, to show settings
and sealed records survive it).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import GatewayProcess, wait_until
from kds_support import raw_call, read_shard

ACCOUNT = "000000000000"
ARN = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/"
METRICS = ["IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords", "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded", "IteratorAgeMilliseconds"]
ENUM_METRICS = ", ".join([*METRICS, "ALL"])


def v(*entries: str) -> str:
    n = len(entries)
    return f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(entries)


def at(value: str | None, path: str, constraint: str) -> str:
    return f"Value {'null' if value is None else repr(value).replace(chr(34), chr(39))} at '{path}' failed to satisfy constraint: {constraint}"


ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    ("StartStreamEncryption", {"StreamName": "set-base"}, "ValidationException", v(at(None, "encryptionType", "Member must not be null"), at(None, "keyId", "Member must not be null"))),
    ("StartStreamEncryption", {"StreamName": "set-base", "EncryptionType": "AES", "KeyId": ""}, "ValidationException", v(at("AES", "encryptionType", "Member must satisfy enum value set: [NONE, KMS]"), at("", "keyId", "Member must have length greater than or equal to 1"))),
    ("StartStreamEncryption", {"StreamName": "set-base", "EncryptionType": "KMS", "KeyId": "alias/nope"}, "KMSNotFoundException", "Key 'alias/nope' does not exist"),
    ("StartStreamEncryption", {"StreamName": "set-base", "EncryptionType": "NONE", "KeyId": "alias/aws/kinesis"}, "InvalidArgumentException", "EncryptionType NONE is not supported by StartStreamEncryption; use KMS."),
    ("StartStreamEncryption", {"StreamName": "set-nope", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}, "ResourceNotFoundException", f"Stream set-nope under account {ACCOUNT} not found."),
    ("StopStreamEncryption", {"StreamName": "set-base", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}, "InvalidArgumentException", f"Stream set-base under account {ACCOUNT} is not encrypted."),
    ("EnableEnhancedMonitoring", {"StreamName": "set-base", "ShardLevelMetrics": []}, "ValidationException", v(at("[]", "shardLevelMetrics", "Member must have length greater than or equal to 1"))),
    ("EnableEnhancedMonitoring", {"StreamName": "set-base", "ShardLevelMetrics": ["Bytes"]}, "ValidationException", v(at("[Bytes]", "shardLevelMetrics", f"Member must satisfy constraint: [Member must satisfy enum value set: [{ENUM_METRICS}]]"))),
    ("DisableEnhancedMonitoring", {"StreamName": "set-base"}, "ValidationException", v(at(None, "shardLevelMetrics", "Member must not be null"))),
    ("UpdateStreamMode", {"StreamModeDetails": {"StreamMode": "ON_DEMAND"}}, "ValidationException", v(at(None, "streamARN", "Member must not be null"))),
    ("UpdateStreamMode", {"StreamARN": ARN + "set-base", "StreamModeDetails": {"StreamMode": "PROVISIONED"}}, "InvalidArgumentException", f"Stream set-base under account {ACCOUNT} is already in PROVISIONED mode."),
    ("UpdateMaxRecordSize", {"StreamARN": ARN + "set-base", "MaxRecordSizeInKiB": 100}, "ValidationException", v(at("100", "maxRecordSizeInKiB", "Member must have value greater than or equal to 1024"))),
    ("UpdateMaxRecordSize", {"StreamARN": ARN + "set-base", "MaxRecordSizeInKiB": 20480}, "ValidationException", v(at("20480", "maxRecordSizeInKiB", "Member must have value less than or equal to 10240"))),
    ("UpdateStreamWarmThroughput", {"StreamARN": ARN + "set-base", "WarmThroughputMiBps": -1}, "ValidationException", v(at("-1", "warmThroughputMiBps", "Member must have value greater than or equal to 0"))),
    ("UpdateStreamWarmThroughput", {"StreamARN": ARN + "set-base", "WarmThroughputMiBps": 4}, "InvalidArgumentException", "Warm throughput can only be set on an ON_DEMAND stream; set-base is PROVISIONED."),
    ("UpdateStreamRecordDistributionStrategy", {"StreamARN": ARN + "set-base", "RecordDistributionStrategy": "RANDOM"}, "ValidationException", v(at("RANDOM", "recordDistributionStrategy", "Member must satisfy enum value set: [AUTO, USER_PARTITION_KEY]"))),
    ("UpdateAccountSettings", {"MinimumThroughputBillingCommitment": {"Status": "MAYBE"}}, "ValidationException", v(at("MAYBE", "minimumThroughputBillingCommitment.status", "Member must satisfy enum value set: [ENABLED, DISABLED]"))),
    ("UpdateAccountSettings", {}, "ValidationException", v(at(None, "minimumThroughputBillingCommitment", "Member must not be null"))),
    ("TagResource", {"ResourceARN": "arn:aws:s3:::bucket", "Tags": {"a": "b"}}, "ValidationException", v(at("arn:aws:s3:::bucket", "resourceARN", r"Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\d{12}:.*(stream|channel|queue)/\S+"))),
    ("TagResource", {"ResourceARN": ARN + "set-nope", "Tags": {"a": "b"}}, "ResourceNotFoundException", f"Stream set-nope under account {ACCOUNT} not found."),
    ("TagResource", {"ResourceARN": ARN + "set-base", "Tags": {f"k{i}": "v" for i in range(51)}}, "LimitExceededException", f"Failed to add tags to stream set-base under account {ACCOUNT} because a given stream cannot have more than 50 tags associated with it."),
    ("UntagResource", {"ResourceARN": ARN + "set-base", "TagKeys": []}, "ValidationException", v(at("[]", "tagKeys", "Member must have length greater than or equal to 1"))),
    ("ListTagsForResource", {"ResourceARN": ARN + "set-base/consumer/c:1"}, "ResourceNotFoundException", f"Resource {ARN}set-base/consumer/c:1 not found."),
    ("PutRecord", {"StreamName": "set-base", "Data": "AAAA"}, "ValidationException", v(at(None, "partitionKey", "Member must not be null"))),
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("kds-settings") / "data").start()
    gateway.client("kinesis").create_stream(StreamName="set-base", ShardCount=1)
    yield gateway
    gateway.kill()


def active(kinesis: Any, name: str) -> None:
    wait_until(lambda: kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", timeout=10, what=f"{name} ACTIVE")


def summary(kinesis: Any, name: str) -> dict[str, Any]:
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("action", "body", "code", "message"), ERRORS, ids=[f"{i}-{row[0]}" for i, row in enumerate(ERRORS)])
def test_errors_as_aws_words_them(gw: GatewayProcess, action: str, body: dict[str, Any], code: str, message: str) -> None:
    status, payload = raw_call(gw, action, body)
    error = json.loads(payload)
    assert (status, error["__type"], error["message"]) == (400, code, message)


def _stored_bytes(data_dir: Path) -> bytes:
    """Everything the store has on disk (main file and WAL)."""
    return b"".join(p.read_bytes() for p in data_dir.glob("kds.sqlite3*") if p.is_file())


def test_encryption_seals_records_at_rest_and_keeps_old_ones_readable(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-enc", ShardCount=1)
    kinesis.put_record(StreamName="set-enc", Data=b"written-in-the-clear", PartitionKey="p")
    kinesis.start_stream_encryption(StreamName="set-enc", EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert summary(kinesis, "set-enc")["StreamStatus"] == "UPDATING"
    with pytest.raises(ClientError) as exc:  # one change at a time, as AWS
        kinesis.start_stream_encryption(StreamName="set-enc", EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert exc.value.response["Error"]["Code"] == "ResourceInUseException"
    with pytest.raises(ClientError) as exc:  # so does resharding, until the stream is ACTIVE again
        kinesis.split_shard(StreamName="set-enc", ShardToSplit="shardId-0", NewStartingHashKey=str(2**127))
    assert exc.value.response["Error"]["Message"] == f"Stream set-enc under account {ACCOUNT} not ACTIVE, instead in state UPDATING"
    active(kinesis, "set-enc")
    described = summary(kinesis, "set-enc")
    assert (described["EncryptionType"], described["KeyId"]) == ("KMS", "alias/aws/kinesis")
    secrets = [f"secret-number-{i}".encode() for i in range(20)]
    assert kinesis.put_record(StreamName="set-enc", Data=secrets[0], PartitionKey="p")["EncryptionType"] == "KMS"
    put = kinesis.put_records(StreamName="set-enc", Records=[{"Data": d, "PartitionKey": "p"} for d in secrets[1:]])
    assert (put["FailedRecordCount"], put["EncryptionType"]) == (0, "KMS")
    stored = _stored_bytes(gw.data_dir)
    assert b"written-in-the-clear" in stored and not any(s in stored for s in secrets)
    key_file = gw.data_dir / "kms-keys.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_id = json.loads(key_file.read_text())["aliases"]["alias/aws/kinesis"]
    kinesis.stop_stream_encryption(StreamName="set-enc", EncryptionType="KMS", KeyId=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}")
    active(kinesis, "set-enc")
    kinesis.put_record(StreamName="set-enc", Data=b"clear-again", PartitionKey="p")
    gw.restart()  # settings, keys and sealed rows all survive a restart
    records, _ = read_shard(kinesis, "set-enc", "shardId-000000000000")
    assert [r["Data"] for r in records] == [b"written-in-the-clear", *secrets, b"clear-again"]
    assert [r.get("EncryptionType", "NONE") for r in records] == ["NONE"] + ["KMS"] * len(secrets) + ["NONE"]
    assert summary(kinesis, "set-enc")["EncryptionType"] == "NONE"


def test_a_sealed_row_moved_or_altered_is_refused(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-tamper", ShardCount=1)
    kinesis.start_stream_encryption(StreamName="set-tamper", EncryptionType="KMS", KeyId="alias/aws/kinesis")
    active(kinesis, "set-tamper")
    kinesis.put_record(StreamName="set-tamper", Data=b"a" * 100, PartitionKey="p")
    with sqlite3.connect(gw.data_dir / "kds.sqlite3") as db:
        (rowid, payload) = db.execute("SELECT id, payload FROM segments ORDER BY id DESC LIMIT 1").fetchone()
        db.execute("UPDATE segments SET payload=? WHERE id=?", (payload[:-1] + bytes([payload[-1] ^ 1]), rowid))
    it = kinesis.get_shard_iterator(StreamName="set-tamper", ShardId="shardId-0", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    with pytest.raises(ClientError) as exc:
        kinesis.get_records(ShardIterator=it)
    assert exc.value.response["Error"]["Code"] == "InternalFailure"


def test_own_keys_from_the_cli(gw: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["--data-dir", str(gw.data_dir), "--create-key", "alias/cameras"]) == 0  # what `edge-gateway --create-key` runs
    key_id = capsys.readouterr().out.strip()
    assert main(["--data-dir", str(gw.data_dir), "--create-key", "alias/cameras"]) == 2  # taken
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-own", ShardCount=1)
    kinesis.start_stream_encryption(StreamName="set-own", EncryptionType="KMS", KeyId=key_id)  # the running gateway sees the new key
    active(kinesis, "set-own")
    with pytest.raises(ClientError) as exc:  # not the key it is encrypted with
        kinesis.stop_stream_encryption(StreamName="set-own", EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert exc.value.response["Error"]["Code"] == "InvalidArgumentException"
    kinesis.stop_stream_encryption(StreamName="set-own", EncryptionType="KMS", KeyId="alias/cameras")


def test_enhanced_monitoring_current_and_desired(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-mon", ShardCount=1)
    on = kinesis.enable_enhanced_monitoring(StreamName="set-mon", ShardLevelMetrics=["IncomingBytes", "OutgoingRecords"])
    assert (on["CurrentShardLevelMetrics"], on["DesiredShardLevelMetrics"]) == ([], ["IncomingBytes", "OutgoingRecords"])
    all_on = kinesis.enable_enhanced_monitoring(StreamName="set-mon", ShardLevelMetrics=["ALL"])
    assert all_on["DesiredShardLevelMetrics"] == METRICS
    off = kinesis.disable_enhanced_monitoring(StreamARN=ARN + "set-mon", ShardLevelMetrics=["IncomingBytes"])
    assert off["CurrentShardLevelMetrics"] == METRICS and off["DesiredShardLevelMetrics"] == METRICS[1:]
    assert summary(kinesis, "set-mon")["EnhancedMonitoring"] == [{"ShardLevelMetrics": METRICS[1:]}]
    assert kinesis.describe_stream(StreamName="set-mon")["StreamDescription"]["EnhancedMonitoring"] == [{"ShardLevelMetrics": METRICS[1:]}]


def test_mode_warm_throughput_record_size_and_distribution(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-mode", ShardCount=1)
    arn = ARN + "set-mode"
    big = b"b" * (2 * 1024 * 1024)
    with pytest.raises(ClientError) as exc:
        kinesis.put_record(StreamName="set-mode", Data=big, PartitionKey="p")
    assert exc.value.response["Error"]["Message"] == v(at("java.nio.HeapByteBuffer[pos=0 lim=2097152 cap=2097152]", "data", "Member must have length less than or equal to 1048576"))
    kinesis.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=4096)
    active(kinesis, "set-mode")
    assert summary(kinesis, "set-mode")["MaxRecordSizeInKiB"] == 4096
    kinesis.put_record(StreamName="set-mode", Data=big, PartitionKey="p")  # through the 1 MiB/s shard limit too
    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    active(kinesis, "set-mode")
    warm = kinesis.update_stream_warm_throughput(StreamARN=arn, WarmThroughputMiBps=6)
    assert warm["WarmThroughput"] == {"TargetMiBps": 6, "CurrentMiBps": 6}
    active(kinesis, "set-mode")
    described = summary(kinesis, "set-mode")
    assert described["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"} and described["OpenShardCount"] >= 6
    assert kinesis.describe_limits()["OnDemandStreamCount"] >= 1
    kinesis.update_stream_record_distribution_strategy(StreamARN=arn, RecordDistributionStrategy="AUTO")
    assert summary(kinesis, "set-mode")["RecordDistributionStrategy"] == "AUTO"
    put = kinesis.put_records(StreamARN=arn, Records=[{"Data": b"x"} for _ in range(120)] + [{"Data": b"y", "PartitionKey": "same"} for _ in range(120)])
    assert put["FailedRecordCount"] == 0
    assert len({r["ShardId"] for r in put["Records"][120:]}) >= 4  # one key, yet spread over the shards
    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "PROVISIONED"})
    active(kinesis, "set-mode")
    assert summary(kinesis, "set-mode")["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}


def test_account_settings_commitment(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    assert kinesis.describe_account_settings()["MinimumThroughputBillingCommitment"] == {"Status": "DISABLED"}
    on = kinesis.update_account_settings(MinimumThroughputBillingCommitment={"Status": "ENABLED"})["MinimumThroughputBillingCommitment"]
    assert on["Status"] == "ENABLED" and (on["EarliestAllowedEndAt"] - on["StartedAt"]).total_seconds() == 24 * 3600
    off = kinesis.update_account_settings(MinimumThroughputBillingCommitment={"Status": "DISABLED"})["MinimumThroughputBillingCommitment"]
    assert off["Status"] == "ENABLED_UNTIL_EARLIEST_ALLOWED_END"  # a commitment runs its first 24 hours
    assert kinesis.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED_UNTIL_EARLIEST_ALLOWED_END"


def test_tags_by_resource_arn(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-tags", ShardCount=1)
    arn = ARN + "set-tags"
    kinesis.tag_resource(ResourceARN=arn, Tags={"team": "edge", "site": "porch"})
    assert kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "site", "Value": "porch"}, {"Key": "team", "Value": "edge"}]
    kinesis.untag_resource(ResourceARN=arn, TagKeys=["site"])
    assert kinesis.list_tags_for_stream(StreamName="set-tags")["Tags"] == [{"Key": "team", "Value": "edge"}]


def _scrape(gw: GatewayProcess) -> dict[tuple[str, str], float]:
    """(metric name, labels) -> value from the gateway's /metrics, for kinesis_shard_* series."""
    with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("kinesis_shard_"):
            name_labels, value = line.rsplit(" ", 1)
            name, _, labels = name_labels.partition("{")
            out[(name, labels.rstrip("}"))] = float(value)
    return out


def test_enhanced_monitoring_metrics_on_prometheus(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="set-prom", ShardCount=1)
    labels = 'shard="shardId-000000000000",stream="set-prom"'
    kinesis.put_record(StreamName="set-prom", Data=b"before", PartitionKey="k")
    assert not [k for k in _scrape(gw) if "set-prom" in k[1]]  # nothing until monitoring is on
    kinesis.enable_enhanced_monitoring(StreamName="set-prom", ShardLevelMetrics=["ALL"])
    kinesis.put_records(StreamName="set-prom", Records=[{"Data": b"x" * 99, "PartitionKey": "k"} for _ in range(10)])
    it = kinesis.get_shard_iterator(StreamName="set-prom", ShardId="shardId-0", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = kinesis.get_records(ShardIterator=it)["Records"]
    for _ in range(8):  # past the 5 reads/s limit
        try:
            kinesis.get_records(ShardIterator=it, Limit=1)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    metrics = _scrape(gw)
    assert metrics[("kinesis_shard_incoming_records_total", labels)] == 10
    assert metrics[("kinesis_shard_incoming_bytes_total", labels)] == 10 * 100
    assert metrics[("kinesis_shard_outgoing_records_total", labels)] >= len(got) == 11
    assert metrics[("kinesis_shard_outgoing_bytes_total", labels)] >= 10 * 100 + len(b"before") + 1
    assert metrics[("kinesis_shard_read_provisioned_throughput_exceeded_total", labels)] >= 1
    assert ("kinesis_shard_iterator_age_milliseconds", labels) in metrics
    assert metrics[("kinesis_shard_write_provisioned_throughput_exceeded_total", labels)] == 0
    kinesis.disable_enhanced_monitoring(StreamName="set-prom", ShardLevelMetrics=["ALL"])
    assert not [k for k in _scrape(gw) if "set-prom" in k[1]]
