"""Soak parts for the services built on the data streams: consumer-library workers, Firehose delivery
and analytics windows, each under repeated SIGKILLs (used by bench/soak.py; see its --help).

- consumers: edge-consumer workers on a 6-shard stream under load, a random worker SIGKILLed and
  replaced again and again: every acknowledged record processed, no shard processed by two workers at
  once (the audit processor records each batch's interval), duplicates only after the last checkpoint.
- firehose: a delivery stream flushing every second to the embedded S3 bucket while the gateway is
  SIGKILLed during buffering and upload: every acknowledged record delivered; records written twice
  (an interrupted object written again, or a producer retry after a lost answer) are counted.
- analytics: a tumbling-window query while the gateway is SIGKILLed mid-window: every window emitted
  exactly once with the right figures (computed in Python from the input stream as stored).
"""

from __future__ import annotations

import json
import math
import random
import signal
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from agent_helpers import read_stream
from consumer_support import WorkerProcess, read_audit
from firehose_support import objects, s3_config
from helpers import GatewayProcess, wait_until
from test_consumer_workers import Producer, overlaps, write_config

from soak_support import Row, RssSampler, kill_loop, pid_of


def _records(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    return [r for recs in read_stream(kinesis, stream).values() for r in recs]


def part_consumers(work: Path, kills: int, rng: random.Random) -> Row:
    row = Row("consumer workers SIGKILL")
    (work / "gateway.toml").write_text("[consumers]\nactivation_seconds = 0.2\n")
    gw = GatewayProcess(work / "data", "--config", str(work / "gateway.toml")).start()
    kinesis = gw.client()
    kinesis.create_stream(StreamName="soak-kcl", ShardCount=6)
    audit = work / "audit"
    audit.mkdir()
    config = write_config(work / "consumer.toml", gw, "soak-kcl", work / "leases.db")
    producer = Producer(kinesis, "soak-kcl")
    producer.start()
    workers = {f"w{i}": WorkerProcess(config, f"w{i}", audit) for i in range(3)}
    kill_times: dict[str, float] = {}
    try:
        with RssSampler(lambda: {w: pid_of(p.proc) for w, p in workers.items()}) as rss:
            for n in range(kills):
                time.sleep(rng.uniform(0.5, 3.0))
                victim = rng.choice(sorted(w for w, p in workers.items() if p.proc.poll() is None))
                workers[victim].kill(signal.SIGKILL)
                kill_times[victim] = time.time()
                row.kills += 1
                fresh = f"w{3 + n}"
                workers[fresh] = WorkerProcess(config, fresh, audit)
            producer.done.set()
            producer.join()

            def processed() -> set[bytes]:
                return {r[4] for r in read_audit(audit)["records"]}

            try:
                wait_until(lambda: producer.sent <= processed(), timeout=120, interval=1.0, what="every record processed")
            except AssertionError:
                pass
            for w in workers.values():
                w.kill(signal.SIGTERM)
        got = read_audit(audit)
        seen = Counter(r[4] for r in got["records"])
        row.lost = len(producer.sent - set(seen))
        row.checked = len(producer.sent)
        row.duplicated = sum(n - 1 for n in seen.values() if n > 1)
        clashes = overlaps(got["batches"], kill_times)
        if clashes:
            row.notes.append(f"FAIL: {len(clashes)} moments with a shard held by two workers, e.g. {clashes[:2]}")
        late = _duplicates_past_checkpoint(got)
        if late:
            row.notes.append(f"FAIL: {late} records delivered again after a checkpoint covering them")
        row.notes.append(f"duplicates (at-least-once: only records past the last checkpoint are delivered again): {row.duplicated}; shard overlaps: {len(clashes)}")
        samples = [s for per_worker in rss.samples.values() for s in per_worker]
        row.add_memory("workers", samples)
        row.duplicated = 0  # at-least-once by contract: reported in the note, not as a failure
    finally:
        producer.done.set()
        for w in workers.values():
            w.kill()
        gw.kill()
    return row


def _duplicates_past_checkpoint(got: dict[str, list[tuple[Any, ...]]]) -> int:
    deliveries: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for _w, shard, seq, sub, _data, t in got["records"]:
        deliveries[(shard, seq, sub)].append(t)
    checkpoints = [(shard, (int(seq), sub), t) for _w, shard, seq, sub, t in got["checkpoints"] if seq.isdigit()]
    bad = 0
    for (shard, seq, sub), times in deliveries.items():
        times.sort()
        for t1, t2 in zip(times, times[1:]):
            if any(c[0] == shard and c[1] >= (int(seq), sub) and t1 < c[2] < t2 for c in checkpoints):
                bad += 1
    return bad


def part_firehose(work: Path, kills: int, rng: random.Random) -> Row:
    row = Row("firehose gateway SIGKILL")
    (work / "gateway.toml").write_text("[firehose]\n")
    gw = GatewayProcess(work / "data", "--config", str(work / "gateway.toml"), "--no-limits").start()
    gw.client("firehose").create_delivery_stream(
        DeliveryStreamName="soak-fh", ExtendedS3DestinationConfiguration=s3_config("soak-fh", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}))
    acked: set[bytes] = set()
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            batch = [b"fh-%08d\n" % (n + i) for i in range(200)]
            n += len(batch)
            while not stop.is_set():
                try:
                    resp = gw.client("firehose").put_record_batch(DeliveryStreamName="soak-fh", Records=[{"Data": d} for d in batch])
                    acked.update(d for d, r in zip(batch, resp["RequestResponses"]) if "RecordId" in r)
                    break
                except Exception:  # noqa: BLE001 - the gateway is down: send the same batch again
                    time.sleep(0.1)
            time.sleep(0.02)

    thread = threading.Thread(target=produce, daemon=True)
    try:
        with RssSampler(lambda: {"gateway": pid_of(gw.proc)}) as rss:
            thread.start()
            row.kills = kill_loop(kills, rng, gw.kill, gw.start, up=(0.3, 2.5))
            stop.set()
            thread.join(30)

            def delivered() -> Counter[bytes]:
                return Counter(line for body in objects(gw, "soak-fh").values() for line in body.splitlines(keepends=True))

            try:
                wait_until(lambda: acked <= set(delivered()), timeout=60, interval=1.0, what="every record delivered")
            except AssertionError:
                pass
        got = delivered()
        row.checked = len(acked)
        row.lost = len(acked - set(got))
        twice = sum(n - 1 for n in got.values() if n > 1)
        with sqlite3.connect(gw.data_dir / "firehose.sqlite3") as conn:
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        row.notes.append(f"records written twice (object rewritten after a kill, or a retried put): {twice}; "
                         f"redelivered batches counted by the gateway: {counters.get('redelivered_batches', 0)}; "
                         f"objects {len(objects(gw, 'soak-fh'))}")
        row.add_memory("gateway", rss.samples["gateway"])
    finally:
        stop.set()
        gw.kill()
    return row


ANALYTICS_CONFIG = """
[[analytics.applications]]
name = "soak"
poll_seconds = 0.05
max_batch_records = 200
  [[analytics.applications.inputs]]
  stream = "soak-in"
  columns = ["k VARCHAR", "v BIGINT", "ts TIMESTAMP"]
  event_time = "ts"
  allowed_lateness_seconds = 0.5
  [[analytics.applications.queries]]
  name = "totals"
  output_stream = "soak-out"
  sql = '''SELECT window_start, window_end, k, count(*) AS n, sum(v) AS total
           FROM TABLE(TUMBLE(TABLE soak_in, DESCRIPTOR(ts), INTERVAL '2' SECONDS)) GROUP BY ALL'''
"""


def part_analytics(work: Path, kills: int, rng: random.Random) -> Row:
    row = Row("analytics gateway SIGKILL")
    (work / "gateway.toml").write_text(ANALYTICS_CONFIG)
    gw = GatewayProcess(work / "data", "--config", str(work / "gateway.toml"), "--no-limits").start()
    kinesis = gw.client()
    for stream in ("soak-in", "soak-out"):
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    base = 1_700_000_000.0
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        i = 0
        while not stop.is_set():  # 20 records per 0.05 s of event time: a 2 s window every ~40 batches
            datas = [json.dumps({"k": f"k{j % 3}", "v": j, "ts": base + j * 0.005}).encode() for j in range(i, i + 20)]
            while not stop.is_set():
                try:
                    gw.client().put_records(StreamName="soak-in", Records=[{"Data": d, "PartitionKey": "p"} for d in datas])
                    break
                except Exception:  # noqa: BLE001 - the gateway is down: retry (a lost answer stores a batch twice)
                    time.sleep(0.1)
            i += 20
            sent[0] = i
            time.sleep(0.01)

    thread = threading.Thread(target=produce, daemon=True)
    try:
        with RssSampler(lambda: {"gateway": pid_of(gw.proc)}) as rss:
            thread.start()
            row.kills = kill_loop(kills, rng, gw.kill, gw.start)
            stop.set()
            thread.join(30)
            last = base + sent[0] * 0.005
            gw.client().put_records(StreamName="soak-in", Records=[{"Data": json.dumps({"k": "flush", "v": 0, "ts": last + 100}).encode(), "PartitionKey": "p"}])
            # the expected windows, from the input as stored (producer retries included)
            expected: dict[tuple[float, str], tuple[int, int]] = {}
            for r in _records(gw.client(), "soak-in"):
                rec = json.loads(r["Data"])
                if rec["k"] == "flush":
                    continue
                key = (math.floor(rec["ts"] / 2) * 2, rec["k"])
                n, total = expected.get(key, (0, 0))
                expected[key] = (n + 1, total + rec["v"])

            def out() -> list[dict[str, Any]]:
                return [json.loads(r["Data"]) for r in _records(gw.client(), "soak-out")]

            try:
                wait_until(lambda: len(out()) >= len(expected), timeout=60, interval=1.0, what="every window")
            except AssertionError:
                pass
            time.sleep(1.0)  # a duplicate would come right behind
        windows = out()
        keys = Counter((_epoch(w["window_start"]), w["k"]) for w in windows)
        row.checked = len(expected)
        row.duplicated = sum(n - 1 for n in keys.values() if n > 1)
        row.lost = len(set(expected) - set(keys))
        wrong = [w for w in windows if expected.get((_epoch(w["window_start"]), w["k"])) not in (None, (w["n"], w["total"]))]
        if wrong:
            row.notes.append(f"FAIL: {len(wrong)} windows with wrong figures, e.g. {wrong[:2]}")
        row.notes.append(f"windows {len(expected)} over {sent[0]} records")
        row.add_memory("gateway", rss.samples["gateway"])
    finally:
        stop.set()
        gw.kill()
    return row


def _epoch(text: str) -> float:
    """DuckDB's JSON form of a TIMESTAMP (UTC), as seconds."""
    import calendar

    whole, _, fraction = text.partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + float(f"0.{fraction or 0}")
