"""Resharding: split, merge and uniform scaling; readers following ChildShards see every
parent record before any child record, so per-key order holds across the boundary."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from helpers import GatewayProcess

from kds_support import kds_gateway, read_shard, wait_until  # noqa: F401  (fixture)


@pytest.fixture
def kinesis(kds_gateway: GatewayProcess) -> Any:
    return kds_gateway.client("kinesis")


def put(kinesis: Any, stream: str, start: int, n: int) -> list[tuple[str, bytes]]:
    records = [{"Data": f"{i}".encode(), "PartitionKey": f"k{i % 23}"} for i in range(start, start + n)]
    resp = kinesis.put_records(StreamName=stream, Records=records)
    assert resp["FailedRecordCount"] == 0
    return [(r["PartitionKey"], r["Data"]) for r in records]


def read_like_kcl(kinesis: Any, stream: str) -> tuple[list[tuple[str, bytes]], dict[str, list[dict[str, Any]]]]:
    """Read from the roots; start a child only once all its parents are finished."""
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=stream)["Shards"]}
    pending = [sid for sid, s in shards.items() if s.get("ParentShardId") not in shards and s.get("AdjacentParentShardId") not in shards]
    finished: set[str] = set()
    children: dict[str, list[dict[str, Any]]] = {}
    seen: list[tuple[str, bytes]] = []
    while pending:
        sid = pending.pop(0)
        records, last = read_shard(kinesis, stream, sid)
        seen += [(r["PartitionKey"], r["Data"]) for r in records]
        finished.add(sid)
        if "ChildShards" in last:
            assert "NextShardIterator" not in last
            children[sid] = last["ChildShards"]
            for child in last["ChildShards"]:
                if all(p in finished for p in child["ParentShards"]) and child["ShardId"] not in finished and child["ShardId"] not in pending:
                    pending.append(child["ShardId"])
    return seen, children


def per_key(pairs: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for key, data in pairs:
        out[key].append(data)
    return dict(out)


def test_split_merge_and_read_across_boundaries(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="reshard", ShardCount=2)
    sent = put(kinesis, "reshard", 0, 200)
    kinesis.split_shard(StreamName="reshard", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
    sent += put(kinesis, "reshard", 200, 200)
    kinesis.merge_shards(StreamName="reshard", ShardToMerge="shardId-000000000003", AdjacentShardToMerge="shardId-000000000001")
    sent += put(kinesis, "reshard", 400, 200)

    shards = {s["ShardId"]: s for s in kinesis.describe_stream(StreamName="reshard")["StreamDescription"]["Shards"]}
    assert set(shards) == {f"shardId-{i:012d}" for i in range(5)}
    assert shards["shardId-000000000002"]["ParentShardId"] == "shardId-000000000000"
    assert shards["shardId-000000000004"]["ParentShardId"] == "shardId-000000000003"
    assert shards["shardId-000000000004"]["AdjacentParentShardId"] == "shardId-000000000001"
    parent_end = int(shards["shardId-000000000000"]["SequenceNumberRange"]["EndingSequenceNumber"])
    assert int(shards["shardId-000000000002"]["SequenceNumberRange"]["StartingSequenceNumber"]) > parent_end
    assert "EndingSequenceNumber" not in shards["shardId-000000000004"]["SequenceNumberRange"]

    seen, children = read_like_kcl(kinesis, "reshard")
    assert sorted(seen) == sorted(sent)
    assert per_key(seen) == per_key(sent)  # every key in put order: parents before children
    assert [c["ShardId"] for c in children["shardId-000000000000"]] == ["shardId-000000000002", "shardId-000000000003"]
    assert children["shardId-000000000001"][0]["ParentShards"] == ["shardId-000000000003", "shardId-000000000001"]


def test_update_shard_count_uniform_scaling(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="uniform", ShardCount=3)
    sent = put(kinesis, "uniform", 0, 150)
    out = kinesis.update_shard_count(StreamName="uniform", TargetShardCount=5, ScalingType="UNIFORM_SCALING")
    assert (out["CurrentShardCount"], out["TargetShardCount"]) == (3, 5)
    sent += put(kinesis, "uniform", 150, 150)
    kinesis.update_shard_count(StreamName="uniform", TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    sent += put(kinesis, "uniform", 300, 150)
    open_shards = kinesis.list_shards(StreamName="uniform", ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert len(open_shards) == 3
    starts = sorted(int(s["HashKeyRange"]["StartingHashKey"]) for s in open_shards)
    assert starts == [0, (2**128) // 3, 2 * ((2**128) // 3)]
    for shard in kinesis.list_shards(StreamName="uniform")["Shards"]:
        parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]
        assert len(parents) <= 2
    seen, _ = read_like_kcl(kinesis, "uniform")
    assert per_key(seen) == per_key(sent)


def test_resharding_under_load_keeps_every_record_in_key_order(kinesis: Any) -> None:
    """Producers keep writing while the stream is split, merged and rescaled; a reader that
    finishes parents before children sees every acknowledged record, each key in put order."""
    import threading

    from helpers import aws_client

    endpoint = kinesis.meta.endpoint_url
    kinesis.create_stream(StreamName="live", ShardCount=2)
    acked: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def produce(worker: int) -> None:
        client = aws_client("kinesis", endpoint)
        n = 0
        while not stop.is_set():
            records = [{"Data": f"{worker}:{n + i:06d}".encode(), "PartitionKey": f"w{worker}-k{i % 4}"} for i in range(40)]
            resp = client.put_records(StreamName="live", Records=records)
            assert resp["FailedRecordCount"] == 0
            with lock:
                acked.extend((r["PartitionKey"], r["Data"]) for r in records)
            n += 40

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    def written() -> int:
        with lock:
            return len(acked)

    try:
        for reshard in (
            lambda: kinesis.split_shard(StreamName="live", ShardToSplit="shardId-000000000001", NewStartingHashKey=str(3 * 2**126)),
            lambda: kinesis.update_shard_count(StreamName="live", TargetShardCount=4, ScalingType="UNIFORM_SCALING"),
            lambda: kinesis.update_shard_count(StreamName="live", TargetShardCount=2, ScalingType="UNIFORM_SCALING"),
        ):
            target = written() + 200
            assert wait_until(lambda: written() >= target, timeout=20)  # writes land between reshards
            reshard()
        target = written() + 200
        assert wait_until(lambda: written() >= target, timeout=20)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    seen, _ = read_like_kcl(kinesis, "live")
    assert len(seen) == len(acked) and per_key(seen) == per_key(acked)
