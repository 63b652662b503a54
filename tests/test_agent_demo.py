"""`edge-agent demo` starts the whole stack, data flows end to end, Ctrl-C stops every process."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import all_data, list_fragments, wait_until  # noqa: E402
from helpers import aws_client, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_demo(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, Path, int]]:
    """``edge-agent demo`` on a free port, its banner printed; the block must stop it (a signal), and
    after the block it has said "demo stopped"."""
    port = free_port()
    out_path = tmp_path / "demo.out"
    demo = subprocess.Popen([sys.executable, "-m", "edge_agent", "demo", "--port", str(port), "--data-dir", str(tmp_path / "demo"),
                             *flags, "--duration", "90"], cwd=ROOT, stdout=open(out_path, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "player:" in out_path.read_text(), 30, interval=0.2, what="the demo banner")
        yield demo, out_path, port
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert "demo stopped" in out_path.read_text()


def test_demo_runs_end_to_end_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with running_demo(tmp_path) as (demo, out_path, port):
        text = out_path.read_text()
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/player" in text
        assert 'boto3.client("kinesis", endpoint_url="' + url in text
        kinesis = aws_client("kinesis", url)
        wait_until(lambda: len(all_data(kinesis, "telemetry")) >= 5, 30, interval=0.5, what="telemetry at the gateway")
        wait_until(lambda: len(all_data(kinesis, "logs")) >= 2, 30, interval=0.5, what="log lines at the gateway")
        wait_until(lambda: len(list_fragments(url, "demo-camera")) >= 1, 40, interval=0.5, what="a video fragment")
        assert re.search(rb'"sensor": "line-\d"', all_data(kinesis, "telemetry")[0])
        # the newcomer's first copy-paste: the banner's snippet runs and prints telemetry
        snippet = text[text.index("import boto3") :].split("\n\n", 1)[0]
        ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and "line-" in ran.stdout, ran.stderr
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    with socket.socket() as s:  # the gateway process is gone too
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_with_a_simulated_serial_sensor(tmp_path: Path) -> None:
    """Without MQTT (as on a box without Mosquitto) the demo's telemetry comes from a pty serial port."""
    with running_demo(tmp_path, "--serial", "--no-camera") as (demo, out_path, port):
        kinesis = aws_client("kinesis", f"http://127.0.0.1:{port}")
        wait_until(lambda: len(all_data(kinesis, "telemetry")) >= 3, 30, interval=0.5, what="serial telemetry at the gateway")
        assert b'"sensor": "serial-1"' in all_data(kinesis, "telemetry")[0]
        assert "simulating a serial sensor on /dev/pts/" in out_path.read_text()
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=30) == 0
