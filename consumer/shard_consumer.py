"""One thread per held shard: read batches, hand them to the record processor, end cleanly.

Before every batch the consumer asks the coordinator whether it may still process the shard
(``may_process``), so a lease that expired or was taken stops processing before the next batch,
never in the middle of one. Records at or before the checkpoint it started from are skipped
(resuming inside a KPL aggregate reads the aggregate again from its sequence number).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from consumer import metrics
from consumer.coordinator import HANDING_OFF, LeaseCoordinator
from consumer.errors import ConsumerError, LeaseLost
from consumer.leases import AT_TIMESTAMP, LATEST, SENTINELS, SHARD_END, TRIM_HORIZON, Lease
from consumer.polling import Batch, Position
from consumer.processor import BaseProcessor, Checkpointer, ProcessorFactory, RecordProcessor
from consumer.records import from_kinesis

log = logging.getLogger("consumer.shard")

#: Why a consumer stops.
LOST, HANDOFF, SHUTDOWN = "lost", "handoff", "shutdown"


class ShardReader(Protocol):
    def next_batch(self) -> Batch | None: ...

    def close(self) -> None: ...


ReaderFactory = Callable[[str, Position, threading.Event], ShardReader]


def start_position(lease: Lease, timestamp: datetime | None) -> tuple[Position, tuple[int, int]]:
    """Where to read from for a lease's checkpoint, and the position up to which records are skipped."""
    if lease.checkpoint in (TRIM_HORIZON, LATEST):
        return Position(lease.checkpoint), (-1, -1)
    if lease.checkpoint == AT_TIMESTAMP:
        return Position(AT_TIMESTAMP, timestamp=timestamp or datetime.now()), (-1, -1)
    return Position("AT_SEQUENCE_NUMBER", lease.checkpoint), (int(lease.checkpoint), lease.checkpoint_sub)


class _NotStarted(BaseProcessor):
    """Stands for the processor until the thread made it (a failing factory leaves nothing to stop)."""

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        pass


class ShardConsumer(threading.Thread):
    def __init__(self, lease: Lease, stream: str, processor_factory: ProcessorFactory, coordinator: LeaseCoordinator,
                 open_reader: ReaderFactory, on_children: Callable[[str, list[dict[str, Any]]], None],
                 timestamp: datetime | None = None) -> None:
        super().__init__(name=f"shard-{lease.key}", daemon=True)
        self.lease = lease
        self.shard_id = lease.key
        self.stream = stream
        self._processor_factory = processor_factory
        self.processor: RecordProcessor = _NotStarted()
        self.coordinator = coordinator
        self._open_reader = open_reader
        self._on_children = on_children
        self._timestamp = timestamp
        self._stop_event = threading.Event()
        self.stop_reason: str | None = None
        self.checkpointer = Checkpointer(lease.key, self._write_checkpoint, lambda: coordinator.may_process(lease.key))
        self._empty_batches = False

    def request_stop(self, reason: str) -> None:
        if self.stop_reason != LOST:
            self.stop_reason = reason
        self._stop_event.set()

    def _write_checkpoint(self, sequence_number: str, sub: int) -> None:
        self.coordinator.checkpoint(self.shard_id, sequence_number, sub)
        metrics.CHECKPOINTS.labels(self.stream).inc()

    def run(self) -> None:
        try:
            reason = self._consume()
        except LeaseLost as exc:  # a checkpoint inside process_records was refused
            log.info("%s: %s", self.shard_id, exc)
            self._finish(LOST)
            return
        except Exception as exc:  # the processor's or the stream's: give the shard up, it is retried from the checkpoint
            metrics.PROCESSOR_ERRORS.labels(self.stream).inc()
            log.error("%s: stopping after an error: %s", self.shard_id, exc, exc_info=not isinstance(exc, ConsumerError))
            self._finish(SHUTDOWN, call_processor=False)
            return
        self._finish(reason)

    def _consume(self) -> str | None:
        """Process until stopped; returns the stop reason, or None when the shard ended (already handled)."""
        # Made on this thread, so a processor may hold thread-bound resources (an sqlite3 connection).
        self.processor = self._processor_factory()
        #: Processors that batch by time (handlers) see empty polls too.
        self._empty_batches = bool(getattr(self.processor, "process_empty_batches", False))
        self.processor.initialize(self.shard_id, self.lease.checkpoint)
        position, skip = start_position(self.lease, self._timestamp)
        if self.lease.checkpoint not in SENTINELS:
            self.checkpointer.delivered = (self.lease.checkpoint, self.lease.checkpoint_sub)
        reader = self._open_reader(self.shard_id, position, self._stop_event)
        try:
            while True:
                batch = reader.next_batch() if not self._stop_event.is_set() else None
                if self._stop_event.is_set() or not self.coordinator.may_process(self.shard_id):
                    return self._reason()
                if batch is None:
                    continue
                records = [r for r in from_kinesis(batch.records) if r.position > skip]
                if batch.millis_behind_latest is not None:
                    metrics.MILLIS_BEHIND_LATEST.labels(self.stream, self.shard_id).set(batch.millis_behind_latest)
                if records:
                    last = records[-1]
                    self.checkpointer.delivered = (last.sequence_number, last.sub_sequence_number)
                if records or self._empty_batches:
                    self.processor.process_records(records, self.checkpointer, batch.millis_behind_latest)
                    metrics.RECORDS_PROCESSED.labels(self.stream, self.shard_id).inc(len(records))
                if batch.shard_end:
                    self._shard_end(batch.child_shards or [])
                    return None
        finally:
            reader.close()

    def _reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return HANDOFF if self.coordinator.state(self.shard_id) == HANDING_OFF else LOST

    def _shard_end(self, children: list[dict[str, Any]]) -> None:
        self._on_children(self.shard_id, children)
        self.processor.shard_ended(self.checkpointer)
        try:
            self.coordinator.checkpoint(self.shard_id, SHARD_END, 0, tuple(c["ShardId"] for c in children))
        except LeaseLost:
            log.info("%s: lease lost at shard end", self.shard_id)
            self.coordinator.drop(self.shard_id)
            return
        log.info("%s: shard end, children %s", self.shard_id, [c["ShardId"] for c in children])
        self.coordinator.let_go(self.shard_id)

    def _finish(self, reason: str | None, call_processor: bool = True) -> None:
        if reason is None:
            return
        if reason == LOST:
            metrics.LEASES_LOST.labels(self.stream).inc()
            if call_processor:
                self._safely(self.processor.lease_lost)
            self.coordinator.drop(self.shard_id)
            return
        if call_processor:
            self._safely(lambda: self.processor.shutdown_requested(self.checkpointer))
        self.coordinator.let_go(self.shard_id)

    def _safely(self, call: Callable[[], None]) -> None:
        try:
            call()
        except LeaseLost as exc:
            log.info("%s: %s", self.shard_id, exc)
        except Exception:
            metrics.PROCESSOR_ERRORS.labels(self.stream).inc()
            log.exception("%s: record processor failed while stopping", self.shard_id)
