"""Spool full while the gateway is away: the documented drop policy applies (video first, then
logs, telemetry last), every drop is counted, the agent keeps running, and what is left drains."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import all_data, wait_until  # noqa: E402
from helpers import GatewayProcess, free_port  # noqa: E402
from test_e2e_agent import Producers, agent_config  # noqa: E402

from edge_agent.status import from_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAP = 1_048_576


def test_spool_full_drops_by_policy_and_keeps_running(tmp_path: Path, mosquitto) -> None:
    gateway_port = free_port()
    producers = Producers(mosquitto.port, "full", tmp_path)
    metrics_port = free_port()
    config = agent_config(tmp_path, f"http://127.0.0.1:{gateway_port}", metrics_port, mosquitto.port, producers)
    text = config.read_text().replace('sync = "normal"', f'sync = "normal"\nmax_bytes = {CAP}')
    config.write_text(text)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config)], cwd=ROOT,
                             stdout=open(tmp_path / "agent.log", "ab"), stderr=subprocess.STDOUT)
    gw = GatewayProcess(tmp_path / "gateway-data", port=gateway_port)
    try:
        wait_until(lambda: _up(metrics_url), 30, interval=0.1, what="the agent")
        wait_until(lambda: "mqtt-e2e: connected" in (tmp_path / "agent.log").read_text(), 20, what="MQTT")
        producers.mqtt(100)
        wait_until(lambda: from_metrics(metrics_url).spool_records.get("media", 0) >= 2, 30, what="camera fragments in the spool")
        with producers.log_path.open("a") as f:  # ~2 MB of logs: twice the cap
            for i in range(10000):
                f.write(f"log|{i}|".ljust(199, "x") + "\n")
        producers.counts["log"] = 10000
        wait_until(lambda: from_metrics(metrics_url).dropped.get("log", 0) > 0, 30, what="log drops")
        wait_until(lambda: from_metrics(metrics_url).records_in.get("logs-e2e", 0) >= 10000, 30, what="all log lines read")
        status = from_metrics(metrics_url)
        assert status.dropped.get("video", 0) > 0, status.dropped  # video goes first
        assert status.dropped.get("telemetry", 0) == 0, status.dropped  # telemetry last: never reached
        assert status.spool_bytes <= CAP
        assert agent.poll() is None, "a full spool is not a reason to stop"
        dropped_logs = status.dropped["log"]
        # The gateway arrives: everything still spooled drains, telemetry complete.
        gw.start()
        kinesis = gw.client("kinesis")
        kinesis.create_stream(StreamName="telemetry", ShardCount=1)
        kinesis.create_stream(StreamName="logs", ShardCount=1)
        gw.client("kinesisvideo").create_stream(StreamName="cam-e2e", DataRetentionInHours=1)
        expected_mqtt = {d for d in producers.expected()["telemetry"] if d.startswith(b"mqtt|")}
        wait_until(lambda: expected_mqtt <= set(all_data(kinesis, "telemetry")), 60, interval=0.5, what="telemetry drained")
        last = "log|9999|".ljust(199, "x").encode()
        wait_until(lambda: all_data(kinesis, "logs")[-1:] == [last], 60, interval=0.5, what="logs drained, to the last line")
        time.sleep(1.0)
        logs = all_data(kinesis, "logs")
        assert len(logs) == len(set(logs)), "no duplicates"
        # The oldest went. The batch the forwarder already held when its spooled copy was dropped
        # is still delivered (at most two pages of 500), so a drop count never under-reports loss.
        assert 10000 - dropped_logs <= len(logs) <= 10000 - dropped_logs + 1000
        numbers = [int(line.split(b"|")[1]) for line in logs]
        assert numbers == sorted(numbers) and numbers[-1] == 9999
        print(f"spool cap {CAP} B: dropped {status.dropped}; drained {len(logs)} log lines and {len(expected_mqtt)} MQTT messages")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        producers.close()
        gw.kill()


def _up(url: str) -> bool:
    try:
        from_metrics(url, timeout=0.5)
        return True
    except OSError:
        return False
