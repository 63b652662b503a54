"""The durable Firehose buffer: delivery streams and the records not yet delivered.

On-disk format (``<data dir>/firehose.sqlite3`` in WAL mode, plus ``firehose.sqlite3.lock``):

- ``streams(name, doc)``: one row per delivery stream; ``doc`` is the JSON of ``DeliveryStream``
  (type, source, destination config as given and merged by UpdateDestination, version, tags).
- ``records(seq, stream, arrival, data)``: ``seq`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``, so
  it only grows; ``arrival`` is the approximate arrival time (epoch seconds) prefixes and object
  names are evaluated on. A record is in this table from its acknowledgement until the object(s)
  holding it are written.
- ``inflight(stream, first_seq, last_seq)``: the batch a delivery is writing right now. Object
  names are derived from (stream, version, first_seq), so a batch interrupted by a crash is
  written again under the *same* keys after the restart (an overwrite, counted as a redelivery).
- ``checkpoints(key, value)``: source positions (a Kinesis data stream's shards), written in
  the same transaction as the records read from them.
- ``counters(name, value)``: delivered objects/records/bytes, redeliveries, errors.

Invariants:

- ``put`` resolves only after the transaction holding the records is committed (``durability =
  "full"`` also fsyncs it), so an acknowledged record survives SIGKILL; concurrent puts are
  group-committed by one writer thread (``gateway.kds.writer``).
- Records leave only by ``delivered`` -- after every object of their batch was written.
- A lock file held with ``flock`` (``gateway.sqlite.LockFile``) keeps a second gateway from
  opening the same buffer.
- sqlite3 errors leave this module as ``AwsError`` (see the writer), never raw.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import AwsError
from gateway.firehose.streams import DeliveryStream
from gateway import sqlite
from gateway.sqlite import LockFile
from gateway.kds.writer import Writer

DB_FILE = "firehose.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    arrival REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_stream_seq ON records(stream, seq);
CREATE TABLE IF NOT EXISTS inflight (stream TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class Pending:
    """What is buffered for one stream (kept in memory, rebuilt from disk at start)."""

    records: int = 0
    nbytes: int = 0
    #: Arrival time of the oldest buffered record (0 when empty).
    oldest: float = 0.0


@dataclass(frozen=True)
class Row:
    seq: int
    arrival: float
    data: bytes


class BufferStore:
    def __init__(self, data_path: Path, durability: str) -> None:
        data_path.mkdir(parents=True, exist_ok=True)
        self.path = data_path / DB_FILE
        self._lock = LockFile(Path(f"{self.path}.lock"), str(self.path))
        self._conn = sqlite.connect(self.path, durability)
        self._conn.executescript(SCHEMA)
        self._readers = sqlite.Readers(self.path)
        self.streams: dict[str, DeliveryStream] = {}
        self.pending: dict[str, Pending] = {}
        self._load()
        self._writer = Writer(self._conn, lambda conn: None, self._load)
        #: Set whenever records are committed or a stream changes (the delivery loop waits on it).
        self.changed = asyncio.Event()

    # -- model -------------------------------------------------------------------------------

    def _load(self) -> None:
        conn = self._conn
        streams = {name: DeliveryStream.from_json(doc) for name, doc in conn.execute("SELECT name, doc FROM streams")}
        pending = {name: Pending() for name in streams}
        for name, count, nbytes, oldest in conn.execute(
            "SELECT stream, count(*), sum(length(data)), min(arrival) FROM records GROUP BY stream"
        ):
            if name in pending:
                pending[name] = Pending(count, nbytes or 0, oldest or 0.0)
        self.streams = streams
        self.pending = pending

    def _reader(self) -> sqlite3.Connection:
        return self._readers.get()

    def close(self) -> None:
        self._writer.close()
        self._readers.close()
        self._conn.close()
        self._lock.release()

    # -- streams -----------------------------------------------------------------------------

    def stream(self, name: str) -> DeliveryStream:
        stream = self.streams.get(name)
        if stream is None:
            raise AwsError("ResourceNotFoundException", f"Firehose {name} not found.")
        return stream

    async def save_stream(self, stream: DeliveryStream, *, create: bool = False) -> None:
        def job(conn: sqlite3.Connection) -> None:
            if create and stream.name in self.streams:
                raise AwsError("ResourceInUseException", f"Firehose {stream.name} already exists")
            conn.execute("INSERT OR REPLACE INTO streams(name, doc) VALUES (?, ?)", (stream.name, stream.to_json()))
            self.streams = {**self.streams, stream.name: stream}
            self.pending.setdefault(stream.name, Pending())

        await self._writer.submit(job)
        self.changed.set()

    async def delete_stream(self, name: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            self.stream(name)
            for table in ("streams", "inflight"):
                conn.execute(f"DELETE FROM {table} WHERE {'name' if table == 'streams' else 'stream'}=?", (name,))
            conn.execute("DELETE FROM records WHERE stream=?", (name,))
            conn.execute("DELETE FROM checkpoints WHERE key LIKE ? ESCAPE '\\'", (_like_prefix(name),))
            self.streams = {k: v for k, v in self.streams.items() if k != name}
            self.pending.pop(name, None)

        await self._writer.submit(job)
        self.changed.set()

    # -- records -----------------------------------------------------------------------------

    async def put(self, name: str, records: list[bytes], arrival: float | list[float], checkpoints: dict[str, str] | None = None) -> int:
        """Commit ``records`` (arriving at ``arrival``, one time or one per record) to ``name``'s
        buffer, with source ``checkpoints`` in the same transaction; returns the first one's seq."""
        arrivals = arrival if isinstance(arrival, list) else [arrival] * len(records)

        def job(conn: sqlite3.Connection) -> int:
            if name not in self.streams:
                raise AwsError("ResourceNotFoundException", f"Firehose {name} not found.")
            conn.executemany("INSERT INTO records(stream, arrival, data) VALUES (?, ?, ?)", [(name, t, r) for t, r in zip(arrivals, records)])
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            for key, value in (checkpoints or {}).items():
                conn.execute("INSERT OR REPLACE INTO checkpoints(key, value) VALUES (?, ?)", (key, value))
            pending = self.pending.setdefault(name, Pending())
            if pending.records == 0 and arrivals:
                pending.oldest = min(arrivals)
            pending.records += len(records)
            pending.nbytes += sum(map(len, records))
            return int(last) - len(records) + 1

        first: int = await self._writer.submit(job)
        self.changed.set()
        return first

    def buffered_bytes(self) -> int:
        return sum(p.nbytes for p in self.pending.values())

    def read_batch(self, name: str, max_bytes: int) -> list[Row]:
        """The oldest records of ``name``, up to ``max_bytes`` (at least one); runs in a thread.
        After a crash, the batch that was in flight comes back exactly as it was."""
        conn = self._reader()
        inflight = conn.execute("SELECT first_seq, last_seq FROM inflight WHERE stream=?", (name,)).fetchone()
        if inflight is not None:
            rows = conn.execute("SELECT seq, arrival, data FROM records WHERE stream=? AND seq BETWEEN ? AND ? ORDER BY seq", (name, *inflight))
            return [Row(*r) for r in rows]
        out: list[Row] = []
        total = 0
        for seq, arrival, data in conn.execute("SELECT seq, arrival, data FROM records WHERE stream=? ORDER BY seq", (name,)):
            if out and total + len(data) > max_bytes:
                break
            out.append(Row(seq, arrival, data))
            total += len(data)
        return out

    def inflight_streams(self) -> list[str]:
        return [name for (name,) in self._reader().execute("SELECT stream FROM inflight")]

    async def begin_delivery(self, name: str, first_seq: int, last_seq: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO inflight(stream, first_seq, last_seq) VALUES (?, ?, ?)", (name, first_seq, last_seq))

        await self._writer.submit(job)

    async def delivered(self, name: str, first_seq: int, last_seq: int, counts: dict[str, int]) -> None:
        """The batch ``first_seq..last_seq`` is written: drop it from the buffer, add ``counts``."""

        def job(conn: sqlite3.Connection) -> None:
            gone = conn.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM records WHERE stream=? AND seq BETWEEN ? AND ?", (name, first_seq, last_seq)
            ).fetchone()
            conn.execute("DELETE FROM records WHERE stream=? AND seq BETWEEN ? AND ?", (name, first_seq, last_seq))
            conn.execute("DELETE FROM inflight WHERE stream=?", (name,))
            for key, value in counts.items():
                conn.execute(
                    "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (key, value)
                )
            pending = self.pending.get(name)
            if pending is not None:
                pending.records = max(0, pending.records - gone[0])
                pending.nbytes = max(0, pending.nbytes - gone[1])
                oldest = conn.execute("SELECT arrival FROM records WHERE stream=? ORDER BY seq LIMIT 1", (name,)).fetchone()
                pending.oldest = oldest[0] if oldest else 0.0

        await self._writer.submit(job)

    # -- checkpoints and counters ------------------------------------------------------------

    def checkpoints(self, name: str) -> dict[str, str]:
        rows = self._reader().execute("SELECT key, value FROM checkpoints WHERE key LIKE ? ESCAPE '\\'", (_like_prefix(name),))
        return dict(rows.fetchall())

    def counters(self) -> dict[str, int]:
        return dict(self._reader().execute("SELECT name, value FROM counters").fetchall())

    def iter_streams(self) -> Iterator[DeliveryStream]:
        return iter(list(self.streams.values()))


def _like_prefix(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}/%"
