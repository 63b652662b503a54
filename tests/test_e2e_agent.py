"""End to end with real parts: Mosquitto + a pty serial device + rotated log files + a synthetic
camera → the agent process → a gateway process; everything read back with boto3.

The gateway is SIGKILLed and restarted mid-run, then the agent is SIGKILLed and restarted: no
record is lost and none is stored twice (replays are recognised by spool seq).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import all_data, list_fragments, wait_until  # noqa: E402
from helpers import free_port  # noqa: E402

from edge_agent.status import from_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class Producers:
    """The outside world: an MQTT publisher, a serial device (pty master), an application log."""

    def __init__(self, broker_port: int, prefix: str, log_dir: Path) -> None:
        self.prefix = prefix
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub")
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()
        self.master, self.slave = os.openpty()
        self.serial_path = os.ttyname(self.slave)
        self.log_path = log_dir / "app.log"
        self.log_path.write_text("")
        self.counts = Counter[str]()

    def mqtt(self, n: int) -> None:
        for _ in range(n):
            i = self.counts["mqtt"]
            topic = f"{self.prefix}/{'ab'[i % 2]}/temp"
            self.client.publish(topic, f"mqtt|{topic}|{i}".encode(), qos=1).wait_for_publish(5)
            self.counts["mqtt"] += 1

    def serial(self, n: int) -> None:
        for _ in range(n):
            os.write(self.master, f"serial|{self.counts['serial']}\n".encode())
            self.counts["serial"] += 1

    def log(self, n: int) -> None:
        with self.log_path.open("a") as f:
            for _ in range(n):
                f.write(f"log|{self.counts['log']}\n")
                self.counts["log"] += 1

    def rotate_log(self) -> None:
        self.log_path.rename(self.log_path.with_name("app.log.1"))
        self.log_path.write_text("")

    def expected(self) -> dict[str, set[bytes]]:
        mqtt_payloads = {f"mqtt|{self.prefix}/{'ab'[i % 2]}/temp|{i}".encode() for i in range(self.counts["mqtt"])}
        return {
            "telemetry": mqtt_payloads | {f"serial|{i}".encode() for i in range(self.counts["serial"])},
            "logs": {f"log|{i}".encode() for i in range(self.counts["log"])},
        }

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        os.close(self.master)
        os.close(self.slave)


def agent_config(tmp_path: Path, gateway_url: str, metrics_port: int, broker_port: int, producers: Producers) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[agent]
id = "e2e-agent"
source_restart_seconds = 0.5
[spool]
path = "{tmp_path / 'spool.db'}"
sync = "normal"
[gateway]
endpoint_url = "{gateway_url}"
connect_timeout_seconds = 1.0
read_timeout_seconds = 5.0
[forwarder]
retry_max_seconds = 1.0
linger_ms = 5
media_fragments_per_request = 2
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[sources.mqtt]]
name = "mqtt-e2e"
stream = "telemetry"
topics = ["{producers.prefix}/#"]
host = "127.0.0.1"
port = {broker_port}
client_id = "{producers.prefix}-agent"
reconnect_min = 0.2
reconnect_max = 1.0
[[sources.serial]]
name = "serial-e2e"
stream = "telemetry"
port = "{producers.serial_path}"
reopen_max = 0.5
[[sources.logs]]
name = "logs-e2e"
stream = "logs"
paths = ["{producers.log_path}*"]
poll_interval = 0.05
rotate_wait = 3.0
[[sources.camera]]
name = "cam-e2e"
stream = "cam-e2e"
device = "synthetic"
width = 160
height = 120
fps = 5.0
fragment_seconds = 1.0
""")
    return path


def test_everything_arrives_once_across_gateway_and_agent_kills(gateway, mosquitto, tmp_path: Path) -> None:
    kinesis = gateway.client("kinesis")
    kinesis.create_stream(StreamName="telemetry", ShardCount=2)
    kinesis.create_stream(StreamName="logs", ShardCount=1)
    gateway.client("kinesisvideo").create_stream(StreamName="cam-e2e", DataRetentionInHours=1)
    producers = Producers(mosquitto.port, f"e2e{os.getpid()}", tmp_path)
    metrics_port = free_port()
    config = agent_config(tmp_path, gateway.url, metrics_port, mosquitto.port, producers)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    agent_log = open(tmp_path / "agent.log", "ab")

    def start_agent() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config)], cwd=ROOT, stdout=agent_log, stderr=subprocess.STDOUT)
        wait_until(lambda: _metrics_ok(metrics_url), 20, interval=0.1, what="the agent's metrics endpoint")
        return proc

    def taken_in(source: str) -> int:
        return int(from_metrics(metrics_url).records_in.get(source, 0))

    agent = start_agent()
    try:
        wait_until(lambda: "mqtt-e2e: connected" in (tmp_path / "agent.log").read_text(), 20, what="the MQTT source to connect")
        # pyserial flushes the input buffer when it opens the port: write only once it is open
        wait_until(lambda: "serial-e2e: opened" in (tmp_path / "agent.log").read_text(), 20, what="the serial port to open")
        # 1. everything up
        producers.mqtt(60)
        producers.serial(30)
        producers.log(40)
        wait_until(lambda: taken_in("serial-e2e") == 30, 20, what="serial lines in the spool")
        # 2. the gateway dies: the agent spools; the log rotates meanwhile
        gateway.kill()
        producers.mqtt(60)
        producers.serial(30)
        producers.log(20)
        producers.rotate_log()
        producers.log(20)
        wait_until(lambda: taken_in("serial-e2e") == 60 and taken_in("logs-e2e") == 80 and taken_in("mqtt-e2e") == 120, 20,
                   what="the outage's records in the spool")
        assert from_metrics(metrics_url).spool_records["records"] > 0
        gateway.start()
        # 3. the agent is SIGKILLed mid-run; MQTT and the log keep producing while it is down
        producers.mqtt(30)
        producers.log(30)
        time.sleep(0.3)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        producers.mqtt(40)
        producers.log(20)
        opened_before = (tmp_path / "agent.log").read_text().count("serial-e2e: opened")
        agent = start_agent()
        wait_until(lambda: (tmp_path / "agent.log").read_text().count("serial-e2e: opened") > opened_before, 20, what="the serial port to reopen")
        producers.serial(20)
        producers.mqtt(20)
        producers.log(10)
        expected = producers.expected()
        wait_until(lambda: len(all_data(kinesis, "telemetry")) >= len(expected["telemetry"])
                   and len(all_data(kinesis, "logs")) >= len(expected["logs"]), 60, interval=0.5, what="everything at the gateway")
        time.sleep(1.0)  # anything still in flight would show up as a duplicate now
        for stream, wanted in expected.items():
            stored = all_data(kinesis, stream)
            dupes = [d for d, n in Counter(stored).items() if n > 1]
            assert not dupes, f"{stream}: {len(dupes)} duplicated, e.g. {dupes[:3]}"
            assert set(stored) == wanted, f"{stream}: missing {sorted(wanted - set(stored))[:5]}, unexpected {sorted(set(stored) - wanted)[:5]}"
        wait_until(lambda: len(list_fragments(gateway.url, "cam-e2e")) >= 4, 30, interval=0.5, what="video fragments")
        fragments = list_fragments(gateway.url, "cam-e2e")
        starts = [f["ProducerTimestamp"] for f in fragments]
        assert len(starts) == len(set(starts)), "a video fragment was stored twice"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        producers.close()
        agent_log.close()


def _metrics_ok(url: str) -> bool:
    try:
        from_metrics(url, timeout=0.5)
        return True
    except OSError:
        return False
