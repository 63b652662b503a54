"""Background retention: delete each stream's fragments past its age limit or its disk budget.

Age: ``DataRetentionInHours`` (server clock; 0 = no age limit, see ``gateway.kvs.control``).
Space: ``config.video.stream_disk_budget_bytes`` per stream (0 = no budget), oldest fragments first.
The budget is also checked right after each PERSISTED fragment (``enforce_budget``), so a stream never
sits far above it between sweeps. Deletion order (index rows, then files) is the store's.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.config import GatewayConfig
from gateway.kvs.store import VideoStore

log = logging.getLogger("gateway.kvs.retention")


def enforce_budget(store: VideoStore, stream_id: int, budget_bytes: int) -> int:
    """Delete the oldest fragments of one stream until it fits ``budget_bytes`` (0 = no budget)."""
    if budget_bytes <= 0 or store.stream_bytes(stream_id) <= budget_bytes:
        return 0
    return store.delete_oldest(stream_id, keep_bytes=budget_bytes)


def sweep(store: VideoStore, budget_bytes: int, now_ms: int | None = None) -> int:
    """One pass over every stream; returns the number of fragments deleted."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    deleted = 0
    for stream in store.streams():
        older_than = now_ms - stream.retention_hours * 3_600_000 if stream.retention_hours > 0 else None
        if older_than is not None:
            deleted += store.delete_oldest(stream.id, older_than_ms=older_than)
        deleted += enforce_budget(store, stream.id, budget_bytes)
    return deleted


async def run_retention(store: VideoStore, config: GatewayConfig) -> None:
    """Sweep forever, every ``config.retention_sweep_seconds``; errors are logged, never fatal."""
    while True:
        try:
            deleted = await asyncio.to_thread(sweep, store, config.video.stream_disk_budget_bytes)
            if deleted:
                log.info("retention deleted %d fragment(s)", deleted)
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(max(0.05, config.retention_sweep_seconds))
