"""Analytics figures: SQL throughput, window-close latency, and what a running application costs ingest.

Three measurements, each against a real gateway process (``--no-limits``):

  1. throughput: ``--records`` JSON records are stored first, then the gateway restarts with an
     application (tumbling 1 s windows, GROUP BY device, avg/min/max/count) reading them from
     TRIM_HORIZON; events/s = records / time until it has read them all, and per CPU-second of
     the gateway process (the application is one thread, DuckDB with threads=1: one core);
  2. latency: a producer sends one record every 20 ms with ts = now; for each emitted window,
     the time from the window's end (the moment a record that closes it is sent) until a
     GetRecords poller sees the window's row in the output stream (p50, p99);
  3. ingest cost: PutRecords records/s from ``--clients`` connections for ``--duration`` s
     against a gateway without and with an application reading that stream (``--rounds``
     alternating rounds; DuckDB releases the GIL, so what the application costs ingest is CPU).

    .venv/bin/python bench/analytics.py
    .venv/bin/python bench/analytics.py --records 2000000 --duration 10 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kds_ingest import HEADERS, TARGET, call, cpu_seconds, free_port, stop, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = """
[[analytics.applications]]
name = "bench"
poll_seconds = {poll}
  [[analytics.applications.inputs]]
  stream = "{stream}"
  table = "readings"
  columns = ["device VARCHAR", "temp DOUBLE", "ts TIMESTAMP"]
  event_time = "{event_time}"
  allowed_lateness_seconds = 0
  [[analytics.applications.queries]]
  name = "per_second"
  output_stream = "out"
  sql = '''SELECT window_start, window_end, device, avg(temp) AS avg_temp, min(temp) AS lo, max(temp) AS hi, count(*) AS n
           FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR({column}), INTERVAL '1' SECOND)) GROUP BY ALL'''
"""


def start_gateway(data_dir: Path, config: str = "") -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = data_dir.parent / f"gateway-{port}.toml"
    path.write_text(config)
    cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
           "--log-level", "WARNING", "--no-limits", "--config", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc, f"http://127.0.0.1:{port}/"


def create(url: str, stream: str, shards: int = 1) -> None:
    call(url, "CreateStream", {"StreamName": stream, "ShardCount": shards})


def summary(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}analytics/applications/bench", timeout=10) as response:
        return json.load(response)  # type: ignore[no-any-return]


def reading(i: int, ts: float) -> bytes:
    return json.dumps({"device": f"sensor-{i % 50}", "temp": round(15 + (i * 7919 % 1000) / 50, 2), "ts": ts}).encode()


def bodies(stream: str, batch: int, variants: int = 8) -> list[bytes]:
    out = []
    for v in range(variants):
        records = [{"Data": base64.b64encode(reading(v * batch + i, time.time())).decode(), "PartitionKey": f"sensor-{i % 50}"} for i in range(batch)]
        out.append(json.dumps({"StreamName": stream, "Records": records}).encode())
    return out


async def _load(url: str, stream: str, clients: int, duration: float, batch: int) -> int:
    payloads = bodies(stream, batch)
    headers = dict(HEADERS, **{"X-Amz-Target": TARGET + "PutRecords"})
    ok = 0
    deadline = time.monotonic() + duration

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal ok
        i = n
        while time.monotonic() < deadline:
            async with session.post(url, data=payloads[i % len(payloads)], headers=headers) as resp:
                raw = await resp.read()
            i += 1
            if resp.status == 200:
                ok += batch - int(json.loads(raw)["FailedRecordCount"])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    return ok


def _load_proc(args: tuple[str, str, int, float, int], out: "multiprocessing.Queue[int]") -> None:
    out.put(asyncio.run(_load(*args)))


def load(url: str, stream: str, clients: int, duration: float, batch: int = 500) -> int:
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_load_proc, args=((url, stream, clients, duration, batch), queue))
    proc.start()
    ok = queue.get(timeout=duration + 120)
    proc.join()
    return ok


def throughput(base: Path, records: int) -> None:
    data = base / "throughput"
    proc, url = start_gateway(data)
    create(url, "readings", shards=2)
    create(url, "out")
    start = time.time() - records / 100_000  # event times: 100,000 readings per second of event time
    for first in range(0, records, 500):
        batch = [{"Data": base64.b64encode(reading(i, start + i / 100_000)).decode(), "PartitionKey": f"sensor-{i % 50}"} for i in range(first, min(records, first + 500))]
        call(url, "PutRecords", {"StreamName": "readings", "Records": batch})
    stop(proc)
    proc, url = start_gateway(data, APP.format(poll=0.05, stream="readings", event_time="ts", column="ts"))
    started, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
    while summary(url)["RecordsIn"] < records:
        time.sleep(0.05)
    elapsed, cpu = time.monotonic() - started, cpu_seconds(proc.pid) - cpu0
    outputs = summary(url)["Queries"][0]["Outputs"]
    stop(proc)
    print(f"tumbling-window GROUP BY over JSON: {records:,} records in {elapsed:.2f} s = {records / elapsed:,.0f} events/s "
          f"({records / cpu:,.0f} per CPU-second of the gateway; {outputs} window rows)  load avg {os.getloadavg()[0]:.2f}", flush=True)


def latency(base: Path, seconds: float) -> None:
    proc, url = start_gateway(base / "latency", APP.format(poll=0.02, stream="live", event_time="ts", column="ts"))
    create(url, "live")
    create(url, "out")
    stop_sending = threading.Event()

    def produce() -> None:
        i = 0
        while not stop_sending.wait(0.02):
            call(url, "PutRecords", {"StreamName": "live", "Records": [{"Data": base64.b64encode(reading(i, time.time())).decode(), "PartitionKey": "p"}]})
            i += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    shard = call(url, "ListShards", {"StreamName": "out"})["Shards"][0]["ShardId"]  # type: ignore[index]
    iterator = call(url, "GetShardIterator", {"StreamName": "out", "ShardId": shard, "ShardIteratorType": "LATEST"})["ShardIterator"]
    seen: dict[str, float] = {}  # window_end -> delay of its first row
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = call(url, "GetRecords", {"ShardIterator": iterator})
        now = time.time()
        for record in result["Records"]:  # type: ignore[attr-defined]
            row = json.loads(base64.b64decode(record["Data"]))
            end = calendar.timegm(time.strptime(row["window_end"][:19], "%Y-%m-%d %H:%M:%S"))
            seen.setdefault(row["window_end"], now - end)
        iterator = result["NextShardIterator"]
        time.sleep(0.005)
    stop_sending.set()
    producer.join()
    stop(proc)
    delays = sorted(seen.values())[1:]  # the first window may have started before the producer
    if delays:
        print(f"window close -> output row readable: p50 {1000 * delays[len(delays) // 2]:.0f} ms, p99 {1000 * delays[int(len(delays) * 0.99)]:.0f} ms, "
              f"max {1000 * delays[-1]:.0f} ms over {len(delays)} windows (poll 20 ms, producer every 20 ms)  load avg {os.getloadavg()[0]:.2f}", flush=True)


def ingest_cost(base: Path, clients: int, duration: float, rounds: int) -> None:
    """Alternating runs without and with an application (a loaded machine drifts; alternation spreads it)."""
    rates: dict[str, list[float]] = {"without an application": [], "with an application": []}
    for round_ in range(rounds):
        for name, config in (("without an application", ""), ("with an application", APP.format(poll=0.2, stream="load", event_time="", column="arrival_time"))):
            proc, url = start_gateway(base / f"{name.replace(' ', '-')}-{round_}", config)
            create(url, "load", shards=4)
            create(url, "out")
            load(url, "load", clients, min(2.0, duration))  # warm-up
            ok = load(url, "load", clients, duration)
            rates[name].append(ok / duration)
            extra = ""
            if config:
                app = summary(url)
                extra = f"; the application read {app['RecordsIn']:,} records, lag {app['InputLagMillis']} ms at the end"
            stop(proc)
            print(f"PutRecords {name:<24} {ok / duration:>10,.0f} records/s ({clients} clients, 500-record JSON batches{extra})  load avg {os.getloadavg()[0]:.2f}", flush=True)
    mean = {name: sum(r) / len(r) for name, r in rates.items()}
    print(f"ingest with a running application: {mean['with an application']:,.0f} vs {mean['without an application']:,.0f} records/s "
          f"= {100 * mean['with an application'] / mean['without an application']:.0f} % (mean of {rounds} alternating rounds)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the throughput run (default %(default)s)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--clients", type=int, default=8, help="PutRecords connections for the ingest runs")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per ingest run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating without/with rounds for the ingest runs")
    parser.add_argument("--skip", action="append", default=[], choices=["throughput", "latency", "ingest"], help="leave a part out")
    opts = parser.parse_args(argv)
    random.seed(1)
    print(f"cores {os.cpu_count()}, load avg {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        base = Path(tmp)
        if "throughput" not in opts.skip:
            throughput(base, opts.records)
        if "latency" not in opts.skip:
            latency(base, opts.latency_seconds)
        if "ingest" not in opts.skip:
            ingest_cost(base, opts.clients, opts.duration, opts.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
