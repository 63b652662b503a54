"""Commit signals: wake whoever waits on a shard as soon as a commit adds records to it or closes it.

The store's writer thread calls ``ShardSignals.committed`` after each group commit with the keys
of the shards it touched; on the event loop, every waiter of those shards wakes. A waiter takes
the shard's current event *before* it reads, then waits on it: a commit that lands during the
read has already set that event, so nothing is missed and nobody polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web


class ShardSignals:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: dict[int, asyncio.Event] = {}

    def current(self, shard_key: int) -> asyncio.Event:
        """The event the next commit touching ``shard_key`` sets (event loop only)."""
        event = self._events.get(shard_key)
        if event is None:
            event = self._events[shard_key] = asyncio.Event()
        return event

    def fire(self, shard_keys: Iterable[int]) -> None:
        """Wake the waiters of these shards (event loop only); later waiters get a fresh event."""
        for key in shard_keys:
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    def committed(self, shard_keys: set[int]) -> None:
        """The store's ``on_commit`` hook (writer thread)."""
        try:
            self._loop.call_soon_threadsafe(self.fire, shard_keys)
        except RuntimeError:  # the loop is closed: the gateway is stopping
            pass


SIGNALS = web.AppKey("kds_signals", ShardSignals)
