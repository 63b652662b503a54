"""The unit files pass `systemd-analyze verify`, and sd_notify datagrams reach a real socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.sdnotify import Notifier, watchdog_interval

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
UNITS = ["edge-agent.service", "edge-gateway.service", "edge-consumer.service"]


def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies(name: str, tmp_path: Path) -> None:
    """verify needs ExecStart to exist: point the install path at this venv's scripts."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "systemd" / name).read_text()
    assert "/opt/edge-ingest/.venv/bin/" in text
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/edge-ingest/.venv/bin", str(VENV_BIN)))
    result = _verify(unit)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert name not in output, output  # no warning at all about our unit (unknown keys are only warnings)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a typo'd key and a missing executable are reported."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "systemd" / "edge-agent.service").read_text()
    unit = tmp_path / "edge-agent.service"
    unit.write_text(text.replace("NoNewPrivileges", "NoNewPrivilegez"))
    result = _verify(unit)
    assert result.returncode != 0 or "Unknown key" in result.stderr


def test_agent_unit_hardening_and_notify() -> None:
    text = (ROOT / "systemd" / "edge-agent.service").read_text()
    for line in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=edge-agent", "DynamicUser=yes",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "ReadWritePaths=/var/lib/edge-agent", "SupplementaryGroups=video dialout"]:
        assert line in text


def _datagram_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_notify_ready_and_watchdog_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _datagram_socket(path) as sock:
        notifier = Notifier(path)
        assert notifier.ready("spool open")
        assert sock.recv(4096) == b"READY=1\nSTATUS=spool open"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_abstract_socket_and_no_socket(tmp_path: Path) -> None:
    name = f"edge-agent-test-{os.getpid()}"
    with _datagram_socket("\0" + name) as sock:
        assert Notifier("@" + name).watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    assert not Notifier("").ready()  # outside systemd: a no-op
    assert not Notifier(str(tmp_path / "gone.sock")).ready()  # a vanished socket never raises


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_notify_never_blocks_on_a_full_socket(tmp_path: Path) -> None:
    """A receiver that stops reading must not hang the agent (the datagram is dropped instead)."""
    import time

    path = str(tmp_path / "full.sock")
    with _datagram_socket(path) as sock:
        notifier = Notifier(path)
        started = time.monotonic()
        results = [notifier.watchdog("x" * 200) for _ in range(2000)]
        assert time.monotonic() - started < 5
        assert results[0] and not all(results)  # the first went in, later ones were dropped
        assert sock.recv(4096).startswith(b"WATCHDOG=1\nSTATUS=")
