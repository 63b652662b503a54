"""The delivery loop: when a stream's buffer is due, turn its oldest records into objects.

A stream is due when its buffered bytes reach ``BufferingHints.SizeInMBs`` or its oldest
record is ``IntervalInSeconds`` old (0: as soon as records arrive), or when a batch was in flight
at the last shutdown. One batch per stream at a time, streams in parallel:

    read batch (<= SizeInMBs) -> mark it in flight -> build objects (thread) -> write them
    (retried with backoff, never dropped) -> drop the batch from the buffer

A crash anywhere before the last step leaves the records in the buffer and the batch marked in
flight; after the restart the same batch is built again under the same keys (an overwrite),
and ``redelivered_batches`` counts it. HTTP endpoint destinations post instead of writing
(``gateway.firehose.http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from gateway.config import FirehoseConfig
from gateway.firehose.pipeline import S3Object
from gateway.firehose.sinks import ObjectSink, SinkError
from gateway.firehose.store import BufferStore, Row
from gateway.firehose.streams import DeliveryStream

log = logging.getLogger("gateway.firehose.delivery")

MiB = 1024 * 1024
#: Longest wait between two attempts to write an object.
MAX_RETRY_DELAY = 30.0

#: Builds and writes one batch; returns the counters to add (set by the package, per destination kind).
Deliver = Callable[[DeliveryStream, list[Row]], Awaitable[dict[str, int]]]


def retry_delay(attempt: int) -> float:
    """Full-jitter exponential delay before attempt ``attempt`` (1-based) of a failed write."""
    return random.uniform(0, min(MAX_RETRY_DELAY, 0.2 * 2 ** min(attempt, 10)))


async def write_objects(sink: ObjectSink, objects: list[S3Object]) -> None:
    """Write every object, retrying each until it is written (S3 delivery never drops data)."""

    async def one(obj: S3Object) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(sink.put, obj.bucket, obj.key, obj.body)
                return
            except SinkError as exc:
                attempt += 1
                delay = retry_delay(attempt)
                log.warning("writing s3://%s/%s failed (attempt %d, retry in %.1fs): %s", obj.bucket, obj.key, attempt, delay, exc)
                await asyncio.sleep(delay)

    await asyncio.gather(*(one(obj) for obj in objects))


class DeliveryLoop:
    def __init__(self, store: BufferStore, config: FirehoseConfig, deliver: Deliver) -> None:
        self.store = store
        self.config = config
        self.deliver = deliver
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        #: Streams with a batch in flight at start: delivered first, whatever their hints say.
        self._resume = set(store.inflight_streams())

    def due_in(self, stream: DeliveryStream, now: float) -> float | None:
        """Seconds until ``stream`` is due (0 = now), None when nothing is buffered."""
        pending = self.store.pending.get(stream.name)
        if pending is None or pending.records == 0:
            return None
        if stream.name in self._resume:
            return 0.0
        hints = stream.hints
        if pending.nbytes >= hints["SizeInMBs"] * MiB:
            return 0.0
        return max(0.0, pending.oldest + hints["IntervalInSeconds"] - now)

    async def run(self) -> None:
        store = self.store
        while not self._stopping:
            store.changed.clear()
            now = time.time()
            wait = 60.0
            for stream in store.iter_streams():
                if stream.name in self._busy:
                    continue
                due = self.due_in(stream, now)
                if due is None:
                    continue
                if due <= 0:
                    self._busy[stream.name] = asyncio.create_task(self._one(stream), name=f"firehose-{stream.name}")
                else:
                    wait = min(wait, due)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(store.changed.wait(), timeout=max(wait, 0.005))

    async def _one(self, stream: DeliveryStream) -> None:
        try:
            rows = await asyncio.to_thread(self.store.read_batch, stream.name, stream.hints["SizeInMBs"] * MiB)
            if rows and stream.name in self.store.streams:
                first, last = rows[0].seq, rows[-1].seq
                redelivery = stream.name in self._resume
                await self.store.begin_delivery(stream.name, first, last)
                counts = await self.deliver(self.store.streams.get(stream.name, stream), rows)
                if redelivery:
                    counts["redelivered_batches"] = counts.get("redelivered_batches", 0) + 1
                await self.store.delivered(stream.name, first, last, counts)
            self._resume.discard(stream.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery of %s failed; retrying", stream.name)
            await asyncio.sleep(1.0)
        finally:
            self._busy.pop(stream.name, None)
            self.store.changed.set()

    async def stop(self) -> None:
        self._stopping = True
        self.store.changed.set()
        for task in list(self._busy.values()):
            task.cancel()
        for task in list(self._busy.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
