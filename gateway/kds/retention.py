"""Background retention: drop record segments (and exactly-once memory) older than each stream's
retention period, and closed shards whose whole life is past it.

Runs as writer jobs of bounded size so a big backlog never stalls producers for long; if a
sweep hit its bound, the next one follows right away. ``arrival`` never decreases with
``seq`` (see ``store``), so each shard's cut-off is found by bisection on its segment index.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from gateway.kds import replays
from gateway.kds.store import Store, Stream

log = logging.getLogger("gateway.kds.retention")

#: Segments deleted per shard per sweep job.
BATCH_ROWS = 5_000


def first_fresh_segment(conn: sqlite3.Connection, shard_key: int, cutoff: float) -> int | None:
    """``last_seq`` of the shard's oldest segment that arrived at or after cutoff (None: all expired)."""
    bounds = conn.execute("SELECT min(last_seq), max(last_seq) FROM segments WHERE shard_key=?", (shard_key,)).fetchone()
    if bounds[0] is None:
        return None
    lo, hi = bounds[0], bounds[1] + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT last_seq, arrival FROM segments WHERE shard_key=? AND last_seq>=? ORDER BY last_seq LIMIT 1", (shard_key, mid)).fetchone()
        if row is None or row[1] >= cutoff:
            hi = mid
        else:
            lo = row[0] + 1
    return None if lo > bounds[1] else lo


def _sweep_stream(store: Store, conn: sqlite3.Connection, stream: Stream, now: float) -> tuple[int, bool]:
    cutoff = now - stream.retention_hours * 3600
    deleted = 0
    more = False
    for shard in stream.shards:
        fresh = first_fresh_segment(conn, shard.key, cutoff)
        limit = 2**62 if fresh is None else fresh
        bound = conn.execute("SELECT last_seq FROM segments WHERE shard_key=? AND last_seq<? ORDER BY last_seq LIMIT 1 OFFSET ?", (shard.key, limit, BATCH_ROWS)).fetchone()
        cursor = conn.execute("DELETE FROM segments WHERE shard_key=? AND last_seq<?", (shard.key, limit if bound is None else bound[0]))
        deleted += cursor.rowcount
        more = more or cursor.rowcount == BATCH_ROWS
    replays.forget_before(conn, stream.key, cutoff)
    if not more:
        expired = [s for s in stream.shards if s.closed is not None and s.closed < cutoff]
        for shard in expired:
            conn.execute("DELETE FROM shards WHERE key=?", (shard.key,))
            store.shards.pop(shard.key, None)
        if expired:
            stream.shards = [s for s in stream.shards if s not in expired]
    return deleted, more


async def sweep(store: Store, now: float | None = None) -> tuple[int, bool]:
    """One sweep over every stream: (segments deleted, whether a backlog remains)."""

    def job(conn: sqlite3.Connection) -> tuple[int, bool]:
        at = time.time() if now is None else now
        total, more = 0, False
        for stream in list(store.streams.values()):
            deleted, backlog = _sweep_stream(store, conn, stream, at)
            total += deleted
            more = more or backlog
        return total, more

    return await store.run(job)  # type: ignore[no-any-return]


async def run_forever(store: Store, interval: float) -> None:
    while True:
        try:
            deleted, more = await sweep(store)
            if deleted:
                log.info("retention: deleted %d expired segments", deleted)
        except Exception:
            log.exception("retention sweep failed")
            more = False
        await asyncio.sleep(0 if more else interval)
