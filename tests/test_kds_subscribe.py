"""SubscribeToShard through boto3 (and raw CBOR): records pushed as they commit, continuation
numbers, every starting position, ChildShards across a split, one call per second per consumer
and shard (here one per 0.5 s), takeover after 5 s (here 1 s), exception frames, the end of a
subscription, and each consumer's own read budget."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import queue
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from helpers import ROOT, GatewayProcess, wait_until

SUBSCRIPTION_SECONDS = 2.5
HEARTBEAT_SECONDS = 1.0
TAKEOVER_SECONDS = 1.0
SUBSCRIBE_INTERVAL = 0.5
READ_BYTES_PER_SEC = 100_000
END = object()
NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}
NODE = "/usr/bin/node"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    toml = (
        "[consumers]\nactivation_seconds = 0.2\n"
        f"subscription_seconds = {SUBSCRIPTION_SECONDS}\nheartbeat_seconds = {HEARTBEAT_SECONDS}\ntakeover_seconds = {TAKEOVER_SECONDS}\n"
        f"subscribe_interval_seconds = {SUBSCRIBE_INTERVAL}\n"
        # a small read budget (so throttling shows quickly), and room to write and GetRecords freely
        f"[limits]\nshard_read_bytes_per_sec = {READ_BYTES_PER_SEC}\nshard_write_bytes_per_sec = 16777216\n"
        "shard_write_records_per_sec = 100000\nshard_read_calls_per_sec = 1000\n"
    )
    gw = GatewayProcess.configured(tmp_path_factory.mktemp("subscribe"), toml).start()
    yield gw
    gw.kill()


@pytest.fixture
def kinesis(gateway: GatewayProcess) -> Any:
    return gateway.client("kinesis", retries=NO_RETRIES)  # botocore retries LimitExceededException itself


def setup_stream(kinesis: Any, name: str, shards: int = 1, consumers: int = 1) -> tuple[str, list[str]]:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    arns = [kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=f"c{i}")["Consumer"]["ConsumerARN"] for i in range(consumers)]
    for consumer in arns:
        wait_until(lambda: kinesis.describe_stream_consumer(ConsumerARN=consumer)["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE", timeout=5, what="ACTIVE")
    return arn, arns


class Reader:
    """Iterates one subscription on a thread; events (with their arrival time) go to a queue."""

    def __init__(self, kinesis: Any, consumer: str, shard: str, **position: Any) -> None:
        response = kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition=position)
        self.stream = response["EventStream"]
        self.events: queue.Queue[Any] = queue.Queue()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream:
                self.events.put((time.monotonic(), event["SubscribeToShardEvent"]))
        except EventStreamError as exc:
            self.events.put((time.monotonic(), exc))
        except Exception:
            if not self.closed:  # closing the stream under the iterating thread ends it with an error
                raise
        self.events.put((time.monotonic(), END))

    def close(self) -> None:
        """Hang up (on a thread of its own: closing blocks until the reading thread's recv returns)."""
        self.closed = True
        threading.Thread(target=self.stream.close, daemon=True).start()

    def next(self, timeout: float = 5.0) -> Any:
        return self.events.get(timeout=timeout)[1]

    def until_records(self, count: int, timeout: float = 5.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Events until ``count`` records arrived: (records, last event)."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            event = self.next(max(0.01, deadline - time.monotonic()))
            assert isinstance(event, dict), event
            records += event["Records"]
        return records, event

    def rest(self, timeout: float = 10.0) -> list[Any]:
        out = []
        while True:
            item = self.next(timeout)
            if item is END:
                return out
            out.append(item)


def put(kinesis: Any, stream: str, values: list[bytes], key: str = "k") -> list[str]:
    resp = kinesis.put_records(StreamName=stream, Records=[{"Data": v, "PartitionKey": key} for v in values])
    assert resp["FailedRecordCount"] == 0
    return [r["SequenceNumber"] for r in resp["Records"]]


def test_records_are_pushed_then_child_shards_end_the_shard(kinesis: Any) -> None:
    _, [consumer] = setup_stream(kinesis, "push")
    before = put(kinesis, "push", [b"a", b"b"])
    reader = Reader(kinesis, consumer, "shardId-000000000000", Type="TRIM_HORIZON")
    records, first = reader.until_records(2)
    assert [r["Data"] for r in records] == [b"a", b"b"] and [r["SequenceNumber"] for r in records] == before
    assert first["ContinuationSequenceNumber"] == before[-1] and first["MillisBehindLatest"] == 0
    assert records[0]["PartitionKey"] == "k" and isinstance(records[0]["ApproximateArrivalTimestamp"], dt.datetime)

    latencies = []
    for i in range(5):  # each record arrives on its own, long before a heartbeat would bring it
        sent = time.monotonic()
        [seq] = put(kinesis, "push", [f"live-{i}".encode()])
        got, event = reader.until_records(1)
        latencies.append(time.monotonic() - sent)
        assert got[0]["Data"] == f"live-{i}".encode() and event["ContinuationSequenceNumber"] == seq
    assert statistics.median(latencies) < HEARTBEAT_SECONDS / 3, latencies

    kinesis.split_shard(StreamName="push", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    last = reader.rest()
    assert last and all(isinstance(e, dict) for e in last)
    assert [e["Records"] for e in last] == [[]] * len(last)
    final = last[-1]
    assert "ContinuationSequenceNumber" not in final  # SHARD_END, as KCL reads it
    assert sorted(c["ShardId"] for c in final["ChildShards"]) == ["shardId-000000000001", "shardId-000000000002"]
    assert all(c["ParentShards"] == ["shardId-000000000000"] for c in final["ChildShards"])

    # the children carry what is written after the split
    low = put(kinesis, "push", [b"child"], key="k")  # routed by the MD5 of "k"
    child = kinesis.put_record(StreamName="push", Data=b"child", PartitionKey="k")["ShardId"]
    child_reader = Reader(kinesis, consumer, child, Type="TRIM_HORIZON")
    got, _ = child_reader.until_records(2)
    assert [r["SequenceNumber"] for r in got][0] == low[0]


def test_every_starting_position_and_continuation(kinesis: Any) -> None:
    _, [consumer] = setup_stream(kinesis, "positions")
    shard = "shardId-000000000000"
    # LATEST on an empty shard: an event at once with no records but a continuation number ...
    reader = Reader(kinesis, consumer, shard, Type="LATEST")
    empty = reader.next()
    assert empty["Records"] == [] and "ContinuationSequenceNumber" in empty
    seqs = put(kinesis, "positions", [b"0", b"1", b"2", b"3"])
    got, _ = reader.until_records(4)
    assert [r["SequenceNumber"] for r in got] == seqs
    reader.close()
    # ... and resubscribing after that continuation number misses nothing
    time.sleep(TAKEOVER_SECONDS)  # the same consumer and shard: wait out the takeover window
    again = Reader(kinesis, consumer, shard, Type="AFTER_SEQUENCE_NUMBER", SequenceNumber=empty["ContinuationSequenceNumber"])
    assert [r["Data"] for r in again.until_records(4)[0]] == [b"0", b"1", b"2", b"3"]
    again.close()

    _, consumers = setup_stream(kinesis, "positions-2", consumers=4)
    seqs = put(kinesis, "positions-2", [b"0", b"1", b"2"])
    mark = time.time()
    time.sleep(0.05)
    seqs += put(kinesis, "positions-2", [b"3", b"4"])
    cases = [
        ({"Type": "TRIM_HORIZON"}, [b"0", b"1", b"2", b"3", b"4"]),
        ({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seqs[1]}, [b"1", b"2", b"3", b"4"]),
        ({"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seqs[1]}, [b"2", b"3", b"4"]),
        ({"Type": "AT_TIMESTAMP", "Timestamp": dt.datetime.fromtimestamp(mark, dt.timezone.utc)}, [b"3", b"4"]),
    ]
    for arn, (position, expected) in zip(consumers, cases):
        sub = Reader(kinesis, arn, shard, **position)
        got, event = sub.until_records(len(expected))
        assert [r["Data"] for r in got] == expected, position
        assert event["ContinuationSequenceNumber"] == seqs[-1]
        sub.close()


def test_takeover_after_the_window_and_errors_as_exception_frames(kinesis: Any) -> None:
    _, [consumer, other] = setup_stream(kinesis, "takeover", consumers=2)
    shard = "shardId-000000000000"
    first = Reader(kinesis, consumer, shard, Type="LATEST")
    with pytest.raises(ClientError) as exc:  # within the call interval: throttled, as AWS's one call per second
        kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition={"Type": "LATEST"})
    assert exc.value.response["Error"]["Code"] == "LimitExceededException"
    assert exc.value.response["Error"]["Message"] == f"Rate exceeded for consumer {consumer} and shard {shard}"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    first.next()
    time.sleep(SUBSCRIBE_INTERVAL)  # deliberate pacing: past the call interval, still within the takeover window
    with pytest.raises(ClientError) as exc:  # too soon to take over: refused
        kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition={"Type": "LATEST"})
    assert exc.value.response["Error"]["Code"] == "ResourceInUseException"
    time.sleep(TAKEOVER_SECONDS - SUBSCRIBE_INTERVAL)
    second = Reader(kinesis, consumer, shard, Type="LATEST")  # later: takes over
    ended = first.rest()
    assert isinstance(ended[-1], EventStreamError) and ended[-1].response["Error"]["Code"] == "ResourceInUseException"
    second.next()

    third = Reader(kinesis, other, shard, Type="LATEST")  # another consumer is independent
    third.next()
    kinesis.deregister_stream_consumer(ConsumerARN=other)
    ended = third.rest()
    assert isinstance(ended[-1], EventStreamError) and ended[-1].response["Error"]["Code"] == "ResourceNotFoundException"
    second.close()

    for kwargs, code in (
        ({"ConsumerARN": consumer, "ShardId": "shardId-000000000042", "StartingPosition": {"Type": "LATEST"}}, "ResourceNotFoundException"),
        ({"ConsumerARN": other, "ShardId": shard, "StartingPosition": {"Type": "LATEST"}}, "ResourceNotFoundException"),
        ({"ConsumerARN": consumer, "ShardId": shard, "StartingPosition": {"Type": "AT_SEQUENCE_NUMBER"}}, "InvalidArgumentException"),
        ({"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/takeover", "ShardId": shard, "StartingPosition": {"Type": "LATEST"}}, "ValidationException"),
    ):
        with pytest.raises(ClientError) as exc:
            kinesis.subscribe_to_shard(**kwargs)
        assert exc.value.response["Error"]["Code"] == code, kwargs
    arn = kinesis.describe_stream_summary(StreamName="takeover")["StreamDescriptionSummary"]["StreamARN"]
    fresh = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="fresh")["Consumer"]["ConsumerARN"]
    with pytest.raises(ClientError) as exc:  # still CREATING
        kinesis.subscribe_to_shard(ConsumerARN=fresh, ShardId=shard, StartingPosition={"Type": "LATEST"})
    assert exc.value.response["Error"]["Code"] == "ResourceInUseException"


def test_the_call_rate_is_per_consumer_and_shard_and_off_without_limits(kinesis: Any, gateway_factory: Any) -> None:
    _, [consumer, other] = setup_stream(kinesis, "rate", shards=2, consumers=2)
    shard, second_shard = "shardId-000000000000", "shardId-000000000001"
    # within one interval: another consumer on the shard, and the consumer on another shard, are let through
    readers = [Reader(kinesis, consumer, shard, Type="LATEST"), Reader(kinesis, other, shard, Type="LATEST"),
               Reader(kinesis, consumer, second_shard, Type="LATEST")]
    with pytest.raises(ClientError) as exc:  # while the same pair again is throttled
        kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition={"Type": "LATEST"})
    assert exc.value.response["Error"]["Code"] == "LimitExceededException"
    for reader in readers:
        assert isinstance(reader.next(), dict)
        reader.close()

    unlimited = gateway_factory("--no-limits").client("kinesis", retries=NO_RETRIES)  # --no-limits: only the takeover rule remains
    _, [free] = setup_stream(unlimited, "rate")
    held = Reader(unlimited, free, shard, Type="LATEST")
    with pytest.raises(ClientError) as exc:
        unlimited.subscribe_to_shard(ConsumerARN=free, ShardId=shard, StartingPosition={"Type": "LATEST"})
    assert exc.value.response["Error"]["Code"] == "ResourceInUseException"
    held.close()


def test_deleting_the_stream_ends_its_subscriptions(kinesis: Any) -> None:
    _, [consumer] = setup_stream(kinesis, "doomed")
    reader = Reader(kinesis, consumer, "shardId-000000000000", Type="LATEST")
    reader.next()
    kinesis.delete_stream(StreamName="doomed", EnforceConsumerDeletion=True)
    ended = reader.rest()
    assert isinstance(ended[-1], EventStreamError) and ended[-1].response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_subscription_ends_after_its_time_with_heartbeats(kinesis: Any) -> None:
    _, [consumer] = setup_stream(kinesis, "expiry")
    started = time.monotonic()
    reader = Reader(kinesis, consumer, "shardId-000000000000", Type="LATEST")
    events = reader.rest(timeout=SUBSCRIPTION_SECONDS + 5)
    lasted = time.monotonic() - started
    assert SUBSCRIPTION_SECONDS - 0.5 <= lasted <= SUBSCRIPTION_SECONDS + 3, lasted
    assert all(isinstance(e, dict) and e["Records"] == [] and "ContinuationSequenceNumber" in e for e in events)
    assert len(events) >= int(SUBSCRIPTION_SECONDS / HEARTBEAT_SECONDS)  # the first event, then heartbeats


def test_each_consumer_reads_at_its_own_rate(kinesis: Any) -> None:
    _, consumers = setup_stream(kinesis, "budget", consumers=2)
    payload = [bytes(10_000)] * 25  # 250 kB: 2.5 s of a 100 kB/s budget
    put(kinesis, "budget", payload)
    started = time.monotonic()
    readers = [Reader(kinesis, c, "shardId-000000000000", Type="TRIM_HORIZON") for c in consumers]
    # GetRecords readers have their own budget: not throttled by the subscriptions
    it = kinesis.get_shard_iterator(StreamName="budget", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert len(kinesis.get_records(ShardIterator=it, Limit=10)["Records"]) == 10
    done = []
    for reader in readers:
        got, _ = reader.until_records(len(payload), timeout=10)
        done.append(time.monotonic() - started)
        assert len(got) == len(payload)
        reader.close()
    # each needed about (250 kB - one second's burst) / 100 kB/s, and both ran side by side
    assert min(done) >= (250_000 - READ_BYTES_PER_SEC) / READ_BYTES_PER_SEC * 0.8, done
    assert max(done) < 250_000 / READ_BYTES_PER_SEC + 1, done  # a shared budget would need 4 s


def test_cbor_clients_get_cbor_events(gateway: GatewayProcess, kinesis: Any) -> None:
    _, [consumer] = setup_stream(kinesis, "cbor")
    put(kinesis, "cbor", [b"\x00\xffbinary"])
    body = cbor2.dumps({"ConsumerARN": consumer, "ShardId": "shardId-000000000000", "StartingPosition": {"Type": "TRIM_HORIZON"}})
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("POST", "/", body, {"Content-Type": "application/x-amz-cbor-1.1", "X-Amz-Target": "Kinesis_20131202.SubscribeToShard"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()  # botocore's own parser checks the framing and both CRCs
    messages: list[Any] = []
    while len(messages) < 2:
        buffer.add_data(response.read1(65536))
        messages += list(buffer)
    conn.close()
    initial, event = messages[:2]
    assert initial.headers[":event-type"] == "initial-response" and cbor2.loads(initial.payload) == {}
    assert event.headers == {":message-type": "event", ":event-type": "SubscribeToShardEvent", ":content-type": "application/x-amz-cbor-1.1"}
    decoded = cbor2.loads(event.payload)
    [record] = decoded["Records"]
    assert record["Data"] == b"\x00\xffbinary" and isinstance(record["ApproximateArrivalTimestamp"], int)
    assert abs(record["ApproximateArrivalTimestamp"] / 1000 - time.time()) < 60  # epoch milliseconds, as the SDKs read CBOR
    assert decoded["ContinuationSequenceNumber"] == record["SequenceNumber"]
    json.dumps(decoded["MillisBehindLatest"])


def test_js_sdk_subscribes_over_http2(gateway: GatewayProcess, kinesis: Any) -> None:
    """The AWS SDK for JavaScript v3 with default settings: HTTP/2 (h2c), which hangs up its side of
    the connection (GOAWAY) right after the response headers and keeps reading the event stream."""
    _, [consumer] = setup_stream(kinesis, "js-h2")
    put(kinesis, "js-h2", [f"old-{i}".encode() for i in range(5)])
    run = subprocess.run([NODE, str(ROOT / "tests" / "js" / "kinesis_subscribe.mjs"), gateway.url, "js-h2", consumer], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in seen, seen
    assert seen["records"] == [f"old-{i}" for i in range(5)] + [f"live-{i}" for i in range(5)]
    assert seen["continuation"] == seen["lastSequenceNumber"]
