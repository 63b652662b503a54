"""Soak: reliability figures at scale for the whole stack, printed as one table.

CI's chaos tests (tests/test_chaos*.py) prove each mechanism in seconds; this runs the same rigs long
enough to publish figures: hundreds of SIGKILLs, a thousand network faults, a hundred thousand
fuzzed requests, and power-cut snapshots of every store, with every record and fragment checked.

Parts (each on by default; ``--parts`` picks some):
  agent     the agent (MQTT, serial, logs, camera under load) SIGKILLed at random moments
  gateway   the gateway SIGKILLed during PutRecords, PutMedia and reads (GetRecords, GetMedia)
  proxy     a fault-injecting proxy between agent and gateway (resets, stalls, lost responses)
  fuzz      requests shaped from botocore's models of every service the gateway serves, plus junk, and GETs
            of the analytics endpoints (an application reads the fuzzed stream)
  powercut  each store (agent spool, data streams, video) frozen (SIGSTOP) at random moments while
            writes are in flight, its directory copied, and the copy reopened: everything acknowledged
            before the freeze must be in the copy and every SQLite file must pass integrity_check
  consumers, firehose, analytics  the services on the streams under SIGKILLs (bench/soak_services.py)

Examples:
  python bench/soak.py                                    # the full soak (about 30 minutes here)
  python bench/soak.py --parts fuzz --fuzz-requests 20000 # one part, smaller
  python bench/soak.py --agent-kills 10 --gateway-kills 5 --faults 50 --fuzz-requests 2000 --snapshots 5 --service-kills 5

Memory: agent and gateway RSS are sampled throughout; the table gives the peak and the curve (first
third → last third of samples) so growth shows. The exit code is 1 if anything was lost or
duplicated, or the gateway answered a 5xx/died under fuzzing.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import botocore.session  # noqa: E402

from agent_helpers import list_fragments, read_stream, synthetic_fragments  # noqa: E402
from chaos_support import ChaosRig, rss_kb  # noqa: E402
from faultproxy import FaultMix, FaultProxy  # noqa: E402
from helpers import GatewayProcess, MosquittoProcess, aws_client, free_port, wait_until  # noqa: E402
from soak_support import Row, RssSampler, curve, kill_loop, pid_of  # noqa: E402


# -- agent, gateway and proxy: the chaos rig, run long -----------------------------------------------


def verdict(rig: ChaosRig, row: Row, timeout: float = 180) -> None:
    """Wait for the gateway to hold everything the producers made, then count lost, duplicated and
    reordered records (serial has no acknowledgement: lines the agent read but had not committed when
    killed are counted apart), and check every listed fragment is stored once and decodes."""
    expected = rig.producers.expected()
    kinesis = rig.gateway.client("kinesis")

    def have() -> int:
        return sum(len(r) for s in expected for r in read_stream(kinesis, s).values())

    total = sum(len(v) for v in expected.values())
    serial_slack = 3 * rig.agent_kills
    try:
        wait_until(lambda: have() >= total - serial_slack, timeout, interval=2.0, what="everything at the gateway")
    except AssertionError:
        row.notes.append("FAIL: not everything arrived in time")
    time.sleep(2.0)  # a duplicate still in flight would land now
    serial_lost = 0
    for stream, wanted in expected.items():
        by_shard = read_stream(kinesis, stream)
        data = [r["Data"] for records in by_shard.values() for r in records]
        counts = Counter(data)
        row.duplicated += sum(n - 1 for n in counts.values() if n > 1)
        missing = wanted - set(counts)
        lost_serial = {m for m in missing if m.startswith(b"serial|")}
        serial_lost += len(lost_serial)
        row.lost += len(missing - lost_serial)
        row.checked += len(counts)
        extra = set(counts) - wanted
        if extra:
            row.notes.append(f"FAIL: {len(extra)} unexpected records in {stream}: {sorted(extra)[:3]!r}")
        row.notes.extend(_order_errors(stream, by_shard))
    row.notes.append(f"serial lines lost (no ack on serial): {serial_lost} of {rig.producers.counts['serial']}")
    fragments = list_fragments(rig.gateway.url, "cam-e2e")
    starts = Counter(f["ProducerTimestamp"] for f in fragments)
    row.duplicated += sum(n - 1 for n in starts.values() if n > 1)
    bad = undecodable(rig.gateway, "cam-e2e", [f["FragmentNumber"] for f in fragments])
    row.checked += len(fragments)
    row.notes.append(f"fragments {len(fragments)}, undecodable {bad}")
    if bad:
        row.notes.append("FAIL: undecodable fragments")


def _order_errors(stream: str, by_shard: dict[str, list[dict[str, Any]]]) -> list[str]:
    errors = []
    for shard, records in by_shard.items():
        last: dict[tuple[str, str], int] = defaultdict(lambda: -1)
        for r in records:
            m = re.match(rb"(mqtt|serial|log)\|(?:.*\|)?(\d+)$", r["Data"])
            if not m:
                continue
            key = (r["PartitionKey"], m.group(1).decode())
            n = int(m.group(2))
            if n <= last[key]:
                errors.append(f"FAIL: {stream}/{shard} {key} went from {last[key]} to {n}")
            last[key] = n
    return errors[:5]


def undecodable(gw: GatewayProcess, stream: str, numbers: list[str]) -> int:
    """How many of the listed fragments fail to come back whole and decode with FFmpeg (PyAV)."""
    import io

    import av

    media = gw.client("kinesis-video-archived-media")
    bad = 0
    for i in range(0, len(numbers), 50):
        for number in numbers[i:i + 50]:
            try:
                body = media.get_media_for_fragment_list(StreamName=stream, Fragments=[number])["Payload"].read()
                with av.open(io.BytesIO(body), format="matroska") as container:
                    frames = len(list(container.decode(video=0)))  # type: ignore[union-attr]
                if frames == 0:
                    bad += 1
            except Exception:  # noqa: BLE001 - any failure to read or decode is what we count
                bad += 1
    return bad


def part_agent(work: Path, broker: MosquittoProcess, kills: int, rng: random.Random) -> Row:
    row = Row("agent SIGKILL")
    gw = GatewayProcess(work / "gw").start()
    rig = ChaosRig(work, gw, broker.port)
    try:
        with RssSampler(lambda: {"agent": pid_of(rig.agent), "gateway": pid_of(gw.proc)}) as rss:
            rig.start_agent()
            rig.start_producing()
            kill_loop(kills, rng, rig.kill_agent, rig.start_agent, up=(0.2, 2.5), down=(0.0, 0.3))
            time.sleep(1.0)
            rig.stop_producing()
            row.kills = rig.agent_kills
            verdict(rig, row)
        row.add_memory("agent", rss.samples["agent"], extra=f"gateway RSS MiB {curve(rss.samples['gateway'])}; ")
    finally:
        rig.close()
        gw.kill()
    return row


def part_gateway(work: Path, broker: MosquittoProcess, kills: int, rng: random.Random) -> Row:
    row = Row("gateway SIGKILL")
    gw = GatewayProcess(work / "gw").start()
    rig = ChaosRig(work, gw, broker.port)
    readers_stop = threading.Event()
    reads = Counter[str]()

    def reader() -> None:
        """GetRecords and GetMedia all along, so kills land during reads too."""
        while not readers_stop.is_set():
            try:
                kinesis = gw.client("kinesis")
                for shard in kinesis.list_shards(StreamName="telemetry")["Shards"]:
                    it = kinesis.get_shard_iterator(StreamName="telemetry", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                    kinesis.get_records(ShardIterator=it, Limit=1000)
                    reads["GetRecords"] += 1
                media = aws_client("kinesis-video-media", gw.url)
                body = media.get_media(StreamName="cam-e2e", StartSelector={"StartSelectorType": "EARLIEST"})["Payload"]
                body.read(200_000)
                body.close()
                reads["GetMedia"] += 1
            except Exception:  # noqa: BLE001 - the gateway is down half the time: keep reading
                reads["failed (gateway down)"] += 1
                time.sleep(0.2)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    try:
        with RssSampler(lambda: {"agent": pid_of(rig.agent), "gateway": pid_of(gw.proc)}) as rss:
            rig.start_agent()
            rig.start_producing()
            for t in threads:
                t.start()
            row.kills = kill_loop(kills, rng, gw.kill, gw.start, down=(0.05, 0.8))
            time.sleep(1.0)
            rig.stop_producing()
            readers_stop.set()
            for t in threads:
                t.join(20)
            if rig.agent is None or rig.agent.poll() is not None:
                row.notes.append("FAIL: the agent died")
            verdict(rig, row)
        row.add_memory("gateway", rss.samples["gateway"], extra=f"reads during kills {dict(reads)}; ")
    finally:
        readers_stop.set()
        rig.close()
        gw.kill()
    return row


def part_proxy(work: Path, broker: MosquittoProcess, faults: int, max_minutes: float) -> Row:
    row = Row("network faults")
    config = work / "gateway.toml"
    proxy_port = free_port()
    config.write_text(f'public_url = "http://127.0.0.1:{proxy_port}"\n')  # video crosses the proxy too
    gw = GatewayProcess(work / "gw", "--config", str(config)).start()
    proxy = FaultProxy(gw.port, FaultMix(pass_=0.4, stall_seconds=1.0, slow_bytes_per_sec=50_000, mid_fault_rate=0.1), seed=5)
    proxy.start_on(proxy_port)
    rig = ChaosRig(work, gw, broker.port, agent_url=proxy.url)
    try:
        with RssSampler(lambda: {"agent": pid_of(rig.agent), "gateway": pid_of(gw.proc)}) as rss:
            rig.start_agent()
            rig.start_producing()
            deadline = time.monotonic() + max_minutes * 60
            while sum(proxy.counts.values()) - proxy.counts["pass"] < faults and time.monotonic() < deadline:
                time.sleep(1.0)
            rig.stop_producing()
            proxy.enabled = False  # let the tail drain
            row.faults = sum(proxy.counts.values()) - proxy.counts["pass"]
            verdict(rig, row)
        row.add_memory("agent", rss.samples["agent"], extra=f"faults {dict(proxy.counts)}; ")
    finally:
        rig.close()
        proxy.stop()
        gw.kill()
    return row


# -- fuzz: every served API, shaped from botocore's models ------------------------------------------

#: The services the gateway may serve; those it does not (yet) answer are found and skipped.
FUZZ_SERVICES = ("kinesis", "kinesisvideo", "kinesis-video-archived-media", "kinesis-video-media", "firehose", "glue")
NAMES = ["soak-fuzz", "soak-video", "soak-firehose", "soak_db", "soak_table", "nope", "../../etc/passwd", "a" * 300, "",
         "arn:aws:kinesis:us-east-1:000000000000:stream/soak-fuzz", "shardId-000000000000", "shardId-1"]


class ShapeFuzzer:
    """Random request bodies from a botocore shape: mostly well-typed, sometimes junk (no hypothesis:
    a soak needs speed, and replays come from the seed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.junk_rate = 0.08

    def body(self, shape: Any) -> Any:
        """Half the bodies are well-typed throughout (they reach past validation), half carry junk."""
        self.junk_rate = self.rng.choice([0.0, 0.08])
        return self.value(shape) if shape is not None else {}

    def junk(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 2 or r < 0.5:
            return self.rng.choice([None, True, -1, 2**70, 1.5e308, "", "x" * self.rng.randint(0, 500), "\u0000\udbff"[:1], [], {}])
        if r < 0.75:
            return [self.junk(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.rng.choice(["a", "Data", "StreamName", "x"]): self.junk(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def value(self, shape: Any, depth: int = 0) -> Any:
        if depth > 4 or self.rng.random() < self.junk_rate:
            return self.junk()
        kind = shape.type_name
        if kind == "structure":
            out = {}
            for name, member in shape.members.items():
                if name in shape.required_members or self.rng.random() < 0.4:
                    out[name] = self.value(member, depth + 1)
            return out
        if kind == "list":
            return [self.value(shape.member, depth + 1) for _ in range(self.rng.choice([0, 1, 1, 2, 5]))]
        if kind == "map":
            return {self.rng.choice(["k", "", "key" * 50]): self.value(shape.value, depth + 1) for _ in range(self.rng.randint(0, 3))}
        if kind == "string":
            if shape.enum and self.rng.random() < 0.8:
                return self.rng.choice(shape.enum)
            if self.rng.random() < 0.7:
                return self.rng.choice(NAMES)
            return "".join(chr(self.rng.randint(32, 0x2FF)) for _ in range(self.rng.randint(0, 40)))
        if kind in ("integer", "long"):
            return self.rng.choice([0, 1, 2, 10, 500, -1, 2**31, 2**63, self.rng.randint(-5, 10_000)])
        if kind in ("float", "double"):
            return self.rng.choice([0.0, -1.0, 1e300, 0.5])
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "blob":
            return base64.b64encode(self.rng.randbytes(self.rng.randint(0, 200))).decode() if self.rng.random() < 0.9 else "!!notb64"
        if kind == "timestamp":
            return self.rng.choice([time.time(), 0, -5, 1e12, "2024-01-01T00:00:00Z", "yesterday"])
        return self.junk()


@dataclass
class Operation:
    service: str
    name: str
    path: str
    headers: dict[str, str]
    shape: Any


def operations() -> list[Operation]:
    session = botocore.session.get_session()
    ops = []
    for service in FUZZ_SERVICES:
        model = session.get_service_model(service)
        protocol = model.metadata["protocol"]
        for name in model.operation_names:
            op = model.operation_model(name)
            if protocol == "json":
                version = model.metadata.get("jsonVersion", "1.1")
                headers = {"Content-Type": f"application/x-amz-json-{version}", "X-Amz-Target": f"{model.metadata['targetPrefix']}.{name}"}
                ops.append(Operation(service, name, "/", headers, op.input_shape))
            elif protocol == "rest-json":
                path = op.http["requestUri"].split("?")[0]
                if "{" in path:
                    continue  # none of the video API's paths take labels; a service that does is not fuzzed by path
                ops.append(Operation(service, name, path, {"Content-Type": "application/json"}, op.input_shape))
    return ops


def served(raw: Any, ops: list[Operation]) -> list[Operation]:
    """Drop the services the gateway does not answer at all (an unknown target or path)."""
    keep = []
    by_service: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_service[op.service].append(op)
    for service, service_ops in by_service.items():
        answered = 0
        for op in service_ops:
            resp = raw.post(op.path, b"{}", op.headers, read_limit=4096, timeout=3)
            error = resp.headers.get("x-amzn-errortype", "") + resp.body[:200].decode(errors="replace")
            if resp.status < 500 and "UnknownOperation" not in error and resp.status != 404:
                answered += 1
        if answered:
            keep.extend(service_ops)
    return keep


FUZZ_ANALYTICS = """
[[analytics.applications]]
name = "fuzzapp"
error_stream = "soak-fuzz-errors"
poll_seconds = 0.1
  [[analytics.applications.inputs]]
  stream = "soak-fuzz"
  columns = ["k VARCHAR", "v DOUBLE", "ts TIMESTAMP"]
  event_time = "ts"
  [[analytics.applications.queries]]
  name = "totals"
  output_stream = "soak-fuzz-out"
  sql = "SELECT window_start, k, sum(v) AS total FROM TABLE(TUMBLE(TABLE soak_fuzz, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY ALL"
"""
ANALYTICS_PATHS = ["/analytics/applications", "/analytics/applications/{name}", "/analytics/applications/{name}/rows?query={junk}&after={junk}",
                   "/analytics/applications/{name}/rows?query=totals&after=-5", "/analytics/motion", "/analytics/motion/{name}",
                   "/analytics/static/{junk}", "/analytics/applications/{name}/rows?after=99999999999999999999999"]


def get_checked(port: int, path: str) -> tuple[str, str]:
    """GET one path: the outcome, and what was wrong if the answer breaks the rules (5xx, or a 4xx not AWS-shaped)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"connection error {type(exc).__name__}", ""
    finally:
        conn.close()
    if resp.status >= 500:
        return "5xx (analytics GET)", f"{resp.status} {body[:160]!r}"
    if resp.status >= 400 and b"__type" not in body and resp.getheader("x-amzn-errortype") is None:
        return f"{resp.status // 100}xx (analytics GET)", f"{resp.status} without an AWS error shape: {body[:120]!r}"
    return f"{resp.status // 100}xx (analytics GET)", ""


def part_fuzz(work: Path, requests: int, seed: int, threads: int = 4) -> Row:
    from fuzz_support import RawClient

    row = Row("fuzz (all APIs)")
    work.mkdir(parents=True, exist_ok=True)
    (work / "gateway.toml").write_text(FUZZ_ANALYTICS)  # fuzzed puts also flow through an analytics application
    gw = GatewayProcess(work / "gw", "--no-limits", "--config", str(work / "gateway.toml")).start()
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="soak-keep", ShardCount=1)
    for name in ("soak-fuzz", "soak-fuzz-out", "soak-fuzz-errors"):
        kinesis.create_stream(StreamName=name, ShardCount=2 if name == "soak-fuzz" else 1)
    wait_until(lambda: kinesis.describe_stream_summary(StreamName="soak-keep")["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 20)
    kinesis.put_records(StreamName="soak-keep", Records=[{"Data": f"keep-{i}".encode(), "PartitionKey": str(i)} for i in range(50)])
    gw.client("kinesisvideo").create_stream(StreamName="soak-video", DataRetentionInHours=1)
    probe = RawClient(gw.port)
    ops = served(probe, operations())
    probe.close()
    row.notes.append(f"services: {sorted({op.service for op in ops})}, {len(ops)} operations")
    outcomes: Counter[str] = Counter()
    fives: list[str] = []
    sent = [0]
    lock = threading.Lock()
    rss: list[int] = []

    def worker(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        fuzzer = ShapeFuzzer(rng)
        raw = RawClient(gw.port, timeout=10)
        while True:
            with lock:
                if sent[0] >= requests:
                    break
                sent[0] += 1
                n = sent[0]
            if rng.random() < 0.03:  # the analytics endpoints (HTTP GETs outside the AWS API)
                path = rng.choice(ANALYTICS_PATHS).format(name=rng.choice(NAMES + ["fuzzapp"]), junk=quote(rng.choice(NAMES), safe=""))
                key, problem = get_checked(gw.port, path)
                with lock:
                    outcomes[key] += 1
                    if problem:
                        fives.append(f"GET {path} {problem}")
                continue
            op = rng.choice(ops)
            r = rng.random()
            if r < 0.85:
                body = json.dumps(fuzzer.body(op.shape), allow_nan=True).encode()
            elif r < 0.95:
                body = json.dumps(fuzzer.junk(), allow_nan=True).encode()
            else:
                body = rng.randbytes(rng.randint(0, 300))
            headers = dict(op.headers)
            if rng.random() < 0.03:
                headers["Content-Type"] = rng.choice(["text/plain", "application/x-amz-cbor-1.1", ""])
            try:
                resp = raw.post(op.path, body, headers, read_limit=64 * 1024, timeout=2.0 if op.name == "GetMedia" else None)
                key = f"{resp.status // 100}xx"
                if resp.status >= 500:
                    fives.append(f"{op.service}.{op.name} {resp.status} {resp.body[:160]!r}")
                elif resp.status >= 400 and "x-amzn-errortype" not in resp.headers and b"__type" not in resp.body:
                    fives.append(f"{op.service}.{op.name} {resp.status} without an AWS error shape: {resp.body[:120]!r}")
            except TimeoutError:
                key = "live stream (read timeout)"
            except (OSError, http.client.HTTPException) as exc:
                key = f"connection error {type(exc).__name__}"
            with lock:
                outcomes[key] += 1
            if n % 500 == 0 and gw.proc is not None and gw.proc.poll() is None:
                rss.append(rss_kb(gw.proc.pid))
            if gw.proc is None or gw.proc.poll() is not None:
                break
        raw.close()

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - started
    row.requests = sum(outcomes.values())
    if gw.proc is None or gw.proc.poll() is not None:
        row.notes.append(f"FAIL: the gateway died (exit {gw.proc.returncode if gw.proc else '?'})")
    else:
        # records stored before the storm are still there, and the gateway still takes writes
        kept = [r["Data"] for recs in read_stream(kinesis, "soak-keep").values() for r in recs]
        row.checked = len(kept)
        row.lost = 50 - len(set(kept) & {f"keep-{i}".encode() for i in range(50)})
        kinesis.put_record(StreamName="soak-keep", Data=b"after", PartitionKey="a")
    if fives:
        kinds = Counter(f.split(" ", 2)[0] + " " + f.split(" ", 2)[1] for f in fives)
        row.notes.append(f"FAIL: {len(fives)} 5xx or unshaped errors: {dict(kinds)}; e.g. {fives[:3]}")
    row.add_memory("gateway", rss, extra=f"{row.requests / elapsed:.0f} req/s; outcomes {dict(outcomes)}; ")
    gw.kill()
    return row


# -- power cut: freeze, copy, reopen ---------------------------------------------------------------

SPOOL_WRITER = """
import sys, time
from edge_agent.spool import NewRecord, Spool
spool = Spool(sys.argv[1], sync="full")
i = 0
while True:
    batch = [NewRecord("telemetry", "s", str(i + k), f"rec-{i + k}".encode(), "soak") for k in range(20)]
    spool.append(batch)
    i += 20
    print(i, flush=True)   # everything below i is acknowledged: committed and fsynced
"""


def _freeze_copy(pid: int, src: Path, dst: Path) -> None:
    """Stop the process at an arbitrary instant, copy its files as they are, let it go on."""
    os.kill(pid, signal.SIGSTOP)
    try:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))
    finally:
        os.kill(pid, signal.SIGCONT)


def _integrity(dirpath: Path) -> list[str]:
    problems = []
    for db in list(dirpath.rglob("*.db")) + list(dirpath.rglob("*.sqlite3")):
        conn = sqlite3.connect(db)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                problems.append(f"{db.name}: {result}")
        finally:
            conn.close()
    return problems


def part_powercut(work: Path, snapshots: int, rng: random.Random) -> Row:
    from edge_agent.spool import Spool

    row = Row("power-cut snapshots")
    # 1. the agent's spool, sync = "full": a writer acknowledges by printing its count
    spool_dir = work / "spool"
    spool_dir.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", SPOOL_WRITER, str(spool_dir / "spool.db")], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    acked = [0]

    def follow() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked[0] = int(line)

    threading.Thread(target=follow, daemon=True).start()
    wait_until(lambda: acked[0] > 0, 20)
    copies: list[tuple[Path, int]] = []
    for i in range(snapshots):
        time.sleep(rng.uniform(0.05, 0.6))
        seen = acked[0]  # printed before the freeze: acknowledged
        dst = work / f"spool-copy-{i}"
        _freeze_copy(proc.pid, spool_dir, dst)
        copies.append((dst, seen))
    proc.kill()
    proc.wait()
    spool_checked = 0
    for dst, seen in copies:
        row.notes.extend(f"FAIL: spool copy {dst.name} {p}" for p in _integrity(dst))
        spool = Spool(str(dst / "spool.db"), sync="full")
        try:
            present = {r.partition_key for r in spool.read("records", limit=10_000_000, max_bytes=1 << 40)}
        finally:
            spool.close()
        missing = [k for k in range(seen) if str(k) not in present]
        row.lost += len(missing)
        spool_checked += seen
    # 2. the gateway's stores: PutRecords and PutMedia acknowledged before each freeze
    gw = GatewayProcess(work / "gw", "--no-limits").start()
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="cut", ShardCount=2)
    wait_until(lambda: kinesis.describe_stream_summary(StreamName="cut")["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 20)
    gw.client("kinesisvideo").create_stream(StreamName="cut-video", DataRetentionInHours=1)
    acked_records: list[bytes] = []
    acked_fragments: list[str] = []
    stop = threading.Event()

    def put_records() -> None:
        client = gw.client("kinesis")
        i = 0
        while not stop.is_set():
            batch = [f"cut-{i + k}".encode() for k in range(50)]
            resp = client.put_records(StreamName="cut", Records=[{"Data": d, "PartitionKey": d.decode()} for d in batch])
            acked_records.extend(d for d, r in zip(batch, resp["Records"]) if "SequenceNumber" in r)
            i += 50

    def put_media() -> None:
        from fuzz_support import RawClient

        raw = RawClient(gw.port)
        start = int(time.time() * 1000) - 3_600_000
        n = 0
        while not stop.is_set():
            fragments = synthetic_fragments(3, start_ms=start + n * 1000)
            n += 3
            headers = {"x-amzn-stream-name": "cut-video", "x-amzn-fragment-timecode-type": "ABSOLUTE",
                       "x-amzn-producer-start-timestamp": f"{start / 1000:.3f}"}
            resp = raw.post("/putMedia", b"".join(f.data for f in fragments), headers)
            for line in resp.body.split(b"\n"):
                if line.strip():
                    ack = json.loads(line)
                    if ack.get("EventType") == "PERSISTED":
                        acked_fragments.append(ack["FragmentNumber"])
        raw.close()

    writers = [threading.Thread(target=put_records, daemon=True), threading.Thread(target=put_media, daemon=True)]
    for t in writers:
        t.start()
    wait_until(lambda: len(acked_records) > 0 and len(acked_fragments) > 0, 30)
    gw_copies: list[tuple[Path, set[bytes], set[str]]] = []
    assert gw.proc is not None
    for i in range(snapshots):
        time.sleep(rng.uniform(0.05, 0.6))
        seen_records, seen_fragments = set(acked_records), set(acked_fragments)
        dst = work / f"gw-copy-{i}"
        _freeze_copy(gw.proc.pid, gw.data_dir, dst)
        gw_copies.append((dst, seen_records, seen_fragments))
    stop.set()
    for t in writers:
        t.join(30)
    gw.kill()
    gw_checked = 0
    for dst, seen_records, seen_fragments in gw_copies:
        row.notes.extend(f"FAIL: gateway copy {dst.name} {p}" for p in _integrity(dst))
        copy = GatewayProcess(dst, "--no-limits").start()
        try:
            stored = [r["Data"] for recs in read_stream(copy.client("kinesis"), "cut").values() for r in recs]
            counts = Counter(stored)
            row.duplicated += sum(n - 1 for n in counts.values() if n > 1)
            row.lost += len(seen_records - set(counts))
            listed = {f["FragmentNumber"] for f in list_fragments(copy.url, "cut-video")}
            row.lost += len(seen_fragments - listed)
            bad = undecodable(copy, "cut-video", sorted(listed))
            if bad:
                row.notes.append(f"FAIL: {bad} listed fragments undecodable in {dst.name}")
            gw_checked += len(seen_records) + len(seen_fragments)
        finally:
            copy.kill()
    row.kills = 2 * snapshots
    row.checked = spool_checked + gw_checked
    row.notes.append(f"{snapshots} spool + {snapshots} gateway snapshots; acknowledged items checked: spool {spool_checked}, gateway {gw_checked}")
    return row


# -- the run -----------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print("\n| part | kills/snapshots | faults | requests | checked | lost | duplicated | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.part} | {r.kills} | {r.faults} | {r.requests} | {r.checked} | {r.lost} | {r.duplicated} | {r.peak_rss_mib or 'n/a'} |")
    print()
    for r in rows:
        for note in r.notes:
            print(f"- {r.part}: {note}")
    print(f"- load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


PARTS = ("agent", "gateway", "proxy", "fuzz", "powercut", "consumers", "firehose", "analytics")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--agent-kills", type=int, default=100)
    parser.add_argument("--gateway-kills", type=int, default=50)
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--fuzz-requests", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=30, help="power-cut snapshots per store")
    parser.add_argument("--service-kills", type=int, default=30, help="SIGKILLs for each of consumers, firehose, analytics")
    parser.add_argument("--minutes", type=float, default=20, help="upper bound for the proxy part")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    rows: list[Row] = []
    broker = MosquittoProcess(work / "mosquitto").start() if parts & {"agent", "gateway", "proxy"} else None
    try:
        for name in PARTS:
            if name not in parts:
                continue
            started = time.monotonic()
            print(f"soak: {name} ...", flush=True)
            sub = work / name
            sub.mkdir()
            if name == "agent":
                assert broker is not None
                row = part_agent(sub, broker, args.agent_kills, rng)
            elif name == "gateway":
                assert broker is not None
                row = part_gateway(sub, broker, args.gateway_kills, rng)
            elif name == "proxy":
                assert broker is not None
                row = part_proxy(sub, broker, args.faults, args.minutes)
            elif name == "fuzz":
                row = part_fuzz(sub, args.fuzz_requests, args.seed)
            elif name == "powercut":
                row = part_powercut(sub, args.snapshots, rng)
            else:
                import soak_services

                row = getattr(soak_services, f"part_{name}")(sub, args.service_kills, rng)
            row.notes.append(f"took {time.monotonic() - started:.0f} s")
            rows.append(row)
            print(f"soak: {name} done: {row}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
