"""Writing an outbox (``gateway.analytics.checkpoint``) to data and delivery streams, exactly once.

Called from an application's or motion watcher's thread (a ``Runner``): each chunk goes to its store through
the event loop, and the outbox is trimmed only after its records are stored.

- Data streams: ``Store.put`` with the checkpoint's producer id and the outbox ids as producer
  seqs, so a chunk written before a crash is recognised, not stored twice; throttled records
  are retried.
- Firehose delivery streams (``firehose:<name>``): ``BufferStore.put`` with a checkpoint
  ``<name>/analytics/<producer>`` = the last outbox id, committed with the records; ids at or
  below it are skipped on a retry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.analytics.checkpoint import Checkpoint
from gateway.errors import AwsError
from gateway.kds.store import THROTTLED, Store, put_entry

if TYPE_CHECKING:
    from gateway.firehose.api import Services

#: Records per write (the PutRecords maximum).
CHUNK = 500
FIREHOSE_PREFIX = "firehose:"


@dataclass
class Outputs:
    """Where output goes: the data-stream store, and Firehose once the gateway has started it."""

    store: Store
    loop: asyncio.AbstractEventLoop
    firehose: Callable[[], "Services | None"] = lambda: None


class Runner:
    """The thread an application or motion watcher runs on (``_run``), with the status it shows.

    ``stop()`` sets ``_stop`` -- which the ``_run`` loop, its waits and ``deliver`` watch -- and
    waits for the thread to end."""

    def __init__(self, name: str) -> None:
        self.status = "STARTING"
        self.message = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        raise NotImplementedError


def deliver(checkpoint: Checkpoint, outputs: Outputs, stop: threading.Event, report: Callable[[str], None]) -> bool:
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
                if destination.startswith(FIREHOSE_PREFIX):
                    ok = _put_firehose(checkpoint, outputs, report, destination[len(FIREHOSE_PREFIX):], items[i : i + CHUNK])
                else:
                    ok = _put(checkpoint, outputs, stop, report, destination, items[i : i + CHUNK])
                if not ok:
                    return False
        checkpoint.delivered(records[-1][0])
    return False


def _put_firehose(checkpoint: Checkpoint, outputs: Outputs, report: Callable[[str], None], name: str, items: list[tuple[int, str, bytes]]) -> bool:
    services = outputs.firehose()
    if services is None:
        report(f"cannot write to delivery stream {name}: Firehose is not running yet")
        return False
    key = f"{name}/analytics/{checkpoint.producer}"
    done = int(services.store.checkpoints(name).get(key, "0"))
    records = [data + b"\n" for rid, _, data in items if rid > done]  # one JSON object per line, as Firehose users expect
    if not records:
        return True
    if services.store.buffered_bytes() >= services.config.max_buffered_bytes:
        report(f"cannot write to delivery stream {name}: its buffer is full")
        return False
    future = asyncio.run_coroutine_threadsafe(services.store.put(name, records, time.time(), {key: str(items[-1][0])}), outputs.loop)
    try:
        future.result(timeout=60)
    except AwsError as exc:
        report(f"cannot write to delivery stream {name}: {exc.message}")
        return False
    return True


def _put(checkpoint: Checkpoint, outputs: Outputs, stop: threading.Event, report: Callable[[str], None],
         destination: str, items: list[tuple[int, str, bytes]]) -> bool:
    entries = [put_entry(key, data, None, rid) for rid, key, data in items]
    while entries and not stop.is_set():
        future = asyncio.run_coroutine_threadsafe(outputs.store.put(destination, entries, checkpoint.producer), outputs.loop)
        try:
            results = future.result(timeout=60)
        except AwsError as exc:
            report(f"cannot write to {destination}: {exc.message}")
            return False
        entries = [e for e, (_, seq) in zip(entries, results) if seq == THROTTLED]
        if entries:
            stop.wait(0.2)  # the output shard is at its write limit
    return not entries
