"""Data plane: routing by MD5, ordering, every iterator type, durability across SIGKILL, exactly-once."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import GatewayProcess

from kds_support import kds_gateway, md5_key, read_shard, shard_for  # noqa: F401  (fixture)


@pytest.fixture
def shared(kds_gateway: GatewayProcess) -> GatewayProcess:
    """The shared gateway, for the tests that do not restart it (each uses its own stream)."""
    return kds_gateway


def put_batch(kinesis: Any, stream: str, n: int, prefix: str = "r") -> list[dict[str, Any]]:
    records = [{"Data": f"{prefix}-{i}".encode(), "PartitionKey": f"key-{i % 37}"} for i in range(n)]
    resp = kinesis.put_records(StreamName=stream, Records=records)
    assert resp["FailedRecordCount"] == 0
    return [dict(r, **res) for r, res in zip(records, resp["Records"])]


def test_routing_ordering_and_read_back(shared: GatewayProcess) -> None:
    gw = shared
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="routing", ShardCount=4)
    shards = kinesis.list_shards(StreamName="routing")["Shards"]
    sent = put_batch(kinesis, "routing", 400) + put_batch(kinesis, "routing", 100, prefix="b")
    for rec in sent:
        assert rec["ShardId"] == shard_for(shards, md5_key(rec["PartitionKey"]))
        assert len(rec["SequenceNumber"]) >= 20
    explicit = kinesis.put_record(StreamName="routing", Data=b"e", PartitionKey="whatever", ExplicitHashKey=str(2**128 - 1))
    assert explicit["ShardId"] == shards[-1]["ShardId"]
    by_hash = kinesis.put_records(StreamName="routing", Records=[{"Data": b"h", "PartitionKey": "same", "ExplicitHashKey": str(h)} for h in (0, 2**126, 2**127 + 5, 2**128 - 1)])
    assert [r["ShardId"] for r in by_hash["Records"]] == [s["ShardId"] for s in shards]
    total = 0
    for shard in shards:
        got, last = read_shard(kinesis, "routing", shard["ShardId"])
        expected = [r for r in sent if r["ShardId"] == shard["ShardId"]]
        if shard is shards[-1]:
            expected.append({"Data": b"e", "PartitionKey": "whatever", "SequenceNumber": explicit["SequenceNumber"]})
        expected += [{"Data": b"h", "PartitionKey": "same", **r} for r in by_hash["Records"] if r["ShardId"] == shard["ShardId"]]
        assert [(r["Data"], r["PartitionKey"], r["SequenceNumber"]) for r in got] == [(r["Data"], r["PartitionKey"], r["SequenceNumber"]) for r in expected]
        seqs = [int(r["SequenceNumber"]) for r in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert last["MillisBehindLatest"] == 0 and "NextShardIterator" in last
        total += len(got)
    assert total == 505


def test_iterator_types_and_limit(shared: GatewayProcess) -> None:
    gw = shared
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="iterators", ShardCount=1)
    sid = "shardId-000000000000"
    first = [kinesis.put_record(StreamName="iterators", Data=f"a{i}".encode(), PartitionKey="k")["SequenceNumber"] for i in range(5)]
    time.sleep(0.05)
    middle = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    latest_it = kinesis.get_shard_iterator(StreamName="iterators", ShardId=sid, ShardIteratorType="LATEST")["ShardIterator"]
    second = [kinesis.put_record(StreamName="iterators", Data=f"b{i}".encode(), PartitionKey="k")["SequenceNumber"] for i in range(5)]

    def seqs(kind: str, **kw: Any) -> list[str]:
        return [r["SequenceNumber"] for r in read_shard(kinesis, "iterators", sid, kind, **kw)[0]]

    assert seqs("TRIM_HORIZON") == first + second
    assert seqs("AT_SEQUENCE_NUMBER", StartingSequenceNumber=first[2]) == first[2:] + second
    assert seqs("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=first[2]) == first[3:] + second
    assert seqs("AT_TIMESTAMP", Timestamp=middle) == second
    assert seqs("LATEST") == []
    assert [r["SequenceNumber"] for r in kinesis.get_records(ShardIterator=latest_it)["Records"]] == second
    page = kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(StreamName="iterators", ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"], Limit=3)
    assert len(page["Records"]) == 3 and page["MillisBehindLatest"] >= 0
    assert [r["SequenceNumber"] for r in kinesis.get_records(ShardIterator=page["NextShardIterator"], Limit=3)["Records"]] == first[3:] + second[:1]
    arrival = page["Records"][0]["ApproximateArrivalTimestamp"]
    assert abs((dt.datetime.now(dt.timezone.utc) - arrival).total_seconds()) < 60
    with pytest.raises(ClientError) as exc:
        kinesis.get_shard_iterator(StreamName="iterators", ShardId=sid, ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber="12")
    assert exc.value.response["Error"]["Code"] == "InvalidArgumentException"
    with pytest.raises(ClientError) as exc:
        kinesis.get_shard_iterator(StreamName="iterators", ShardId="shardId-000000000009", ShardIteratorType="LATEST")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    token = page["NextShardIterator"]
    with pytest.raises(ClientError) as exc:
        kinesis.get_records(ShardIterator=token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    assert exc.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_records_survive_sigkill(gateway_factory: Any, tmp_path: Path) -> None:
    """Kill -9 the gateway while producers are writing: every acknowledged record is there after
    the restart, and whatever was readable before the kill reads back the same."""
    import threading

    from botocore.exceptions import BotoCoreError

    gw: GatewayProcess = gateway_factory("--no-limits")
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="durable", ShardCount=2)
    sent = put_batch(kinesis, "durable", 300)
    before = {s["ShardId"]: read_shard(kinesis, "durable", s["ShardId"])[0] for s in kinesis.list_shards(StreamName="durable")["Shards"]}
    acked: list[tuple[str, str, bytes]] = []
    started = threading.Event()

    def produce(worker: int) -> None:
        client = gw.client("kinesis")
        for batch in range(1000):
            records = [{"Data": f"live-{worker}-{batch}-{i}".encode(), "PartitionKey": f"p{i}"} for i in range(100)]
            try:
                resp = client.put_records(StreamName="durable", Records=records)
            except (BotoCoreError, ClientError):
                return
            acked.extend((r["ShardId"], r["SequenceNumber"], rec["Data"]) for r, rec in zip(resp["Records"], records))
            started.set()

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(3)]
    for t in producers:
        t.start()
    assert started.wait(10)
    time.sleep(0.3)
    gw.kill()  # SIGKILL mid-stream
    for t in producers:
        t.join(30)
    gw.start()
    kinesis = gw.client("kinesis")
    after = {s["ShardId"]: read_shard(kinesis, "durable", s["ShardId"])[0] for s in kinesis.list_shards(StreamName="durable")["Shards"]}
    for shard_id, records in before.items():
        assert after[shard_id][: len(records)] == records
    stored = {(shard_id, r["SequenceNumber"], r["Data"]) for shard_id, records in after.items() for r in records}
    assert acked and set(acked) <= stored
    assert sum(len(v) for v in after.values()) >= len(sent) + len(acked)
    newer = kinesis.put_record(StreamName="durable", Data=b"after restart", PartitionKey="key-1")
    assert int(newer["SequenceNumber"]) > max(int(seq) for _, seq, _ in stored)


def test_exactly_once_replay_returns_original_results(shared: GatewayProcess) -> None:
    gw = shared
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="exactly-once", ShardCount=2)
    headers = {"X-Edge-Producer-Id": "agent-7", "X-Edge-Record-Seqs": ",".join(str(100 + i) for i in range(20))}

    def add_headers(request: Any, **_: Any) -> None:
        for k, v in headers.items():
            request.headers[k] = v

    kinesis.meta.events.register("before-sign.kinesis.PutRecords", add_headers)
    records = [{"Data": f"eo-{i}".encode(), "PartitionKey": f"p{i}"} for i in range(20)]
    first = kinesis.put_records(StreamName="exactly-once", Records=records)
    second = kinesis.put_records(StreamName="exactly-once", Records=records)
    assert first["FailedRecordCount"] == 0
    assert first["Records"] == second["Records"]
    headers["X-Edge-Record-Seqs"] = ",".join(str(110 + i) for i in range(20))  # half replayed, half new
    third = kinesis.put_records(StreamName="exactly-once", Records=[{"Data": f"eo-{10 + i}".encode(), "PartitionKey": f"p{10 + i}"} for i in range(20)])
    assert third["Records"][:10] == first["Records"][10:]
    kinesis.meta.events.unregister("before-sign.kinesis.PutRecords", add_headers)
    plain = kinesis.put_records(StreamName="exactly-once", Records=records[:1])  # no headers: plain AWS semantics
    assert plain["Records"][0]["SequenceNumber"] != first["Records"][0]["SequenceNumber"]
    stored = [r["Data"] for s in ("shardId-000000000000", "shardId-000000000001") for r in read_shard(kinesis, "exactly-once", s)[0]]
    assert sorted(stored) == sorted([f"eo-{i}".encode() for i in range(30)] + [b"eo-0"])
    kinesis.meta.events.register("before-sign.kinesis.PutRecords", add_headers)
    for bad in ("1,2", "1,x,3", f"1,2,{2**70}"):
        headers["X-Edge-Record-Seqs"] = bad
        with pytest.raises(ClientError) as exc:
            kinesis.put_records(StreamName="exactly-once", Records=records[:3])
        assert exc.value.response["Error"]["Code"] == "ValidationException"


def test_concurrent_producers_group_commit(shared: GatewayProcess) -> None:
    """Many PutRecords in flight at once (one transaction for several of them): every
    acknowledged record is stored once, and sequence numbers stay unique and ordered per shard."""
    from concurrent.futures import ThreadPoolExecutor

    shared.client("kinesis").create_stream(StreamName="busy", ShardCount=3)

    def produce(worker: int) -> list[tuple[str, str, bytes]]:
        client = shared.client("kinesis")
        acked = []
        for batch in range(5):
            records = [{"Data": f"w{worker}-b{batch}-{i}".encode(), "PartitionKey": f"w{worker}-{i % 5}"} for i in range(50)]
            resp = client.put_records(StreamName="busy", Records=records)
            acked += [(r["ShardId"], r["SequenceNumber"], rec["Data"]) for r, rec in zip(resp["Records"], records)]
        return acked

    with ThreadPoolExecutor(8) as pool:
        acked = [item for part in pool.map(produce, range(8)) for item in part]
    kinesis = shared.client("kinesis")
    stored = []
    for shard in kinesis.list_shards(StreamName="busy")["Shards"]:
        records, _ = read_shard(kinesis, "busy", shard["ShardId"])
        seqs = [int(r["SequenceNumber"]) for r in records]
        assert seqs == sorted(set(seqs))
        stored += [(shard["ShardId"], r["SequenceNumber"], r["Data"]) for r in records]
    assert sorted(stored) == sorted(acked) and len(stored) == 8 * 5 * 50
