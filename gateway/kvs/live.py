"""Live tails: wake readers (GetMedia, live HLS) when a stream gets a new PERSISTED fragment.

Event-loop side only. Take the stream's event *before* querying the store, then wait on it if the
query found nothing new, so a fragment persisted in between is never missed.
"""

from __future__ import annotations

import asyncio


class FragmentEvents:
    """Wakes live readers when a stream gets a new PERSISTED fragment (event-loop side only)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, stream: str) -> asyncio.Event:
        """The event the next fragment of ``stream`` will set; take it before querying the store."""
        ev = self._events.get(stream)
        if ev is None or ev.is_set():
            ev = self._events[stream] = asyncio.Event()
        return ev

    def notify_all(self) -> None:
        """Wake every waiter (shutdown: tails re-check whether to go on)."""
        events, self._events = self._events, {}
        for ev in events.values():
            ev.set()

    def notify(self, stream: str) -> None:
        ev = self._events.pop(stream, None)
        if ev is not None:
            ev.set()

    @staticmethod
    async def wait(ev: asyncio.Event, timeout: float) -> bool:
        """True if a fragment arrived, False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
