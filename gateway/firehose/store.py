"""The durable Firehose buffer: delivery streams and the records not yet delivered.

On-disk format (``<data dir>/firehose.sqlite3`` in WAL mode, plus ``firehose.sqlite3.lock``):

- ``streams(name, doc)``: one row per delivery stream; ``doc`` is the JSON of ``DeliveryStream``
  (type, source, destination config as given and merged by UpdateDestination, version, tags).
- ``chunks(seq, stream, arrival, count, sizes, data, lane)``: the records of one put call, in order:
  ``data`` is their bytes concatenated, ``sizes`` their lengths (``array('I')``, native order),
  ``count`` how many. Record ``i`` of a chunk has sequence number ``seq + i``; sequence numbers
  only grow (``counters`` row ``next_seq``, written with every chunk), so they are never reused.
  ``arrival`` is the approximate arrival time (epoch seconds) of the chunk's oldest record, what
  prefixes and object names are evaluated on. A record is here from its acknowledgement until
  the object(s) holding it are written. One row per call, not per record: delivery reads and
  deletes a few dozen rows per object instead of tens of thousands. ``lane`` is the buffer the
  chunk is in: "" for a stream with one buffer; for a stream partitioned by its JQ query alone,
  the partition's keys as JSON (``processors.buffer_lane``): a put's records are split into one
  chunk per partition, and each partition is buffered and delivered on its own, as on AWS.
- ``batches(stream, first_seq, last_seq, lane)``: the batches (the lane's chunks ``first_seq..last_seq``) being
  written right now (at most ``delivery.PARALLEL_BATCHES`` per stream). Object
  names are derived from (stream, version, first_seq), so a batch interrupted by a crash is
  written again under the *same* keys after the restart (an overwrite, counted as a redelivery).
- ``checkpoints(key, value)``: source positions (a Kinesis data stream's shards), written in
  the same transaction as the records read from them.
- ``counters(name, value)``: delivered objects/records/bytes, redeliveries, errors.
- ``channels(name, doc)``: Kinesis Data Streams channels (``gateway.firehose.channels``), each
  run as internal delivery streams named ``channel:<name>:<index>``.
- ``producer_batches``: the data-stream store's exactly-once memory (``gateway.kds.replays``,
  same table layout; the "shard key" column is 0 and a stream is ``crc32`` of its name): a
  PutRecordBatch replayed by the edge agent (same ``X-Edge-Producer-Id`` and record seqs) gets its
  original record ids back instead of being buffered twice. Kept ``REPLAY_MEMORY_SECONDS``.

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
import json
from array import array
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import AwsError
from gateway.firehose.streams import DeliveryStream
from gateway import sqlite
from gateway.sqlite import LockFile
from gateway.kds import replays
from gateway.kds.writer import Writer

DB_FILE = "firehose.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    arrival REAL NOT NULL,
    count INTEGER NOT NULL,
    sizes BLOB NOT NULL,
    data BLOB NOT NULL,
    lane TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS chunks_stream_seq ON chunks(stream, seq);
CREATE TABLE IF NOT EXISTS batches (stream TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    lane TEXT NOT NULL DEFAULT '', PRIMARY KEY (stream, first_seq));
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
""" + replays.SCHEMA
#: Columns added since the first format (a buffer written before them gets them, empty).
ADDED_COLUMNS = {"chunks": "lane TEXT NOT NULL DEFAULT ''", "batches": "lane TEXT NOT NULL DEFAULT ''"}
#: How long the exactly-once memory of a producer's records is kept (the data streams' minimum retention).
REPLAY_MEMORY_SECONDS = 24 * 3600


@dataclass
class Pending:
    """What is buffered for one stream (kept in memory, rebuilt from disk at start)."""

    records: int = 0
    nbytes: int = 0
    #: Arrival time of the oldest buffered record (0 when empty).
    oldest: float = 0.0


@dataclass(frozen=True)
class Row:
    """One chunk: ``count`` records, the first numbered ``seq``, concatenated in ``data``."""

    seq: int
    arrival: float
    count: int
    sizes: bytes
    data: bytes

    def records(self) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        view = memoryview(self.data)
        for size in array("I", self.sizes):
            out.append(bytes(view[pos : pos + size]))
            pos += size
        return out


class BufferStore:
    def __init__(self, data_path: Path, durability: str) -> None:
        data_path.mkdir(parents=True, exist_ok=True)
        self.path = data_path / DB_FILE
        self._lock = LockFile(Path(f"{self.path}.lock"), str(self.path))
        self._conn = sqlite.connect(self.path, durability)
        self._conn.executescript(SCHEMA)
        _add_columns(self._conn)
        self._conn.execute("CREATE INDEX IF NOT EXISTS chunks_lane_seq ON chunks(stream, lane, seq)")
        self._readers = sqlite.Readers(self.path)
        self.streams: dict[str, DeliveryStream] = {}
        self.pending: dict[str, Pending] = {}
        #: The same per buffer: stream -> lane -> what that lane holds (lanes with records only).
        self.lanes: dict[str, dict[str, Pending]] = {}
        self._load()
        self._writer = Writer(self._conn, lambda conn: None, self._load)
        #: Set whenever records are committed or a stream changes (the delivery loop waits on it).
        self.changed = asyncio.Event()

    # -- model -------------------------------------------------------------------------------

    def _load(self) -> None:
        conn = self._conn
        streams = {name: DeliveryStream.from_json(doc) for name, doc in conn.execute("SELECT name, doc FROM streams")}
        pending = {name: Pending() for name in streams}
        lanes: dict[str, dict[str, Pending]] = {}
        for name, lane, count, nbytes, oldest in conn.execute(
            "SELECT stream, lane, sum(count), sum(length(data)), min(arrival) FROM chunks GROUP BY stream, lane"
        ):
            if name in pending:
                lanes.setdefault(name, {})[lane] = Pending(count or 0, nbytes or 0, oldest or 0.0)
                total = pending[name]
                total.oldest = min(total.oldest or oldest, oldest)
                total.records += count or 0
                total.nbytes += nbytes or 0
        top = conn.execute("SELECT max(seq + count) FROM chunks").fetchone()[0] or 1
        saved = conn.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()
        self.next_seq = max(top, saved[0] if saved else 1)
        self.channels: dict[str, dict[str, Any]] = {name: json.loads(doc) for name, doc in conn.execute("SELECT name, doc FROM channels")}
        self.streams = streams
        self.pending = pending
        self.lanes = lanes

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
            conn.execute("DELETE FROM streams WHERE name=?", (name,))
            conn.execute("DELETE FROM batches WHERE stream=?", (name,))
            replays.forget_stream(conn, zlib.crc32(name.encode()))
            conn.execute("DELETE FROM chunks WHERE stream=?", (name,))
            conn.execute("DELETE FROM checkpoints WHERE key LIKE ? ESCAPE '\\'", (_like_prefix(name),))
            self.streams = {k: v for k, v in self.streams.items() if k != name}
            self.pending.pop(name, None)
            self.lanes.pop(name, None)

        await self._writer.submit(job)
        self.changed.set()

    # -- channels ----------------------------------------------------------------------------

    async def save_channel(self, doc: dict[str, Any]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO channels(name, doc) VALUES (?, ?)", (doc["ChannelName"], json.dumps(doc)))
            self.channels = {**self.channels, doc["ChannelName"]: doc}

        await self._writer.submit(job)

    async def delete_channel(self, name: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM channels WHERE name=?", (name,))
            self.channels = {k: v for k, v in self.channels.items() if k != name}

        await self._writer.submit(job)

    # -- records -----------------------------------------------------------------------------

    async def put(self, name: str, records: list[bytes], arrival: float | list[float], checkpoints: dict[str, str] | None = None,
                  lanes: list[str] | None = None) -> list[int]:
        """Commit ``records`` (arriving at ``arrival``, one time or one per record; in ``lanes``, one
        per record, default all in "") to ``name``'s buffer, with source ``checkpoints`` in the same
        transaction; returns each record's seq."""
        arrivals = arrival if isinstance(arrival, list) else [arrival] * len(records)

        def job(conn: sqlite3.Connection) -> list[int]:
            if name not in self.streams:
                raise AwsError("ResourceNotFoundException", f"Firehose {name} not found.")
            seqs = self._insert_lanes(conn, name, records, arrivals, lanes)
            for key, value in (checkpoints or {}).items():
                conn.execute("INSERT OR REPLACE INTO checkpoints(key, value) VALUES (?, ?)", (key, value))
            return seqs

        seqs: list[int] = await self._writer.submit(job)
        self.changed.set()
        return seqs

    async def put_once(self, name: str, records: list[bytes], arrival: float, producer: str, pseqs: list[int], lanes: list[str] | None = None) -> list[int]:
        """``put`` for a producer that numbers its records: the seq of each record, the original
        one for a record already buffered under the same producer number."""
        stream_key = zlib.crc32(name.encode())

        def job(conn: sqlite3.Connection) -> list[int]:
            if name not in self.streams:
                raise AwsError("ResourceNotFoundException", f"Firehose {name} not found.")
            known = replays.lookup(conn, producer, stream_key, pseqs)
            fresh = [i for i, p in enumerate(pseqs) if p not in known]
            first = self.next_seq
            if fresh:
                seqs = self._insert_lanes(conn, name, [records[i] for i in fresh], [arrival] * len(fresh), None if lanes is None else [lanes[i] for i in fresh])
                replays.remember(conn, producer, stream_key, [pseqs[i] for i in fresh], [0] * len(fresh), seqs, arrival)
                if first % 1000 < len(fresh):  # now and then, forget what is older than the memory
                    replays.forget_before(conn, stream_key, arrival - REPLAY_MEMORY_SECONDS)
            new_seqs = dict(zip(fresh, seqs)) if fresh else {}
            return [new_seqs[i] if i in new_seqs else known[p][1] for i, p in enumerate(pseqs)]

        seqs: list[int] = await self._writer.submit(job)
        self.changed.set()
        return seqs

    def _insert_lanes(self, conn: sqlite3.Connection, name: str, records: list[bytes], arrivals: list[float], lanes: list[str] | None) -> list[int]:
        """One chunk per lane of ``records`` (each lane's in order); returns each record's seq."""
        if lanes is None:
            first = self.next_seq
            if records:
                self._insert(conn, name, records, min(arrivals), "")
            return list(range(first, first + len(records)))
        members: dict[str, list[int]] = {}
        for i, lane in enumerate(lanes):
            members.setdefault(lane, []).append(i)
        seqs = [0] * len(records)
        for lane, indexes in members.items():
            first = self.next_seq
            self._insert(conn, name, [records[i] for i in indexes], min(arrivals[i] for i in indexes), lane)
            for offset, i in enumerate(indexes):
                seqs[i] = first + offset
        return seqs

    def _insert(self, conn: sqlite3.Connection, name: str, records: list[bytes], oldest: float, lane: str) -> None:
        """One chunk of ``records`` (in the writer thread, inside its transaction)."""
        first = self.next_seq
        data = b"".join(records)
        conn.execute(
            "INSERT INTO chunks(seq, stream, arrival, count, sizes, data, lane) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (first, name, oldest, len(records), array("I", map(len, records)).tobytes(), data, lane),
        )
        self.next_seq = first + len(records)
        conn.execute("INSERT OR REPLACE INTO counters(name, value) VALUES ('next_seq', ?)", (self.next_seq,))
        for pending in (self.pending.setdefault(name, Pending()), self.lanes.setdefault(name, {}).setdefault(lane, Pending())):
            if pending.records == 0:
                pending.oldest = oldest
            pending.records += len(records)
            pending.nbytes += len(data)

    def buffered_bytes(self) -> int:
        return sum(p.nbytes for p in self.pending.values())

    def unfinished_batches(self) -> list[tuple[str, str, int, int]]:
        """Batches that were being written when the gateway stopped: (stream, lane, first_seq, last_seq)."""
        return [tuple(r) for r in self._reader().execute("SELECT stream, lane, first_seq, last_seq FROM batches ORDER BY stream, first_seq")]

    def read_range(self, name: str, lane: str, first_seq: int, last_seq: int) -> list[Row]:
        """The chunks of one unfinished batch, exactly as they were (runs in a thread)."""
        rows = self._reader().execute(
            "SELECT seq, arrival, count, sizes, data FROM chunks WHERE stream=? AND lane=? AND seq BETWEEN ? AND ? ORDER BY seq", (name, lane, first_seq, last_seq)
        )
        return [Row(*r) for r in rows]

    def read_batch(self, name: str, lane: str, max_bytes: int, after_seq: int = 0) -> list[Row]:
        """The oldest chunks of ``name``'s ``lane`` after ``after_seq`` (those before are being
        written), up to ``max_bytes`` (at least one chunk); runs in a thread."""
        out: list[Row] = []
        total = 0
        rows = self._reader().execute("SELECT seq, arrival, count, sizes, data FROM chunks WHERE stream=? AND lane=? AND seq>? ORDER BY seq", (name, lane, after_seq))
        for row in rows:
            if out and total + len(row[4]) > max_bytes:
                break
            out.append(Row(*row))
            total += len(row[4])
        rows.close()
        return out

    async def begin_delivery(self, name: str, lane: str, first_seq: int, last_seq: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO batches(stream, first_seq, last_seq, lane) VALUES (?, ?, ?, ?)", (name, first_seq, last_seq, lane))

        await self._writer.submit(job)

    async def delivered(self, name: str, lane: str, first_seq: int, last_seq: int, counts: dict[str, int]) -> None:
        """The batch of ``lane``'s chunks ``first_seq..last_seq`` is written: drop it from the buffer, add ``counts``."""
        where = "stream=? AND lane=? AND seq BETWEEN ? AND ?"

        def job(conn: sqlite3.Connection) -> None:
            gone = conn.execute(f"SELECT coalesce(sum(count), 0), coalesce(sum(length(data)), 0) FROM chunks WHERE {where}", (name, lane, first_seq, last_seq)).fetchone()
            conn.execute(f"DELETE FROM chunks WHERE {where}", (name, lane, first_seq, last_seq))
            conn.execute("DELETE FROM batches WHERE stream=? AND first_seq=?", (name, first_seq))
            for key, value in counts.items():
                conn.execute(
                    "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (key, value)
                )
            pending = self.pending.get(name)
            if pending is not None:
                pending.records = max(0, pending.records - gone[0])
                pending.nbytes = max(0, pending.nbytes - gone[1])
                oldest = conn.execute("SELECT min(arrival) FROM chunks WHERE stream=?", (name,)).fetchone()
                pending.oldest = oldest[0] or 0.0
            lanes = self.lanes.get(name, {})
            part = lanes.get(lane)
            if part is not None:
                part.records = max(0, part.records - gone[0])
                part.nbytes = max(0, part.nbytes - gone[1])
                oldest = conn.execute("SELECT min(arrival) FROM chunks WHERE stream=? AND lane=?", (name, lane)).fetchone()
                part.oldest = oldest[0] or 0.0
                if not part.records:
                    del lanes[lane]

        await self._writer.submit(job)

    # -- checkpoints and counters ------------------------------------------------------------

    def checkpoints(self, name: str) -> dict[str, str]:
        rows = self._reader().execute("SELECT key, value FROM checkpoints WHERE key LIKE ? ESCAPE '\\'", (_like_prefix(name),))
        return dict(rows.fetchall())

    def counters(self) -> dict[str, int]:
        return dict(self._reader().execute("SELECT name, value FROM counters").fetchall())

    def iter_streams(self) -> Iterator[DeliveryStream]:
        return iter(list(self.streams.values()))


def _add_columns(conn: sqlite3.Connection) -> None:
    """Bring a buffer written by an older gateway to the current format (``ADDED_COLUMNS``)."""
    for table, column in ADDED_COLUMNS.items():
        names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column.split()[0] not in names:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _like_prefix(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}/%"
