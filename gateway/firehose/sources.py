"""KinesisStreamAsSource: a delivery stream fed by one of the gateway's own data streams.

``SourceReader`` polls every such delivery stream's data stream, shard by shard, in-process (the
data-stream store's ``read``), and commits what it read to the Firehose buffer *together with*
its position (``checkpoints`` row ``<delivery stream>/<shard key>`` = next seq to read), so a
restart resumes exactly where the last commit left off: nothing skipped, nothing twice. A new
delivery stream starts with the records that arrive after its creation (AWS's
DeliveryStartTimestamp); each record keeps its data-stream arrival time. Reading pauses while
the buffer is over ``max_buffered_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.firehose.naming import invalid
from gateway.firehose.processors import lanes_of
from gateway.firehose.store import BufferStore
from gateway.firehose.streams import DeliveryStream
from gateway.kds.store import Store as DataStreams
from gateway.wire import stream_name_from_arn

log = logging.getLogger("gateway.firehose.sources")

POLL_SECONDS = 0.2
READ_RECORDS = 500
READ_BYTES = 4 * 1024 * 1024


def check_source(source: dict[str, Any], has_data_stream: Callable[[str], bool]) -> None:
    arn = source.get("KinesisStreamARN", "")
    name = stream_name_from_arn(arn)
    if not name or not has_data_stream(name):
        raise invalid(f"Kinesis data stream {arn} does not exist or is not accessible.")


class SourceReader:
    def __init__(self, store: BufferStore, data_streams: DataStreams, max_buffered_bytes: int) -> None:
        self.store = store
        self.data_streams = data_streams
        self.max_buffered_bytes = max_buffered_bytes

    async def run(self) -> None:
        while True:
            moved = False
            for stream in self.store.iter_streams():
                if stream.type == "KinesisStreamAsSource" and stream.source and self.store.buffered_bytes() < self.max_buffered_bytes:
                    try:
                        moved |= await self._pump(stream)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("reading the source of %s failed; retrying", stream.name)
            if not moved:
                await asyncio.sleep(POLL_SECONDS)

    async def _pump(self, stream: DeliveryStream) -> bool:
        assert stream.source is not None
        data_stream = self.data_streams.streams.get(stream_name_from_arn(stream.source.get("KinesisStreamARN", "")))
        if data_stream is None:
            return False
        positions = await asyncio.to_thread(self.store.checkpoints, stream.name)
        moved = False
        for shard in list(data_stream.shards):
            key = f"{stream.name}/{shard.key}"
            position = int(positions[key]) if key in positions else await asyncio.to_thread(self._start, shard.key, shard.end_seq, stream.created)
            result = await asyncio.to_thread(self.data_streams.read, shard.key, position, READ_RECORDS, READ_BYTES)
            if not result.rows:
                if key not in positions:  # remember the start, so records arriving from now on are read
                    await self.store.put(stream.name, [], [], {key: str(position)})
                continue
            records = [data for _, _, _, data in result.rows]
            arrivals = [arrival for _, arrival, _, _ in result.rows]
            await self.store.put(stream.name, records, arrivals, {key: str(result.rows[-1][0] + 1)}, await asyncio.to_thread(lanes_of, stream, records))
            moved = True
        return moved

    def _start(self, shard_key: int, end_seq: int | None, created: float) -> int:
        first = self.data_streams.first_seq_at(shard_key, created)
        if first is not None:
            return first
        return end_seq + 1 if end_seq is not None else self.data_streams.committed_seq


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
