"""Firehose delivery to the embedded S3 directory: buffering hints, object names and prefixes,
compression formats, and no loss across SIGKILL (while buffering and while a write keeps failing)."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cramjam
import pytest
from firehose_support import gunzip_all, objects, s3_config, start_gateway
from helpers import GatewayProcess, wait_until

NOW = {"SizeInMBs": 1, "IntervalInSeconds": 0}
NAME = re.compile(r"(?P<stream>[\w.-]+)-(?P<version>\d+)-(?P<time>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}(?P<ext>\.[\w.]+)?$")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("firehose-delivery"), "gzip_level = 1\n")
    yield gw
    gw.kill()


@pytest.fixture(scope="module")
def firehose(gateway: GatewayProcess) -> Any:
    return gateway.client("firehose")


def test_gzip_default_prefix_and_object_name(firehose: Any, gateway: GatewayProcess) -> None:
    firehose.create_delivery_stream(DeliveryStreamName="gz", ExtendedS3DestinationConfiguration=s3_config("gz", BufferingHints=NOW, CompressionFormat="GZIP"))
    records = [b'{"n": %d}\n' % i for i in range(300)]
    before = time.time()
    for chunk in (records[:100], records[100:]):
        assert firehose.put_record_batch(DeliveryStreamName="gz", Records=[{"Data": r} for r in chunk])["FailedPutCount"] == 0
    wait_until(lambda: gunzip_all(objects(gateway, "gz")).count(b"\n") == 300, what="300 records in gz")
    bodies = [gzip.decompress(b) for b in objects(gateway, "gz").values()]
    assert sorted(b"".join(bodies).splitlines(keepends=True), key=records.index) == records  # each once
    for body in bodies:  # an object holds consecutive records, concatenated as sent
        lines = body.splitlines(keepends=True)
        assert lines == records[records.index(lines[0]) : records.index(lines[0]) + len(lines)]
    for key in objects(gateway, "gz"):
        hour, name = key.rsplit("/", 1)
        match = NAME.fullmatch(name)
        assert match and match["stream"] == "gz" and match["version"] == "1" and match["ext"] == ".gz"
        stamp = datetime.strptime(match["time"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=timezone.utc)
        assert before - 1 <= stamp.timestamp() <= time.time()
        assert hour == stamp.strftime("%Y/%m/%d/%H")  # default prefix: the oldest record's arrival hour, UTC


def test_custom_prefix_time_zone_and_extension(firehose: Any, gateway: GatewayProcess) -> None:
    firehose.create_delivery_stream(
        DeliveryStreamName="custom",
        ExtendedS3DestinationConfiguration=s3_config(
            "custom", BufferingHints=NOW, Prefix="data/year=!{timestamp:yyyy}/hour=!{timestamp:HH}/!{firehose:random-string}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/", CustomTimeZone="Asia/Tokyo", FileExtension=".jsonl",
        ),
    )
    firehose.put_record(DeliveryStreamName="custom", Record={"Data": b"one\n"})
    wait_until(lambda: objects(gateway, "custom"), what="an object in custom")
    [key] = objects(gateway, "custom")
    now_tokyo = datetime.now(ZoneInfo("Asia/Tokyo"))
    match = re.fullmatch(r"data/year=(\d{4})/hour=(\d\d)/([A-Za-z0-9]{11})/(.+)", key)
    assert match, key
    assert int(match[1]) == now_tokyo.year and int(match[2]) in (now_tokyo.hour, (now_tokyo.hour - 1) % 24)
    assert NAME.fullmatch(match[4]) and match[4].endswith(".jsonl")


def test_metrics(gateway: GatewayProcess, firehose: Any) -> None:
    import urllib.request

    firehose.create_delivery_stream(DeliveryStreamName="metered", ExtendedS3DestinationConfiguration=s3_config("metered", BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 900}))
    firehose.put_record_batch(DeliveryStreamName="metered", Records=[{"Data": b"0123456789"}] * 3)
    text = urllib.request.urlopen(gateway.url + "/metrics", timeout=10).read().decode()
    assert 'gateway_firehose_buffered_records{delivery_stream="metered"} 3.0' in text
    assert 'gateway_firehose_buffered_bytes{delivery_stream="metered"} 30.0' in text
    firehose.create_delivery_stream(DeliveryStreamName="metered-now", ExtendedS3DestinationConfiguration=s3_config("metered-now", BufferingHints=NOW))
    firehose.put_record_batch(DeliveryStreamName="metered-now", Records=[{"Data": b"x"}] * 4)
    wait_until(lambda: objects(gateway, "metered-now"), what="the metered object")

    def delivered() -> float:
        text = urllib.request.urlopen(gateway.url + "/metrics", timeout=10).read().decode()
        return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith("gateway_firehose_records_delivered_total "))

    wait_until(lambda: delivered() >= 4, what="the delivered records counted")


def test_prefix_without_timestamp_gets_the_default_hour(firehose: Any, gateway: GatewayProcess) -> None:
    firehose.create_delivery_stream(DeliveryStreamName="plain", ExtendedS3DestinationConfiguration=s3_config("plain", BufferingHints=NOW, Prefix="logs/"))
    firehose.put_record(DeliveryStreamName="plain", Record={"Data": b"x"})
    wait_until(lambda: objects(gateway, "plain"), what="an object in plain")
    [key] = objects(gateway, "plain")
    assert re.fullmatch(r"logs/\d{4}/\d\d/\d\d/\d\d/plain-1-.+", key), key


def test_size_hint_flushes_before_the_interval(firehose: Any, gateway: GatewayProcess) -> None:
    """900 s interval, 1 MiB size: the object appears once 1 MiB (exactly) is buffered, holding all of it."""
    firehose.create_delivery_stream(DeliveryStreamName="sized", ExtendedS3DestinationConfiguration=s3_config("sized", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 900}))
    first = [{"Data": bytes([65 + i]) * 100_000} for i in range(6)]
    firehose.put_record_batch(DeliveryStreamName="sized", Records=first)
    assert objects(gateway, "sized") == {}
    firehose.put_record_batch(DeliveryStreamName="sized", Records=[{"Data": b"Z" * 448_576}])
    wait_until(lambda: objects(gateway, "sized"), what="a size-triggered object")
    [body] = objects(gateway, "sized").values()
    assert body == b"".join(r["Data"] for r in first) + b"Z" * 448_576


def _hadoop_snappy(data: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(data):
        raw, size = struct.unpack_from(">II", data, pos)
        chunk = bytes(cramjam.snappy.decompress_raw(data[pos + 8 : pos + 8 + size]))
        assert len(chunk) == raw
        out.append(chunk)
        pos += 8 + size
    return b"".join(out)


@pytest.mark.parametrize(
    "fmt,ext,unpack",
    [
        ("UNCOMPRESSED", "", lambda b: b),
        ("ZIP", ".zip", lambda b: b"".join(zipfile.ZipFile(io.BytesIO(b)).read(n) for n in zipfile.ZipFile(io.BytesIO(b)).namelist())),
        ("Snappy", ".snappy", lambda b: bytes(cramjam.snappy.decompress(b))),
        ("HADOOP_SNAPPY", ".snappy", _hadoop_snappy),
        ("GZIP", ".gz", gzip.decompress),
    ],
)
def test_compression_formats(firehose: Any, gateway: GatewayProcess, fmt: str, ext: str, unpack: Any) -> None:
    name = f"fmt-{fmt.lower().replace('_', '-')}"
    firehose.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(name, BufferingHints=NOW, CompressionFormat=fmt))
    payload = b"".join(b'{"sensor": "t%d", "value": %d}\n' % (i % 7, i) for i in range(20_000))  # ~600 KB, several snappy blocks
    firehose.put_record(DeliveryStreamName=name, Record={"Data": payload})
    wait_until(lambda: objects(gateway, name), what=f"a {fmt} object")
    [(key, body)] = objects(gateway, name).items()
    assert unpack(body) == payload
    match = NAME.fullmatch(key.rsplit("/", 1)[1])
    assert match and (match["ext"] or "") == ext
    if fmt != "UNCOMPRESSED":
        assert len(body) < len(payload) // 3  # actually compressed


def _counters(gateway: GatewayProcess) -> dict[str, int]:
    with sqlite3.connect(gateway.data_dir / "firehose.sqlite3") as conn:
        return dict(conn.execute("SELECT name, value FROM counters").fetchall())


def test_sigkill_while_buffering_loses_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    gw = start_gateway(tmp_path_factory.mktemp("firehose-kill"))
    try:
        firehose = gw.client("firehose")
        firehose.create_delivery_stream(DeliveryStreamName="kill", ExtendedS3DestinationConfiguration=s3_config("kill", BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 900}))
        sent = [b"record-%05d\n" % i for i in range(2000)]
        for start in range(0, len(sent), 500):
            assert firehose.put_record_batch(DeliveryStreamName="kill", Records=[{"Data": r} for r in sent[start : start + 500]])["FailedPutCount"] == 0
        gw.restart()  # SIGKILL, then start on the same data dir
        firehose = gw.client("firehose")
        firehose.update_destination(
            DeliveryStreamName="kill", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"BufferingHints": NOW},
        )
        wait_until(lambda: b"".join(b for _, b in sorted(objects(gw, "kill").items())).count(b"\n") >= 2000, what="2000 records after the restart")
        got = b"".join(b for _, b in sorted(objects(gw, "kill").items()))
        assert sorted(got.splitlines(keepends=True)) == sent  # every acknowledged record, exactly once
    finally:
        gw.kill()


def test_sigkill_while_a_write_fails_redelivers_under_the_same_keys(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The bucket's directory is blocked by a file: the batch stays in flight, retried. Kill, unblock,
    restart: the batch is written once, and counted as a redelivery."""
    gw = start_gateway(tmp_path_factory.mktemp("firehose-inflight"))
    try:
        firehose = gw.client("firehose")
        (gw.data_dir / "s3").mkdir(parents=True)
        (gw.data_dir / "s3" / "blocked").write_text("not a directory")
        firehose.create_delivery_stream(DeliveryStreamName="inflight", ExtendedS3DestinationConfiguration=s3_config("blocked", BufferingHints=NOW))
        sent = [b"r%04d\n" % i for i in range(100)]
        firehose.put_record_batch(DeliveryStreamName="inflight", Records=[{"Data": r} for r in sent])
        wait_until(lambda: "writing s3://blocked/" in gw.log(), what="a failed write in the log")
        gw.kill()
        (gw.data_dir / "s3" / "blocked").unlink()
        gw.start()
        wait_until(lambda: objects(gw, "blocked"), what="the batch after the restart")
        [body] = objects(gw, "blocked").values()
        assert body == b"".join(sent)
        wait_until(lambda: _counters(gw).get("redelivered_batches") == 1, what="the redelivery counted")
    finally:
        gw.kill()


def test_aws_cli(gateway: GatewayProcess, tmp_path: Path) -> None:
    """``aws firehose`` unchanged: create, put, describe (CLI v1 sends ``--record Data`` as text)."""
    aws = Path(sys.executable).parent / "aws"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))

    def cli(*args: str) -> Any:
        out = subprocess.run([str(aws), "firehose", *args, "--endpoint-url", gateway.url, "--output", "json"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    destination = json.dumps(s3_config("cli", BufferingHints=NOW))
    cli("create-delivery-stream", "--delivery-stream-name", "cli", "--extended-s3-destination-configuration", destination)
    assert cli("put-record", "--delivery-stream-name", "cli", "--record", "Data=hello from the cli")["RecordId"]
    assert cli("describe-delivery-stream", "--delivery-stream-name", "cli")["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    wait_until(lambda: objects(gateway, "cli"), what="the CLI's record delivered")
    assert list(objects(gateway, "cli").values()) == [b"hello from the cli"]
