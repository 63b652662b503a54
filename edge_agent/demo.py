"""``edge-agent demo``: the whole stack on one machine, on embedded defaults.

Starts a gateway process (``python -m gateway``) with its data under ``data_dir``, Mosquitto on
a free loopback port when it and paho-mqtt are installed (otherwise a pty serial-port simulator), a sample
telemetry publisher, a log file being appended to, and the agent itself with a synthetic
camera. It creates the streams, prints the player URL and a boto3 snippet that reads the
telemetry back, and runs until Ctrl-C / SIGTERM (or ``duration``), then stops everything.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent import aws
from edge_agent.config import GatewaySection, config_from_dict
from edge_agent.localhost import free_port, wait_for_port
from edge_agent.service import Agent

log = logging.getLogger("edge_agent.demo")

TELEMETRY_STREAM = "telemetry"
LOG_STREAM = "logs"
VIDEO_STREAM = "demo-camera"
AGENT_ID = "demo-agent"

SNIPPET = """\
import boto3
kinesis = boto3.client("kinesis", endpoint_url="{url}", region_name="us-east-1",
                       aws_access_key_id="demo", aws_secret_access_key="demo")
for shard in kinesis.list_shards(StreamName="{stream}")["Shards"]:
    it = kinesis.get_shard_iterator(StreamName="{stream}", ShardId=shard["ShardId"],
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for record in kinesis.get_records(ShardIterator=it, Limit=10)["Records"]:
        print(record["PartitionKey"], record["Data"])
"""


class Demo:
    def __init__(self, port: int, data_dir: str | Path, camera: bool = True, serial: bool = False) -> None:
        self.port = port
        self.data_dir = Path(data_dir).resolve()
        self.camera = camera
        self.serial = serial
        self.url = f"http://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen] = []
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()
        self.sources: dict[str, list[dict[str, Any]]] = {}

    # -- the parts -------------------------------------------------------------------------------

    def start_gateway(self) -> None:
        data = self.data_dir / "gateway"
        data.mkdir(parents=True, exist_ok=True)
        out = open(self.data_dir / "gateway.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data)],
                                stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(proc)
        wait_for_port(self.port, 20.0, proc)
        log.info("gateway on %s (log: %s)", self.url, self.data_dir / "gateway.log")

    def start_broker_or_serial(self) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        # the sample publisher is paho-mqtt, from the demo extra (the agent itself does not use it)
        publisher = importlib.util.find_spec("paho") is not None
        if binary and publisher and not self.serial:
            port = free_port()
            workdir = self.data_dir / "mosquitto"
            workdir.mkdir(parents=True, exist_ok=True)
            conf = workdir / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {workdir}/\n")
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            wait_for_port(port, 20.0, proc)
            log.info("mosquitto on 127.0.0.1:%d", port)
            self.sources["mqtt"] = [{"name": "mqtt-demo", "stream": TELEMETRY_STREAM, "topics": ["demo/#"], "host": "127.0.0.1", "port": port,
                                     "client_id": "edge-demo-agent"}]
            self._thread("publisher", lambda: self._publish(port))
        else:
            master, slave = os.openpty()
            path = os.ttyname(slave)
            why = "" if self.serial else " (mosquitto is not installed)" if not binary else " (paho-mqtt, the sample publisher, is not installed)"
            log.info("simulating a serial sensor on %s%s", path, why)
            self.sources["serial"] = [{"name": "serial-demo", "stream": TELEMETRY_STREAM, "port": path}]
            self._thread("serial-simulator", lambda: self._serial(master, slave))

    def start_log_writer(self) -> None:
        path = self.data_dir / "demo-app.log"
        self.sources["logs"] = [{"name": "logs-demo", "stream": LOG_STREAM, "paths": [str(path)], "start_at": "end"}]
        self._thread("log-writer", lambda: self._write_log(path))

    def create_streams(self) -> None:
        gw = GatewaySection(endpoint_url=self.url)
        session = aws.make_session(gw)
        kinesis = aws.make_client(session, "kinesis", self.url, gw)
        video = aws.make_client(session, "kinesisvideo", self.url, gw)
        for stream, shards in ((TELEMETRY_STREAM, 2), (LOG_STREAM, 1)):
            try:
                kinesis.create_stream(StreamName=stream, ShardCount=shards)
            except kinesis.exceptions.ResourceInUseException:
                pass
        if self.camera:
            try:
                video.create_stream(StreamName=VIDEO_STREAM, DataRetentionInHours=24, MediaType="video/h264")
            except video.exceptions.ResourceInUseException:
                pass

    def agent_config(self) -> Any:
        sources = dict(self.sources)
        if self.camera:
            sources["camera"] = [{"name": "camera-demo", "stream": VIDEO_STREAM, "device": "synthetic", "width": 640, "height": 480,
                                  "fps": 15.0, "fragment_seconds": 2.0}]
        return config_from_dict({
            "agent": {"id": AGENT_ID},
            "spool": {"path": str(self.data_dir / "agent-spool.db"), "max_bytes": 256 * 1024 * 1024},
            "gateway": {"endpoint_url": self.url},
            "forwarder": {"retry_max_seconds": 5.0},
            "metrics": {"listen": f"127.0.0.1:{free_port()}"},
            "sources": sources,
        })

    # -- sample producers ------------------------------------------------------------------------

    def _thread(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    @staticmethod
    def _reading(i: int, sensor: str) -> dict[str, Any]:
        return {"sensor": sensor, "seq": i, "ts": time.time(), "temperature_c": round(21 + 3 * math.sin(i / 20), 2),
                "humidity": round(45 + 5 * math.cos(i / 30), 1)}

    def _publish(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-publisher")
        try:
            client.connect("127.0.0.1", port)
        except OSError as exc:
            log.error("demo publisher cannot connect: %s", exc)
            return
        client.loop_start()
        i = 0
        while not self.stop.wait(0.2):
            for sensor in ("line-1", "line-2"):
                client.publish(f"demo/{sensor}/env", json.dumps(self._reading(i, sensor)), qos=1)
            i += 1
        client.loop_stop()
        client.disconnect()

    def _serial(self, master: int, slave: int) -> None:
        i = 0
        try:
            while not self.stop.wait(0.2):
                os.write(master, (json.dumps(self._reading(i, "serial-1")) + "\n").encode())
                i += 1
        finally:
            os.close(master)
            os.close(slave)

    def _write_log(self, path: Path) -> None:
        i = 0
        with path.open("a") as f:
            while not self.stop.wait(0.5):
                level = "WARN" if i % 10 == 9 else "INFO"
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level} demo-app: request {i} served in {5 + i % 40} ms\n")
                f.flush()
                i += 1

    # -- running ---------------------------------------------------------------------------------

    def banner(self) -> str:
        return (
            f"\nedge-agent demo is running. Ctrl-C stops everything.\n"
            f"  gateway:  {self.url}   (data in {self.data_dir})\n"
            f"  player:   {self.url}/player" + ("" if self.camera else "   (camera off)") + "\n"
            f"  streams:  {TELEMETRY_STREAM} (MQTT/serial telemetry), {LOG_STREAM} (log lines)"
            + (f", {VIDEO_STREAM} (video)" if self.camera else "") + "\n"
            f"  status:   edge-agent status --spool {self.data_dir / 'agent-spool.db'}\n"
            f"\nread the telemetry back with boto3 (./scripts/demo.sh installs it: run this with .venv/bin/python):\n\n"
            f"{SNIPPET.format(url=self.url, stream=TELEMETRY_STREAM)}"
        )

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_demo(port: int = 4567, data_dir: str | Path = "./demo-data", duration: float = 0, camera: bool = True, serial: bool = False) -> int:
    demo = Demo(port, data_dir, camera, serial)
    agent_stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping the demo", signal.Signals(signum).name)
        agent_stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if duration:
        timer = threading.Timer(duration, agent_stop.set)
        timer.daemon = True
        timer.start()
    try:
        demo.data_dir.mkdir(parents=True, exist_ok=True)
        demo.start_gateway()
        demo.create_streams()
        demo.start_broker_or_serial()
        demo.start_log_writer()
        agent = Agent(demo.agent_config())
        print(demo.banner(), flush=True)
        if not agent_stop.is_set():
            agent.run(agent_stop)
    except (OSError, RuntimeError, TimeoutError) as exc:
        log.error("demo failed to start: %s", exc)
        return 1
    finally:
        demo.shutdown()
    print("demo stopped", flush=True)
    return 0
