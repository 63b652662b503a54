"""Consumer-library workers as real processes on a real gateway: three workers on a 6-shard stream
under load, one SIGKILLed, one added, a split and a merge meanwhile. Every record is processed at
least once, no two workers process a shard at the same moment, duplicates only come after the last
checkpoint, parents finish before children start, and SIGTERM checkpoints and releases leases."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from consumer_support import WorkerProcess, read_audit
from helpers import GatewayProcess, free_port, wait_until

from consumer import BaseProcessor, Checkpointer, Record, SqliteLeaseStore, Worker, WorkerSettings
from consumer.fanout import FanOutReader, fanout_reader_factory
from consumer.polling import PollingReader, Position
from edge_agent.aggregation import Aggregate

FAILOVER = 2.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("consumer-gw")
    # AWS limits on (5 reads/s per shard); fan-out subscriptions end every 2 s so readers resubscribe often.
    (root / "gateway.toml").write_text("[consumers]\nactivation_seconds = 0.2\nsubscription_seconds = 2.0\n"
                                       "takeover_seconds = 0.5\nheartbeat_seconds = 0.5\n")
    gw = GatewayProcess(root / "data", "--config", str(root / "gateway.toml")).start()
    yield gw
    gw.kill()


def write_config(path: Path, gw: GatewayProcess, stream: str, leases: Path, metrics: str = "", reader: str = "polling") -> Path:
    path.write_text(f"""
[consumer]
stream = "{stream}"
application = "audit-app"
failover_seconds = {FAILOVER}
take_interval_seconds = 0.3
shard_sync_seconds = 1.0
reader = "{reader}"
[leases]
path = "{leases}"
[gateway]
endpoint_url = "{gw.url}"
[metrics]
listen = "{metrics}"
""")
    return path


class Producer(threading.Thread):
    """Puts numbered records across all shards until stopped; keeps what the gateway acknowledged."""

    def __init__(self, kinesis: Any, stream: str) -> None:
        super().__init__(daemon=True)
        self.kinesis, self.stream = kinesis, stream
        self.sent: set[bytes] = set()
        self.done = threading.Event()
        self.n = 0

    def run(self) -> None:
        while not self.done.is_set():
            batch = [{"Data": f"r{self.n + i}".encode(), "PartitionKey": f"k{(self.n + i) % 97}"} for i in range(20)]
            self.n += len(batch)
            resp = self.kinesis.put_records(StreamName=self.stream, Records=batch)
            self.sent |= {b["Data"] for b, r in zip(batch, resp["Records"]) if "SequenceNumber" in r}
            time.sleep(0.05)


def overlaps(batches: list[tuple[Any, ...]], kill_times: dict[str, float]) -> list[str]:
    """Pairs of batches of one shard, by different workers, whose time intervals intersect."""
    by_shard: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for _id, worker, shard, start, end in batches:
        by_shard[shard].append((start, end if end is not None else kill_times.get(worker, time.time()), worker))
    problems = []
    for shard, spans in by_shard.items():
        spans.sort()
        for (s1, e1, w1), (s2, e2, w2) in zip(spans, spans[1:]):
            if w1 != w2 and s2 < e1:
                problems.append(f"{shard}: {w1} [{s1:.3f},{e1:.3f}] and {w2} [{s2:.3f},{e2:.3f}]")
    return problems


def test_workers_share_fail_over_and_follow_resharding(gateway: GatewayProcess, tmp_path: Path) -> None:
    kinesis = gateway.client()
    stream = "kcl-audit"
    kinesis.create_stream(StreamName=stream, ShardCount=6)
    audit = tmp_path / "audit"
    audit.mkdir()
    leases_db = tmp_path / "leases.db"
    config = write_config(tmp_path / "consumer.toml", gateway, stream, leases_db)
    producer = Producer(kinesis, stream)
    producer.start()
    workers = {w: WorkerProcess(config, w, audit) for w in ("w1", "w2", "w3")}
    store = SqliteLeaseStore(leases_db, "audit-app")
    kill_times: dict[str, float] = {}
    try:
        def owners() -> dict[str, str | None]:
            try:
                return {lease.key: lease.owner for lease in store.list_leases()}
            except Exception:
                return {}

        wait_until(lambda: len(owners()) == 6 and set(owners().values()) == {"w1", "w2", "w3"}, timeout=30,
                   what="three workers holding the six leases")
        held_by_w1 = [k for k, o in owners().items() if o == "w1"]
        workers["w1"].kill(signal.SIGKILL)
        kill_times["w1"] = time.time()
        killed_at = time.monotonic()
        metrics_port = free_port()
        # The late worker reads by enhanced fan-out: readers can be mixed, the leases are the same.
        config4 = write_config(tmp_path / "consumer4.toml", gateway, stream, leases_db, metrics=f"127.0.0.1:{metrics_port}", reader="fanout")
        workers["w4"] = WorkerProcess(config4, "w4", audit)
        # The killed worker's shards go to the others within the failover time (plus a take round).
        wait_until(lambda: all(owners().get(k) not in (None, "w1") for k in held_by_w1), timeout=15, what="take-over of w1's leases")
        takeover = time.monotonic() - killed_at
        kinesis.split_shard(StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127 // 6))
        kinesis.merge_shards(StreamName=stream, ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
        wait_until(lambda: len(owners()) == 9, timeout=15, what="leases for the child shards")
        wait_until(lambda: "w4" in owners().values(), timeout=30, what="the fan-out worker w4 taking its share")
        time.sleep(1.0)  # keep producing into the children for a while
        producer.done.set()
        producer.join()

        def processed() -> set[bytes]:
            return {r[4] for r in read_audit(audit)["records"]}

        wait_until(lambda: producer.sent <= processed(), timeout=30, what="every acknowledged record processed")
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        held = float(re.search(r'edge_consumer_leases_held\{stream="kcl-audit"\} (\S+)', scrape).group(1))  # type: ignore[union-attr]
        assert held >= 1, scrape  # w4 joined last and took its share by hand-off
        assert re.search(r'edge_consumer_records_processed_total\{shard="shardId-\d+",stream="kcl-audit"\} [1-9]', scrape), scrape
        assert re.search(r'edge_consumer_lease_takes_total\{how="(stolen|expired)",stream="kcl-audit"\} [1-9]', scrape), scrape
        assert re.search(r'edge_consumer_millis_behind_latest\{shard="shardId-\d+",stream="kcl-audit"\} \d', scrape), scrape
        for w in ("w2", "w3", "w4"):
            workers[w].kill(signal.SIGTERM)
            assert workers[w].proc.returncode == 0, workers[w].log()[-3000:]
    finally:
        producer.done.set()
        for w in workers.values():
            w.kill()

    got = read_audit(audit)
    assert not overlaps(got["batches"], kill_times), overlaps(got["batches"], kill_times)
    assert takeover < FAILOVER + 5
    # Clean shutdown released every lease; the finished parents are at SHARD_END.
    final = {lease.key: lease for lease in store.list_leases()}
    assert all(lease.owner is None for lease in final.values()), final
    for parent in ("shardId-000000000000", "shardId-000000000002", "shardId-000000000003"):
        assert final[parent].checkpoint == "SHARD_END", final[parent]
    assert final["shardId-000000000006"].parents == final["shardId-000000000007"].parents == ("shardId-000000000000",)
    assert set(final["shardId-000000000008"].parents) == {"shardId-000000000002", "shardId-000000000003"}
    # Parents were finished before their children started.
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for _id, _w, shard, start, end in got["batches"]:
        first[shard] = min(first.get(shard, start), start)
        last[shard] = max(last.get(shard, start), end or start)
    for child, parents in {"shardId-000000000006": ["shardId-000000000000"], "shardId-000000000007": ["shardId-000000000000"],
                           "shardId-000000000008": ["shardId-000000000002", "shardId-000000000003"]}.items():
        for parent in parents:
            assert last[parent] <= first[child], (parent, child)
    # Duplicates only after the last checkpoint: no checkpoint at or past a record between its two deliveries.
    deliveries: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for _w, shard, seq, sub, _data, t in got["records"]:
        deliveries[(shard, seq, sub)].append(t)
    checkpoints = [(shard, (int(seq), sub), t) for _w, shard, seq, sub, t in got["checkpoints"]]
    duplicates = {k: sorted(ts) for k, ts in deliveries.items() if len(ts) > 1}
    for (shard, seq, sub), times in duplicates.items():
        for t1, t2 in zip(times, times[1:]):
            bad = [c for c in checkpoints if c[0] == shard and c[1] >= (int(seq), sub) and t1 < c[2] < t2]
            assert not bad, f"{shard} {seq}/{sub} delivered again after checkpoint {bad}"
    assert len(duplicates) < len(deliveries) // 2


class Collector(BaseProcessor):
    """Keeps what it gets; checkpoints only where the test says (not on shutdown)."""

    def __init__(self, got: list[Record], checkpoint_at: int | None = None) -> None:
        self.got, self.checkpoint_at = got, checkpoint_at

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
        self.got.extend(records)
        if self.checkpoint_at is not None and len(self.got) > self.checkpoint_at:
            checkpointer.checkpoint(self.got[self.checkpoint_at])
            self.checkpoint_at = None

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        pass


def run_worker(worker: Worker, until: Callable[[], bool]) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(until, timeout=15, what="records delivered")
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_kpl_aggregates_and_restart_after_checkpoint(gateway: GatewayProcess, tmp_path: Path) -> None:
    kinesis = gateway.client()
    kinesis.create_stream(StreamName="kcl-kpl", ShardCount=1)
    expected: list[bytes] = []
    for a in range(3):
        agg = Aggregate(f"key{a}", 64 * 1024)
        for i in range(5):
            assert agg.add(f"a{a}-{i}".encode())
            expected.append(f"a{a}-{i}".encode())
        kinesis.put_record(StreamName="kcl-kpl", PartitionKey=f"key{a}", Data=agg.seal())
        kinesis.put_record(StreamName="kcl-kpl", PartitionKey="plain", Data=f"p{a}".encode())
        expected.append(f"p{a}".encode())
    store = SqliteLeaseStore(tmp_path / "leases.db", "kpl-app")
    settings = WorkerSettings(stream="kcl-kpl", failover_seconds=1.0, shard_sync_seconds=1.0)
    first: list[Record] = []
    run_worker(Worker(settings, store, kinesis, lambda: Collector(first, checkpoint_at=8)), lambda: len(first) >= len(expected))
    assert [r.data for r in first] == expected
    assert [r.sub_sequence_number for r in first[:6]] == [0, 1, 2, 3, 4, 0] and first[2].aggregated and not first[5].aggregated
    assert first[0].partition_key == "key0" and first[0].sequence_number == first[4].sequence_number
    lease = store.get("shardId-000000000000")
    assert lease is not None and (lease.checkpoint, lease.checkpoint_sub) == (first[8].sequence_number, 2) and lease.owner is None
    # A restarted worker resumes right after the checkpoint, inside the aggregate.
    second: list[Record] = []
    run_worker(Worker(settings, store, kinesis, lambda: Collector(second)), lambda: len(second) >= len(expected) - 9)
    assert [r.data for r in second] == expected[9:]


def test_fanout_reader_resubscribes_and_follows_a_split(gateway: GatewayProcess, tmp_path: Path) -> None:
    kinesis = gateway.client()
    kinesis.create_stream(StreamName="kcl-efo", ShardCount=2)
    got: list[Record] = []
    shards: dict[bytes, str] = {}

    class ByShard(Collector):
        def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
            shards.update((r.data, self.shard_id) for r in records)
            super().process_records(records, checkpointer, millis_behind_latest)
            checkpointer.checkpoint()

    sent: list[bytes] = []

    def produce() -> None:  # 3.5 s of records: spans subscription renewals (every 2 s) and the split
        for i in range(35):
            data = f"e{i}".encode()
            kinesis.put_record(StreamName="kcl-efo", PartitionKey=f"k{i % 5}", Data=data)
            sent.append(data)
            if i == 15:
                kinesis.split_shard(StreamName="kcl-efo", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
            time.sleep(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    settings = WorkerSettings(stream="kcl-efo", failover_seconds=2.0, shard_sync_seconds=1.0)
    open_reader = fanout_reader_factory(kinesis, "kcl-efo", "efo-app")
    readers: list[FanOutReader] = []

    def reader(shard_id: str, position: Position, stop: threading.Event) -> FanOutReader:
        readers.append(open_reader(shard_id, position, stop))
        return readers[-1]

    store = SqliteLeaseStore(tmp_path / "leases.db", "efo-app")
    run_worker(Worker(settings, store, kinesis, lambda: ByShard(got), reader), lambda: not producer.is_alive() and len(got) >= len(sent))
    assert sorted(r.data for r in got) == sorted(sent)  # every record once: continuation numbers neither skip nor repeat
    parent = store.get("shardId-000000000000")
    assert parent is not None and parent.checkpoint == "SHARD_END" and parent.children == ("shardId-000000000002", "shardId-000000000003")
    order = [r.data for r in got]
    for child in ("shardId-000000000002", "shardId-000000000003"):
        from_parent = [i for i, d in enumerate(order) if shards[d] == "shardId-000000000000"]
        from_child = [i for i, d in enumerate(order) if shards[d] == child]
        assert from_child and max(from_parent) < min(from_child)
    assert max(r.subscriptions for r in readers) >= 2  # resubscribed from the continuation after a subscription ended


def test_polling_reader_backs_off_when_throttled(gateway: GatewayProcess) -> None:
    """Four readers on one shard asking as fast as they can: the gateway refuses past 5 reads/s; each
    refusal is counted (the throttled metric) and backed off, and the readers keep reading in order
    from the same iterator (a refused call skips nothing)."""
    kinesis = gateway.client()
    kinesis.create_stream(StreamName="kcl-throttle", ShardCount=1)
    kinesis.put_records(StreamName="kcl-throttle", Records=[{"Data": f"t{i}".encode(), "PartitionKey": "k"} for i in range(100)])
    stop = threading.Event()
    throttles = [0] * 4
    calls = [0] * 4
    got: list[list[bytes]] = [[] for _ in range(4)]

    def read(i: int) -> None:
        def on_throttle() -> None:
            throttles[i] += 1

        reader = PollingReader(kinesis, "kcl-throttle", "shardId-000000000000", Position("TRIM_HORIZON"), stop,
                               min_interval=0.0, max_records=1, on_throttle=on_throttle)
        while not stop.is_set():
            calls[i] += 1
            batch = reader.next_batch()
            if batch:
                got[i] += [r["Data"] for r in batch.records]

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(throttles) >= 4 and all(got), timeout=20, what="throttling, and every reader reading")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
    for records in got:
        assert records == [f"t{i}".encode() for i in range(len(records))]  # in order, nothing skipped by a refused call
    assert sum(len(g) for g in got) >= 8  # reading went on through the refusals
