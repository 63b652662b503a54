"""Queues on a stream (data plane): ReceiveQueueRecords, AcknowledgeQueueRecords,
UpdateQueueRecordsVisibility and the dead-letter calls.

Delivery state, in ``kds.sqlite3`` next to the records it points at::

    queue_cursors(queue_key, shard_key, next_seq)   per shard, the first record never handed out yet
                                                    (no row: the shard is newer than the queue, start
                                                    at its first record)
    queue_records(queue_key, seq, shard_key, dead, visible_at, receive_count, first_receive, handle)
                                                    a record handed out and not acknowledged yet

Invariants: a record below its shard's cursor is either in ``queue_records`` or acknowledged
(acknowledging deletes its row); each receive, acknowledgement and visibility change is one writer
job, committed before the caller hears of it, so a gateway killed at any moment loses no record and
never lets one be acknowledged twice -- a record handed out before the kill is simply seen again
after its visibility timeout. A receipt handle names (queue, seq, a random token renewed at each
receive): only the latest delivery's handle acknowledges or extends a record. A record received
``MaxReceiveCount`` times whose visibility then runs out becomes dead (``dead = 1``): only the
dead-letter calls see it; restoring it resets its receive count. Records the stream's retention
drops leave the queue too: a row whose record is gone is deleted when it comes up.

Receives are long polls: with nothing visible, the call waits (up to WaitTimeSeconds) for a commit
on one of the stream's shards, for the next in-flight record's timeout, or for a visibility change,
whichever comes first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from gateway.errors import invalid_argument
from gateway.kds.queues import QUEUES, Queue, active
from gateway.kds.sequence import external
from gateway.kds.signals import SIGNALS

if TYPE_CHECKING:
    from gateway.kds.api import Call
    from gateway.kds.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_cursors(queue_key INTEGER NOT NULL, shard_key INTEGER NOT NULL, next_seq INTEGER NOT NULL,
    PRIMARY KEY(queue_key, shard_key));
CREATE TABLE IF NOT EXISTS queue_records(queue_key INTEGER NOT NULL, seq INTEGER NOT NULL, shard_key INTEGER NOT NULL,
    dead INTEGER NOT NULL, visible_at REAL NOT NULL, receive_count INTEGER NOT NULL, first_receive REAL NOT NULL, handle TEXT,
    PRIMARY KEY(queue_key, seq));
CREATE INDEX IF NOT EXISTS queue_records_visible ON queue_records(queue_key, dead, visible_at);
"""
DEFAULT_LIMIT = 10
DEFAULT_WAIT_SECONDS = 9


@dataclass
class Delivery:
    handle: str
    seq: int
    arrival: float
    partition_key: str
    data: bytes
    first_receive: float
    receive_count: int


def _handle(queue_key: int, seq: int, token: str) -> str:
    return base64.urlsafe_b64encode(f"{queue_key}.{seq}.{token}".encode()).decode().rstrip("=")


def _parse_handle(handle: str) -> tuple[int, int, str] | None:
    try:
        queue_key, seq, token = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)).decode().split(".")
        return int(queue_key), int(seq), token
    except (ValueError, UnicodeDecodeError):
        return None


def _record(store: Store, shard_key: int, seq: int) -> tuple[float, str, bytes] | None:
    """The stored record (arrival, partition key, data), or None once retention dropped it."""
    if shard_key not in store.shards:
        return None
    rows = store.read(shard_key, seq, 1).rows
    if not rows or rows[0][0] != seq:
        return None
    return rows[0][1], rows[0][2], rows[0][3]


def receive_job(store: Store, queue: Queue, limit: int, visibility: int, dead: bool, now: float) -> Callable[[sqlite3.Connection], tuple[list[Delivery], float | None]]:
    """A writer job: hand out up to ``limit`` visible records; also when the next in-flight one shows."""

    def job(conn: sqlite3.Connection) -> tuple[list[Delivery], float | None]:
        after = queue.dead_letter_after
        if after is not None:  # received often enough and timed out again: dead
            conn.execute("UPDATE queue_records SET dead=1, handle=NULL WHERE queue_key=? AND dead=0 AND visible_at<=? AND receive_count>=?", (queue.key, now, after))
        out: list[Delivery] = []
        due = conn.execute(
            "SELECT seq, shard_key, receive_count, first_receive FROM queue_records WHERE queue_key=? AND dead=? AND visible_at<=? ORDER BY visible_at LIMIT ?",
            (queue.key, int(dead), now, limit * 2),
        ).fetchall()
        for seq, shard_key, count, first in due:
            if len(out) == limit:
                break
            record = _record(store, shard_key, seq)
            if record is None:
                conn.execute("DELETE FROM queue_records WHERE queue_key=? AND seq=?", (queue.key, seq))
                continue
            token = secrets.token_hex(8)
            count = count if dead else count + 1
            conn.execute("UPDATE queue_records SET visible_at=?, receive_count=?, handle=? WHERE queue_key=? AND seq=?", (now + visibility, count, token, queue.key, seq))
            out.append(Delivery(_handle(queue.key, seq, token), seq, *record, first, count))
        if not dead and len(out) < limit:
            out += _fresh(conn, store, queue, limit - len(out), visibility, now)
        # when to look again: the next in-flight record's timeout (for dead letters, any record's:
        # one received often enough turns dead when its timeout passes)
        sql = "SELECT min(visible_at) FROM queue_records WHERE queue_key=?" + ("" if dead else " AND dead=0")
        (next_visible,) = conn.execute(sql, (queue.key,)).fetchone()
        return out, next_visible

    return job


def _fresh(conn: sqlite3.Connection, store: Store, queue: Queue, limit: int, visibility: int, now: float) -> list[Delivery]:
    """Records never handed out yet, from the shards' cursors (starting at a random shard, so a
    busy shard does not starve the others)."""
    stream = store.streams_by_key.get(queue.stream_key)
    if stream is None:
        return []
    cursors = dict(conn.execute("SELECT shard_key, next_seq FROM queue_cursors WHERE queue_key=?", (queue.key,)).fetchall())
    shards = list(stream.shards)
    if not shards:
        return []
    turn = random.randrange(len(shards))
    out: list[Delivery] = []
    for shard in shards[turn:] + shards[:turn]:
        if len(out) == limit:
            break
        position = cursors.get(shard.key, shard.start_seq)
        if shard.end_seq is not None and position > shard.end_seq:
            continue
        rows = store.read(shard.key, position, limit - len(out)).rows
        if not rows:
            continue
        inserts = []
        for seq, arrival, key, data in rows:
            token = secrets.token_hex(8)
            inserts.append((queue.key, seq, shard.key, now + visibility, now, token))
            out.append(Delivery(_handle(queue.key, seq, token), seq, arrival, key, data, now, 1))
        conn.executemany("INSERT INTO queue_records(queue_key, seq, shard_key, dead, visible_at, receive_count, first_receive, handle) VALUES (?,?,?,0,?,1,?,?)", inserts)
        conn.execute("INSERT OR REPLACE INTO queue_cursors(queue_key, shard_key, next_seq) VALUES (?,?,?)", (queue.key, shard.key, rows[-1][0] + 1))
    return out


def _entries_job(queue: Queue, entries: list[dict[str, Any]], dead: bool, action: str, now: float) -> Any:
    """A writer job applying ``action`` (ack | visibility | restore) to each entry's record."""

    def job(conn: sqlite3.Connection) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        ok: list[dict[str, str]] = []
        failed: list[dict[str, str]] = []
        for entry in entries:
            handle = entry["ReceiptHandle"]
            parsed = _parse_handle(handle)
            where = "queue_key=? AND seq=? AND handle=? AND dead=?"
            args: tuple[Any, ...] = () if parsed is None or parsed[0] != queue.key else (queue.key, parsed[1], parsed[2], int(dead))
            if not args:
                changed = 0
            elif action == "ack":
                changed = conn.execute(f"DELETE FROM queue_records WHERE {where}", args).rowcount
            elif action == "visibility":
                changed = conn.execute(f"UPDATE queue_records SET visible_at=? WHERE {where}", (now + entry["VisibilityTimeoutSeconds"], *args)).rowcount
            else:  # restore: back to the normal receive path, its receive count reset
                changed = conn.execute(f"UPDATE queue_records SET dead=0, receive_count=0, visible_at=?, handle=NULL WHERE {where}", (now, *args)).rowcount
            if changed:
                ok.append({"ReceiptHandle": handle})
            else:
                failed.append({"ReceiptHandle": handle, "ErrorCode": "InvalidArgumentException",
                               "ErrorMessage": "The receipt handle is not valid: not from this queue, or no longer the record's latest delivery."})
        return ok, failed

    return job


def _render(call: Call, deliveries: list[Delivery]) -> list[dict[str, Any]]:
    codec = call.codec
    out = []
    for d in deliveries:
        record: dict[str, Any] = {
            "ReceiptHandle": d.handle,
            "RecordId": external(d.seq),
            "PartitionKey": d.partition_key,
            "Data": codec.blob(d.data),
            "ApproximateArrivalTimestamp": codec.ts(d.arrival),
            "FirstReceiveTimestamp": codec.ts(d.first_receive),
            "ReceiveCount": d.receive_count,
        }
        out.append(record)
    return out


async def _receive(call: Call, p: dict[str, Any], dead: bool) -> dict[str, Any]:
    queue = active(call, p["QueueARN"])
    registry = call.request.app[QUEUES]
    signals = call.request.app[SIGNALS]
    store = call.store
    limit = p.get("Limit", DEFAULT_LIMIT)
    deadline = time.monotonic() + p.get("WaitTimeSeconds", DEFAULT_WAIT_SECONDS)
    while True:
        queue = registry.by_arn(p["QueueARN"])  # an UpdateQueue meanwhile applies to the next receive
        visibility = p.get("VisibilityTimeoutSeconds", queue.visibility_seconds)
        stream = store.streams_by_key.get(queue.stream_key)
        # taken before the job runs: a commit or visibility change during it sets one of these
        wakers = [registry.changed(queue)] + ([] if dead or stream is None else [signals.current(s.key) for s in stream.shards if s.is_open])
        deliveries: list[Delivery] = []
        next_visible: float | None = None
        if registry.status(queue) != "CREATING":
            deliveries, next_visible = await store.run(receive_job(store, queue, limit, visibility, dead, time.time()))
        remaining = deadline - time.monotonic()
        if deliveries or remaining <= 0 or registry.closing:
            return {"QueueRecords": _render(call, deliveries)}
        if registry.status(queue) == "CREATING":
            remaining = min(remaining, queue.created + registry.activation_seconds - time.time())
        if next_visible is not None:
            remaining = min(remaining, max(0.0, next_visible - time.time()) + 0.001)
        await _first_of(wakers, remaining)


async def _first_of(events: list[asyncio.Event], timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _apply(call: Call, p: dict[str, Any], dead: bool, action: str) -> dict[str, Any]:
    """Acknowledge, change the visibility of, or restore (``action``) each entry's record."""
    handles = [e["ReceiptHandle"] for e in p["Entries"]]
    if len(set(handles)) != len(handles):
        raise invalid_argument("The same ReceiptHandle appears twice in Entries.")
    queue = active(call, p["QueueARN"])
    ok, failed = await call.store.run(_entries_job(queue, p["Entries"], dead, action, time.time()))
    if action != "ack" and ok:
        call.request.app[QUEUES].touch(queue)  # records may be visible now: wake long polls
    return {"Successful": ok, "Failed": failed}


#: The same calls on the normal and the dead-letter side of a queue.
HANDLERS = {
    "AcknowledgeDeadLetterQueueRecords": partial(_apply, dead=True, action="ack"),
    "AcknowledgeQueueRecords": partial(_apply, dead=False, action="ack"),
    "ReceiveDeadLetterQueueRecords": partial(_receive, dead=True),
    "ReceiveQueueRecords": partial(_receive, dead=False),
    "RestoreDeadLetterQueueRecords": partial(_apply, dead=True, action="restore"),
    "UpdateDeadLetterQueueRecordsVisibility": partial(_apply, dead=True, action="visibility"),
    "UpdateQueueRecordsVisibility": partial(_apply, dead=False, action="visibility"),
}
