"""Serial source on real pty pairs: framing, garbage, and the device vanishing and coming back."""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Callable
from typing import Any
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.metrics import REGISTRY
from edge_agent.sources import SOURCE_TYPES
from edge_agent.sources.serial import SerialConfig
from edge_agent.spool import Spool
from helpers import wait_until


class Device:
    """A fake serial device: the master side of a pty, reachable through a stable symlink."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master, slave = os.openpty()
        self.slave_path = os.ttyname(slave)
        tty.setraw(slave)  # no line discipline (CR->NL, line buffering) even before pyserial configures it
        os.close(slave)  # the source opens the slave by path, like a real /dev/ttyUSB0
        if link.is_symlink():
            link.unlink()
        link.symlink_to(self.slave_path)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        self.link.unlink()
        os.close(self.master)


def rejected(source: str, reason: str) -> float:
    return REGISTRY.get_sample_value("edge_agent_records_rejected_total", {"source": source, "reason": reason}) or 0.0


def datas(spool: Spool) -> list[bytes]:
    return [r.data for r in spool.read("records", limit=10_000) if not r.data.startswith(b"sync")]


def sync(device: Device, spool: Spool) -> None:
    """Write probe lines until one arrives: the source has (re)opened the port.

    pyserial flushes the input queue when it opens a port, so bytes written before that are lost,
    as they would be on a real UART.
    """
    deadline = time.monotonic() + 10
    before = len(spool.read("records", limit=10_000))
    while time.monotonic() < deadline:
        device.write(b"sync\n")
        time.sleep(0.05)
        if len(spool.read("records", limit=10_000)) > before:
            return
    raise AssertionError("the source never opened the port")


@pytest.fixture
def source(tmp_path: Path, run_source: Callable[[Any, Any], threading.Event]) -> Callable[..., tuple[Spool, Device, str]]:
    count = iter(range(1000))

    def start(device: Device | None = None, **settings: object) -> tuple[Spool, Device, str]:
        n = next(count)
        device = device or Device(tmp_path / "ttyUSB0")
        name = f"serial-{n}-{os.getpid()}-{time.monotonic_ns()}"
        config = SerialConfig.from_dict({"stream": "serial", "port": str(device.link), "name": name, **settings}, "sources.serial[0]")
        spool = Spool(tmp_path / f"spool-{n}.db")
        run_source(config, spool)
        return spool, device, name

    return start


def test_lines_and_garbage(source) -> None:
    spool, device, name = source(max_line_bytes=100)
    sync(device, spool)
    device.write(b"temp=21.5\n")
    device.write(b"\xff\xfe\x80 noise\n")            # not UTF-8
    device.write(b"hum=40\r\n")                         # CRLF device
    device.write(b"x" * 5000)                           # runaway line, in pieces
    device.write(b"y" * 5000 + b"\n")
    device.write(b"\x00\x00\x07\n")                      # control characters
    device.write(b"\n")                                  # empty
    device.write("caf\u00e9=1\n".encode())              # UTF-8 text is fine
    device.write(b"split ")
    time.sleep(0.3)                                      # a line arriving in two reads
    device.write(b"line\n")
    wait_until(lambda: len(datas(spool)) == 4)
    assert datas(spool) == [b"temp=21.5", b"hum=40", "caf\u00e9=1".encode(), b"split line"]
    assert rejected(name, "not_text") == 2
    assert rejected(name, "too_long") == 1
    assert rejected(name, "empty") == 1
    record = spool.read("records")[-1]
    assert record.partition_key.endswith("ttyUSB0") and record.kind == "telemetry" and record.stream == "serial"


def tried_to_open(caplog: pytest.LogCaptureFixture, name: str) -> bool:
    """The source ``name`` has failed to open its port at least once (it logs that once per outage)."""
    return any(r.getMessage().startswith(f"{name}: cannot open ") for r in caplog.records)


def test_device_unplugged_and_plugged_back(source, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool, device, name = source(reopen_max=0.5)
    sync(device, spool)
    device.write(b"before-1\nbefore-2\nhalf a li")
    wait_until(lambda: len(datas(spool)) == 2)
    device.unplug()
    wait_until(lambda: rejected(name, "partial") == 1)
    wait_until(lambda: tried_to_open(caplog, name))  # reopening fails while the device is gone
    device = Device(tmp_path / "ttyUSB0")  # plugged back: a new device node behind the same link
    sync(device, spool)
    device.write(b"after-1\nafter-2\n")
    wait_until(lambda: len(datas(spool)) == 4)
    assert datas(spool) == [b"before-1", b"before-2", b"after-1", b"after-2"]
    device.unplug()


def test_a_port_held_by_another_reader_is_waited_for(source, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import serial

    link = tmp_path / "ttyUSB0"
    device = Device(link)
    other = serial.Serial(str(link), exclusive=True, timeout=0.1)  # e.g. someone's `screen` session
    try:
        spool, _, name = source(device=device, reopen_max=0.3)
        wait_until(lambda: tried_to_open(caplog, name))
        device.write(b"held\n")
        time.sleep(0.5)
        assert spool.read("records") == []  # it did not get in beside the other reader
    finally:
        other.close()
    sync(device, spool)  # the source gets the port once it is free
    device.write(b"mine\n")
    wait_until(lambda: b"mine" in datas(spool))


def test_fixed_length_binary_frames_and_latin1(source) -> None:
    spool, device, _ = source(framing="fixed", record_length=4, encoding="binary")
    deadline = time.monotonic() + 10
    while not spool.read("records") and time.monotonic() < deadline:  # sync with whole frames
        device.write(b"\x00\x00\x00\x00")
        time.sleep(0.05)
    device.write(b"\x01\x02\x03\x04\xff\xfe")
    device.write(b"\xfd\xfc")
    # sync frames written meanwhile may still be committing: look at the tail, not a count
    expected = [b"\x01\x02\x03\x04", b"\xff\xfe\xfd\xfc"]
    wait_until(lambda: [r.data for r in spool.read("records", limit=1000)][-2:] == expected)
    assert all(r.data == b"\x00" * 4 for r in spool.read("records", limit=1000)[:-2])

    spool2, device2, _ = source(encoding="latin-1", terminator="\r\n")
    sync_line = b"sync\r\n"
    deadline = time.monotonic() + 10
    while not spool2.read("records") and time.monotonic() < deadline:
        device2.write(sync_line)
        time.sleep(0.05)
    device2.write(b"caf\xe9\r\n")
    wait_until(lambda: spool2.read("records", limit=1000)[-1].data != b"sync")
    assert [r.data for r in spool2.read("records", limit=1000) if r.data != b"sync"] == ["caf\u00e9".encode("utf-8")]


def test_config_rules() -> None:
    assert SOURCE_TYPES["serial"] is SerialConfig
    config = SerialConfig.from_dict({"stream": "s", "port": "/dev/ttyUSB0"}, "sources.serial[3]")
    assert (config.name, config.baudrate, config.parity, config.stopbits) == ("serial-3", 9600, "none", 1)
    with pytest.raises(ConfigError) as err:
        SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "parity": "N", "stopbits": 3, "baudrate": 9600.0}, "sources.serial[0]")
    assert "sources.serial[0].parity: expected 'none', 'even', 'odd', 'mark' or 'space'" in str(err.value)
    assert "sources.serial[0].baudrate: expected an integer" in str(err.value)
    with pytest.raises(ConfigError, match=r"stopbits: expected 1, 1\.5 or 2"):
        SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "stopbits": 3}, "sources.serial[0]")
    assert SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "stopbits": 1.5}, "sources.serial[0]").stopbits == 1.5
    with pytest.raises(ConfigError, match="record_length: must be > 0"):
        SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "framing": "fixed"}, "sources.serial[0]")
    with pytest.raises(ConfigError, match="encoding: unknown codec"):
        SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "encoding": "klingon"}, "sources.serial[0]")
