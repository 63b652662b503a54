"""Consumer figures on a real gateway: plain boto3 (the gateway side of issue 13) and the consumer library.

Sections (all by default, or pick with --only):
  fanout   put -> record-in-hand latency p50/p99 on one shard: polling GetRecords (the shard's
           5 reads/s shared by the readers) vs SubscribeToShard, with 1 and with 5 consumers
  queues   ReceiveQueueRecords (10 at a time) + AcknowledgeQueueRecords records/s with 4 receiver
           processes draining a pre-filled queue; ReceiveCount > 1 means a redelivery
  worker   consumer library: records/s one worker processes from one shard (no-op processor), polling
           and fan-out, draining a pre-filled shard (gateway --no-limits: the library's own ceiling)
  takeover consumer library: seconds from SIGKILL of a worker process until another holds all its
           leases, and until it processes new records on them (failover_seconds --failover)
  library  consumer library: put -> processor latency p50/p99, polling (5 GetRecords/s) vs enhanced
           fan-out with 1 and with 5 consumer applications on the same shard

    .venv/bin/python bench/consumers.py
    .venv/bin/python bench/consumers.py --only fanout --seconds 10
    .venv/bin/python bench/consumers.py --only queues --records 20000 --receivers 4
    .venv/bin/python bench/consumers.py --only worker --only takeover --only library
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer import BaseProcessor, Checkpointer, Record, SqliteLeaseStore, Worker, WorkerSettings  # noqa: E402
from consumer.fanout import fanout_reader_factory  # noqa: E402
from edge_agent.localhost import free_port, wait_for_port  # noqa: E402

#: The AWS limit a polling reader works within: GetRecords calls per shard per second.
POLLS_PER_SECOND = 5


def start_gateway(workdir: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (workdir / "gateway.toml").write_text("[consumers]\nactivation_seconds = 0.2\n")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--port", str(port), "--data-dir", str(workdir / "gw"),
                             "--config", str(workdir / "gateway.toml"), "--log-level", "WARNING", *args], cwd=ROOT)
    wait_for_port(port, 30.0, proc)
    return proc, f"http://127.0.0.1:{port}"


def client(url: str) -> Any:
    return boto3.client("kinesis", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                        aws_secret_access_key="secret", config=Config(retries={"max_attempts": 1}, max_pool_connections=50, read_timeout=120))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _poll(kinesis: Any, stream: str, interval: float, offset: float, out: list[float], stop: threading.Event) -> None:
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="LATEST")["ShardIterator"]
    next_call = time.monotonic() + offset  # readers spread over the interval, as independent apps drift
    time.sleep(offset)
    while not stop.is_set():
        try:
            resp = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        except kinesis.exceptions.ProvisionedThroughputExceededException:
            time.sleep(0.05)  # another reader took the shard's call: back off a little, as the KCL does
            continue
        now = time.time()
        out += [now - float(r["Data"]) for r in resp["Records"]]
        iterator = resp["NextShardIterator"]
        next_call += interval
        time.sleep(max(0.0, next_call - time.monotonic()))


def _subscribe(kinesis: Any, consumer: str, out: list[float], stop: threading.Event, ready: threading.Barrier) -> None:
    events = kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId="shardId-000000000000", StartingPosition={"Type": "LATEST"})["EventStream"]
    ready.wait()
    for event in events:
        now = time.time()
        out += [now - float(r["Data"]) for r in event["SubscribeToShardEvent"]["Records"]]
        if stop.is_set():
            break
    events.close()


def bench_fanout(url: str, seconds: float, rate: float) -> None:
    kinesis = client(url)
    for mode, readers in (("polling", 1), ("polling", 5), ("fan-out", 1), ("fan-out", 5)):
        stream = f"lat-{mode}-{readers}".replace(" ", "")
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        stop = threading.Event()
        samples: list[list[float]] = [[] for _ in range(readers)]
        threads = []
        ready = threading.Barrier(readers + 1)
        if mode == "fan-out":
            arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
            consumers = [kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=f"c{i}")["Consumer"]["ConsumerARN"] for i in range(readers)]
            time.sleep(0.3)  # CREATING -> ACTIVE (activation_seconds = 0.2)
            threads = [threading.Thread(target=_subscribe, args=(client(url), c, s, stop, ready), daemon=True) for c, s in zip(consumers, samples)]
        else:  # the readers share the shard's 5 GetRecords/s, as on AWS
            interval = readers / POLLS_PER_SECOND
            threads = [threading.Thread(target=_poll, args=(client(url), stream, interval, i * interval / readers, s, stop), daemon=True) for i, s in enumerate(samples)]
        for t in threads:
            t.start()
        if mode == "fan-out":
            ready.wait()
        time.sleep(0.5)
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            kinesis.put_record(StreamName=stream, PartitionKey="k", Data=repr(time.time()).encode())
            sent += 1
            time.sleep(1 / rate)
        time.sleep(1.5 if mode == "polling" else 0.3)
        stop.set()
        if mode == "fan-out":
            kinesis.put_record(StreamName=stream, PartitionKey="k", Data=repr(time.time()).encode())  # lets the readers see stop
        for t in threads:
            t.join(10)
        all_ms = [x * 1000 for s in samples for x in s]
        p50, p99 = percentiles(all_ms)
        got = min(len(s) for s in samples)
        print(f"  {mode:8} {readers} reader{'s' if readers > 1 else ' '}: put -> record p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
              f"  ({got}/{sent} records each, load {os.getloadavg()[0]:.2f})")


def _receiver(url: str, queue: str, counts: Any, index: int) -> None:
    kinesis = client(url)
    received = redelivered = 0
    while True:
        records = kinesis.receive_queue_records(QueueARN=queue, Limit=10, WaitTimeSeconds=1)["QueueRecords"]
        if not records:
            break
        received += len(records)
        redelivered += sum(r["ReceiveCount"] > 1 for r in records)
        result = kinesis.acknowledge_queue_records(QueueARN=queue, Entries=[{"ReceiptHandle": r["ReceiptHandle"]} for r in records])
        assert not result["Failed"], result["Failed"]
    counts[index] = (received, redelivered)


def bench_queues(url: str, records: int, receivers: int, size: int) -> None:
    kinesis = client(url)
    kinesis.create_stream(StreamName="queued", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    arn = kinesis.describe_stream_summary(StreamName="queued")["StreamDescriptionSummary"]["StreamARN"]
    payload = b"q" * size
    for start in range(0, records, 500):
        kinesis.put_records(StreamName="queued", Records=[{"Data": payload, "PartitionKey": str(i)} for i in range(start, min(records, start + 500))])
    queue = kinesis.create_queue(QueueName="work", StreamConfigurationList=[{"StreamARN": arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}])["QueueDescription"]["QueueARN"]
    while kinesis.describe_queue(QueueARN=queue)["QueueDescription"]["QueueStatus"] != "ACTIVE":
        time.sleep(0.05)
    with multiprocessing.Manager() as manager:
        counts = manager.list([(0, 0)] * receivers)
        procs = [multiprocessing.Process(target=_receiver, args=(url, queue, counts, i)) for i in range(receivers)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0 - 1.0  # each receiver's last, empty long poll waits 1 s
        got = [tuple(c) for c in counts]
    total = sum(c[0] for c in got)
    print(f"  {receivers} receivers, {records} records of {size} B: {total / elapsed:,.0f} records/s received + acknowledged"
          f"  (split {', '.join(str(c[0]) for c in got)}; {sum(c[1] for c in got)} redelivered; load {os.getloadavg()[0]:.2f})")


PROCESSOR_MODULE = '''
import os, sqlite3, time
from consumer import BaseProcessor

class Stamp(BaseProcessor):
    """Writes (shard, worker, time) of each batch to $BENCH_DB: when did a shard start moving again."""
    def __init__(self):
        self.db = sqlite3.connect(os.environ["BENCH_DB"], isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (shard TEXT, worker TEXT, t REAL)")
    def process_records(self, records, checkpointer, millis_behind_latest):
        self.db.execute("INSERT INTO seen VALUES (?, ?, ?)", (self.shard_id, os.environ["BENCH_WORKER"], time.time()))
        checkpointer.checkpoint()
'''


def wait_active(kinesis: Any, stream: str) -> None:
    while kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)


def run_worker(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


class Counting(BaseProcessor):
    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
        self.counter[0] += len(records)

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        pass


def bench_worker(url: str, workdir: Path, n: int, size: int) -> None:
    kinesis = client(url)
    payload = b"x" * size
    for reader in ("polling", "fanout"):
        stream = f"tput-{reader}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        wait_active(kinesis, stream)
        for start in range(0, n, 500):
            kinesis.put_records(StreamName=stream, Records=[{"Data": payload, "PartitionKey": str(i)} for i in range(start, min(n, start + 500))])
        counter = [0]
        settings = WorkerSettings(stream=stream, failover_seconds=10.0, shard_sync_seconds=60.0)
        factory = fanout_reader_factory(kinesis, stream, f"tput-{reader}") if reader == "fanout" else None
        worker = Worker(settings, SqliteLeaseStore(workdir / f"tput-{reader}.db", "tput"), kinesis, lambda: Counting(counter), factory)
        t0 = time.perf_counter()
        thread = run_worker(worker)
        while counter[0] < n:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        worker.stop()
        thread.join(15)
        print(f"  {reader:8} {n} records of {size} B from one shard: {n / elapsed:,.0f} records/s "
              f"({n * size / elapsed / 1e6:.1f} MB/s, incl. lease take and first read; load {os.getloadavg()[0]:.2f})")


def bench_takeover(url: str, workdir: Path, failover: float, rounds: int) -> None:
    kinesis = client(url)
    stream = "takeover"
    kinesis.create_stream(StreamName=stream, ShardCount=4)
    wait_active(kinesis, stream)
    (workdir / "bench_stamp.py").write_text(PROCESSOR_MODULE)
    leases_db, stamp_db = workdir / "takeover-leases.db", workdir / "stamps.db"
    cfg = workdir / "takeover.toml"
    cfg.write_text(f'[consumer]\nstream = "{stream}"\napplication = "takeover"\nprocessor = "bench_stamp:Stamp"\n'
                   f'failover_seconds = {failover}\nshard_sync_seconds = 5.0\n[leases]\npath = "{leases_db}"\n'
                   f'[gateway]\nendpoint_url = "{url}"\n[metrics]\nlisten = ""\n')
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            kinesis.put_records(StreamName=stream, Records=[{"Data": b"t", "PartitionKey": str(i + k)} for k in range(8)])
            i += 8
            time.sleep(0.05)

    threading.Thread(target=produce, daemon=True).start()
    store = SqliteLeaseStore(leases_db, "takeover")
    store.ensure_table()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str) -> None:
        env = {**os.environ, "BENCH_DB": str(stamp_db), "BENCH_WORKER": name, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT}"}
        procs[name] = subprocess.Popen([sys.executable, "-m", "consumer", "--config", str(cfg), "--worker-id", name, "--log-level", "WARNING"],
                                       env=env, cwd=workdir)

    lease_times, flow_times = [], []
    try:
        spawn("a0")
        spawn("b0")
        for r in range(rounds):
            victim = f"a{r}"
            while True:  # both hold leases, shards moving
                owners = [lease.owner for lease in store.list_leases()]
                if len(owners) == 4 and victim in owners and any(o not in (victim, None) for o in owners):
                    break
                time.sleep(0.05)
            time.sleep(1.0)
            held = [lease.key for lease in store.list_leases() if lease.owner == victim]
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            killed = time.time()
            while any(lease.owner in (victim, None) for lease in store.list_leases() if lease.key in held):
                time.sleep(0.01)
            lease_times.append(time.time() - killed)
            db = sqlite3.connect(stamp_db, timeout=30)
            while True:
                moving = {row[0] for row in db.execute("SELECT shard FROM seen WHERE t > ? AND worker != ?", (killed, victim))}
                if set(held) <= moving:
                    break
                time.sleep(0.01)
            flow_times.append(time.time() - killed)
            db.close()
            spawn(f"a{r + 1}")
    finally:
        stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"  failover_seconds = {failover}: SIGKILL -> leases taken: median {statistics.median(lease_times):.2f} s "
          f"(max {max(lease_times):.2f}); -> records flowing again on them: median {statistics.median(flow_times):.2f} s "
          f"(max {max(flow_times):.2f}) over {rounds} kills; load {os.getloadavg()[0]:.2f}")


class Latency(BaseProcessor):
    def __init__(self, out: list[float]) -> None:
        self.out = out

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
        now = time.time()
        self.out += [now - float(r.data) for r in records]

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        pass


def bench_library(url: str, workdir: Path, seconds: float) -> None:
    kinesis = client(url)
    for label, reader, apps in (("polling, 1 app", "polling", 1), ("fan-out, 1 consumer", "fanout", 1), ("fan-out, 5 consumers", "fanout", 5)):
        stream = f"lat-{reader}-{apps}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        wait_active(kinesis, stream)
        samples: list[list[float]] = [[] for _ in range(apps)]
        workers = []
        for a in range(apps):
            factory = fanout_reader_factory(kinesis, stream, f"app{a}") if reader == "fanout" else None
            w = Worker(WorkerSettings(stream=stream, failover_seconds=10.0, initial_position="LATEST"),
                       SqliteLeaseStore(workdir / f"{stream}.db", f"app{a}"), kinesis, lambda s=samples[a]: Latency(s), factory)
            workers.append((w, run_worker(w)))
        time.sleep(2.0)  # leases taken, readers positioned at LATEST / subscribed
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            kinesis.put_record(StreamName=stream, PartitionKey="k", Data=repr(time.time()).encode())
            sent += 1
            time.sleep(0.02)
        time.sleep(1.5)
        for w, t in workers:
            w.stop()
            t.join(15)
        got = min(len(s) for s in samples)
        p50, p99 = percentiles([x * 1000 for s in samples for x in s])
        print(f"  {label:22} put -> processor: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({got}/{sent} records per app, "
              f"load {os.getloadavg()[0]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["fanout", "queues", "worker", "takeover", "library"], action="append")
    parser.add_argument("--seconds", type=float, default=6.0, help="fanout: seconds of puts per case")
    parser.add_argument("--rate", type=float, default=50.0, help="fanout: puts per second")
    parser.add_argument("--records", type=int, default=20_000, help="queues: records pre-filled")
    parser.add_argument("--receivers", type=int, default=4, help="queues: receiver processes")
    parser.add_argument("--size", type=int, default=100, help="queues, worker: bytes per record")
    parser.add_argument("--worker-records", type=int, default=50_000, help="worker: records pre-filled into the shard")
    parser.add_argument("--failover", type=float, default=2.0, help="takeover: failover_seconds of the workers")
    parser.add_argument("--rounds", type=int, default=3, help="takeover: kills")
    args = parser.parse_args()
    sections = args.only or ["fanout", "queues", "worker", "takeover", "library"]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="bench-consumers-") as tmp:
        for section in sections:
            workdir = Path(tmp) / section
            workdir.mkdir()
            # polling readers live within AWS limits (5 reads/s); queues and worker drain unthrottled
            unlimited = section in ("queues", "worker")
            gw, url = start_gateway(workdir, *(("--no-limits",) if unlimited else ()))
            try:
                print(f"{section} (gateway {'--no-limits' if unlimited else 'with AWS limits'}):")
                if section == "fanout":
                    bench_fanout(url, args.seconds, args.rate)
                elif section == "queues":
                    bench_queues(url, args.records, args.receivers, args.size)
                elif section == "worker":
                    bench_worker(url, workdir, args.worker_records, args.size)
                elif section == "takeover":
                    bench_takeover(url, workdir, args.failover, args.rounds)
                else:
                    bench_library(url, workdir, args.seconds)
            finally:
                gw.kill()
                gw.wait()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
