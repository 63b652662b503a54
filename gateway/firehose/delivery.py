"""The delivery loop: when a stream's buffer is due, turn its oldest records into objects.

Each buffer is a stream's lane (``store``): the whole stream, or for a stream partitioned by its
JQ query alone one partition, as AWS buffers each partition on its own. A lane is due when its
buffered bytes reach ``BufferingHints.SizeInMBs`` or its oldest record is ``IntervalInSeconds``
old (0: as soon as records arrive), or when a batch was in flight at the last shutdown. Lanes are
delivered in parallel; within a lane a second batch starts while the first is written only when
another full ``SizeInMBs`` is buffered (up to ``PARALLEL_BATCHES``), so a busy stream keeps both
cores busy and a quiet one keeps its order:

    read batch (<= SizeInMBs) -> mark it in flight -> build objects (thread) -> write them
    (retried with backoff, never dropped) -> drop the batch from the buffer

A crash anywhere before the last step leaves the records in the buffer and the batch marked in
flight; after the restart the same batch (same chunks) is built again under the same keys (an
overwrite), and ``redelivered_batches`` counts it. HTTP endpoint destinations post instead of writing
(``gateway.firehose.http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from collections.abc import Awaitable, Callable

from gateway.config import FirehoseConfig
from gateway.firehose.pipeline import S3Object
from gateway.firehose.sinks import ObjectSink, SinkError
from gateway.firehose.store import BufferStore, Row
from gateway.firehose.streams import DeliveryStream

log = logging.getLogger("gateway.firehose.delivery")

MiB = 1024 * 1024
#: Batches of one stream written at once (a second starts only when a full one is buffered).
PARALLEL_BATCHES = 2
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


@dataclass
class Claim:
    """A batch being delivered: which chunks (known once read) and how much of the buffer it holds."""

    last_seq: int | None = None
    nbytes: int = 0
    records: int = 0


class DeliveryLoop:
    def __init__(self, store: BufferStore, config: FirehoseConfig, deliver: Deliver) -> None:
        self.store = store
        self.config = config
        self.deliver = deliver
        #: Batches being delivered, per (stream, lane).
        self._claims: dict[tuple[str, str], dict[asyncio.Task[None], Claim]] = {}
        self._stopping = False
        #: Unexpected delivery failures in a row, per stream (their retries back off).
        self._failures: dict[str, int] = {}
        #: Batches being written at the last stop: written again first, whatever the hints say.
        self._resume: list[tuple[str, str, int, int]] = store.unfinished_batches()

    def due_in(self, stream: DeliveryStream, lane: str, now: float) -> float | None:
        """Seconds until a new batch of ``stream``'s ``lane`` is due (0 = now), None when there is
        nothing to start. With a batch already running, another starts only for a full buffer's worth."""
        pending = self.store.lanes.get(stream.name, {}).get(lane)
        claims = self._claims.get((stream.name, lane), {})
        if pending is None or any(c.last_seq is None for c in claims.values()):
            return None
        unclaimed_records = pending.records - sum(c.records for c in claims.values())
        unclaimed_bytes = pending.nbytes - sum(c.nbytes for c in claims.values())
        hints = stream.hints
        if unclaimed_records <= 0 or len(claims) >= PARALLEL_BATCHES:
            return None
        if unclaimed_bytes >= hints["SizeInMBs"] * MiB:
            return 0.0
        if claims:
            return None
        return max(0.0, pending.oldest + hints["IntervalInSeconds"] - now)

    def _start(self, stream: DeliveryStream, lane: str, fixed: tuple[int, int] | None = None) -> None:
        claims = self._claims.setdefault((stream.name, lane), {})
        after = max((c.last_seq or 0 for c in claims.values()), default=0)
        claim = Claim()
        task = asyncio.create_task(self._one(stream, lane, claim, after, fixed), name=f"firehose-{stream.name}")
        claims[task] = claim

    async def run(self) -> None:
        store = self.store
        while not self._stopping:
            store.changed.clear()
            now = time.time()
            wait = 60.0
            for stream in store.iter_streams():
                resume = [b for b in self._resume if b[0] == stream.name]
                if resume:
                    for batch in resume:
                        self._resume.remove(batch)
                        self._start(stream, batch[1], (batch[2], batch[3]))
                    continue
                for lane in list(store.lanes.get(stream.name, {})):
                    due = self.due_in(stream, lane, now)
                    if due is None:
                        continue
                    if due <= 0:
                        self._start(stream, lane)
                    else:
                        wait = min(wait, due)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(store.changed.wait(), timeout=max(wait, 0.005))

    async def _one(self, stream: DeliveryStream, lane: str, claim: Claim, after: int, fixed: tuple[int, int] | None) -> None:
        name = stream.name
        try:
            if fixed is not None:
                rows = await asyncio.to_thread(self.store.read_range, name, lane, *fixed)
            else:
                rows = await asyncio.to_thread(self.store.read_batch, name, lane, stream.hints["SizeInMBs"] * MiB, after)
            if rows and name in self.store.streams:
                first, last = rows[0].seq, rows[-1].seq
                claim.last_seq, claim.nbytes, claim.records = last, sum(len(r.data) for r in rows), sum(r.count for r in rows)
                self.store.changed.set()  # another batch may start now
                if fixed is None:
                    await self.store.begin_delivery(name, lane, first, last)
                counts = await self.deliver(self.store.streams.get(name, stream), rows)
                if fixed is not None:
                    counts["redelivered_batches"] = counts.get("redelivered_batches", 0) + 1
                await self.store.delivered(name, lane, first, last, counts)
        except asyncio.CancelledError:
            raise
        except Exception:
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            delay = max(1.0, retry_delay(failures))
            log.exception("delivery of %s failed (%d in a row); retrying in %.1fs", name, failures, delay)
            if fixed is not None:
                self._resume.append((name, lane, *fixed))
            await asyncio.sleep(delay)
        else:
            self._failures.pop(name, None)
        finally:
            current = asyncio.current_task()
            claims = self._claims.get((name, lane), {})
            if current is not None:
                claims.pop(current, None)
            self.store.changed.set()

    async def stop(self) -> None:
        self._stopping = True
        self.store.changed.set()
        tasks = [t for claims in self._claims.values() for t in claims]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
