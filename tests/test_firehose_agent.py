"""The edge agent as a Firehose producer: a source's ``delivery_stream`` option, the records
forwarder sending PutRecordBatch to a real gateway, and exactly-once across a replayed batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import metric, running
from firehose_support import objects, s3_config, start_gateway
from helpers import GatewayProcess, committed, wait_until

from edge_agent import aws
from edge_agent.config import ForwarderSection, GatewaySection, parse_config
from edge_agent.firehose_client import FirehoseClient, RecordsClient
from edge_agent.forwarder import RecordForwarder
from edge_agent.kinesis_client import KinesisClient
from edge_agent.spool import NewRecord, Spool

NOW = {"SizeInMBs": 1, "IntervalInSeconds": 0}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("firehose-agent"), "stream_requests_per_sec = 5\n")
    yield gw
    gw.kill()


def clients(url: str) -> tuple[FirehoseClient, RecordsClient]:
    gw = GatewaySection(endpoint_url=url, read_timeout_seconds=10, connect_timeout_seconds=2)
    session = aws.make_session(gw)
    firehose = FirehoseClient(session, gw)
    return firehose, RecordsClient(KinesisClient(session, gw), firehose)


def test_delivery_stream_option(tmp_path: Path) -> None:
    base = {"paths": [str(tmp_path / "*.log")]}
    config, errors = parse_config({"sources": {"logs": [{**base, "delivery_stream": "events"}]}})
    assert errors == [] and config.sources[0].stream == "firehose:events"
    for entry, fragment in [
        ({**base, "delivery_stream": "events", "stream": "s"}, "sources.logs[0].delivery_stream: give either"),
        ({**base, "delivery_stream": "bad name!"}, "sources.logs[0].delivery_stream: 'bad name!' is not a valid delivery stream name"),
    ]:
        _, errors = parse_config({"sources": {"logs": [entry]}})
        assert any(fragment in e for e in errors), errors
    _, errors = parse_config({"sources": {"camera": [{"delivery_stream": "x", "device": "synthetic"}]}})
    assert any("camera[0].delivery_stream: video goes to a video stream" in e for e in errors), errors


def test_forwarder_sends_spooled_records_with_put_record_batch(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Data stream and delivery stream records in one spool; the forwarder's request rate is above the
    stream's 5 requests/s, so some calls are refused ("Slow down.") and retried: all arrive, once."""
    gateway.client("firehose").create_delivery_stream(DeliveryStreamName="from-agent", ExtendedS3DestinationConfiguration=s3_config("from-agent", BufferingHints=NOW))
    gateway.client("kinesis").create_stream(StreamName="also-kds", ShardCount=1)
    spool = Spool(tmp_path / "spool.db")
    sent = [b"line %04d\n" % i for i in range(1500)]
    for start in range(0, len(sent), 300):
        spool.append([NewRecord("log", "firehose:from-agent", "app.log", line, "logs-0") for line in sent[start : start + 300]])
    spool.append([NewRecord("log", "also-kds", "k", b"to the data stream", "logs-1")])
    _, records = clients(gateway.url)
    forwarder = RecordForwarder(spool, records, ForwarderSection(retry_base_seconds=0.05, retry_max_seconds=0.5, linger_ms=5, batch_max_records=100), "agent-fh")
    with running(forwarder):
        wait_until(lambda: b"".join(objects(gateway, "from-agent").values()).count(b"\n") >= len(sent), what="every line delivered")
        wait_until(lambda: committed(spool, "records") == 0, what="the spool drained (every record acknowledged)")
    got = b"".join(objects(gateway, "from-agent").values()).splitlines(keepends=True)
    assert sorted(got) == sent  # each once
    assert metric("edge_agent_throttled_total", stream="firehose:from-agent") > 0  # "Slow down." was met, and retried
    kinesis = gateway.client("kinesis")
    shard = kinesis.list_shards(StreamName="also-kds")["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(StreamName="also-kds", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=it)["Records"]] == [b"to the data stream"]
    spool.close()


def test_a_replayed_batch_is_buffered_once(gateway: GatewayProcess) -> None:
    gateway.client("firehose").create_delivery_stream(DeliveryStreamName="replayed", ExtendedS3DestinationConfiguration=s3_config("replayed", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 900}))
    firehose, _ = clients(gateway.url)
    headers = {"X-Edge-Producer-Id": "agent-replay", "X-Edge-Record-Seqs": "10,11,12"}
    batch: list[dict[str, Any]] = [{"Data": b"a\n"}, {"Data": b"b\n"}, {"Data": b"c\n"}]
    first = firehose.put_record_batch(DeliveryStreamName="replayed", Records=batch, headers=headers)
    again = firehose.put_record_batch(DeliveryStreamName="replayed", Records=batch, headers=headers)
    assert [r["RecordId"] for r in again["RequestResponses"]] == [r["RecordId"] for r in first["RequestResponses"]]
    gateway.client("firehose").update_destination(DeliveryStreamName="replayed", CurrentDeliveryStreamVersionId="1",
                                                  DestinationId="destinationId-000000000001", ExtendedS3DestinationUpdate={"BufferingHints": NOW})
    wait_until(lambda: objects(gateway, "replayed"), what="the object")
    assert b"".join(objects(gateway, "replayed").values()) == b"a\nb\nc\n"
