"""The MQTT source's messages committed in arrival order, their acknowledgements released once durable.

Messages go into the filling batch; one batch is committing at a time (``Spool.submit``) while the
next one fills, so batches commit in the order their messages arrived and one topic stays in order
even while the spool refuses a batch: it is retried with backoff, as ``SpoolWriter`` does (a full
spool is waited out, never a reason to lose a message). Once a batch is durable, ``settle`` hands
back its PUBACK/PUBREC packets, in arrival order, for the caller to send in one write.

A batch commits after the spool's group-commit interval, or at once (``urgent``) when the caller
cannot wait: the broker's in-flight window is full, or the next batch is (``full``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field

from edge_agent import metrics
from edge_agent.backoff import Backoff
from edge_agent.sources import mqtt_wire as wire
from edge_agent.spool import NewRecord, RingEntry, Spool, SpoolClosed, SpoolError, SpoolFull

log = logging.getLogger("edge_agent.sources.mqtt")

#: Messages (and payload bytes) in the batch filling while another commits; past either the source
#: stops reading the socket (TCP pushes back on the broker) and commits at once.
BATCH_RECORDS = 2000
BATCH_BYTES = 4 * 1024 * 1024
#: Retry delays while the spool refuses a batch (full, failing disk).
SPOOL_RETRY_MIN, SPOOL_RETRY_MAX = 0.2, 5.0


@dataclass(eq=False)
class Batch:
    """Messages committed together, and what to send the broker once they are durable."""

    records: list[NewRecord] = field(default_factory=list)
    ring: list[RingEntry] = field(default_factory=list)
    #: PUBACK/PUBREC packets for the current connection, in arrival order, as ``wire.ACK_WORDS`` words.
    acks: list[int] = field(default_factory=list)
    #: QoS 1/2 messages of the current connection (they hold the broker's in-flight window).
    unacked: int = 0
    #: Every message (QoS 0, rejected and recognised redeliveries too) and its payload bytes.
    messages: int = 0
    size: int = 0
    future: Future | None = None
    urgent: bool = False


class Commits:
    def __init__(self, spool: Spool, source: str, on_done: Callable[[Future], None]) -> None:
        self.spool = spool
        self.source = source
        self.on_done = on_done  # called (by the spool's writer thread) when a commit finished
        # a batch must fit in the spool even when the drop policy can free nothing for it
        self.batch_bytes = max(1, min(BATCH_BYTES, spool.max_bytes // 8))
        self.pending = Batch()  # filling
        self.committing: Batch | None = None  # submitted to the spool (or waiting to be again)
        self.retry_at: float | None = None  # when a refused batch is submitted again
        self._backoff = Backoff(SPOOL_RETRY_MIN, SPOOL_RETRY_MAX)

    def full(self) -> bool:
        return self.pending.messages >= BATCH_RECORDS or self.pending.size >= self.batch_bytes

    def idle(self) -> bool:
        return self.committing is None and not self.pending.messages

    def unacked(self) -> int:
        return self.pending.unacked + (self.committing.unacked if self.committing is not None else 0)

    def left(self) -> int:
        """Messages not committed yet."""
        return self.pending.messages + (self.committing.messages if self.committing is not None else 0)

    def forget_acks(self) -> None:
        """The connection the acknowledgements were for is gone; the broker redelivers those messages."""
        for batch in (self.pending, self.committing):
            if batch is not None:
                batch.acks.clear()
                batch.unacked = 0

    def flush(self, urgent: bool) -> None:
        """Submit the filling batch when none is committing; with ``urgent``, make the committing one
        commit now instead of after the spool's commit interval."""
        pending, committing = self.pending, self.committing
        if committing is None:
            if pending.messages:
                self.committing, self.pending = pending, Batch()
                self._submit(pending, urgent)
        elif urgent and not committing.urgent and committing.future is not None:
            committing.urgent = True
            self.spool.submit([], urgent=True)  # commits the group it waits in now

    def _submit(self, batch: Batch, urgent: bool) -> None:
        batch.urgent = urgent
        batch.future = self.spool.submit(batch.records, ring=batch.ring, urgent=urgent)
        batch.future.add_done_callback(self.on_done)

    def settle(self, now: float) -> bytes:
        """The acknowledgements of the committing batch once it is durable (else b""); a refused
        batch is submitted again after a backoff. Raises ``SpoolClosed`` when the spool is."""
        batch = self.committing
        if batch is None:
            return b""
        if batch.future is None:  # refused earlier, waiting to be submitted again
            if self.retry_at is not None and now >= self.retry_at:
                self.retry_at = None
                self._submit(batch, True)
            return b""
        if not batch.future.done():
            return b""
        exc = batch.future.exception()
        if exc is None:
            self.committing = None
            self._backoff.reset()
            if batch.records:
                metrics.RECORDS_IN.labels(self.source).inc(len(batch.records))
            return wire.ack_packets(batch.acks) if batch.acks else b""
        if isinstance(exc, SpoolFull):
            log.warning("%s: spool full, waiting: %s", self.source, exc)
        elif isinstance(exc, SpoolError) and not isinstance(exc, SpoolClosed):
            log.error("%s: spool append failed, retrying: %s", self.source, exc)
        else:
            raise exc
        batch.future = None
        self.retry_at = now + self._backoff.next()
        return b""

    def wait(self, timeout: float) -> bool:
        """Wait for the committing batch's commit to finish: False if it did not within ``timeout``."""
        batch = self.committing
        if batch is None or batch.future is None:
            return True
        try:
            batch.future.exception(timeout=timeout)
        except futures.TimeoutError:  # the builtin TimeoutError only from Python 3.11 on
            return False
        return True
