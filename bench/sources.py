"""How fast each agent source gets input into a durable spool (``sync="full"``: fsync per commit).

    .venv/bin/python bench/sources.py                 # all, about 30 s
    .venv/bin/python bench/sources.py --only logs mqtt --lines 100000

- logs:   a file of ``--lines`` lines (100 bytes) already written, then tailed: lines/s, MB/s.
- serial: a pty fed as fast as the kernel takes it: lines/s.
- mqtt:   a real Mosquitto, one paho publisher, ``--messages`` QoS 1 messages: end-to-end msgs/s
          (each acknowledged to the broker only after its spool commit).
- camera: the synthetic camera at 640x480, H.264 (libx264 ultrafast): render+encode ms per
          frame flat out, and the CPU share at 15 fps in real time for a few seconds.

Prints one line per figure plus the machine's load average, since the box is shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.sources.camera import CameraConfig  # noqa: E402
from edge_agent.sources.logs import LogsConfig  # noqa: E402
from edge_agent.sources.mqtt import MqttConfig  # noqa: E402
from edge_agent.sources.serial import SerialConfig  # noqa: E402
from edge_agent.spool import Spool  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for(spool: Spool, lane: str, count: int, timeout: float) -> float:
    start = time.monotonic()
    while spool.stats().records[lane] < count:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"only {spool.stats().records[lane]} of {count} records after {timeout}s")
        time.sleep(0.01)
    return time.monotonic()


def run(config: object, spool: Spool) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=config.build(spool, "bench").run, args=(stop,), daemon=True).start()  # type: ignore[attr-defined]
    return stop


def bench_logs(tmp: Path, lines: int) -> None:
    path = tmp / "app.log"
    line = b"2026-01-01T00:00:00Z INFO request handled path=/api/v1/items status=200 latency_ms=12 id="
    with open(path, "wb") as f:
        for i in range(lines):
            f.write(line + b"%010d\n" % i)
    size = path.stat().st_size
    spool = Spool(tmp / "logs.db")
    cpu0, t0 = cpu_seconds(), time.monotonic()
    stop = run(LogsConfig.from_dict({"stream": "logs", "paths": [str(path)], "poll_interval": 0.01}, "sources.logs[0]"), spool)
    t1 = wait_for(spool, "records", lines, 300)
    cpu = cpu_seconds() - cpu0
    stop.set()
    spool.close()
    print(f"logs:   {lines / (t1 - t0):10,.0f} lines/s  {size / (t1 - t0) / 1e6:6.1f} MB/s  ({lines} lines, {cpu / (t1 - t0):.0%} CPU)")


def bench_serial(tmp: Path, lines: int) -> None:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    spool = Spool(tmp / "serial.db")
    stop = run(SerialConfig.from_dict({"stream": "s", "port": name, "baudrate": 115200}, "sources.serial[0]"), spool)
    while spool.stats().records["records"] == 0:  # until the port is open (opening flushes input)
        os.write(master, b"sync\n")
        time.sleep(0.05)
    base = spool.stats().records["records"]
    payload = b"".join(b"temp=%05d.5 hum=40.1 pressure=1013.2\n" % i for i in range(lines))
    t0 = time.monotonic()
    view = memoryview(payload)
    while view:
        written = os.write(master, view[:4096])
        view = view[written:]
    t1 = wait_for(spool, "records", base + lines, 120)
    stop.set()
    os.close(master)
    spool.close()
    print(f"serial: {lines / (t1 - t0):10,.0f} lines/s  (pty, {lines} lines)")


PUBLISHER = """
import sys, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, count = int(sys.argv[1]), int(sys.argv[2])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
c.max_queued_messages_set(0)
c.max_inflight_messages_set(1000)
c.connect("127.0.0.1", port)
c.loop_start()
payload = b'{"sensor":"t1","value":21.5,"unit":"C","ts":1700000000000}'
infos = [c.publish(f"bench/{i % 16}", payload, qos=1) for i in range(count)]
for info in infos:
    info.wait_for_publish(120)
c.loop_stop()
"""


def bench_mqtt(tmp: Path, messages: int, inflight: int) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\nmax_inflight_messages {inflight}\n")
    broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        spool = Spool(tmp / f"mqtt-{inflight}.db")
        stop = run(MqttConfig.from_dict({"stream": "t", "host": "127.0.0.1", "port": port, "topics": ["bench/#"]}, "sources.mqtt[0]"), spool)
        time.sleep(1.0)
        cpu0, t0 = cpu_seconds(), time.monotonic()
        publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(messages)])  # its own process and GIL
        t1 = wait_for(spool, "records", messages, 300)
        cpu = cpu_seconds() - cpu0
        publisher.wait(60)
        stop.set()
        spool.close()
        print(f"mqtt:   {messages / (t1 - t0):10,.0f} msgs/s   (QoS 1, ack after commit, broker max_inflight_messages {inflight}, "
              f"{messages} messages, {cpu / messages * 1e6:.0f} us CPU per message in the agent)")
    finally:
        broker.terminate()
        broker.wait(10)


def bench_camera(tmp: Path, seconds: float) -> None:
    from edge_agent.sources.video_inputs import Clock, SyntheticCamera
    from kvs import FragmentWriter

    cam = SyntheticCamera(640, 480, 15, Clock())
    writer = FragmentWriter(640, 480, 15, 2.0)
    frames = 60
    t0 = time.perf_counter()
    for n in range(frames):
        ts = 1_700_000_000_000 + n * 67
        writer.add_frame(cam.render(n, ts), ts)
    per_frame = (time.perf_counter() - t0) / frames * 1000
    print(f"camera: {per_frame:10.1f} ms/frame render+encode 640x480 ({writer.encoder_name}), max {1000 / per_frame:.0f} fps")

    spool = Spool(tmp / "camera.db")
    cpu0, t0 = cpu_seconds(), time.monotonic()
    stop = run(CameraConfig.from_dict({"stream": "v", "width": 640, "height": 480, "fps": 15, "fragment_seconds": 1.0}, "sources.camera[0]"), spool)
    time.sleep(seconds)
    stop.set()
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    time.sleep(0.5)
    fragments = spool.read("media", limit=1000, max_bytes=1 << 30)
    frame_total = sum(f.attrs["frame_count"] for f in fragments)
    kbps = sum(len(f.data) for f in fragments) * 8 / elapsed / 1000
    spool.close()
    print(f"camera: {cpu / elapsed:10.0%} CPU at 15 fps real time ({frame_total} frames in {len(fragments)} fragments, {kbps:.0f} kbit/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["logs", "serial", "mqtt", "camera"])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--camera-seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "logs" in args.only:
            bench_logs(tmp, args.lines)
        if "serial" in args.only:
            bench_serial(tmp, args.lines // 4)
        if "mqtt" in args.only:
            bench_mqtt(tmp, args.messages, 20)  # Mosquitto's default
            bench_mqtt(tmp, args.messages, 1000)
        if "camera" in args.only:
            bench_camera(tmp, args.camera_seconds)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
