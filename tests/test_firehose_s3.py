"""Firehose delivering to a real S3 server (SeaweedFS) with ``[firehose] s3_endpoint_url``."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from typing import Any

import pytest
from firehose_support import SeaweedS3, s3_config, start_gateway
from helpers import GatewayProcess, wait_until


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"), "lake,other").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedS3) -> Iterator[GatewayProcess]:
    toml = f's3_endpoint_url = "{seaweed.url}"\ns3_access_key_id = "AKIDEXAMPLE"\ns3_secret_access_key = "secret"\n'
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
