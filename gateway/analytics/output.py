"""Writing an outbox (``gateway.analytics.checkpoint``) to its data streams, exactly once.

Called from an application's or motion watcher's thread: each chunk goes to the store through
the event loop (``Store.put`` with the checkpoint's producer id and the outbox ids as producer
seqs, so a chunk written before a crash is recognised, not stored twice), throttled records are
retried, and the outbox is trimmed only after its records are stored.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from gateway.analytics.checkpoint import Checkpoint
from gateway.errors import AwsError
from gateway.kds.store import THROTTLED, Store, put_entry

#: Records per write (the PutRecords maximum).
CHUNK = 500
FIREHOSE_PREFIX = "firehose:"


def deliver(checkpoint: Checkpoint, store: Store, loop: asyncio.AbstractEventLoop, stop: threading.Event, report: Callable[[str], None]) -> bool:
    """Write everything in the outbox; False (after ``report``-ing why) when a destination refuses."""
    while not stop.is_set():
        records = checkpoint.outbox(CHUNK * 4)
        if not records:
            return True
        by_destination: dict[str, list[tuple[int, str, bytes]]] = {}
        for rid, destination, key, data in records:
            by_destination.setdefault(destination, []).append((rid, key, data))
        for destination, items in by_destination.items():
            for i in range(0, len(items), CHUNK):
                if not _put(checkpoint, store, loop, stop, report, destination, items[i : i + CHUNK]):
                    return False
        checkpoint.delivered(records[-1][0])
    return False


def _put(checkpoint: Checkpoint, store: Store, loop: asyncio.AbstractEventLoop, stop: threading.Event, report: Callable[[str], None],
         destination: str, items: list[tuple[int, str, bytes]]) -> bool:
    if destination.startswith(FIREHOSE_PREFIX):
        report(f"Firehose delivery stream {destination[len(FIREHOSE_PREFIX):]}: Firehose is not available on this gateway")
        return False
    entries = [put_entry(key, data, None, rid) for rid, key, data in items]
    while entries and not stop.is_set():
        future = asyncio.run_coroutine_threadsafe(store.put(destination, entries, checkpoint.producer), loop)
        try:
            results = future.result(timeout=60)
        except AwsError as exc:
            report(f"cannot write to {destination}: {exc.message}")
            return False
        entries = [e for e, (_, seq) in zip(entries, results) if seq == THROTTLED]
        if entries:
            stop.wait(0.2)  # the output shard is at its write limit
    return not entries
