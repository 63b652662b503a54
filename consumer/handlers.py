"""Lambda-style handlers: a function gets lists of records; failures are bisected, retried, set aside.

As Lambda's Kinesis event source mapping does it:

- Records are gathered into batches of up to ``batch_size``; with a ``batching_window`` a batch
  that is not full waits up to that long for more.
- A handler that raises fails its batch. With ``bisect_on_error`` the batch is split in two and
  the halves are retried in order (splitting does not count as an attempt), until the failing
  record is alone; a batch that can no longer be split is retried with full-jitter backoff
  up to ``max_attempts`` calls in all.
- Records that still fail go to the ``on_failure_stream`` (one Kinesis record each, a JSON
  document with the error, the batch info and the record) and processing continues; without
  a destination they are logged and skipped.
- A handler may report partial failures by returning ``{"batchItemFailures": [{"itemIdentifier":
  "<sequence number>"}]}``: the records before the first reported one are done, the rest is
  retried. An identifier that matches no record fails the whole batch, as in Lambda.
- The shard is checkpointed after each batch is settled, so a restart never repeats it.

A retry loop never outlives the lease: before each retry the handler checks that this worker
still holds the shard, and stops with ``LeaseLost`` otherwise.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer import metrics
from consumer.config import HandlerSection
from consumer.errors import LeaseLost
from consumer.processor import BaseProcessor, Checkpointer
from consumer.records import Record
from edge_agent.backoff import Backoff

log = logging.getLogger("consumer.handlers")

Handler = Callable[[list[Record]], Any]


def failed_from(batch: list[Record], result: Any) -> int | None:
    """Index of the first record a handler's result reports as failed (None: all succeeded)."""
    if not isinstance(result, dict) or not result.get("batchItemFailures"):
        return None
    failures = result["batchItemFailures"]
    ids = {f.get("itemIdentifier") for f in failures if isinstance(f, dict)} if isinstance(failures, list) else {None}
    indexes = [i for i, r in enumerate(batch) if r.sequence_number in ids]
    if not indexes or None in ids or "" in ids:
        return 0  # unknown or empty identifier: the whole batch failed
    return min(indexes)


class HandlerProcessor(BaseProcessor):
    """A record processor running a Lambda-style handler (see the module docstring)."""

    #: Called on every poll, records or not, so a batching window can close without new records.
    process_empty_batches = True

    def __init__(self, handler: Handler, settings: HandlerSection, stream: str, client: Any,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.handler = handler
        self.settings = settings
        self.stream = stream
        self.client = client
        self._sleep = sleep
        self._buffer: list[Record] = []
        self._first_at: float | None = None

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
        if records and not self._buffer:
            self._first_at = time.monotonic()
        self._buffer += records
        if len(self._buffer) >= self.settings.batch_size or (
                self._buffer and time.monotonic() - (self._first_at or 0.0) >= self.settings.batching_window_seconds):
            self._flush(checkpointer)

    def _flush(self, checkpointer: Checkpointer) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[: self.settings.batch_size], self._buffer[self.settings.batch_size:]
            self._settle(batch, checkpointer)
            checkpointer.checkpoint(batch[-1])
        self._first_at = None

    def _settle(self, batch: list[Record], checkpointer: Checkpointer) -> None:
        """Call the handler until every record of ``batch`` succeeded or was set aside."""
        pending: deque[tuple[list[Record], int]] = deque([(batch, 1)])
        backoff = Backoff(self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        while pending:
            records, attempt = pending.popleft()
            try:
                first_failed = failed_from(records, self.handler(records))
                error = "reported in batchItemFailures"
            except Exception as exc:  # the handler's failure is data here, not a crash
                first_failed, error = 0, f"{type(exc).__name__}: {exc}"
            if first_failed is None:
                backoff.reset()
                continue
            metrics.HANDLER_FAILURES.labels(self.stream).inc()
            failed = records[first_failed:]
            log.info("%s: handler failed on %d record(s) from %s (attempt %d): %s", self.shard_id, len(failed),
                     failed[0].sequence_number, attempt, error)
            if len(failed) > 1 and self.settings.bisect_on_error:
                half = len(failed) // 2
                pending.extendleft([(failed[half:], 1), (failed[:half], 1)])
            elif attempt < self.settings.max_attempts:
                self._sleep(backoff.next())
                pending.appendleft((failed, attempt + 1))
            else:
                self._set_aside(failed, attempt, error)
            if pending and not checkpointer.still_held():
                raise LeaseLost(f"{self.shard_id}: lease lost while retrying a failed batch")

    def _set_aside(self, records: list[Record], attempts: int, error: str) -> None:
        metrics.RECORDS_SET_ASIDE.labels(self.stream).inc(len(records))
        if not self.settings.on_failure_stream:
            log.error("%s: skipping %d record(s) from %s after %d attempts: %s", self.shard_id, len(records),
                      records[0].sequence_number, attempts, error)
            return
        entries = [{"PartitionKey": r.partition_key, "Data": json.dumps(self._failure_document(r, attempts, error)).encode()}
                   for r in records]
        backoff = Backoff(self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        while entries:
            try:
                resp = self.client.put_records(StreamName=self.settings.on_failure_stream, Records=entries)
                entries = [e for e, r in zip(entries, resp["Records"]) if "ErrorCode" in r]
            except (ClientError, BotoCoreError) as exc:
                log.warning("%s: on-failure stream %s: %s", self.shard_id, self.settings.on_failure_stream, exc)
            if entries:
                self._sleep(backoff.next())

    def _failure_document(self, record: Record, attempts: int, error: str) -> dict[str, Any]:
        """Lambda's on-failure invocation record for a stream source, with the record itself."""
        return {
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts, "functionError": error},
            "KinesisBatchInfo": {"shardId": self.shard_id, "startSequenceNumber": record.sequence_number,
                                 "endSequenceNumber": record.sequence_number, "streamName": self.stream, "batchSize": 1},
            "record": {"partitionKey": record.partition_key, "sequenceNumber": record.sequence_number,
                       "subSequenceNumber": record.sub_sequence_number, "data": base64.b64encode(record.data).decode()},
        }

    def lease_lost(self) -> None:
        self._buffer = []

    def shard_ended(self, checkpointer: Checkpointer) -> None:
        self._flush(checkpointer)

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        self._flush(checkpointer)
