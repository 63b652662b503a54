"""Firehose delivery throughput and latency on the gateway.

For each destination (the embedded S3 directory, and SeaweedFS's S3 server with ``--s3``):

  1. ingest   PutRecordBatch MB/s from ``--clients`` threads (500 records of ``--size`` bytes a
              call, JSON lines), buffered durably but not yet delivered (interval 900 s)
  2. deliver  the buffer is then released (UpdateDestination to IntervalInSeconds 0) and the time
              until every record is in objects gives MB/s delivered (raw record bytes), for
              JSON+GZIP and for Parquet (schema from a Glue table)
  3. latency  IntervalInSeconds 0: PutRecord -> object visible (embedded: the file exists; S3:
              ListObjectsV2 shows it), median and p95 of ``--samples`` puts

The gateway runs with ``--no-limits``. Figures on a shared machine move with its load: the
load average is printed beside them.

    .venv/bin/python bench/firehose.py                       # embedded directory, 64 MB per format
    .venv/bin/python bench/firehose.py --mb 128 --s3         # also SeaweedFS (weed mini)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from edge_agent.localhost import free_port, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROLE = "arn:aws:iam::000000000000:role/bench"
COLUMNS = [{"Name": "device", "Type": "string"}, {"Name": "seq", "Type": "bigint"}, {"Name": "temp", "Type": "double"},
           {"Name": "ok", "Type": "boolean"}, {"Name": "note", "Type": "string"}]


def client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench",
                        config=Config(retries={"max_attempts": 3}, max_pool_connections=32))


def records(size: int, count: int, start: int) -> list[bytes]:
    pad = "x" * max(0, size - 90)
    return [json.dumps({"device": f"d{i % 50}", "seq": i, "temp": 20.0 + i % 7, "ok": i % 3 == 0, "note": pad}).encode() + b"\n" for i in range(start, start + count)]


class SeaweedFS:
    def __init__(self, workdir: Path) -> None:
        names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
                 "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port")
        self.ports = {n: free_port() for n in names}
        binary = Path(sys.executable).parent / "weed"
        cmd = [str(binary if binary.exists() else "weed"), "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               *(f"-{n}={p}" for n, p in self.ports.items()), "-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=bench"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
        self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        wait_for_port(self.ports["s3.port"], 60.0)
        s3 = client("s3", self.url)
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.put_object(Bucket="bench", Key=".ready", Body=b"")
                s3.delete_object(Bucket="bench", Key=".ready")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Gateway:
    def __init__(self, workdir: Path, toml: str) -> None:
        self.port = free_port()
        self.data = workdir / "data"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "gateway.toml"
        config.write_text(toml)
        self.log = open(workdir / "gateway.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "--port", str(self.port), "--data-dir", str(self.data), "--config", str(config),
                                      "--no-limits", "--log-level", "WARNING"], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for_port(self.port, 60.0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


class Target:
    """Where objects land, and how to count what is there."""

    def __init__(self, gateway: Gateway, s3_url: str | None) -> None:
        self.gateway = gateway
        self.s3 = client("s3", s3_url) if s3_url else None
        self.name = "S3 (SeaweedFS)" if s3_url else "embedded dir"

    def keys(self, bucket: str, prefix: str) -> list[str]:
        if self.s3 is None:
            root = self.gateway.data / "s3" / bucket
            return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")] if root.exists() else []
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


def buffered(gateway: Gateway, stream: str) -> int:
    """Records of ``stream`` still in the gateway's buffer (its SQLite file, read-only)."""
    conn = sqlite3.connect(f"file:{gateway.data / 'firehose.sqlite3'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM chunks WHERE stream=?", (stream,)).fetchone()[0])
    finally:
        conn.close()


def throughput(firehose: Any, gateway: Gateway, stream: str, destination: dict[str, Any], mb: int, size: int, clients: int) -> tuple[float, float]:
    """(ingest MB/s, delivery MB/s) for ``mb`` MB of records through ``stream``."""
    firehose.create_delivery_stream(DeliveryStreamName=stream, ExtendedS3DestinationConfiguration={**destination, "BufferingHints": {"SizeInMBs": 128, "IntervalInSeconds": 900}})
    per_call = 500
    calls = max(1, (mb * 1_000_000) // (per_call * size))
    bodies = [records(size, per_call, i * per_call) for i in range(min(calls, 64))]
    total_bytes = sum(len(r) for i in range(calls) for r in bodies[i % len(bodies)])
    counter = iter(range(calls))
    lock = threading.Lock()

    def produce() -> None:
        local = client("firehose", gateway.url)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            batch = [{"Data": r} for r in bodies[i % len(bodies)]]
            while batch:
                out = local.put_record_batch(DeliveryStreamName=stream, Records=batch)
                batch = [b for b, r in zip(batch, out["RequestResponses"]) if "ErrorCode" in r]

    start = time.monotonic()
    threads = [threading.Thread(target=produce) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ingest = total_bytes / (time.monotonic() - start) / 1e6
    version = firehose.describe_delivery_stream(DeliveryStreamName=stream)["DeliveryStreamDescription"]["VersionId"]
    start = time.monotonic()
    firehose.update_destination(DeliveryStreamName=stream, CurrentDeliveryStreamVersionId=version, DestinationId="destinationId-000000000001",
                                ExtendedS3DestinationUpdate={"BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 0}})
    while buffered(gateway, stream):
        time.sleep(0.02)
    deliver = total_bytes / (time.monotonic() - start) / 1e6
    return ingest, deliver


def latency(firehose: Any, target: Target, bucket: str, samples: int) -> tuple[float, float]:
    firehose.create_delivery_stream(DeliveryStreamName="latency", ExtendedS3DestinationConfiguration={
        "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}", "Prefix": "latency/", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}})
    times = []
    for i in range(samples):
        before = len(target.keys(bucket, "latency/"))
        start = time.monotonic()
        firehose.put_record(DeliveryStreamName="latency", Record={"Data": b'{"n": %d}\n' % i})
        while len(target.keys(bucket, "latency/")) == before:
            time.sleep(0.002)
        times.append((time.monotonic() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def run(url: str, gateway: Gateway, target: Target, bucket: str, args: argparse.Namespace, tag: str) -> None:
    firehose, glue = client("firehose", url), client("glue", url)
    base = {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}"}
    if tag == "local":
        glue.create_database(DatabaseInput={"Name": "bench"})
        glue.create_table(DatabaseName="bench", TableInput={"Name": "readings", "StorageDescriptor": {"Columns": COLUMNS}})
    parquet = {**base, "Prefix": f"{tag}-parquet/", "ErrorOutputPrefix": f"{tag}-errors/", "DataFormatConversionConfiguration": {
        "Enabled": True, "SchemaConfiguration": {"DatabaseName": "bench", "TableName": "readings", "RoleARN": ROLE},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}}, "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}}}
    for label, dest in (("JSON+GZIP", {**base, "Prefix": f"{tag}-json/", "CompressionFormat": "GZIP"}), ("Parquet", parquet)):
        ingest, deliver = throughput(firehose, gateway, f"{tag}-{label.lower().replace('+', '-')}", dest, args.mb, args.size, args.clients)
        print(f"{target.name:15s} {label:10s} ingest {ingest:6.1f} MB/s   delivered {deliver:6.1f} MB/s   ({args.mb} MB, {args.size}-byte records)   load {os.getloadavg()[0]:.2f}", flush=True)
    median, p95 = latency(firehose, target, bucket, args.samples)
    print(f"{target.name:15s} put -> object visible (IntervalInSeconds=0): median {median:.0f} ms, p95 {p95:.0f} ms   load {os.getloadavg()[0]:.2f}", flush=True)
    firehose.delete_delivery_stream(DeliveryStreamName="latency")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64, help="MB of records per format (default 64)")
    parser.add_argument("--size", type=int, default=1000, help="bytes per record (default 1000)")
    parser.add_argument("--clients", type=int, default=4, help="producer threads (default 4)")
    parser.add_argument("--samples", type=int, default=20, help="latency samples (default 20)")
    parser.add_argument("--gzip-level", type=int, default=6, help="[firehose] gzip_level (default 6)")
    parser.add_argument("--s3", action="store_true", help="also deliver to a SeaweedFS S3 server (weed mini)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-firehose-"))
    weed: SeaweedFS | None = None
    gateways: list[Gateway] = []
    try:
        print(f"load average at start: {os.getloadavg()}", flush=True)
        local = Gateway(work / "local", f"[firehose]\ngzip_level = {args.gzip_level}\n")
        gateways.append(local)
        run(local.url, local, Target(local, None), "bench", args, "local")
        if args.s3:
            (work / "weed").mkdir(parents=True)
            weed = SeaweedFS(work / "weed")
            remote = Gateway(work / "s3", f'[firehose]\ngzip_level = {args.gzip_level}\ns3_endpoint_url = "{weed.url}"\ns3_access_key_id = "a"\ns3_secret_access_key = "b"\n')
            gateways.append(remote)
            glue = client("glue", remote.url)
            glue.create_database(DatabaseInput={"Name": "bench"})
            glue.create_table(DatabaseName="bench", TableInput={"Name": "readings", "StorageDescriptor": {"Columns": COLUMNS}})
            run(remote.url, remote, Target(remote, weed.url), "bench", args, "s3")
    finally:
        for gw in gateways:
            gw.stop()
        if weed is not None:
            weed.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
