"""A rig for chaos tests: a gateway, Mosquitto, a pty serial device, a log file, a synthetic camera,
and the agent process, with a producer thread feeding the sources all along; then the check that
the gateway holds every record exactly once and in order per partition key.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from agent_helpers import list_fragments, read_stream, wait_until
from helpers import GatewayProcess, free_port
from test_e2e_agent import Producers, agent_config

from edge_agent.status import from_metrics

ROOT = Path(__file__).resolve().parent.parent
#: Serial has no acknowledgement: a line the agent read but had not committed when SIGKILLed is gone.
SERIAL_LOSS_PER_KILL = 3


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ChaosRig:
    def __init__(self, tmp_path: Path, gateway: GatewayProcess, broker_port: int, agent_url: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.gateway = gateway
        self.producers = Producers(broker_port, f"chaos{id(self) % 100000}", tmp_path)
        self.metrics_port = free_port()
        self.config = agent_config(tmp_path, agent_url or gateway.url, self.metrics_port, broker_port, self.producers)
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.agent: subprocess.Popen | None = None
        self.agent_kills = 0
        self.rss_samples: list[int] = []
        self._stop = threading.Event()
        self._producer: threading.Thread | None = None
        self._agent_log = open(tmp_path / "agent.log", "ab")
        kinesis = gateway.client("kinesis")
        kinesis.create_stream(StreamName="telemetry", ShardCount=2)
        kinesis.create_stream(StreamName="logs", ShardCount=1)
        gateway.client("kinesisvideo").create_stream(StreamName="cam-e2e", DataRetentionInHours=1)

    # -- the agent ---------------------------------------------------------------------------

    def start_agent(self) -> None:
        self.agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(self.config)], cwd=ROOT,
                                      stdout=self._agent_log, stderr=subprocess.STDOUT)
        wait_until(self._metrics_ok, 30, interval=0.1, what="the agent's metrics endpoint")

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(10)
        self.agent_kills += 1

    def sample_rss(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.rss_samples.append(rss_kb(self.agent.pid))

    def _metrics_ok(self) -> bool:
        try:
            from_metrics(self.metrics_url, timeout=0.5)
            return True
        except OSError:
            return False

    # -- the outside world -------------------------------------------------------------------

    def start_producing(self, rate_hz: float = 20.0) -> None:
        """MQTT and log lines every tick, a serial line every other tick, a log rotation once."""

        def loop() -> None:
            tick = 0
            while not self._stop.is_set():
                self.producers.mqtt(2)
                self.producers.log(2)
                if tick % 2 == 0:
                    self.producers.serial(1)
                if tick == 60:
                    self.producers.rotate_log()
                tick += 1
                time.sleep(1 / rate_hz)

        self._producer = threading.Thread(target=loop, name="chaos-producer", daemon=True)
        self._producer.start()

    def stop_producing(self) -> None:
        self._stop.set()
        if self._producer:
            self._producer.join(10)

    # -- the verdict -------------------------------------------------------------------------

    def check_exactly_once(self, timeout: float = 40) -> dict[str, Any]:
        """Wait for the gateway to hold everything, then check nothing is lost, duplicated or reordered."""
        expected = self.producers.expected()
        kinesis = self.gateway.client("kinesis")
        serial_allowance = SERIAL_LOSS_PER_KILL * self.agent_kills
        n_serial = self.producers.counts["serial"]

        def stored(stream: str) -> list[dict[str, Any]]:
            return [r for records in read_stream(kinesis, stream).values() for r in records]

        try:
            wait_until(lambda: len(stored("telemetry")) >= len(expected["telemetry"]) - serial_allowance
                       and len(stored("logs")) >= len(expected["logs"]), timeout, interval=0.5, what="everything at the gateway")
        except AssertionError:
            pass  # the checks below say what is missing
        # Everything that entered the spool has left it acknowledged (video included).
        wait_until(lambda: sum(from_metrics(self.metrics_url).spool_records.values()) == 0, timeout, interval=0.5,
                   what="the agent's spool to drain")
        time.sleep(1.5)  # a duplicate still in flight would show up now
        figures: dict[str, Any] = {}
        for stream, wanted in expected.items():
            by_shard = read_stream(kinesis, stream)
            data = [r["Data"] for records in by_shard.values() for r in records]
            dupes = [d for d, n in Counter(data).items() if n > 1]
            assert not dupes, f"{stream}: {len(dupes)} record(s) stored twice, e.g. {dupes[:3]}"
            missing = wanted - set(data)
            if stream == "telemetry":
                lost_serial = {m for m in missing if m.startswith(b"serial|")}
                assert len(lost_serial) <= serial_allowance, f"{len(lost_serial)} serial lines lost in {self.agent_kills} kills"
                missing -= lost_serial
                figures["serial_lost"] = len(lost_serial)
            assert not missing, f"{stream}: {len(missing)} lost, e.g. {sorted(missing)[:5]}"
            assert set(data) <= wanted, f"{stream}: unexpected {sorted(set(data) - wanted)[:5]}"
            _check_order(stream, by_shard)
            figures[stream] = len(data)
        figures["serial_sent"] = n_serial
        fragments = list_fragments(self.gateway.url, "cam-e2e")
        starts = [f["ProducerTimestamp"] for f in fragments]
        assert len(starts) == len(set(starts)), "a video fragment was stored twice"
        figures["fragments"] = len(fragments)
        return figures

    def close(self) -> None:
        self.stop_producing()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()
        self.producers.close()
        self._agent_log.close()


def _check_order(stream: str, by_shard: dict[str, list[dict[str, Any]]]) -> None:
    """Within each partition key, the producer's counters must increase (per source: topic, file, port)."""
    for shard, records in by_shard.items():
        last: dict[tuple[str, str], int] = defaultdict(lambda: -1)
        for r in records:
            m = re.match(rb"(mqtt|serial|log)\|(?:.*\|)?(\d+)$", r["Data"])
            assert m, r["Data"]
            key = (r["PartitionKey"], m.group(1).decode())
            n = int(m.group(2))
            assert n > last[key], f"{stream}/{shard}: {key} went from {last[key]} to {n}"
            last[key] = n
