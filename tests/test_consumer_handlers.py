"""Lambda-style handlers on a real gateway: a poison record is isolated by bisection, retried,
sent to the on-failure stream, and processing continues; partial batch failures resume at the
first failed record; a batching window gathers records into one call."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import ROOT, GatewayProcess, wait_until

from consumer import Record, SqliteLeaseStore, Worker, WorkerSettings
from consumer.config import HandlerSection
from consumer.handlers import HandlerProcessor
from kds_support import kds_gateway, read_shard  # noqa: F401  (fixture)


def put(kinesis: Any, stream: str, items: list[str]) -> None:
    resp = kinesis.put_records(StreamName=stream, Records=[{"Data": d.encode(), "PartitionKey": "k"} for d in items])
    assert resp["FailedRecordCount"] == 0


def run_handler(kinesis: Any, tmp_path: Path, stream: str, handler: Callable[[list[Record]], Any], until: Callable[[], bool],
                **settings: Any) -> SqliteLeaseStore:
    store = SqliteLeaseStore(tmp_path / "leases.db", stream)
    section = HandlerSection(retry_base_seconds=0.01, retry_max_seconds=0.05, **settings)
    worker = Worker(WorkerSettings(stream=stream, failover_seconds=2.0, shard_sync_seconds=1.0, poll_interval_seconds=0.05),
                    store, kinesis, lambda: HandlerProcessor(handler, section, stream, kinesis))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(until, timeout=15, what="handler done")
    finally:
        worker.stop()
        thread.join(10)
    return store


def test_bisect_retry_on_failure_and_continue(kds_gateway: GatewayProcess, tmp_path: Path) -> None:
    kinesis = kds_gateway.client()
    kinesis.create_stream(StreamName="h-src", ShardCount=1)
    kinesis.create_stream(StreamName="h-dlq", ShardCount=1)
    put(kinesis, "h-src", [f"r{i}" for i in range(16)])
    calls: list[list[str]] = []
    done: set[str] = set()

    def handler(records: list[Record]) -> None:
        data = [r.data.decode() for r in records]
        calls.append(data)
        if "r5" in data:
            raise ValueError("cannot parse r5")
        done.update(data)
        if "r15" in data and "late" not in done:
            put(kinesis, "h-src", ["late"])  # records after the poison one keep flowing

    store = run_handler(kinesis, tmp_path, "h-src", handler, lambda: "late" in done and len(done) == 16,
                        batch_size=16, max_attempts=3, on_failure_stream="h-dlq")
    assert done == {f"r{i}" for i in range(16) if i != 5} | {"late"}
    # Bisection isolates r5 (16 -> 8 -> 4 -> 2 -> 1; each good half passes once), then r5 alone gets 3 attempts in all.
    assert [len(c) for c in calls if "r5" in c] == [16, 8, 4, 2, 1, 1, 1]
    assert calls.count(["r5"]) == 3 and sum(c == ["r4"] for c in calls) == 1
    dlq, _ = read_shard(kinesis, "h-dlq", "shardId-000000000000")
    assert len(dlq) == 1
    doc = json.loads(dlq[0]["Data"])
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted" and "cannot parse r5" in doc["requestContext"]["functionError"]
    assert base64.b64decode(doc["record"]["data"]) == b"r5" and doc["KinesisBatchInfo"]["shardId"] == "shardId-000000000000"
    lease = store.get("shardId-000000000000")
    src, _ = read_shard(kinesis, "h-src", "shardId-000000000000")
    assert lease is not None and lease.checkpoint == src[-1]["SequenceNumber"]  # checkpointed past the set-aside record


def test_partial_batch_failure_resumes_at_the_failed_record(kds_gateway: GatewayProcess, tmp_path: Path) -> None:
    kinesis = kds_gateway.client()
    kinesis.create_stream(StreamName="h-partial", ShardCount=1)
    put(kinesis, "h-partial", [f"p{i}" for i in range(6)])
    calls: list[list[str]] = []

    def handler(records: list[Record]) -> dict[str, Any]:
        calls.append([r.data.decode() for r in records])
        if len(calls) == 1:
            return {"batchItemFailures": [{"itemIdentifier": records[3].sequence_number}]}
        return {"batchItemFailures": []}

    run_handler(kinesis, tmp_path, "h-partial", handler, lambda: len(calls) >= 2, batch_size=10, bisect_on_error=False)
    assert calls[0] == [f"p{i}" for i in range(6)]
    assert calls[1] == ["p3", "p4", "p5"]  # p0-p2 succeeded: not delivered again


def test_batching_window_gathers_records(kds_gateway: GatewayProcess, tmp_path: Path) -> None:
    kinesis = kds_gateway.client()
    kinesis.create_stream(StreamName="h-window", ShardCount=1)
    calls: list[list[str]] = []

    def handler(records: list[Record]) -> None:
        calls.append([r.data.decode() for r in records])

    def feed() -> None:  # three puts spread over less than the window
        for i in range(3):
            put(kinesis, "h-window", [f"w{i}"])
            threading.Event().wait(0.15)

    threading.Thread(target=feed, daemon=True).start()
    run_handler(kinesis, tmp_path, "h-window", handler, lambda: sum(map(len, calls)) >= 3, batch_size=50, batching_window_seconds=1.5)
    assert calls == [["w0", "w1", "w2"]]


def test_handler_from_the_command_line(kds_gateway: GatewayProcess, tmp_path: Path) -> None:
    """``edge-consumer run --handler module:function`` with the [handler] section; SIGTERM checkpoints and exits 0."""
    kinesis = kds_gateway.client()
    kinesis.create_stream(StreamName="h-cli", ShardCount=1)
    kinesis.create_stream(StreamName="h-cli-dlq", ShardCount=1)
    put(kinesis, "h-cli", ["a", "b", "bad", "c"])
    (tmp_path / "myhandler.py").write_text(
        "import os\n"
        "def handle(records):\n"
        "    if any(r.data == b'bad' for r in records):\n"
        "        raise RuntimeError('bad record')\n"
        "    with open(os.environ['HANDLED'], 'a') as f:\n"
        "        f.writelines(r.data.decode() + '\\n' for r in records)\n")
    cfg = tmp_path / "consumer.toml"
    cfg.write_text(f'[consumer]\nstream = "h-cli"\napplication = "h-cli-app"\nfailover_seconds = 2.0\n'
                   f'[leases]\npath = "{tmp_path / "leases.db"}"\n'
                   '[handler]\nbatch_size = 10\nmax_attempts = 2\nretry_base_seconds = 0.01\non_failure_stream = "h-cli-dlq"\n'
                   f'[gateway]\nendpoint_url = "{kds_gateway.url}"\n[metrics]\nlisten = ""\n')
    handled = tmp_path / "handled.txt"
    env = {**os.environ, "HANDLED": str(handled), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "consumer", "run", "--config", str(cfg), "--handler", "myhandler:handle"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: handled.exists() and sorted(handled.read_text().split()) == ["a", "b", "c"], timeout=20,
                   what="the good records handled")
        wait_until(lambda: len(read_shard(kinesis, "h-cli-dlq", "shardId-000000000000")[0]) == 1, timeout=10, what="the bad record set aside")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, out
    lease = SqliteLeaseStore(tmp_path / "leases.db", "h-cli-app").get("shardId-000000000000")
    src, _ = read_shard(kinesis, "h-cli", "shardId-000000000000")
    assert lease is not None and lease.owner is None and lease.checkpoint == src[-1]["SequenceNumber"]
