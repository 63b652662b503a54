"""A week offline: the agent process starts on a spool holding a large backlog and drains it.

    .venv/bin/python bench/backlog.py                      # 1,000,000 records of 100 B
    .venv/bin/python bench/backlog.py --records 3000000 --aggregate

Prints how long the agent took to start (metrics endpoint up) with the backlog, its peak RSS
while draining (it pages through the spool; it never loads it whole), and the drain rate into a
gateway with --no-limits. Figures only; note the load average printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import GatewayProcess, aws_client, free_port  # noqa: E402

from edge_agent.spool import Spool  # noqa: E402
from edge_agent.status import from_metrics  # noqa: E402


def build_backlog(path: Path, records: int, stream: str) -> None:
    """Write the backlog straight into the spool's first segment (as a week of appends would have)."""
    Spool(path, max_bytes=1 << 40).close()
    db = sqlite3.connect(path)
    payload = b"x" * 100
    now = int(time.time() * 1000)
    db.execute("INSERT INTO routes(id, kind, stream, source) VALUES (1, 'telemetry', ?, 'mqtt-0')", (stream,))
    db.executemany(
        "INSERT INTO records_0(lane, route, partition_key, timestamp_ms, size, attrs, data) VALUES (?,?,?,?,?,?,?)",
        (("records", 1, f"sensor-{i % 50}", now - records + i, 100, None, payload) for i in range(records)),
    )
    db.commit()
    db.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the backlog")
    parser.add_argument("--aggregate", action="store_true", help="KPL aggregation on in the agent")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edge-backlog-"))
    gw = GatewayProcess(tmp / "gateway", "--no-limits").start()
    agent = None
    try:
        aws_client("kinesis", gw.url).create_stream(StreamName="backlog", ShardCount=4)
        spool_path = tmp / "spool.db"
        t0 = time.perf_counter()
        build_backlog(spool_path, args.records, "backlog")
        print(f"backlog: {args.records:,} records, spool file {spool_path.stat().st_size / 2**20:.0f} MiB (built in {time.perf_counter() - t0:.1f}s)")
        (tmp / "empty.log").write_text("")
        metrics_port = free_port()
        config = tmp / "agent.toml"
        config.write_text(f"""
[agent]
id = "backlog-bench"
[spool]
path = "{spool_path}"
max_bytes = {1 << 40}
sync = "normal"
[gateway]
endpoint_url = "{gw.url}"
[forwarder]
aggregate = {"true" if args.aggregate else "false"}
linger_ms = 0
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[sources.logs]]
stream = "backlog"
paths = ["{tmp / 'empty.log'}"]
""")
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        started = time.perf_counter()
        agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config)], cwd=ROOT,
                                 stdout=open(tmp / "agent.log", "ab"), stderr=subprocess.STDOUT)
        while True:
            try:
                status = from_metrics(metrics, timeout=0.5)
                break
            except OSError:
                time.sleep(0.05)
        up = time.perf_counter() - started
        print(f"agent up with the backlog in {up:.2f}s, RSS {rss_kb(agent.pid) / 1024:.0f} MiB")
        peak = 0
        last_report = time.perf_counter()
        drain_start = time.perf_counter()
        while True:
            peak = max(peak, rss_kb(agent.pid))
            status = from_metrics(metrics, timeout=2)
            left = status.spool_records.get("records", 0)
            if left == 0:
                break
            if time.perf_counter() - last_report > 10:
                done = args.records - left
                print(f"  {done:,} sent, {done / (time.perf_counter() - drain_start):,.0f} records/s, RSS {peak / 1024:.0f} MiB")
                last_report = time.perf_counter()
            time.sleep(0.2)
        elapsed = time.perf_counter() - drain_start
        print(f"drained {args.records:,} records in {elapsed:.1f}s = {args.records / elapsed:,.0f} records/s "
              f"(aggregation {'on' if args.aggregate else 'off'}); agent peak RSS {peak / 1024:.0f} MiB")
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(20)
        gw.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    one, five, _ = os.getloadavg()
    print(f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
