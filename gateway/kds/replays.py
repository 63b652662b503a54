"""Exactly-once memory for producers that number their records (the edge agent).

A producer sends ``X-Edge-Producer-Id`` and one number per record (``X-Edge-Record-Seqs``);
after a crash or a lost answer it sends the same records with the same numbers again. The
store remembers, in the same transaction as the records, producer seq -> (shard, sequence
number), and answers a replay with the original result instead of storing it twice.

One row per PutRecords call, not per record (a row per record doubled the cost of ingest):
``producer_batches(producer, stream_key, first_pseq, last_pseq, at, mapping)`` where
``mapping`` is three little-endian int64 arrays (producer seqs, shard keys, sequence numbers).
Rows are found by their seq range, and trimmed by age with the stream's retention.
"""

from __future__ import annotations

import sqlite3
import sys
from array import array

SCHEMA = """
CREATE TABLE IF NOT EXISTS producer_batches(
    id INTEGER PRIMARY KEY, producer TEXT NOT NULL, stream_key INTEGER NOT NULL,
    first_pseq INTEGER NOT NULL, last_pseq INTEGER NOT NULL, at REAL NOT NULL, mapping BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS producer_batches_by_range ON producer_batches(producer, stream_key, last_pseq);
CREATE INDEX IF NOT EXISTS producer_batches_by_age ON producer_batches(stream_key, at);
"""


def _pack(values: list[int]) -> bytes:
    packed = array("q", values)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes) -> list[int]:
    values = array("q")
    values.frombytes(blob)
    if sys.byteorder != "little":  # pragma: no cover
        values.byteswap()
    return values.tolist()


def lookup(conn: sqlite3.Connection, producer: str, stream_key: int, pseqs: list[int]) -> dict[int, tuple[int, int]]:
    """producer seq -> (shard key, sequence number) for those of ``pseqs`` already stored."""
    wanted = set(pseqs)
    found: dict[int, tuple[int, int]] = {}
    for (mapping,) in conn.execute(
        "SELECT mapping FROM producer_batches WHERE producer=? AND stream_key=? AND last_pseq>=? AND first_pseq<=?",
        (producer, stream_key, min(wanted), max(wanted)),
    ):
        values = _unpack(mapping)
        n = len(values) // 3
        for pseq, shard_key, seq in zip(values[:n], values[n : 2 * n], values[2 * n :]):
            if pseq in wanted:
                found[pseq] = (shard_key, seq)
    return found


def remember(conn: sqlite3.Connection, producer: str, stream_key: int, pseqs: list[int], shard_keys: list[int], seqs: list[int], at: float) -> None:
    conn.execute(
        "INSERT INTO producer_batches(producer, stream_key, first_pseq, last_pseq, at, mapping) VALUES (?,?,?,?,?,?)",
        (producer, stream_key, min(pseqs), max(pseqs), at, _pack(pseqs) + _pack(shard_keys) + _pack(seqs)),
    )


def forget_before(conn: sqlite3.Connection, stream_key: int, cutoff: float) -> None:
    conn.execute("DELETE FROM producer_batches WHERE stream_key=? AND at<?", (stream_key, cutoff))


def forget_stream(conn: sqlite3.Connection, stream_key: int) -> None:
    conn.execute("DELETE FROM producer_batches WHERE stream_key=?", (stream_key,))
