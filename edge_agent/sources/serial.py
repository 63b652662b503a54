"""Serial source: frame bytes from a serial port (pyserial) into records, surviving unplugs.

Framing: ``framing = "line"`` splits on ``terminator`` (default ``"\\n"``; a ``"\\r"`` before a
``"\\n"`` terminator is dropped too); ``framing = "fixed"`` cuts every ``record_length`` bytes.

What counts as garbage (rejected, counted in ``RECORDS_REJECTED{source, reason}``, never spooled):

- ``too_long``: a line passes ``max_line_bytes`` before its terminator; everything up to the next
  terminator is discarded with it (a device spewing noise resynchronises on the next terminator).
- ``not_text``: with a text ``encoding`` (the default ``utf-8``) the record does not decode, or
  holds control characters other than tab (line noise, a baud-rate mismatch). ``encoding =
  "binary"`` turns this check off and keeps the bytes as they are.
- ``empty``: an empty line.
- ``partial``: bytes of an unfinished line or record when the device went away.

Text records are stored as UTF-8 (transcoded from ``encoding``). Partition key: the port path.

The device disappearing (USB unplug: read fails, the path vanishes) is logged; the port is
reopened with backoff (``reopen_max`` seconds at most between tries) until it comes back.
"""

from __future__ import annotations

import codecs
import logging
import re
import select
import threading
from dataclasses import dataclass
from typing import Literal

import serial

from edge_agent.sources.base import (
    MAX_RECORD_BYTES,
    Backoff,
    Rejects,
    Source,
    SourceConfig,
    SpoolWriter,
    now_ms,
    partition_key,
    positive,
    run_forever,
)
from edge_agent.spool import NewRecord, Spool

log = logging.getLogger("edge_agent.sources.serial")

DEFAULT_BAUDRATE = 9600
DEFAULT_TERMINATOR = "\n"
DEFAULT_MAX_LINE_BYTES = 4096
DEFAULT_ENCODING = "utf-8"
DEFAULT_REOPEN_MAX = 10.0
#: How long one read waits for the first byte; bounds how fast ``stop`` is noticed.
READ_TIMEOUT = 0.2
_PARITY = {"none": serial.PARITY_NONE, "even": serial.PARITY_EVEN, "odd": serial.PARITY_ODD,
           "mark": serial.PARITY_MARK, "space": serial.PARITY_SPACE}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class _KeepInputSerial(serial.Serial):
    """pyserial flushes the input buffer on open; we keep it, so lines the device sent while the
    agent was restarting (what the kernel buffered) are still read instead of thrown away."""

    def _reset_input_buffer(self) -> None:
        if not self.is_open:
            return  # the flush inside open(): skip it
        super()._reset_input_buffer()


@dataclass(frozen=True)
class SerialConfig(SourceConfig):
    """``[[sources.serial]]``: read records from a serial port (UART, USB-serial adapter)."""

    KIND = "serial"

    #: Kinesis data stream the records go to.
    stream: str
    #: Device path, e.g. ``/dev/ttyUSB0`` or better a stable ``/dev/serial/by-id/...`` link.
    port: str
    #: Unique source name (metrics, logs); default ``serial-<index>``.
    name: str = ""
    baudrate: int = DEFAULT_BAUDRATE
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    #: 1, 1.5 or 2.
    stopbits: float = 1
    #: Lock the port (``flock``) so a second reader (another agent, a stray ``screen``) cannot
    #: split the byte stream with us; a locked port is retried like a missing one.
    exclusive: bool = True
    #: Hardware (RTS/CTS) and software (XON/XOFF) flow control.
    rtscts: bool = False
    xonxoff: bool = False
    #: ``"line"``: records end with ``terminator``; ``"fixed"``: every ``record_length`` bytes is a record.
    framing: Literal["line", "fixed"] = "line"
    #: Line terminator for ``framing = "line"`` (``"\\n"``, ``"\\r\\n"``, ``"\\r"``...).
    terminator: str = DEFAULT_TERMINATOR
    #: Record size for ``framing = "fixed"``.
    record_length: int = 0
    #: Longer lines are rejected (``too_long``). At most 1 MiB.
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    #: Text encoding the device speaks (any Python codec name), or ``"binary"`` to keep raw bytes.
    encoding: str = DEFAULT_ENCODING
    #: ``"telemetry"`` or ``"log"``: decides the drop priority when the spool is full.
    kind: Literal["telemetry", "log"] = "telemetry"
    #: Longest pause (seconds) between attempts to reopen a vanished device.
    reopen_max: float = DEFAULT_REOPEN_MAX

    def check(self) -> list[str]:
        problems = super().check()
        problems += positive(self, "baudrate", "max_line_bytes", "reopen_max")
        if not self.port:
            problems.append("port: must not be empty")
        if self.stopbits not in (1, 1.5, 2):
            problems.append("stopbits: expected 1, 1.5 or 2")
        if self.framing == "line" and not self.terminator:
            problems.append("terminator: must not be empty")
        if self.framing == "fixed" and self.record_length <= 0:
            problems.append('record_length: must be > 0 with framing = "fixed"')
        if max(self.max_line_bytes, self.record_length) > MAX_RECORD_BYTES:
            problems.append(f"max_line_bytes: at most {MAX_RECORD_BYTES} (the Kinesis record limit)")
        if self.encoding != "binary":
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                problems.append(f'encoding: unknown codec {self.encoding!r} (use a Python codec name or "binary")')
        return problems

    def build(self, spool: Spool, agent_id: str) -> SerialSource:
        return SerialSource(self, spool)


class Framer:
    """Cuts a byte stream into records; remembers a partial record between reads."""

    def __init__(self, config: SerialConfig, rejects: Rejects) -> None:
        self.config = config
        self.rejects = rejects
        self.terminator = config.terminator.encode("latin-1", "replace") if config.framing == "line" else b""
        self.buffer = bytearray()
        self.skipping = False  # inside a too-long line: discard up to the next terminator

    def feed(self, data: bytes) -> list[bytes]:
        """Complete records (terminator removed) found after adding ``data``."""
        self.buffer += data
        if self.config.framing == "fixed":
            n = self.config.record_length
            count = len(self.buffer) // n
            out = [bytes(self.buffer[i * n:(i + 1) * n]) for i in range(count)]
            del self.buffer[:count * n]
            return out
        out = []
        limit = self.config.max_line_bytes
        while True:
            end = self.buffer.find(self.terminator)
            if end < 0:
                if len(self.buffer) > limit + len(self.terminator):
                    if not self.skipping:
                        self.rejects("too_long", f"line longer than max_line_bytes ({limit})")
                    self.skipping = True
                    del self.buffer[:len(self.buffer) - len(self.terminator)]
                return out
            line = bytes(self.buffer[:end])
            del self.buffer[:end + len(self.terminator)]
            if self.skipping:
                self.skipping = False
                continue
            if self.terminator == b"\n" and line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self.rejects("too_long", f"line of {len(line)} bytes (max_line_bytes = {limit})")
                continue
            out.append(line)

    def reset(self) -> None:
        if self.buffer and not self.skipping:
            self.rejects("partial", f"{len(self.buffer)} bytes of an unfinished record when the device went away")
        self.buffer.clear()
        self.skipping = False


class SerialSource(Source):
    def __init__(self, config: SerialConfig, spool: Spool) -> None:
        self.config = config
        self.name = config.name
        self.rejects = Rejects(self.name, log)
        self.writer = SpoolWriter(spool, self.name, self.rejects)
        self.framer = Framer(config, self.rejects)
        self.key = partition_key(config.port)
        self._missing_logged = False

    def run(self, stop: threading.Event) -> None:
        run_forever(self.name, stop, lambda: self._session(stop), log, Backoff(0.2, self.config.reopen_max))

    def _open(self) -> serial.Serial | None:
        cfg = self.config
        try:
            return _KeepInputSerial(
                port=cfg.port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=_PARITY[cfg.parity],
                stopbits=cfg.stopbits, rtscts=cfg.rtscts, xonxoff=cfg.xonxoff, exclusive=cfg.exclusive,
                timeout=READ_TIMEOUT,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self._missing_logged:  # once per outage, not once per retry
                log.warning("%s: cannot open %s (%s); retrying", self.name, cfg.port, exc)
                self._missing_logged = True
            return None

    def _session(self, stop: threading.Event) -> bool:
        port = self._open()
        if port is None:
            return False
        log.info("%s: opened %s at %d baud", self.name, self.config.port, self.config.baudrate)
        self._missing_logged = False
        try:
            while not stop.is_set():
                try:
                    # Wait for input, then take all of it: a blocking read(1) would take a line's
                    # first byte alone, and a kill right then would tear that line in two.
                    if not select.select([port.fileno()], [], [], READ_TIMEOUT)[0]:
                        continue
                    data = port.read(max(1, port.in_waiting))
                except (serial.SerialException, OSError, ValueError) as exc:
                    log.warning("%s: %s went away (%s); reopening", self.name, self.config.port, exc)
                    return True
                if data:
                    self._spool(self.framer.feed(data), stop)
            return True
        finally:
            self.framer.reset()
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _spool(self, frames: list[bytes], stop: threading.Event) -> None:
        cfg = self.config
        records = []
        ts = now_ms()
        for frame in frames:
            data = self._check(frame)
            if data is not None:
                records.append(NewRecord(cfg.kind, cfg.stream, self.key, data, self.name, ts))
        if records:
            # Urgent: a line cannot be read again, so it must not wait out the commit interval
            # in memory, where a kill or power cut would lose it.
            self.writer.append(records, stop, urgent=True)

    def _check(self, frame: bytes) -> bytes | None:
        """The record's data, or None if ``frame`` is garbage (counted)."""
        if not frame:
            self.rejects("empty", "empty line")
            return None
        if self.config.encoding == "binary":
            return frame
        try:
            text = frame.decode(self.config.encoding)
        except UnicodeDecodeError as exc:
            self.rejects("not_text", f"not {self.config.encoding}: {frame[:40]!r} ({exc.reason})")
            return None
        if _CONTROL.search(text):
            self.rejects("not_text", f"control characters in {frame[:40]!r}")
            return None
        return text.encode("utf-8")
