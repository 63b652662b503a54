"""Firehose processing through a real gateway: KinesisStreamAsSource with checkpoints across
SIGKILL, dynamic partitioning with JQ (one object per partition, bad records to the error
prefix, one buffer per partition with its own interval, across SIGKILL), and Lambda-style transforms registered as Python entry points."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from firehose_support import BROKEN, SHOUT, firehose_gateway, objects, s3_config, start_gateway  # noqa: F401 (fixture)
from gateway.firehose.store import DB_FILE, BufferStore
from helpers import GatewayProcess, wait_until

NOW = {"SizeInMBs": 64, "IntervalInSeconds": 0}


@pytest.fixture(scope="module")
def gateway(firehose_gateway: GatewayProcess) -> GatewayProcess:
    return firehose_gateway


def lines(gateway: GatewayProcess, bucket: str, prefix: str = "") -> list[bytes]:
    return [line for key, body in objects(gateway, bucket).items() if key.startswith(prefix) for line in body.splitlines()]


def lambda_processor(arn: str) -> dict[str, Any]:
    return {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": arn}]}]}


def test_dynamic_partitioning_with_jq(gateway: GatewayProcess) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="parts",
        ExtendedS3DestinationConfiguration=s3_config(
            "parts", BufferingHints=NOW, Prefix="site=!{partitionKeyFromQuery:site}/dev=!{partitionKeyFromQuery:device}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/", DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={"Enabled": True, "Processors": [
                {"Type": "MetadataExtraction", "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{site: .site, device: .meta.device}"},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
                {"Type": "AppendDelimiterToRecord", "Parameters": []}]},
        ),
    )
    good = [{"site": s, "meta": {"device": d}, "n": i} for i, (s, d) in enumerate([("north", "a"), ("north", "b"), ("south", "a")] * 20)]
    bad = [b"not json at all", json.dumps({"site": "north"}).encode()]  # no device: no key
    records = [json.dumps(doc).encode() for doc in good] + bad
    firehose.put_record_batch(DeliveryStreamName="parts", Records=[{"Data": r} for r in records])
    wait_until(lambda: len(lines(gateway, "parts")) == len(records), what="every record delivered or failed")
    keys = objects(gateway, "parts")
    for site, device in (("north", "a"), ("north", "b"), ("south", "a")):
        prefix = f"site={site}/dev={device}/"
        mine = [json.loads(line) for line in lines(gateway, "parts", prefix)]
        assert len(mine) == 20 and all(d["site"] == site and d["meta"]["device"] == device for d in mine)
        assert len([k for k in keys if k.startswith(prefix)]) == 1  # one object per partition
    errors = [json.loads(line) for line in lines(gateway, "parts", "errors/partitioning-failed/")]
    assert sorted(base64.b64decode(e["rawData"]) for e in errors) == sorted(bad)
    assert {e["errorCode"] for e in errors} == {"DynamicPartitioning.MetadataExtractionFailed"}
    assert all(isinstance(e["arrivalTimestamp"], int) and e["errorMessage"] for e in errors)


def test_bad_jq_query_is_refused(gateway: GatewayProcess) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        gateway.client("firehose").create_delivery_stream(
            DeliveryStreamName="badjq",
            ExtendedS3DestinationConfiguration=s3_config(
                "x", BufferingHints=NOW, Prefix="!{partitionKeyFromQuery:k}/", ErrorOutputPrefix="e/", DynamicPartitioningConfiguration={"Enabled": True},
                ProcessingConfiguration={"Enabled": True, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{k: .a |||}"}]}]},
            ),
        )
    assert info.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_lambda_transform_ok_dropped_failed_and_partition_keys(gateway: GatewayProcess) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="shout",
        ExtendedS3DestinationConfiguration=s3_config(
            "shout", BufferingHints=NOW, Prefix="kind=!{partitionKeyFromLambda:kind}/", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            DynamicPartitioningConfiguration={"Enabled": True}, ProcessingConfiguration=lambda_processor(SHOUT),
            S3BackupMode="Enabled", S3BackupConfiguration=s3_config("shout-source", Prefix="raw/"),
        ),
    )
    docs = [{"name": "ada", "kind": "x"}, {"name": "bob", "kind": "y", "action": "drop"}, {"name": "cy", "kind": "x", "action": "fail"}, {"name": "di", "kind": "y"}]
    firehose.put_record_batch(DeliveryStreamName="shout", Records=[{"Data": json.dumps(d).encode()} for d in docs])
    wait_until(lambda: len(lines(gateway, "shout")) == 3, what="2 transformed records and 1 failure")
    assert [json.loads(x)["name"] for x in lines(gateway, "shout", "kind=x/")] == ["ADA"]
    assert [json.loads(x)["name"] for x in lines(gateway, "shout", "kind=y/")] == ["DI"]
    [failure] = [json.loads(x) for x in lines(gateway, "shout", "errors/processing-failed/")]
    assert failure["errorCode"] == "Lambda.ProcessingFailedStatus" and failure["lambdaArn"] == SHOUT
    assert json.loads(base64.b64decode(failure["rawData"]))["name"] == "cy"
    wait_until(lambda: objects(gateway, "shout-source"), what="the source record backup")
    [(key, body)] = objects(gateway, "shout-source").items()
    assert key.startswith("raw/") and body == b"".join(json.dumps(d).encode() for d in docs)  # as received, before the transform


def test_a_failing_transform_sends_the_batch_to_processing_failed(gateway: GatewayProcess) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="broken",
        ExtendedS3DestinationConfiguration=s3_config("broken", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}, ProcessingConfiguration={
            "Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": BROKEN},
                                                                             {"ParameterName": "NumberOfRetries", "ParameterValue": "1"}]}]}),
    )
    firehose.put_record(DeliveryStreamName="broken", Record={"Data": b'{"x": 1}'})
    wait_until(lambda: lines(gateway, "broken"), what="the failure document")
    [key] = objects(gateway, "broken")
    assert key.startswith("processing-failed/")
    [doc] = [json.loads(x) for x in lines(gateway, "broken")]
    assert doc["errorCode"] == "Lambda.FunctionError" and "always fails" in doc["errorMessage"] and base64.b64decode(doc["rawData"]) == b'{"x": 1}'


def test_unregistered_lambda_is_refused(gateway: GatewayProcess) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        gateway.client("firehose").create_delivery_stream(
            DeliveryStreamName="nolambda", ExtendedS3DestinationConfiguration=s3_config("x", ProcessingConfiguration=lambda_processor("arn:aws:lambda:us-east-1:000000000000:function:nope"))
        )
    assert info.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_kinesis_stream_as_source_with_checkpoints_across_sigkill(tmp_path_factory: pytest.TempPathFactory) -> None:
    gateway = start_gateway(tmp_path_factory.mktemp("firehose-source"), "", "--no-limits")
    try:
        _source_kill_restart(gateway)
    finally:
        gateway.kill()


def _source_kill_restart(gateway: GatewayProcess) -> None:
    kinesis, firehose = gateway.client("kinesis"), gateway.client("firehose")
    kinesis.create_stream(StreamName="src", ShardCount=2)
    kinesis.put_records(StreamName="src", Records=[{"Data": b"before\n", "PartitionKey": str(i)} for i in range(10)])
    arn = kinesis.describe_stream_summary(StreamName="src")["StreamDescriptionSummary"]["StreamARN"]
    firehose.create_delivery_stream(
        DeliveryStreamName="from-kds", DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": arn, "RoleARN": "arn:aws:iam::000000000000:role/r"},
        ExtendedS3DestinationConfiguration=s3_config("from-kds", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}),
    )
    d = firehose.describe_delivery_stream(DeliveryStreamName="from-kds")["DeliveryStreamDescription"]
    assert d["DeliveryStreamType"] == "KinesisStreamAsSource" and d["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"] == arn
    with pytest.raises(Exception) as info:
        firehose.put_record(DeliveryStreamName="from-kds", Record={"Data": b"x"})
    assert "InvalidArgumentException" in str(info.value)
    wait_until(lambda: (gateway.data_dir / "firehose.sqlite3").exists() and _checkpoints(gateway) >= 2, what="both shards' start positions")
    first = [b"r%03d" % i for i in range(200)]
    kinesis.put_records(StreamName="src", Records=[{"Data": r + b"\n", "PartitionKey": r.decode()} for r in first])
    wait_until(lambda: len(lines(gateway, "from-kds")) == 200, what="200 records from the data stream")
    gateway.restart()  # SIGKILL: the positions were committed with the records
    kinesis = gateway.client("kinesis")
    second = [b"s%03d" % i for i in range(100)]
    kinesis.put_records(StreamName="src", Records=[{"Data": r + b"\n", "PartitionKey": r.decode()} for r in second])
    wait_until(lambda: len(lines(gateway, "from-kds")) >= 300, what="300 records after the restart")
    assert sorted(lines(gateway, "from-kds")) == sorted(first + second)  # none before creation, none twice


def _checkpoints(gateway: GatewayProcess) -> int:
    import sqlite3

    with sqlite3.connect(gateway.data_dir / "firehose.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM checkpoints WHERE key LIKE 'from-kds/%'").fetchone()[0])


def jq_partitioned(bucket: str, hints: dict[str, int]) -> dict[str, Any]:
    """An S3 destination partitioned by the records' ``site`` (JQ), one JSON record a line."""
    return s3_config(
        bucket, BufferingHints=hints, Prefix="site=!{partitionKeyFromQuery:site}/", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
        DynamicPartitioningConfiguration={"Enabled": True},
        ProcessingConfiguration={"Enabled": True, "Processors": [
            {"Type": "MetadataExtraction", "Parameters": [{"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{site: .site}"},
                                                          {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
            {"Type": "AppendDelimiterToRecord", "Parameters": []}]},
    )


def test_each_partition_flushes_on_its_own_interval(gateway: GatewayProcess) -> None:
    """As on AWS, a partition's buffer is written IntervalInSeconds after ITS first record: a partition
    that starts later is not flushed early with the first one (nor held back by it)."""
    firehose = gateway.client("firehose")
    interval = 3
    firehose.create_delivery_stream(DeliveryStreamName="lanes", ExtendedS3DestinationConfiguration=jq_partitioned("lanes", {"SizeInMBs": 64, "IntervalInSeconds": interval}))
    firehose.put_record_batch(DeliveryStreamName="lanes", Records=[{"Data": json.dumps({"site": "early", "n": i}).encode()} for i in range(3)])
    time.sleep(1.5)  # pacing: the second partition's first record comes 1.5 s later
    late_put = time.time()
    firehose.put_record(DeliveryStreamName="lanes", Record={"Data": json.dumps({"site": "late", "n": 0}).encode()})
    root = gateway.data_dir / "s3" / "lanes"
    wait_until(lambda: {key.split("/")[0] for key in objects(gateway, "lanes")} == {"site=early", "site=late"}, timeout=15, what="both partitions")
    written = {key.split("/")[0]: (root / key).stat().st_mtime for key in objects(gateway, "lanes")}
    assert written["site=early"] < late_put + interval - 0.5, "the early partition waited for the late one"
    assert written["site=late"] >= late_put + interval - 0.05, "the late partition was flushed before its own interval"
    assert sorted(len(lines(gateway, "lanes", p)) for p in ("site=early/", "site=late/")) == [1, 3]


def test_partition_buffers_survive_sigkill(tmp_path_factory: pytest.TempPathFactory) -> None:
    gw = start_gateway(tmp_path_factory.mktemp("firehose-lanes-kill"))
    try:
        firehose = gw.client("firehose")
        firehose.create_delivery_stream(DeliveryStreamName="lk", ExtendedS3DestinationConfiguration=jq_partitioned("lk", {"SizeInMBs": 64, "IntervalInSeconds": 900}))
        sent = [json.dumps({"site": f"s{i % 3}", "n": i}).encode() for i in range(300)] + [b"not json"]
        for start in range(0, len(sent), 100):
            assert firehose.put_record_batch(DeliveryStreamName="lk", Records=[{"Data": r} for r in sent[start : start + 100]])["FailedPutCount"] == 0
        gw.restart()  # SIGKILL with three partitions (and a record without a key) buffered
        gw.client("firehose").update_destination(
            DeliveryStreamName="lk", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"BufferingHints": NOW},
        )
        wait_until(lambda: len(lines(gw, "lk")) >= len(sent), what="every record after the restart")
        for site in ("s0", "s1", "s2"):
            assert [json.loads(x)["n"] for x in lines(gw, "lk", f"site={site}/")] == list(range(int(site[1]), 300, 3))  # in order, once
        assert len(lines(gw, "lk", "errors/partitioning-failed/")) == 1
    finally:
        gw.kill()


def test_a_buffer_from_before_partition_lanes_opens(tmp_path: Path) -> None:
    """A firehose.sqlite3 written before chunks had a lane: its records are in lane "" (one buffer per stream)."""
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.executescript("""
        CREATE TABLE chunks (seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, arrival REAL NOT NULL, count INTEGER NOT NULL, sizes BLOB NOT NULL, data BLOB NOT NULL);
        CREATE TABLE batches (stream TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, PRIMARY KEY (stream, first_seq));
        INSERT INTO chunks VALUES (1, 'old', 1.0, 1, x'03000000', CAST('abc' AS BLOB));
        INSERT INTO batches VALUES ('old', 1, 1);
    """)
    conn.commit()
    conn.close()
    store = BufferStore(tmp_path, "normal")
    try:
        assert store.unfinished_batches() == [("old", "", 1, 1)]
        [row] = store.read_range("old", "", 1, 1)
        assert row.records() == [b"abc"]
    finally:
        store.close()
