"""How many live cameras one gateway takes: K PutMedia streams at ~2 Mbit/s, paced in real time.

For each K in ``--streams`` it starts a fresh gateway (a real process, data on disk), opens K
PutMedia sessions that send pre-encoded 2-second fragments at their real-time rate, and measures for
every fragment the time from its last byte leaving the client to its PERSISTED ack. A level passes
when every fragment is PERSISTED within ``--deadline`` seconds (1 s). A live GetMedia reader on one stream
measures PERSISTED -> delivered to a live consumer. With ``--hls`` (and when the
gateway serves HLS) it also fetches HLS media segments of a live stream during the run and reports
their latency. Prints one line per level and the machine load.

    .venv/bin/python bench/video_ingest.py --streams 10,25,50,75 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import GatewayProcess  # noqa: E402

from kvs import Fragment, FragmentWriter, MkvStreamParser  # noqa: E402

FRAGMENT_SECONDS = 2.0
SLICE_SECONDS = 0.1


def encode_fragments(seconds: float, bitrate: int, width: int = 640, height: int = 480, fps: int = 15) -> list[Fragment]:
    """Pre-encode ``seconds`` of a busy synthetic scene at about ``bitrate`` (every stream reuses them)."""
    writer = FragmentWriter(width, height, fps, fragment_seconds=FRAGMENT_SECONDS, bitrate=bitrate)
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out: list[Fragment] = []
    start_ms = int(time.time() * 1000) - 3_600_000
    for i in range(int(seconds * fps) + fps * 3):
        noise = rng.integers(0, 48, (height, width, 3), dtype=np.uint8)
        frame = np.roll(base, i * 4, axis=1) + noise
        out += writer.add_frame(frame, start_ms + i * 1000 // fps)
    return out[1:]  # the first fragment carries the encoder's warm-up burst


@dataclass
class StreamResult:
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    errors: list[int] = field(default_factory=list)
    broken: str = ""
    persisted_at: dict[int, float] = field(default_factory=dict)  # timecode -> PERSISTED ack time
    received_at: dict[int, float] = field(default_factory=dict)  # timecode -> RECEIVED ack time
    received: list[float] = field(default_factory=list)


async def put_stream(port: int, name: str, fragments: list[Fragment], result: StreamResult, start_at: float) -> None:
    """One camera: send each fragment over its real duration, record last-byte -> PERSISTED."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /putMedia HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
            f"x-amzn-stream-name: {name}\r\nx-amzn-fragment-timecode-type: ABSOLUTE\r\n"
            f"x-amzn-producer-start-timestamp: {time.time():.3f}\r\n\r\n")
    writer.write(head.encode())
    last_byte: dict[int, float] = {}
    persisted_at = result.persisted_at

    async def read_acks() -> None:
        status = await reader.readline()
        if b" 200 " not in status:
            result.broken = status.decode().strip()
            return
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        buf = b""
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            buf += await reader.readexactly(size)
            await reader.readexactly(2)
            *lines, buf = buf.split(b"\n")
            now = time.monotonic()
            for line in lines:
                ack = json.loads(line)
                if ack["EventType"] == "PERSISTED":
                    persisted_at[ack["FragmentTimecode"]] = now
                elif ack["EventType"] == "RECEIVED":
                    result.received_at[ack["FragmentTimecode"]] = now
                elif ack["EventType"] == "ERROR":
                    result.errors.append(ack.get("ErrorId", 0))

    acks = asyncio.create_task(read_acks())
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    clock = time.monotonic()
    try:
        for fragment in fragments:
            data = fragment.data
            slices = max(1, int(fragment.duration_ms / 1000 / SLICE_SECONDS))
            step = -(-len(data) // slices)
            for i in range(0, len(data), step):
                part = data[i : i + step]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                if i + step >= len(data):
                    last_byte[fragment.start_ms] = time.monotonic()
                clock += fragment.duration_ms / 1000 / slices
                await asyncio.sleep(max(0.0, clock - time.monotonic()))
            result.sent += 1
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(acks, 30)
    except (ConnectionError, asyncio.TimeoutError) as exc:
        result.broken = result.broken or repr(exc)
    finally:
        acks.cancel()
        writer.close()
        result.latencies = [persisted_at[tc] - t for tc, t in last_byte.items() if tc in persisted_at]
        result.received = [result.received_at[tc] - t for tc, t in last_byte.items() if tc in result.received_at]


def create_streams(gw: GatewayProcess, names: list[str]) -> None:
    kv = gw.client("kinesisvideo")
    for name in names:
        kv.create_stream(StreamName=name, DataRetentionInHours=1)


def cpu_pressure() -> str:
    """Share of recent time some runnable task waited for a CPU (Linux PSI), e.g. 'cpu wait 80%'."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        return f"cpu wait {float(some[1].split('=')[1]):.0f}%"
    except (OSError, IndexError, ValueError):
        return "cpu wait n/a"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def live_reader(port: int, stream: str, until: float, arrived: dict[int, float]) -> None:
    """A GetMedia NOW reader: when each fragment (by producer timestamp) reaches a live consumer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"StreamName": stream, "StartSelector": {"StartSelectorType": "NOW"}}).encode()
    writer.write(f"POST /getMedia HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    parser = MkvStreamParser()
    try:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        while time.monotonic() < until:
            try:
                size = int((await asyncio.wait_for(reader.readline(), until - time.monotonic())).strip() or b"0", 16)
            except asyncio.TimeoutError:
                break
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            now = time.monotonic()
            for fragment in parser.feed(chunk[:-2]):
                arrived[fragment.timecode_ms] = now
    finally:
        writer.close()


async def hls_probe(gw: GatewayProcess, stream: str, until: float, latencies: list[float]) -> str:
    """Fetch the live HLS playlist and its newest media segments during the run; '' if unsupported."""
    loop = asyncio.get_running_loop()
    kam = gw.client("kinesis-video-archived-media")
    url = ""
    while not url:
        try:
            url = (await loop.run_in_executor(None, lambda: kam.get_hls_streaming_session_url(
                StreamName=stream, PlaybackMode="LIVE")))["HLSStreamingSessionURL"]
        except Exception as exc:  # noqa: BLE001 - no fragment yet, or no HLS on this gateway
            if time.monotonic() > until:
                return f"no HLS: {type(exc).__name__}"
            await asyncio.sleep(0.5)

    def fetch(u: str) -> bytes:
        with urllib.request.urlopen(u, timeout=10) as r:
            return r.read()

    def resolve(base: str, ref: str) -> str:
        return urllib.parse.urljoin(base, ref)

    while time.monotonic() < until:
        try:
            master = (await loop.run_in_executor(None, fetch, url)).decode()
            media_url = next((resolve(url, line) for line in master.splitlines() if line and not line.startswith("#")), url)
            playlist = (await loop.run_in_executor(None, fetch, media_url)).decode() if media_url != url else master
            segments = [resolve(media_url, line) for line in playlist.splitlines() if line and not line.startswith("#")]
            for seg in segments[-2:]:
                t0 = time.monotonic()
                await loop.run_in_executor(None, fetch, seg)
                latencies.append(time.monotonic() - t0)
        except Exception:  # noqa: BLE001 - a stream with no fragment yet has no playlist
            pass
        await asyncio.sleep(1.0)
    return ""


async def run_level(k: int, fragments: list[Fragment], seconds: float, hls: bool, data_root: Path) -> dict:
    gw = GatewayProcess(data_root / f"k{k}" / "data").start()
    try:
        names = [f"cam-{k}-{i:03d}" for i in range(k)]
        await asyncio.to_thread(create_streams, gw, names)
        count = max(1, int(seconds / FRAGMENT_SECONDS))
        results = [StreamResult() for _ in names]
        assert gw.proc is not None
        cpu0, wall0 = cpu_seconds(gw.proc.pid), time.monotonic()
        client0 = time.process_time()
        start_at = time.monotonic() + 0.5
        # cameras start spread over one fragment, as independent devices would
        tasks = [put_stream(gw.port, name, fragments[:count], res, start_at + i * FRAGMENT_SECONDS / k)
                 for i, (name, res) in enumerate(zip(names, results))]
        hls_latencies: list[float] = []
        hls_note = ""
        arrived: dict[int, float] = {}
        extra = [live_reader(gw.port, names[-1], start_at + seconds + 3, arrived)]
        if hls:
            extra.append(hls_probe(gw, names[0], start_at + seconds, hls_latencies))
        outcome = await asyncio.gather(*tasks, *extra)
        hls_note = str(outcome[-1] or "") if hls else ""
        cpu = (cpu_seconds(gw.proc.pid) - cpu0) / (time.monotonic() - wall0)
        client_cpu = (time.process_time() - client0) / (time.monotonic() - wall0)
        rss_mib = rss_kib(gw.proc.pid) / 1024
    finally:
        gw.kill()
    lat = sorted(x for r in results for x in r.latencies)
    rec = sorted(x for r in results for x in r.received)
    live = sorted(t - results[-1].persisted_at[tc] for tc, t in arrived.items() if tc in results[-1].persisted_at)
    sent = sum(r.sent for r in results)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")

    return {
        "k": k, "sent": sent, "persisted": len(lat), "errors": sum(len(r.errors) for r in results),
        "broken": sum(bool(r.broken) for r in results), "p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95),
        "max_ms": lat[-1] * 1000 if lat else float("nan"), "rec_p95_ms": pct(rec, 0.95), "gateway_cpu": cpu, "rss_mib": rss_mib, "client_cpu": client_cpu,
        "hls_p50_ms": pct(sorted(hls_latencies), 0.5), "hls_p95_ms": pct(sorted(hls_latencies), 0.95),
        "hls_n": len(hls_latencies), "hls_note": hls_note,
        "live_p50_ms": pct(live, 0.5), "live_max_ms": live[-1] * 1000 if live else float("nan"), "live_n": len(live),
        "mbit_per_stream": statistics.mean(len(f.data) * 8 / f.duration_ms / 1000 for f in fragments[:count]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="10,25,50", help="comma-separated stream counts to try (default 10,25,50)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of video per stream per level")
    parser.add_argument("--bitrate", type=int, default=2_000_000, help="bits per second per stream")
    parser.add_argument("--deadline", type=float, default=1.0, help="PERSISTED within this many seconds of the last byte")
    parser.add_argument("--hls", action="store_true", help="also measure live HLS segment fetches (if served)")
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    print(f"encoding {args.seconds:.0f}s of {args.bitrate / 1e6:.1f} Mbit/s video ...", flush=True)
    fragments = encode_fragments(args.seconds, args.bitrate)
    print(f"machine: {os.cpu_count()} cores, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    best = 0
    failed_once = False
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        for k in levels:
            r = asyncio.run(run_level(k, fragments, args.seconds, args.hls, Path(tmp)))
            ok = r["persisted"] == r["sent"] and not r["errors"] and not r["broken"] and r["max_ms"] <= args.deadline * 1000
            if ok and not failed_once:
                best = k  # the largest level before the first failure
            failed_once = failed_once or not ok
            hls = f" hls p50/p95 {r['hls_p50_ms']:.0f}/{r['hls_p95_ms']:.0f} ms (n={r['hls_n']}){' ' + r['hls_note'] if r['hls_note'] else ''}" if args.hls else ""
            print(f"K={k:3d} ({r['mbit_per_stream']:.2f} Mbit/s each): {r['persisted']}/{r['sent']} persisted, "
                  f"last byte->PERSISTED p50 {r['p50_ms']:.0f} ms p95 {r['p95_ms']:.0f} ms max {r['max_ms']:.0f} ms "
                  f"(->RECEIVED p95 {r['rec_p95_ms']:.0f} ms), "
                  f"PERSISTED->live GetMedia p50 {r['live_p50_ms']:.0f} ms max {r['live_max_ms']:.0f} ms (n={r['live_n']}), "
                  f"errors {r['errors']}, broken {r['broken']}, gateway CPU {r['gateway_cpu'] * 100:.0f}% RSS {r['rss_mib']:.0f} MiB (bench client CPU {r['client_cpu'] * 100:.0f}%){hls}  "
                  f"{'PASS' if ok else 'FAIL'}  load {os.getloadavg()[0]:.2f}, {cpu_pressure()}", flush=True)
    print(f"sustained: {best} streams with every fragment PERSISTED within {args.deadline:.1f} s (target >= 50)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
