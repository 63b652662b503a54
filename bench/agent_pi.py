"""What the agent costs on a Raspberry-Pi-class box: disk bytes written, CPU per record, idle CPU, RSS.

    .venv/bin/python bench/agent_pi.py                          # 30, 300, 3000 rec/s, 20 s each
    .venv/bin/python bench/agent_pi.py --rates 300 --seconds 30
    .venv/bin/python bench/agent_pi.py --rates 300 --camera     # plus one run with the synthetic camera
    .venv/bin/python bench/agent_pi.py --rates 300 --camera --camera-device /dev/video0   # your webcam
    .venv/bin/python bench/agent_pi.py --sync normal --idle-seconds 0

The agent runs as a real process (``python -m edge_agent``) with a real Mosquitto broker (QoS 1,
persistent session) and a real gateway on loopback. Load: two thirds of the records are MQTT
messages, one third log lines appended to a followed file (300 rec/s = 200 msg/s + 100 lines/s,
the issue's "typical edge rate"); payloads are ~75-byte JSON readings and log lines.

Figures, all read from /proc/<agent pid>:
- disk bytes written per payload byte: ``write_bytes`` of /proc/<pid>/io (what the kernel sends
  to the storage layer for this process: spool file, WAL, -shm) over the payload bytes produced;
- CPU µs per record: the threads' on-CPU time (/proc/<pid>/task/*/schedstat, nanoseconds) over the
  records the agent took in; the kernel's share from stime/(utime + stime) of /proc/<pid>/stat;
- idle CPU: % of one core with the sources connected and nothing arriving;
- RSS: VmRSS at the end and its peak during the run.

Targets (issue 8, at 300 rec/s): <= 3 bytes written per payload byte, <= 30 µs CPU per record,
idle <= 0.5 % of a core, RSS <= 35 MiB without camera and <= 90 MiB with it. The machine is
shared: every figure is printed with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import GatewayProcess, MosquittoProcess, aws_client, free_port, wait_until  # noqa: E402

TICK = 0.01  # the load generators emit in 10 ms ticks


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} CPUs)"


@dataclass
class Sample:
    cpu_s: float
    stime_s: float
    ticks_s: float  # utime + stime, for the kernel's share
    write_bytes: int
    rss_kib: int
    records_in: float
    at: float


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of the process's threads from the scheduler's nanosecond clock (schedstat): utime +
    stime in /proc/<pid>/stat are charged by 10 ms ticks, too coarse for an agent using ~1 % of a core."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended between listdir and open
    return total / 1e9


def sample(pid: int, metrics_url: str | None = None) -> Sample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = thread_cpu_seconds(pid)
    with open(f"/proc/{pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    records = 0.0
    if metrics_url:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("edge_agent_records_in_total{"):
                    records += float(line.rsplit(" ", 1)[1])
    tick = os.sysconf("SC_CLK_TCK")
    return Sample(cpu, int(fields[12]) / tick, (int(fields[11]) + int(fields[12])) / tick, int(io["write_bytes"]), rss, records, time.monotonic())


class Load:
    """MQTT publisher + log writer at a fixed total rate; counts what it produced."""

    def __init__(self, broker_port: int, log_path: Path, rate: int) -> None:
        self.broker_port = broker_port
        self.log_path = log_path
        self.mqtt_rate = rate * 2 / 3
        self.log_rate = rate / 3
        self.records = 0
        self.payload_bytes = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._publish, daemon=True), threading.Thread(target=self._write_log, daemon=True)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.records, self.payload_bytes

    def _count(self, n: int, size: int) -> None:
        with self.lock:
            self.records += n
            self.payload_bytes += size

    def _paced(self, rate: float, emit: Callable[[int, int], None]) -> None:
        i = 0
        t0 = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * rate)
            if due > i:
                emit(i, due)
                i = due
            time.sleep(TICK)

    def _publish(self) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}-{self.log_path.parent.name}")
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", self.broker_port)
        client.loop_start()

        def emit(first: int, end: int) -> None:
            size = 0
            for i in range(first, end):
                payload = b'{"sensor":"s%d","seq":%d,"temp_c":%d.%d,"humidity":%d,"ts":%d}' % (
                    i % 8, i, 18 + i % 7, i % 10, 40 + i % 20, 1_700_000_000_000 + i)
                client.publish(f"bench/s{i % 8}", payload, qos=1)
                size += len(payload)
            self._count(end - first, size)

        try:
            self._paced(self.mqtt_rate, emit)
        finally:
            client.loop_stop()
            client.disconnect()

    def _write_log(self) -> None:
        with self.log_path.open("ab") as f:

            def emit(first: int, end: int) -> None:
                lines = [b"2026-01-01T00:00:00.000Z INFO app: request %d served in %d ms" % (i, i % 50) for i in range(first, end)]
                f.write(b"\n".join(lines) + b"\n")
                f.flush()
                self._count(len(lines), sum(map(len, lines)))

            self._paced(self.log_rate, emit)


def agent_config(tmp: Path, gw_url: str, broker_port: int, metrics_port: int, sync: str, camera: dict[str, str] | None, name: str,
                 commit_interval_ms: int | None = None, mqtt_protocol: str = "5") -> Path:
    config = tmp / "agent.toml"
    text = f"""
[agent]
id = "pi-bench-{name}"
log_level = "WARNING"
[spool]
path = "{tmp / 'spool.db'}"
sync = "{sync}"
{f"commit_interval_ms = {commit_interval_ms}" if commit_interval_ms is not None else ""}
[gateway]
endpoint_url = "{gw_url}"
access_key_id = "AKIDPIBENCH"             # keys in the config, as on a Pi (a profile would load botocore: ~8 MiB)
secret_access_key = "pi-bench-secret"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[sources.mqtt]]
stream = "telemetry"
topics = ["bench/#"]
host = "127.0.0.1"
port = {broker_port}
qos = 1
protocol = "{mqtt_protocol}"
[[sources.logs]]
stream = "logs"
paths = ["{tmp / 'app.log'}"]
"""
    if camera is not None:
        text += '[[sources.camera]]\nstream = "cam"\nwidth = 640\nheight = 480\nfps = 15.0\n'
        text += "".join(f"{key} = {json.dumps(value)}\n" for key, value in camera.items())
    config.write_text(text)
    return config


def run_point(base: Path, gw: GatewayProcess, broker: MosquittoProcess, rate: int, seconds: float, warmup: float,
              idle_seconds: float, sync: str, camera: dict[str, str] | None, commit_interval_ms: int | None = None,
              mqtt_protocol: str = "5") -> dict[str, float]:
    """One load point; ``camera``: the camera source's settings (``device``, ``codec``), or None for no camera."""
    name = f"{rate}{'-cam' if camera is not None else ''}"
    tmp = base / f"agent-{name}"
    tmp.mkdir()
    (tmp / "app.log").write_bytes(b"")
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    config = agent_config(tmp, gw.url, broker.port, metrics_port, sync, camera, name, commit_interval_ms, mqtt_protocol)
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # as systemd/edge-agent.service runs it
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config)], cwd=ROOT, env=env,
                             stdout=open(tmp / "agent.log", "wb"), stderr=subprocess.STDOUT)
    out: dict[str, float] = {"rate": rate}
    load_gen = None
    try:
        def metrics_up() -> bool:
            try:
                sample(agent.pid, metrics_url)
                return True
            except OSError:
                return False

        wait_until(metrics_up, timeout=30, what="agent metrics endpoint")
        time.sleep(2.0)  # sources connected, first poll done
        if idle_seconds:
            a = sample(agent.pid)
            time.sleep(idle_seconds)
            b = sample(agent.pid)
            out["idle_cpu_pct"] = 100 * (b.cpu_s - a.cpu_s) / (b.at - a.at)
            out["idle_write_bytes_s"] = (b.write_bytes - a.write_bytes) / (b.at - a.at)
        load_gen = Load(broker.port, tmp / "app.log", rate).start()
        time.sleep(warmup)
        a = sample(agent.pid, metrics_url)
        r0, p0 = load_gen.counts()
        peak = a.rss_kib
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(0.5)
            peak = max(peak, sample(agent.pid).rss_kib)
        b = sample(agent.pid, metrics_url)
        r1, p1 = load_gen.counts()
        produced, payload = r1 - r0, p1 - p0
        took = b.records_in - a.records_in
        elapsed = b.at - a.at
        out.update(
            produced_per_s=produced / elapsed,
            taken_per_s=took / elapsed,
            payload_bytes_s=payload / elapsed,
            write_bytes_s=(b.write_bytes - a.write_bytes) / elapsed,
            write_per_payload=(b.write_bytes - a.write_bytes) / max(payload, 1),
            cpu_us_per_record=1e6 * (b.cpu_s - a.cpu_s) / max(took, 1),
            cpu_pct=100 * (b.cpu_s - a.cpu_s) / elapsed,
            kernel_share=(b.stime_s - a.stime_s) / max(b.ticks_s - a.ticks_s, 1e-9),
            rss_mib=b.rss_kib / 1024,
            rss_peak_mib=peak / 1024,
        )
    finally:
        if load_gen is not None:
            load_gen.close()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
    return out


def report(point: dict[str, float], camera: bool) -> None:
    label = f"{int(point['rate']):>5} rec/s{' + camera' if camera else ''}"
    idle = f", idle {point['idle_cpu_pct']:.2f} % of a core" if "idle_cpu_pct" in point else ""
    print(
        f"{label}: {point['write_per_payload']:6.2f} B written per payload B "
        f"({point['write_bytes_s'] / 1024:.0f} KiB/s for {point['payload_bytes_s'] / 1024:.1f} KiB/s), "
        f"{point['cpu_us_per_record']:5.0f} µs CPU/record ({point['cpu_pct']:.1f} % of a core, {100 * point['kernel_share']:.0f} % in the kernel), "
        f"RSS {point['rss_mib']:.1f} MiB (peak {point['rss_peak_mib']:.1f}){idle}; "
        f"took {point['taken_per_s']:.0f}/{point['produced_per_s']:.0f} rec/s produced; {load()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="30,300,3000", help="records/s to measure, comma separated (default 30,300,3000)")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per rate (default 20)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of load before measuring (default 3)")
    parser.add_argument("--idle-seconds", type=float, default=10, help="idle measurement before the load, first rate only (0: skip)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full", help="[spool] sync (default full)")
    parser.add_argument("--commit-interval-ms", type=int, help="[spool] commit_interval_ms (default: the agent's default)")
    parser.add_argument("--mqtt-protocol", choices=["3.1.1", "5"], default="5", help="[[sources.mqtt]] protocol (default 5)")
    parser.add_argument("--camera", action="store_true", help="also run the first rate with a 640x480@15 camera (RSS)")
    parser.add_argument("--camera-device", default="synthetic", help="the camera: synthetic (default), /dev/videoN, an RTSP URL, a file")
    parser.add_argument("--camera-codec", choices=["h264", "passthrough"], default="h264", help="encode (default) or keep the input's H.264/MJPEG")
    parser.add_argument("--json", action="store_true", help="print one JSON object per rate too")
    parser.add_argument("--dir", help="work directory (default: a temp dir on /var/tmp, a disk-backed filesystem)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    base = Path(tempfile.mkdtemp(prefix="agent-pi-", dir=args.dir or "/var/tmp"))
    print(f"agent_pi: sync={args.sync}, commit_interval_ms={args.commit_interval_ms or 'default'}, MQTT {args.mqtt_protocol}, {args.seconds:.0f} s per rate, work dir {base}; {load()}", flush=True)
    gw = GatewayProcess(base / "gw", "--no-limits").start()
    broker = MosquittoProcess(base / "mosquitto").start()
    try:
        kinesis = aws_client("kinesis", gw.url)
        kinesis.create_stream(StreamName="telemetry", ShardCount=2)
        kinesis.create_stream(StreamName="logs", ShardCount=1)
        aws_client("kinesisvideo", gw.url).create_stream(StreamName="cam", DataRetentionInHours=1)
        runs = [(r, False) for r in rates] + ([(rates[0], True)] if args.camera else [])
        points: dict[tuple[int, bool], dict[str, float]] = {}
        settings = {"device": args.camera_device, "codec": args.camera_codec}
        for i, (rate, camera) in enumerate(runs):
            point = points[rate, camera] = run_point(base, gw, broker, rate, args.seconds, args.warmup, args.idle_seconds if i == 0 else 0,
                                                     args.sync, settings if camera else None, args.commit_interval_ms, args.mqtt_protocol)
            report(point, camera)
            if camera:  # what the camera itself costs: the difference from the same load without it
                plain = points[rate, False]
                print(f"      the camera ({args.camera_device}, {args.camera_codec}, 640x480@15): +{point['cpu_pct'] - plain['cpu_pct']:.1f} % of a core, "
                      f"+{point['rss_mib'] - plain['rss_mib']:.1f} MiB RSS, "
                      f"+{(point['write_bytes_s'] - plain['write_bytes_s']) / 1024:.0f} KiB/s written", flush=True)
            if args.json:
                print(json.dumps({**point, "camera": camera, "sync": args.sync, "load1": os.getloadavg()[0]}))
    finally:
        broker.stop()
        gw.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
