"""Kinesis Data Streams channels (CreateChannel & co. through boto3's ``kinesis`` client): a data
stream delivered to S3 objects and to an Iceberg table, on the Firehose machinery."""

from __future__ import annotations

import gzip
from typing import Any

import cramjam
import pytest
from botocore.exceptions import ClientError
from firehose_support import firehose_gateway, objects  # noqa: F401 (fixture)
from helpers import GatewayProcess, wait_until
from pyiceberg.catalog.sql import SqlCatalog

ROLE = "arn:aws:iam::000000000000:role/channel"


@pytest.fixture(scope="module")
def gateway(firehose_gateway: GatewayProcess) -> GatewayProcess:
    return firehose_gateway


def on_demand(kinesis: Any, name: str) -> str:
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    return str(kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"])


def s3_destination(bucket: str, compression: str) -> dict[str, Any]:
    return {"DataFreshnessInSeconds": 0, "StorageConfiguration": {
        "BucketARN": f"arn:aws:s3:::{bucket}", "ExpectedBucketOwner": "000000000000", "CompressionType": compression}}


def test_channel_to_s3_lifecycle(gateway: GatewayProcess) -> None:
    kinesis = gateway.client("kinesis")
    arn = on_demand(kinesis, "chan-src")
    created = kinesis.create_channel(ChannelName="to-s3", ServiceExecutionRoleARN=ROLE,
                                     StreamConfigurationList=[{"StreamARN": arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}],
                                     S3DestinationConfiguration=s3_destination("chan-bucket", "GZIP"))["ChannelDescription"]
    assert created["ChannelStatus"] == "ACTIVE" and created["ChannelARN"].endswith(":channel/to-s3")
    kinesis.put_records(StreamName="chan-src", Records=[{"Data": b'{"i": %d}\n' % i, "PartitionKey": str(i)} for i in range(40)])
    wait_until(lambda: sum(gzip.decompress(b).count(b"\n") for b in objects(gateway, "chan-bucket").values()) == 40, what="40 records in S3")
    assert all(k.startswith("chan-src/") and k.endswith(".gz") for k in objects(gateway, "chan-bucket"))
    described = kinesis.describe_channel(ChannelARN=created["ChannelARN"])["ChannelDescription"]
    assert described["StreamConfigurationList"][0]["StreamARN"] == arn
    assert described["S3DestinationConfiguration"]["StorageConfiguration"]["CompressionType"] == "GZIP"
    [summary] = kinesis.list_channels(StreamFilter=[{"StreamARN": arn}])["ChannelSummaries"]
    assert summary["ChannelName"] == "to-s3" and summary["ChannelDestinationType"] == "S3"
    assert "channel:to-s3:0" not in str(gateway.client("firehose").list_delivery_streams()["DeliveryStreamNames"])
    updated = kinesis.update_channel(ChannelARN=created["ChannelARN"], S3DestinationConfiguration={"DataFreshnessInSeconds": 5})["ChannelDescription"]
    assert updated["S3DestinationConfiguration"]["DataFreshnessInSeconds"] == 5
    with pytest.raises(ClientError) as info:
        kinesis.update_channel(ChannelARN=created["ChannelARN"], S3TablesDestinationConfiguration={"DataFreshnessInSeconds": 5})
    assert info.value.response["Error"]["Code"] == "InvalidArgumentException"
    kinesis.delete_channel(ChannelARN=created["ChannelARN"])
    assert kinesis.list_channels()["ChannelSummaries"] == []
    with pytest.raises(ClientError) as info:
        kinesis.describe_channel(ChannelARN=created["ChannelARN"])
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_channel_with_zstd_objects(gateway: GatewayProcess) -> None:
    kinesis = gateway.client("kinesis")
    arn = on_demand(kinesis, "chan-zstd")
    kinesis.create_channel(ChannelName="zstd", ServiceExecutionRoleARN=ROLE, StreamConfigurationList=[{"StreamARN": arn, "RecordConfiguration": {"RecordFormatType": "STRING"}}],
                           S3DestinationConfiguration=s3_destination("zstd-bucket", "ZSTD"))
    kinesis.put_records(StreamName="chan-zstd", Records=[{"Data": b"z%d\n" % i, "PartitionKey": str(i)} for i in range(10)])

    def lines() -> list[bytes]:
        return b"".join(bytes(cramjam.zstd.decompress(b)) for b in objects(gateway, "zstd-bucket").values()).splitlines()

    # the on-demand stream's shards are delivered in turns: the records may come in several objects
    wait_until(lambda: len(lines()) >= 10, what="10 records in zstd objects")
    assert all(k.endswith(".zst") for k in objects(gateway, "zstd-bucket"))
    assert sorted(lines()) == sorted(b"z%d" % i for i in range(10))


def test_channel_rules(gateway: GatewayProcess) -> None:
    kinesis = gateway.client("kinesis")
    kinesis.create_stream(StreamName="provisioned", ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName="provisioned")["StreamDescriptionSummary"]["StreamARN"]
    streams = [{"StreamARN": arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}]
    with pytest.raises(ClientError) as info:
        kinesis.create_channel(ChannelName="nope", ServiceExecutionRoleARN=ROLE, StreamConfigurationList=streams, S3DestinationConfiguration=s3_destination("b-b-b", "NONE"))
    assert info.value.response["Error"]["Code"] == "InvalidArgumentException"  # on-demand streams only
    with pytest.raises(ClientError) as info:
        kinesis.create_channel(ChannelName="nope", ServiceExecutionRoleARN=ROLE, StreamConfigurationList=streams)
    assert info.value.response["Error"]["Code"] == "InvalidArgumentException"  # no destination


def test_channel_to_an_iceberg_table(gateway: GatewayProcess) -> None:
    kinesis = gateway.client("kinesis")
    arn = on_demand(kinesis, "chan-ice")
    kinesis.create_channel(
        ChannelName="to-tables", ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{"StreamARN": arn, "RecordConfiguration": {"RecordFormatType": "JSON"}}],
        S3TablesDestinationConfiguration={
            "DataFreshnessInSeconds": 0, "DeadLetterQueueS3Configuration": {"BucketARN": "arn:aws:s3:::dlq-bucket", "ExpectedBucketOwner": "000000000000"},
            "S3TablesConfigurationList": [{"TableBucketARN": "arn:aws:s3tables:us-east-1:000000000000:bucket/tables", "Namespace": "edge",
                                           "TableName": "events", "CompressionType": "ZSTD"}]},
    )
    kinesis.put_records(StreamName="chan-ice", Records=[{"Data": b'{"device": "d%d", "v": %d}' % (i % 2, i), "PartitionKey": str(i)} for i in range(25)])
    def catalog() -> SqlCatalog:
        return SqlCatalog("firehose", uri=f"sqlite:///{gateway.data_dir / 'iceberg' / 'catalog.sqlite3'}")

    def count() -> int:
        try:
            return int(catalog().load_table("edge.events").scan().to_arrow().num_rows)
        except Exception:  # the gateway has not made the catalog or the table yet
            return 0

    wait_until(lambda: count() == 25, what="25 rows in edge.events")
    assert catalog().load_table("edge.events").location().startswith(f"file://{gateway.data_dir / 's3' / 'tables'}")
