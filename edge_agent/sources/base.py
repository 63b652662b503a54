"""What every source shares: the ``Source`` interface, config checking, backoff, counted rejects.

``Backoff`` (``edge_agent.backoff``) and the Kinesis limits with the partition-key rule
(``edge_agent.kinesis_limits``) are the agent's one copy, re-exported here for the sources.

A source turns one kind of input (an MQTT subscription, a serial line, a log file, a camera) into
``NewRecord``s and commits them to the spool. It owns its reconnect loop: ``run(stop)`` returns only
when ``stop`` is set, so a broker restart or an unplugged device never reaches the runtime. Bad input
never raises; it is counted in ``RECORDS_REJECTED{source, reason}`` and logged at most once per
``REJECT_LOG_INTERVAL`` per reason, so a chattering device cannot flood the journal.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import typed_config

from edge_agent import metrics
from edge_agent.backoff import Backoff
from edge_agent.errors import ConfigError
from edge_agent.kinesis_limits import DELIVERY_STREAM_PREFIX, MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES, partition_key
from edge_agent.spool import NewRecord, RecordTooLarge, RingEntry, Spool, SpoolClosed, SpoolError, SpoolFull
from typed_config import positive

__all__ = [
    "Backoff",
    "MAX_PARTITION_KEY_CHARS",
    "MAX_RECORD_BYTES",
    "Rejects",
    "Source",
    "SourceConfig",
    "SpoolWriter",
    "now_ms",
    "partition_key",
    "positive",
]

#: A given reject reason is logged at most once per this many seconds (the counter counts all).
REJECT_LOG_INTERVAL = 10.0
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 30.0

log = logging.getLogger("edge_agent.sources")

C = TypeVar("C", bound="SourceConfig")


def now_ms() -> int:
    return int(time.time() * 1000)


class Source:
    """A running source: ``run`` blocks until ``stop`` is set and never raises for bad input."""

    name: str

    def run(self, stop: threading.Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Rejects:
    """Counts and (rate-limited) logs what a source refused."""

    def __init__(self, source: str, logger: logging.Logger | None = None, interval: float = REJECT_LOG_INTERVAL) -> None:
        self.source = source
        self.log = logger or log
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, reason: str, detail: str, count: int = 1) -> None:
        metrics.RECORDS_REJECTED.labels(self.source, reason).inc(count)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.interval:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + count
                return
            suppressed = self._suppressed.pop(reason, 0)
            self._last[reason] = now
        more = f" (+{suppressed} more since last report)" if suppressed else ""
        self.log.warning("%s: rejected (%s): %s%s", self.source, reason, detail, more)


class SpoolWriter:
    """Appends a source's records and counts them; turns spool failures into reject/retry decisions.

    ``append`` returns True when the records are durable, False when they were refused for good
    (rejected and counted), and raises ``SpoolClosed`` when the agent is shutting down. A full spool
    (``SpoolFull``: nothing droppable left) is waited out with backoff, so a source that can hold its
    input (MQTT unacked, log offset) applies backpressure instead of losing it.
    """

    def __init__(self, spool: Spool, source: str, rejects: Rejects) -> None:
        self.spool = spool
        self.source = source
        self.rejects = rejects

    def append(
        self, records: Sequence[NewRecord], stop: threading.Event, checkpoint: tuple[str, str] | None = None, ring: Sequence[RingEntry] = (),
        urgent: bool = False,
    ) -> bool:
        backoff = Backoff(0.2, 5.0)  # a full spool, a failing disk: retried soon, never given up
        while True:
            try:
                self.spool.append(records, checkpoint, ring, urgent)
            except RecordTooLarge as exc:
                return self._split_too_large(records, stop, checkpoint, ring, exc)
            except SpoolFull as exc:
                self.rejects.log.warning("%s: spool full, waiting: %s", self.source, exc)
                if backoff.wait(stop):
                    raise SpoolClosed("stopping while the spool is full") from exc
                continue
            except SpoolClosed:
                raise
            except SpoolError as exc:
                self.rejects.log.error("%s: spool append failed, retrying: %s", self.source, exc)
                if backoff.wait(stop):
                    raise SpoolClosed("stopping while the spool fails") from exc
                continue
            if records:
                metrics.RECORDS_IN.labels(self.source).inc(len(records))
            return True

    def _split_too_large(
        self, records: Sequence[NewRecord], stop: threading.Event, checkpoint: tuple[str, str] | None, ring: Sequence[RingEntry], exc: Exception
    ) -> bool:
        cap = self.spool.max_bytes
        kept = [r for r in records if len(r.data) <= cap]
        dropped = len(records) - len(kept)
        self.rejects("too_large", f"{dropped} record(s) larger than the spool cap: {exc}", dropped)
        if kept or checkpoint is not None or ring:
            return self.append(kept, stop, checkpoint, ring)
        return False


# -- config checking ---------------------------------------------------------------------------


class SourceConfig:
    """Mixin for a source's frozen config dataclass, checked by ``typed_config`` (as every config).

    Subclasses set ``KIND`` and may override ``check`` to add cross-field rules (return messages
    without the key prefix, e.g. ``"qos: expected 0, 1 or 2"``).
    """

    KIND: ClassVar[str] = ""
    name: str
    stream: str

    @classmethod
    def parse(cls: type[C], values: Any, key_prefix: str, errors: list[str]) -> C | None:
        """The config of ``values`` (the table at ``key_prefix``), or None; problems go to ``errors``.

        ``delivery_stream = "NAME"`` in place of ``stream`` sends the records to a Firehose delivery
        stream (PutRecordBatch): they are spooled with stream ``firehose:NAME``."""
        if isinstance(values, dict) and "delivery_stream" in values:
            values = dict(values)
            target = values.pop("delivery_stream")
            if "stream" in values:
                errors.append(f"{key_prefix}.delivery_stream: give either stream or delivery_stream, not both")
                return None
            if cls.KIND == "camera" or not isinstance(target, str):
                errors.append(f"{key_prefix}.delivery_stream: " + ("video goes to a video stream (stream), not to Firehose" if cls.KIND == "camera" else "expected a string"))
                return None
            values["stream"] = DELIVERY_STREAM_PREFIX + target
        return typed_config.build(cls, values, key_prefix, errors, defaults={"name": f"{cls.KIND}-{_index(key_prefix)}"})

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], key_prefix: str) -> C:
        errors: list[str] = []
        config = cls.parse(values, key_prefix, errors)  # type: ignore[attr-defined]
        if config is None or errors:
            raise ConfigError("; ".join(errors))
        return config  # type: ignore[no-any-return]

    def check(self) -> list[str]:
        """Cross-field rules; messages are ``"<key>: <what is wrong>"``."""
        problems = []
        if not self.name:
            problems.append("name: must not be empty")
        if not self.stream:
            problems.append("stream: must not be empty")
        return problems


def _index(key_prefix: str) -> int:
    match = re.search(r"\[(\d+)\]$", key_prefix)
    return int(match.group(1)) if match else 0


def run_forever(
    name: str,
    stop: threading.Event,
    attempt: Callable[[], bool | None],
    logger: logging.Logger,
    backoff: Backoff | None = None,
) -> None:
    """Call ``attempt`` until ``stop`` is set, pausing with backoff between calls.

    ``attempt`` returns (or fails) when its connection or device is gone; it returns True if it got
    somewhere (connected, opened the device), which resets the backoff. An exception is logged with
    its traceback and retried: sources handle their expected failures themselves, and anything
    unexpected restarts the source's inner loop instead of killing the agent.
    """
    backoff = backoff or Backoff(DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX)
    while not stop.is_set():
        try:
            progressed = attempt()
        except SpoolClosed:
            return
        except Exception:
            logger.exception("%s: failed; restarting", name)
            progressed = False
        if progressed:
            backoff.reset()
        if stop.is_set() or backoff.wait(stop):
            return
