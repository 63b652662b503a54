"""Ingest throughput of the gateway's Kinesis Data Streams API (PutRecords), with comparisons.

Runs, in one go and with the same load:
  1. the gateway with ``--no-limits``                        -> records/s, MB/s
  2. the gateway with limits ON but set far above the load   -> cost of limit enforcement
  3. kinesalite (Node.js emulator, installed with npm into --kinesalite-dir)  -> ratio
  4. the same load over HTTP/2 (h2c prior knowledge, httpx; each load process multiplexes its
     clients as concurrent streams on one connection, as the JS and Java SDKs do)
  optional: --cbor (the KPL's wire), --exactly-once (the edge agent's replay headers),
  --durability-full (an fsync per group commit), --encrypted (StartStreamEncryption: records
  sealed with AES-256-GCM, write and read cost); then one reader's GetRecords rate.
Server CPU per record (from /proc) is printed too: on a shared machine it moves far less
than records/s.

Load: ``--clients`` concurrent asyncio/aiohttp connections per load process (``--procs``
processes), each sending pre-built PutRecords bodies (``--batch`` records of ``--size`` bytes,
spread over many partition keys) back to back for ``--duration`` seconds. Only records the
server acknowledged (FailedRecordCount subtracted) are counted.

    .venv/bin/python bench/kds_ingest.py --duration 5 --rounds 2
    .venv/bin/python bench/kds_ingest.py --skip-kinesalite --clients 16 --procs 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
from edge_agent.localhost import free_port, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STREAM = "bench"
HTTP2 = "gateway --no-limits, HTTP/2 (h2c)"
TARGET = "Kinesis_20131202."
HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    # kinesalite insists on an Authorization header (it never checks the signature); the
    # gateway only verifies signatures when credentials are configured (not here).
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00",
    "X-Amz-Date": "20240101T000000Z",
}


def call(url: str, action: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=dict(HEADERS, **{"X-Amz-Target": TARGET + action}))
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def create_stream(url: str, shards: int) -> None:
    call(url, "CreateStream", {"StreamName": STREAM, "ShardCount": shards})
    for _ in range(100):
        desc = call(url, "DescribeStream", {"StreamName": STREAM})
        if desc["StreamDescription"]["StreamStatus"] == "ACTIVE":  # type: ignore[index]
            return
        time.sleep(0.1)
    raise TimeoutError("stream never became ACTIVE")


def create_stream_active(url: str) -> None:
    """Wait for the stream to leave UPDATING (after StartStreamEncryption)."""
    for _ in range(100):
        if call(url, "DescribeStreamSummary", {"StreamName": STREAM})["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":  # type: ignore[index]
            return
        time.sleep(0.1)
    raise TimeoutError("stream never became ACTIVE")


def build_bodies(batch: int, size: int, variants: int = 8, cbor: bool = False) -> list[bytes]:
    bodies = []
    for v in range(variants):
        if cbor:  # the KPL / Java SDK wire: raw bytes
            raw = [{"Data": os.urandom(size), "PartitionKey": f"device-{v}-{i}"} for i in range(batch)]
            bodies.append(cbor2.dumps({"StreamName": STREAM, "Records": raw}))
            continue
        records = [
            {"Data": base64.b64encode(os.urandom(size)).decode(), "PartitionKey": f"device-{v}-{i}"}
            for i in range(batch)
        ]
        bodies.append(json.dumps({"StreamName": STREAM, "Records": records}).encode())
    return bodies


async def _load(url: str, clients: int, duration: float, batch: int, size: int, seed: int, mode: str = "json") -> tuple[int, int, int, list[float]]:
    """``mode``: "json" (boto3's wire), "cbor" (the KPL's), "producer" (JSON + the agent's replay headers),
    "http2" (JSON over HTTP/2: one connection, ``clients`` concurrent streams)."""
    cbor = mode == "cbor"
    producer = mode == "producer"
    bodies = build_bodies(batch, size, cbor=cbor)
    base_headers = dict(HEADERS, **{"X-Amz-Target": TARGET + "PutRecords"})
    if cbor:
        base_headers["Content-Type"] = "application/x-amz-cbor-1.1"
    ok = failed = errors = 0
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    async def post(session: Any, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if mode == "http2":
            answer = await session.post(url, content=body, headers=headers)
            return answer.status_code, answer.content
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.read()

    async def client(n: int, session: Any) -> None:
        nonlocal ok, failed, errors
        i = n + seed
        headers = dict(base_headers)
        next_seq = 0
        while time.monotonic() < deadline:
            body = bodies[i % len(bodies)]
            i += 1
            if producer:  # the edge agent's exactly-once headers: one spool seq per record
                headers["X-Edge-Producer-Id"] = f"bench-{seed}-{n}"
                headers["X-Edge-Record-Seqs"] = ",".join(map(str, range(next_seq, next_seq + batch)))
                next_seq += batch
            sent = time.monotonic()
            status, raw = await post(session, body, headers)
            latencies.append(time.monotonic() - sent)
            if status != 200:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            if cbor:
                count = int(cbor2.loads(raw)["FailedRecordCount"])
            else:
                marker = raw.find(b'"FailedRecordCount":')
                count = int(raw[marker + 20 : raw.index(b",", marker)]) if marker >= 0 else json.loads(raw)["FailedRecordCount"]
            ok += batch - count
            failed += count

    if mode == "http2":
        import httpx  # the test extras' httpx[http2]

        async with httpx.AsyncClient(http1=False, http2=True, timeout=60, limits=httpx.Limits(max_connections=1)) as h2session:
            await asyncio.gather(*(client(n, h2session) for n in range(clients)))
        return ok, failed, errors, latencies
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    return ok, failed, errors, latencies


def _load_proc(args: tuple[str, int, float, int, int, int, str], out: "multiprocessing.Queue[tuple[int, int, int, list[float]]]") -> None:
    out.put(asyncio.run(_load(*args)))


def read_back(url: str) -> tuple[int, float]:
    """Read every shard from TRIM_HORIZON with GetRecords (Limit 10000): (records, seconds)."""
    started = time.monotonic()
    total = 0
    shards = call(url, "ListShards", {"StreamName": STREAM})["Shards"]
    for shard in shards:  # type: ignore[attr-defined]
        it = call(url, "GetShardIterator", {"StreamName": STREAM, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
        while it:
            resp = call(url, "GetRecords", {"ShardIterator": it, "Limit": 10000})
            total += len(resp["Records"])  # type: ignore[arg-type]
            if not resp["Records"] and resp.get("MillisBehindLatest") == 0:
                break
            it = resp.get("NextShardIterator")
    return total, time.monotonic() - started


def run_load(url: str, opts: argparse.Namespace) -> dict[str, float]:
    queue: multiprocessing.Queue[tuple[int, int, int, list[float]]] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_load_proc, args=((url, opts.clients, opts.duration, opts.batch, opts.size, p * 1000, getattr(opts, "mode", "json")), queue)) for p in range(opts.procs)]
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    for p in procs:
        p.start()
    results = [queue.get(timeout=opts.duration + 120) for _ in procs]
    elapsed = time.monotonic() - started
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[3]) or [float("nan")]
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "records_per_s": ok / opts.duration,
        "mb_per_s": ok * opts.size / opts.duration / 1e6,
        "throttled": sum(r[1] for r in results),
        "http_errors": sum(r[2] for r in results),
        "elapsed": elapsed,
        "duration": opts.duration,
        "load_before": load_before,
    }


def start_gateway(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30.0, proc)
    return proc, f"http://127.0.0.1:{port}/"


def start_kinesalite(install_dir: Path) -> tuple[subprocess.Popen[bytes], str] | str:
    """Start kinesalite (npm-installing it first if needed); returns an error string on failure."""
    script = install_dir / "node_modules" / "kinesalite" / "cli.js"
    if not script.exists():
        if not shutil.which("npm"):
            return "npm is not installed"
        install_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "kinesalite"], cwd=install_dir, capture_output=True, text=True, timeout=600)
        if out.returncode != 0 or not script.exists():
            return f"npm install kinesalite failed: {out.stderr.strip()[-300:]}"
    port = free_port()
    # createStreamMs=0: streams are ACTIVE at once; shardLimit high enough for any --shards.
    proc = subprocess.Popen(["node", str(script), "--port", str(port), "--createStreamMs", "0", "--shardLimit", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30.0, proc)
    return proc, f"http://127.0.0.1:{port}/"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, runs: list[dict[str, float]]) -> float:
    rate = sum(r["records_per_s"] for r in runs) / len(runs)
    mb = sum(r["mb_per_s"] for r in runs) / len(runs)
    spread = ", ".join(f"{r['records_per_s']:,.0f}" for r in runs)
    throttled = sum(r["throttled"] for r in runs)
    errors = sum(r["http_errors"] for r in runs)
    loads = ", ".join(f"{r['load_before']:.1f}" for r in runs)
    records = sum(r["records_per_s"] * r["duration"] for r in runs)
    cpu = sum(r["server_cpu_s"] for r in runs)
    per_record = 1e6 * cpu / records if records else float("nan")
    print(f"{name:<36} {rate:>10,.0f} records/s {mb:>7.2f} MB/s  runs [{spread}]  throttled {throttled:.0f}, HTTP errors {errors:.0f}, load avg before runs [{loads}]", flush=True)
    p50 = max(r["p50_ms"] for r in runs)
    p99 = max(r["p99_ms"] for r in runs)
    print(f"{'':<36} server CPU {per_record:.1f} us/record -> {1e6 / per_record:,.0f} records per CPU-second; PutRecords latency p50 {p50:.0f} ms, p99 {p99:.0f} ms (worst run)", flush=True)
    return rate


def warmup_options(opts: argparse.Namespace) -> argparse.Namespace:
    warm = argparse.Namespace(**vars(opts))
    warm.duration = min(2.0, opts.duration / 4)
    return warm


def store_limit_cost(batch: int, size: int) -> tuple[float, float]:
    """CPU per record of the store's write job, limits off vs on (best of interleaved runs):
    the part of the request limit enforcement touches, measured without network noise."""
    sys.path.insert(0, str(ROOT))
    from gateway.config import GatewayConfig, LimitsConfig
    from gateway.kds import control
    from gateway.kds.store import Store

    entries = [(f"device-{i}", os.urandom(size), None, None) for i in range(batch)]
    configs = {"off": LimitsConfig(enabled=False), "on": LimitsConfig(enabled=True, shard_write_bytes_per_sec=10**12, shard_write_records_per_sec=10**12)}
    best = {"off": float("inf"), "on": float("inf")}
    with tempfile.TemporaryDirectory(prefix="kds-bench-store-") as tmp:
        stores = {name: Store(GatewayConfig(data_dir=f"{tmp}/{name}", limits=limits)) for name, limits in configs.items()}
        try:
            for store in stores.values():
                asyncio.run(control.create_stream(store, STREAM, 4, "PROVISIONED", {}))
            for _ in range(20):
                for name, store in stores.items():
                    stream, conn = store.stream(STREAM), store._conn
                    started = time.process_time()
                    for _ in range(10):
                        conn.execute("BEGIN")
                        store._put_job(conn, stream, entries, None)  # type: ignore[arg-type]
                        conn.execute("COMMIT")
                    best[name] = min(best[name], (time.process_time() - started) / (10 * batch) * 1e6)
        finally:
            for store in stores.values():
                store.close()
    return best["off"], best["on"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections per load process (default 8)")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--batch", type=int, default=500, help="records per PutRecords (default 500)")
    parser.add_argument("--size", type=int, default=100, help="bytes of data per record (default 100)")
    parser.add_argument("--shards", type=int, default=4, help="shards in the stream (default 4)")
    parser.add_argument("--kinesalite-dir", type=Path, default=Path("/tmp/kinesalite"), help="where kinesalite is (or gets) npm-installed, outside the repo (default /tmp/kinesalite)")
    parser.add_argument("--skip-kinesalite", action="store_true", help="do not compare with kinesalite")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per server (default 2)")
    parser.add_argument("--durability-full", action="store_true", help='also measure a gateway with durability = "full" (an fsync per group commit)')
    parser.add_argument("--cbor", action="store_true", help="also measure PutRecords in CBOR (application/x-amz-cbor-1.1, as the KPL and Java SDK send)")
    parser.add_argument("--exactly-once", action="store_true", help="also measure PutRecords with the edge agent's X-Edge-* replay headers")
    parser.add_argument("--encrypted", action="store_true", help="also measure a stream under StartStreamEncryption (AES-256-GCM at rest), writes and reads")
    parser.add_argument("--skip-limits", action="store_true", help="do not measure the cost of limit enforcement")
    parser.add_argument("--skip-http2", action="store_true", help="do not measure the same load over HTTP/2 (h2c, httpx)")
    opts = parser.parse_args(argv)

    print(f"PutRecords: {opts.batch} x {opts.size} B records, {opts.shards} shards, {opts.procs} x {opts.clients} clients, {opts.rounds} x {opts.duration:.0f} s per server")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    with tempfile.TemporaryDirectory(prefix="kds-bench-") as tmp:
        try:
            servers["gateway --no-limits"] = start_gateway(Path(tmp) / "nolimits", "--no-limits")
            if not opts.skip_limits:
                config = Path(tmp) / "limits.toml"
                huge = 10**12
                config.write_text(f"[limits]\nenabled = true\nshard_write_bytes_per_sec = {huge}\nshard_write_records_per_sec = {huge}\n")
                servers["gateway, limits on (not throttling)"] = start_gateway(Path(tmp) / "limits", "--config", str(config))
            if opts.durability_full:
                full = Path(tmp) / "full.toml"
                full.write_text('durability = "full"\n[limits]\nenabled = false\n')
                servers["gateway, durability=full (fsync)"] = start_gateway(Path(tmp) / "full", "--config", str(full))
            if opts.cbor:
                servers["gateway, CBOR (the KPL's wire)"] = start_gateway(Path(tmp) / "cbor", "--no-limits")
            if opts.encrypted:
                servers["gateway, encrypted stream (KMS)"] = start_gateway(Path(tmp) / "encrypted", "--no-limits")
            if opts.exactly_once:
                servers["gateway, exactly-once headers"] = start_gateway(Path(tmp) / "exactly-once", "--no-limits")
            if not opts.skip_http2:
                servers[HTTP2] = start_gateway(Path(tmp) / "http2", "--no-limits")
            if not opts.skip_kinesalite:
                started = start_kinesalite(opts.kinesalite_dir)
                if isinstance(started, str):
                    print(f"KINESALITE NOT RUN: {started}")
                else:
                    servers["kinesalite"] = started
            for name, (_, url) in servers.items():
                create_stream(url, opts.shards)
                if "encrypted" in name:
                    call(url, "StartStreamEncryption", {"StreamName": STREAM, "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"})
                    create_stream_active(url)
                run_load(url, warmup_options(opts))
            # Rounds alternate between servers so a burst of load from other processes on a
            # shared machine does not land on one server only.
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for _ in range(opts.rounds):
                for name, (proc, url) in servers.items():
                    before = cpu_seconds(proc.pid)
                    mode = "producer" if name.endswith("exactly-once headers") else "cbor" if "CBOR" in name else "http2" if name == HTTP2 else "json"
                    result = run_load(url, argparse.Namespace(**vars(opts), mode=mode))
                    result["server_cpu_s"] = cpu_seconds(proc.pid) - before
                    runs[name].append(result)
            read_url = servers["gateway --no-limits"][1]
            count, seconds = read_back(read_url)
            print(f"read back from the gateway with GetRecords (one reader, Limit 10000): {count:,} records in {seconds:.1f} s = {count / seconds:,.0f} records/s", flush=True)
            if opts.encrypted:
                count, seconds = read_back(servers["gateway, encrypted stream (KMS)"][1])
                print(f"read back from the encrypted stream: {count:,} records in {seconds:.1f} s = {count / seconds:,.0f} records/s", flush=True)
        finally:
            for proc, _ in servers.values():
                stop(proc)
    rates = {name: report(name, r) for name, r in runs.items()}
    # CPU per record is the steadier figure on a shared machine: wall-clock rates move with
    # whatever else is running, the work done per record does not.
    cost = {name: sum(x["server_cpu_s"] for x in r) / sum(x["records_per_s"] * x["duration"] for x in r) for name, r in runs.items()}
    base = rates["gateway --no-limits"]
    limited = rates.get("gateway, limits on (not throttling)")
    if limited is not None:
        print(f"cost of limit enforcement: {100.0 * (1 - limited / base):+.1f} % of records/s, "
              f"{100.0 * (cost['gateway, limits on (not throttling)'] / cost['gateway --no-limits'] - 1):+.1f} % of CPU per record (target < 10 %)")
        off, on = store_limit_cost(opts.batch, opts.size)
        print(f"  without network noise: the write job costs {off:.2f} us/record with limits off, {on:.2f} us with them on "
              f"(+{on - off:.2f} us = {100.0 * (on - off) / (1e6 * cost['gateway --no-limits']):+.1f} % of the gateway's {1e6 * cost['gateway --no-limits']:.1f} us/record)")
    sealed = rates.get("gateway, encrypted stream (KMS)")
    if sealed is not None:
        print(f"cost of at-rest encryption: {100.0 * (1 - sealed / base):+.1f} % of records/s, "
              f"{100.0 * (cost['gateway, encrypted stream (KMS)'] / cost['gateway --no-limits'] - 1):+.1f} % of CPU per record")
    if HTTP2 in rates:
        print(f"HTTP/2 / HTTP/1.1: {rates[HTTP2] / base:.2f}x records/s, {cost[HTTP2] / cost['gateway --no-limits']:.2f}x server CPU per record "
              "(the Python h2 client, not the server, is usually the limit of the HTTP/2 rate: compare CPU per record)")
    if "kinesalite" in rates:
        print(f"gateway / kinesalite: {base / rates['kinesalite']:.1f}x records/s, "
              f"{cost['kinesalite'] / cost['gateway --no-limits']:.1f}x less CPU per record (target >= 3x)")
    print(f"target >= 50,000 records/s on 2 cores: {'MET' if base >= 50_000 else 'NOT MET'} ({base:,.0f}); load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
