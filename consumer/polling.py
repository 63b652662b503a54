"""Reading a shard with GetRecords, as the KCL's polling mode does.

Kinesis allows 5 GetRecords calls per second per shard (shared by every reader of the shard), so
calls are spaced at least ``min_interval`` apart (0.2 s); ``ProvisionedThroughputExceededException``
backs off with full jitter and the same iterator. An expired iterator is fetched again after the
last record returned. When the shard is closed and read to its end, the batch carries the
``ChildShards`` and the reader is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import StreamError
from edge_agent.backoff import Backoff

log = logging.getLogger("consumer.polling")

#: 5 GetRecords per second per shard (the AWS limit).
DEFAULT_MIN_INTERVAL = 0.2
DEFAULT_MAX_RECORDS = 10_000
THROTTLE_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException", "LimitExceededException", "KMSThrottlingException"}
FATAL_CODES = {"ResourceNotFoundException", "AccessDeniedException", "InvalidArgumentException", "UnrecognizedClientException",
               "IncompleteSignature", "InvalidSignatureException", "KMSAccessDeniedException", "KMSDisabledException"}


@dataclass(frozen=True)
class Position:
    """Where to start reading: an iterator type, with a sequence number or timestamp where it needs one."""

    iterator_type: str
    sequence_number: str | None = None
    timestamp: datetime | None = None

    def request(self) -> dict[str, Any]:
        args: dict[str, Any] = {"ShardIteratorType": self.iterator_type}
        if self.sequence_number is not None:
            args["StartingSequenceNumber"] = self.sequence_number
        if self.timestamp is not None:
            args["Timestamp"] = self.timestamp
        return args


@dataclass
class Batch:
    """Raw Kinesis records (botocore's shape) and what the reader learnt with them."""

    records: list[dict[str, Any]] = field(default_factory=list)
    millis_behind_latest: int | None = None
    #: Set once the shard is closed and read to its end: the shards that continue it.
    child_shards: list[dict[str, Any]] | None = None

    @property
    def shard_end(self) -> bool:
        return self.child_shards is not None


def error_code(exc: Exception) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else type(exc).__name__


class PollingReader:
    def __init__(self, client: Any, stream: str, shard_id: str, start: Position, stop: threading.Event,
                 min_interval: float = DEFAULT_MIN_INTERVAL, max_records: int = DEFAULT_MAX_RECORDS,
                 on_throttle: Callable[[], None] | None = None, backoff: Backoff | None = None) -> None:
        self.client = client
        self.stream = stream
        self.shard_id = shard_id
        self._start = start
        self._stop = stop
        self.min_interval = min_interval
        self.max_records = max_records
        self._backoff = backoff or Backoff(base=max(min_interval, 0.1), cap=5.0)
        self._iterator: str | None = None
        self._last_sequence: str | None = None
        self._last_call = 0.0
        self._on_throttle = on_throttle

    def _position(self) -> Position:
        return Position("AFTER_SEQUENCE_NUMBER", self._last_sequence) if self._last_sequence else self._start

    def _call(self, operation: str, **args: Any) -> dict[str, Any] | None:
        """One API call; None after a retryable failure (already waited out)."""
        try:
            result: dict[str, Any] = getattr(self.client, operation)(**args)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            if code in FATAL_CODES:
                raise StreamError(f"{self.shard_id}: {code}: {exc}") from exc
            if code == "ExpiredIteratorException":
                self._iterator = None
                return None
            if code in THROTTLE_CODES:
                if self._on_throttle:
                    self._on_throttle()
            else:
                log.warning("%s: %s failed: %s", self.shard_id, operation, exc)
            self._stop.wait(self._backoff.next())
            return None
        self._backoff.reset()
        return result

    def next_batch(self) -> Batch | None:
        """The next GetRecords result, or None after a retryable failure or on stop."""
        wait = self._last_call + self.min_interval - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            return None
        if self._iterator is None:
            got = self._call("get_shard_iterator", StreamName=self.stream, ShardId=self.shard_id, **self._position().request())
            if got is None:
                return None
            self._iterator = got["ShardIterator"]
        self._last_call = time.monotonic()
        resp = self._call("get_records", ShardIterator=self._iterator, Limit=self.max_records)
        if resp is None:
            return None
        records = resp.get("Records", [])
        if records:
            self._last_sequence = records[-1]["SequenceNumber"]
        self._iterator = resp.get("NextShardIterator")
        batch = Batch(records, resp.get("MillisBehindLatest"))
        if self._iterator is None:
            batch.child_shards = resp.get("ChildShards", [])
        return batch

    def close(self) -> None:
        """Nothing to release: polling holds no connection of its own."""
