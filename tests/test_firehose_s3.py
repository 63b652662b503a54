"""Firehose delivering to a real S3 server (SeaweedFS) with ``[firehose] s3_endpoint_url``."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from typing import Any

import pytest
from firehose_support import ACCESS_KEY, GATEWAY_KEY, GATEWAY_SECRET, SECRET_KEY, SeaweedS3, s3_config, start_gateway
from helpers import GatewayProcess, wait_until


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"), "lake,other").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedS3) -> Iterator[GatewayProcess]:
    toml = f's3_endpoint_url = "{seaweed.url}"\ns3_access_key_id = "{GATEWAY_KEY}"\ns3_secret_access_key = "{GATEWAY_SECRET}"\n'
    gw = start_gateway(tmp_path_factory.mktemp("firehose-s3"), toml)
    yield gw
    gw.kill()


def test_objects_land_on_the_s3_server(gateway: GatewayProcess, seaweed: SeaweedS3) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="to-s3",
        ExtendedS3DestinationConfiguration=s3_config("lake", Prefix="events/!{timestamp:yyyy-MM-dd}/", ErrorOutputPrefix="errors/",
                                                     CompressionFormat="GZIP", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}),
    )
    sent = [b'{"i": %d}\n' % i for i in range(1000)]
    for start in range(0, 1000, 250):
        assert firehose.put_record_batch(DeliveryStreamName="to-s3", Records=[{"Data": r} for r in sent[start : start + 250]])["FailedPutCount"] == 0
    wait_until(lambda: sum(gzip.decompress(b).count(b"\n") for b in seaweed.objects("lake").values()) >= 1000, what="1000 records on the S3 server")
    got = seaweed.objects("lake")
    assert sorted(b"".join(gzip.decompress(b) for b in got.values()).splitlines(keepends=True), key=sent.index) == sent
    for key in got:
        assert re.fullmatch(r"events/\d{4}-\d\d-\d\d/to-s3-1-\d{4}(-\d\d){5}-[0-9a-f-]{36}\.gz", key), key
    assert not (gateway.data_dir / "s3").exists()  # nothing went to the embedded directory


def test_a_missing_bucket_is_retried_until_it_exists(gateway: GatewayProcess, seaweed: SeaweedS3) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="late-bucket", ExtendedS3DestinationConfiguration=s3_config("late", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}))
    firehose.put_record(DeliveryStreamName="late-bucket", Record={"Data": b"kept until the bucket exists\n"})
    wait_until(lambda: "writing s3://late/" in gateway.log(), what="a failed PutObject in the log")
    seaweed.client().create_bucket(Bucket="late")
    wait_until(lambda: seaweed.objects("late"), timeout=40, what="the object once the bucket exists")
    assert list(seaweed.objects("late").values()) == [b"kept until the bucket exists\n"]


def test_iceberg_warehouse_on_the_s3_server(gateway: GatewayProcess, seaweed: SeaweedS3) -> None:
    """With [firehose] s3_endpoint_url, an Iceberg destination's warehouse is on the S3 server."""
    import json

    from pyiceberg.catalog.sql import SqlCatalog

    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="ice-s3", IcebergDestinationConfiguration={
        "RoleARN": "arn:aws:iam::000000000000:role/r", "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:000000000000:catalog",
                                                                                "WarehouseLocation": "s3://lake/warehouse"},
        "DestinationTableConfigurationList": [{"DestinationDatabaseName": "edge", "DestinationTableName": "s3rows"}],
        "TableCreationConfiguration": {"Enabled": True}, "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "S3Configuration": s3_config("lake", ErrorOutputPrefix="errors/"),
    })
    firehose.put_record_batch(DeliveryStreamName="ice-s3", Records=[{"Data": json.dumps({"n": i}).encode()} for i in range(12)])
    (gateway.data_dir / "iceberg").mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("firehose", uri=f"sqlite:///{gateway.data_dir / 'iceberg' / 'catalog.sqlite3'}", **{
        "s3.endpoint": seaweed.url, "s3.access-key-id": ACCESS_KEY, "s3.secret-access-key": SECRET_KEY, "s3.region": "us-east-1"})

    def rows() -> list[int]:
        try:
            return sorted(r["n"] for r in catalog.load_table("edge.s3rows").scan().to_arrow().to_pylist())
        except Exception:  # not created yet
            return []

    wait_until(lambda: rows() == list(range(12)), timeout=40, what="12 rows read from the S3 warehouse")
    assert catalog.load_table("edge.s3rows").location() == "s3://lake/warehouse/edge.db/s3rows"
    assert any(k.startswith("warehouse/edge.db/s3rows/data/") for k in seaweed.objects("lake"))
