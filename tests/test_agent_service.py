"""The agent as a process: sd_notify READY/WATCHDOG/STOPPING, metrics, status, clean SIGTERM."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import all_data, wait_until  # noqa: E402
from helpers import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def failed_sends(metrics_url: str) -> float:
    """Retries the running agent counted so far (0 while its metrics endpoint is not up yet)."""
    from edge_agent.status import from_metrics

    try:
        return from_metrics(metrics_url).retries
    except OSError:
        return 0


def write_config(tmp_path: Path, gateway_url: str, metrics_port: int, log_file: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
id = "agent-svc"
[spool]
path = "{tmp_path / 'spool.db'}"
sync = "normal"
[gateway]
endpoint_url = "{gateway_url}"
connect_timeout_seconds = 1.0
read_timeout_seconds = 5.0
[forwarder]
retry_max_seconds = 1.0
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[sources.logs]]
name = "app-log"
stream = "logs"
paths = ["{log_file}"]
poll_interval = 0.05
""")
    return config


def recv_until(sock: socket.socket, wanted: bytes, timeout: float = 20) -> list[bytes]:
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096)
        except TimeoutError:
            continue
        seen.append(message)
        if wanted in message.split(b"\n"):
            return seen
    raise AssertionError(f"no {wanted!r} among {seen}")


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(0.5)


def test_agent_process_notifies_systemd_serves_metrics_and_stops_cleanly(gateway, tmp_path: Path) -> None:
    gateway.client("kinesis").create_stream(StreamName="logs", ShardCount=1)
    log_file = tmp_path / "app.log"
    log_file.write_text("".join(f"line {i}\n" for i in range(50)))
    metrics_port = free_port()
    config = write_config(tmp_path, gateway.url, metrics_port, log_file)
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(0.5)
    env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "300000", "PATH": "/usr/bin:/bin"}
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config)], cwd=ROOT, env=env,
                             stdout=open(tmp_path / "agent.log", "wb"), stderr=subprocess.STDOUT)
    try:
        recv_until(sock, b"READY=1")
        recv_until(sock, b"WATCHDOG=1", timeout=5)
        client = gateway.client("kinesis")
        wait_until(lambda: len(all_data(client, "logs")) == 50, 20, interval=0.3, what="the log lines at the gateway")
        with log_file.open("a") as f:
            f.write("one more\n")
        wait_until(lambda: b"one more" in all_data(client, "logs"), 20, interval=0.3, what="an appended line")

        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        from edge_agent.status import from_metrics  # acks leave the spool just after the gateway has the records

        wait_until(lambda: from_metrics(metrics_url).spool_records.get("records") == 0, 10, interval=0.1, what="the sent lines out of the spool")
        out = subprocess.run([sys.executable, "-m", "edge_agent", "status", "--metrics-url", metrics_url, "--json"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert status["records_in"]["app-log"] == 51
        assert status["records_out"]["app-log"] == 51
        assert status["spool_records"]["records"] == 0
        assert status["last_send"]["records"] > time.time() - 60
        text = subprocess.run([sys.executable, "-m", "edge_agent", "status", "--metrics-url", metrics_url],
                              capture_output=True, text=True, timeout=30).stdout
        assert "last successful send (records)" in text and "source app-log: in 51, out 51" in text
        # what the agent costs, for sizing a Pi and its SD card
        assert status["cpu_seconds"] > 0 and status["rss_bytes"] > 10 * 2**20 and status["started"] > time.time() - 600
        assert status["disk_written_bytes"] > 0  # the spool's fsynced commits
        assert re.search(r"cost: CPU [0-9.]+ % of a core, RSS [0-9]+ MiB, disk written [0-9]+ MiB/day", text), text

        # A second agent on the same spool refuses to start (the spool's lock), cleanly.
        second = subprocess.run([sys.executable, "-m", "edge_agent", "--config", str(config)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1
        assert "cannot open the spool" in second.stderr and "Traceback" not in second.stderr

        drain(sock)
        agent.send_signal(signal.SIGTERM)
        recv_until(sock, b"STOPPING=1", timeout=10)
        assert agent.wait(timeout=20) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        sock.close()
    log = (tmp_path / "agent.log").read_text()
    assert "agent stopped" in log, log
    # With the agent gone, status reads the spool file itself.
    out = subprocess.run([sys.executable, "-m", "edge_agent", "status", "--config", str(config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"status from {tmp_path / 'spool.db'}" in out.stdout
    assert "records 0" in out.stdout
    assert "last successful send (records): " in out.stdout and "(records): never" not in out.stdout  # kept in the spool


def test_agent_keeps_running_while_the_gateway_is_unreachable(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("a\nb\nc\n")
    metrics_port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", metrics_port, log_file)
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from edge_agent.status import from_spool

        spool_path = tmp_path / "spool.db"
        wait_until(lambda: spool_path.exists() and from_spool(spool_path).spool_records["records"] == 3, 30,
                   interval=0.2, what="the lines in the spool")
        wait_until(lambda: failed_sends(f"http://127.0.0.1:{metrics_port}/metrics") >= 3, 30, interval=0.2,
                   what="several failed send attempts")
        assert agent.poll() is None  # ...no gateway is not a reason to exit
        agent.send_signal(signal.SIGINT)
        assert agent.wait(timeout=20) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    out = subprocess.run([sys.executable, "-m", "edge_agent", "status", "--spool", str(tmp_path / "spool.db"), "--json"],
                         capture_output=True, text=True, timeout=30)
    status = json.loads(out.stdout)
    assert status["spool_records"]["records"] == 3  # kept for when the gateway is back
    assert time.time() - 120 < status["oldest"]["records"] <= time.time()  # how far behind the agent is


def test_watchdog_health_follows_the_forwarder_loops(tmp_path: Path) -> None:
    """WATCHDOG=1 is only sent while both forwarder loops come round: a gateway that takes the
    connection and never answers hangs the records loop, and the agent stops feeding the watchdog."""
    import threading

    from edge_agent.config import config_from_dict
    from edge_agent.service import Agent
    from edge_agent.spool import NewRecord

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(silent.accept()[0])  # read nothing, answer nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    config = config_from_dict({
        "spool": {"path": str(tmp_path / "spool.db"), "sync": "normal"},
        "gateway": {"endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}", "read_timeout_seconds": 60.0},
        "metrics": {"listen": ""},
    })
    agent = Agent(config)
    agent.hung_after_seconds = 2.0
    stop = threading.Event()
    agent.start(stop)
    try:
        wait_until(agent.healthy, 10, what="both loops running")
        assert agent.spool is not None
        agent.spool.append([NewRecord("telemetry", "s", "k", b"x", "src")])
        wait_until(lambda: not agent.healthy(), 10, what="the hung loop to be noticed")
        assert agent.media is not None and time.monotonic() - agent.media.heartbeat < 2.0  # the other loop is fine
    finally:
        with contextlib.suppress(OSError):
            silent.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone would not
        silent.close()
        for conn in held:
            conn.close()  # the stuck request fails now, the loop comes round again
        wait_until(agent.healthy, 10, what="the loop to come round again")
        agent.shutdown(stop)
    assert all(not t.is_alive() for t in agent.threads)


def test_a_failing_source_is_restarted_and_the_agent_carries_on(tmp_path: Path) -> None:
    import threading
    from dataclasses import dataclass

    from edge_agent.config import AgentConfig, AgentSection, GatewaySection, MetricsSection, SpoolSection
    from edge_agent.service import Agent
    from edge_agent.spool import NewRecord

    builds: list[int] = []

    class CrashOnce:
        name = "crash-once"

        def __init__(self, spool) -> None:
            self.spool = spool

        def run(self, stop: threading.Event) -> None:
            if len(builds) == 1:
                raise OSError("device vanished")  # a bug or a lost device: the supervisor restarts us
            self.spool.append([NewRecord("telemetry", "s", "k", b"after restart", self.name)])
            stop.wait()

    @dataclass(frozen=True)
    class CrashOnceConfig:
        name: str = "crash-once"
        stream: str = "s"

        def build(self, spool, agent_id: str) -> CrashOnce:
            builds.append(1)
            return CrashOnce(spool)

    config = AgentConfig(
        agent=AgentSection(source_restart_seconds=0.2),
        spool=SpoolSection(path=str(tmp_path / "spool.db"), sync="normal"),
        gateway=GatewaySection(endpoint_url=f"http://127.0.0.1:{free_port()}"),
        metrics=MetricsSection(listen=""),
        sources=(CrashOnceConfig(),),
    )
    agent = Agent(config)
    stop = threading.Event()
    agent.start(stop)
    try:
        assert agent.spool is not None
        wait_until(lambda: agent.spool.stats().records["records"] == 1, 10, what="the restarted source's record")
        assert len(builds) == 2
    finally:
        agent.shutdown(stop)
