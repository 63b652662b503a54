"""Firehose processing through a real gateway: KinesisStreamAsSource with checkpoints across
SIGKILL, dynamic partitioning with JQ (one object per partition, bad records to the error
prefix), and Lambda-style transforms registered as Python entry points."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from firehose_support import BROKEN, SHOUT, firehose_gateway, objects, s3_config, start_gateway  # noqa: F401 (fixture)
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
