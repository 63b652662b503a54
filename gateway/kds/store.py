"""The durable data-stream store: one SQLite file (WAL) in the data dir, one writer thread.

On-disk format (``kds.sqlite3``, and ``kds.sqlite3.lock`` flock'ed while a gateway has it open)::

    meta(key, value)            next_seq / next_shard_key / next_stream_key: counters never reused
    streams(key, name, ...)     one row per live stream
    shards(key, stream_key, shard_id, start_hash, end_hash, start_seq, end_seq, parent, ...)
    segments(id, shard_key, first_seq, last_seq, arrival, payload)   + index (shard_key, last_seq)
                                the records of one PutRecords call in one shard (see ``segments``)
    tags(stream_key, key, value)
    settings(owner, value)      per-stream and account settings (see ``settings``)
    producer_batches(...)       exactly-once memory (see ``replays``)
    consumers(...)              enhanced fan-out consumers (see ``consumers``)
    queues(...), queue_cursors(...), queue_records(...)   queues on streams (``queues``, ``queue_delivery``)

Invariants: sequence numbers come from one counter for the whole store, so they increase
within a shard, never repeat (the counter is persisted, not derived from surviving rows), and
a child shard's numbers are above every parent's; ``arrival`` never decreases with ``seq``
(retention finds its cut-off by bisection). Every write goes through ``Writer`` (group commit);
the in-memory model (streams, shards, routers) is only mutated by write jobs and reloaded from
disk if a commit fails. Reads use per-thread connections off the event loop. After each commit
that added records to shards or closed them, ``on_commit`` gets those shard keys (in the writer
thread): subscriptions and queue readers are woken by it instead of polling.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import sqlite
from gateway.config import DEFAULT_ACCOUNT_ID, GatewayConfig
from gateway.errors import not_found
from gateway.kds import consumers, queue_delivery, queues, replays, segments, settings
from gateway.kds.encryption import KEY_FILE, KeyStore
from gateway.kds.encryption import MARKER as SEALED
from gateway.kds.limits import Limits
from gateway.kds.shards import Router, Shard, canonical_shard_id, shard_name
from gateway.kds.settings import AccountSettings, StreamSettings
from gateway.kds.writer import Writer
from gateway.sqlite import LockFile, Readers

DB_FILE = "kds.sqlite3"
#: flock'ed while a gateway has the store open (a second process on the same data dir refuses).
LOCK_FILE = "kds.sqlite3.lock"
#: GetRecords never returns more than this many bytes in one call (as AWS).
MAX_READ_BYTES = 10 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS streams(
    key INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, mode TEXT NOT NULL,
    retention_hours INTEGER NOT NULL, created REAL NOT NULL, next_shard_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shards(
    key INTEGER PRIMARY KEY, stream_key INTEGER NOT NULL, shard_id TEXT NOT NULL,
    start_hash TEXT NOT NULL, end_hash TEXT NOT NULL, start_seq INTEGER NOT NULL, end_seq INTEGER,
    parent TEXT, adjacent_parent TEXT, created REAL NOT NULL, closed REAL);
CREATE TABLE IF NOT EXISTS segments(
    id INTEGER PRIMARY KEY, shard_key INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL, arrival REAL NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS segments_by_shard ON segments(shard_key, last_seq);
CREATE TABLE IF NOT EXISTS tags(stream_key INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY(stream_key, key));
""" + replays.SCHEMA + consumers.SCHEMA + queues.SCHEMA + queue_delivery.SCHEMA + settings.SCHEMA


@dataclass
class Stream:
    key: int
    name: str
    mode: str
    retention_hours: int
    created: float
    next_shard_index: int
    shards: list[Shard] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    router: Router = field(default_factory=Router)
    status: str = "ACTIVE"
    settings: StreamSettings = field(default_factory=StreamSettings)

    def shard(self, shard_id: str, account: str = DEFAULT_ACCOUNT_ID) -> Shard:
        """The shard ``shard_id`` names; AWS reads any ``<prefix>-<number>`` as shard <number>."""
        canonical = canonical_shard_id(shard_id)
        for shard in self.shards:
            if shard.shard_id == canonical:
                return shard
        raise not_found(f"Shard {canonical} in stream {self.name} under account {account} does not exist")

    @property
    def open_shards(self) -> list[Shard]:
        return [s for s in self.shards if s.is_open]


#: One record to store: (partition key, data, explicit hash key, producer seq). A plain
#: tuple, not a class: 500 of them are built per PutRecords call.
PutEntry = tuple[str, bytes, "int | None", "int | None"]


def put_entry(partition_key: str, data: bytes, explicit_hash: int | None = None, producer_seq: int | None = None) -> PutEntry:
    return (partition_key, data, explicit_hash, producer_seq)


#: One PutRecords result: (shard_id, internal seq); seq is THROTTLED when the shard refused it.
PutResult = tuple[str, int]
THROTTLED = -1


@dataclass
class ReadResult:
    rows: list[tuple[int, float, str, bytes]]
    #: True when the batch reaches the newest record of the shard.
    at_tip: bool
    nbytes: int
    #: The shard's EndingSequenceNumber in the same snapshot (None: still open).
    end_seq: int | None
    #: (first, last) sequence numbers of the rows that were stored encrypted (EncryptionType KMS).
    sealed: list[tuple[int, int]] = field(default_factory=list)


def connect(path: Path, durability: str) -> sqlite3.Connection:
    conn = sqlite.connect(path, durability)
    conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: the hot end of every shard stays cached
    conn.execute("PRAGMA wal_autocheckpoint=4096")  # checkpoint every ~16 MiB, not every 4 MiB
    return conn


class Store:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.account_id = config.account_id
        self.path = config.data_path / DB_FILE
        config.data_path.mkdir(parents=True, exist_ok=True)
        self._lock_file = LockFile(config.data_path / LOCK_FILE, str(self.path))
        self.limits = Limits(config.limits)
        self.keys = KeyStore(Path(config.encryption.key_store) if config.encryption.key_store else config.data_path / KEY_FILE)
        self._conn = connect(self.path, config.durability)
        self._conn.executescript(SCHEMA)
        self._readers = Readers(self.path)
        #: Called in the writer thread after a commit with the keys of the shards it added records
        #: to or closed (set by the gateway to wake SubscribeToShard and queue readers).
        self.on_commit: Callable[[set[int]], None] | None = None
        self._load()
        self._writer = Writer(self._conn, self._persist_counter, self._load, self._committed)

    # -- model ---------------------------------------------------------------------------

    def _load(self) -> None:
        """(Re)build the in-memory model from disk (startup, or after a failed commit)."""
        conn = self._conn
        streams: dict[str, Stream] = {}
        by_key: dict[int, Stream] = {}
        for key, name, mode, hours, created, next_index in conn.execute("SELECT key, name, mode, retention_hours, created, next_shard_index FROM streams"):
            by_key[key] = streams[name] = Stream(key, name, mode, hours, created, next_index)
        shards: dict[int, tuple[Stream, Shard]] = {}
        for row in conn.execute("SELECT key, stream_key, shard_id, start_hash, end_hash, start_seq, end_seq, parent, adjacent_parent, created, closed FROM shards ORDER BY key"):
            stream = by_key.get(row[1])
            if stream is None:
                continue
            shard = Shard(row[0], row[2], int(row[3]), int(row[4]), row[5], row[6], row[7], row[8], row[9], row[10])
            stream.shards.append(shard)
            shards[shard.key] = (stream, shard)
        for stream_key, key, value in conn.execute("SELECT stream_key, key, value FROM tags"):
            if stream_key in by_key:
                by_key[stream_key].tags[key] = value
        for stream in streams.values():
            stream.router = Router.of(stream.shards)
        self.account_settings: AccountSettings = settings.load(conn, by_key)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        top_seq, top_arrival = 0, 0.0
        for shard_key in shards:
            last = conn.execute("SELECT last_seq, arrival FROM segments WHERE shard_key=? ORDER BY last_seq DESC LIMIT 1", (shard_key,)).fetchone()
            if last is not None:
                top_seq, top_arrival = max(top_seq, last[0]), max(top_arrival, last[1])
        shard_top = conn.execute("SELECT max(max(start_seq), coalesce(max(end_seq), 0)) FROM shards").fetchone()
        self.next_seq = max(meta.get("next_seq", 1), top_seq + 1, (shard_top[0] or 0) + 1)
        #: next_seq as of the last commit: records being written right now come at or after it.
        self.committed_seq = self.next_seq
        self.last_arrival = top_arrival
        self.streams = streams
        self.streams_by_key = by_key
        self.shards = shards
        # Keys are never reused, even after a delete: an old shard iterator must not open a new shard.
        self.next_shard_key = max(meta.get("next_shard_key", 1), max(shards, default=0) + 1)
        self.next_stream_key = max(meta.get("next_stream_key", 1), max(by_key, default=0) + 1)
        self._saved = meta
        self.touched: set[int] = set()  # shards written by the group commit under way

    def _committed(self) -> None:
        self.committed_seq = self.next_seq
        if self.touched:
            touched, self.touched = self.touched, set()
            if self.on_commit is not None:
                self.on_commit(touched)

    def _persist_counter(self, conn: sqlite3.Connection) -> None:
        """Save the counters (runs in every group commit; writes only what changed)."""
        for key, value in (("next_seq", self.next_seq), ("next_shard_key", self.next_shard_key), ("next_stream_key", self.next_stream_key)):
            if self._saved.get(key) != value:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
                self._saved[key] = value

    def stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            raise not_found(f"Stream {name} under account {self.account_id} not found.")
        return stream

    def shard_by_key(self, shard_key: int) -> tuple[Stream, Shard]:
        found = self.shards.get(shard_key)
        if found is None or self.streams.get(found[0].name) is not found[0]:
            raise not_found("The shard of this iterator no longer exists.")
        return found

    def now(self) -> float:
        """Arrival time for new rows: wall clock, but never before the previous arrival."""
        now = time.time()
        if now < self.last_arrival:
            now = self.last_arrival
        self.last_arrival = now
        return now

    # -- writes (jobs run in the writer thread) -------------------------------------------

    def run(self, job: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """Run ``job`` in the writer thread, inside the next group commit."""
        return self._writer.submit(job)

    def close_shard(self, conn: sqlite3.Connection, shard: Shard, now: float) -> None:
        shard.end_seq = self.next_seq
        shard.closed = now
        self.next_seq += 1
        self.touched.add(shard.key)
        conn.execute("UPDATE shards SET end_seq=?, closed=? WHERE key=?", (shard.end_seq, now, shard.key))

    def open_shard(self, conn: sqlite3.Connection, stream: Stream, start: int, end: int, now: float, parent: str | None = None, adjacent: str | None = None) -> Shard:
        shard = Shard(self.next_shard_key, shard_name(stream.next_shard_index), start, end, self.next_seq, None, parent, adjacent, now)
        self.next_shard_key += 1
        stream.next_shard_index += 1
        conn.execute(
            "INSERT INTO shards(key, stream_key, shard_id, start_hash, end_hash, start_seq, parent, adjacent_parent, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (shard.key, stream.key, shard.shard_id, str(start), str(end), shard.start_seq, parent, adjacent, now),
        )
        conn.execute("UPDATE streams SET next_shard_index=? WHERE key=?", (stream.next_shard_index, stream.key))
        stream.shards.append(shard)
        self.shards[shard.key] = (stream, shard)
        return shard

    async def put(self, stream_name: str, entries: list[PutEntry], producer: str | None = None) -> list[PutResult]:
        stream = self.stream(stream_name)
        return await self.run(lambda conn: self._put_job(conn, stream, entries, producer))  # type: ignore[no-any-return]

    def _put_job(self, conn: sqlite3.Connection, stream: Stream, entries: list[PutEntry], producer: str | None) -> list[PutResult]:
        """Store one PutRecord(s) call: replays answered, the rest routed, admitted, numbered, packed."""
        if self.streams.get(stream.name) is not stream:
            raise not_found(f"Stream {stream.name} under account {self.account_id} not found.")
        now = self.now()
        results: list[PutResult | None] = [None] * len(entries)
        groups, aliases = self._route(stream, entries, self._replayed(conn, stream, entries, producer), results)
        rows, remembered = self._number(groups, entries, results, now)
        if stream.settings.key_uuid:  # an encrypted stream: rows are stored sealed
            key, seal = stream.settings.key_uuid, self.keys.seal
            rows = [(shard_key, first, last, arrival, seal(payload, key, shard_key, first)) for shard_key, first, last, arrival, payload in rows]
        for index, original in aliases:
            results[index] = results[original]
        conn.executemany("INSERT INTO segments(shard_key, first_seq, last_seq, arrival, payload) VALUES (?,?,?,?,?)", rows)
        self.touched.update(row[0] for row in rows)
        if producer is not None and remembered[0]:
            replays.remember(conn, producer, stream.key, *remembered, now)
        return results  # type: ignore[return-value]

    def _replayed(self, conn: sqlite3.Connection, stream: Stream, entries: list[PutEntry], producer: str | None) -> dict[int, PutResult]:
        """producer seq -> the result it got when first stored, for the entries that are replays."""
        known: dict[int, PutResult] = {}
        if producer is not None:
            pseqs = [e[3] for e in entries if e[3] is not None]
            if pseqs:
                for replayed, (shard_key, stored_seq) in replays.lookup(conn, producer, stream.key, pseqs).items():
                    if shard_key in self.shards:
                        known[replayed] = (self.shards[shard_key][1].shard_id, stored_seq)
        return known

    @staticmethod
    def _route(stream: Stream, entries: list[PutEntry], known: dict[int, PutResult], results: list[PutResult | None]) -> tuple[dict[int, tuple[Shard, list[int]]], list[tuple[int, int]]]:
        """Entry indexes grouped by shard (replays answered in ``results`` instead), and
        ``(index, first index)`` for entries that repeat a producer seq earlier in the same call."""
        router = stream.router
        route, route_key, cached = router.route, router.route_partition_key, router.by_partition_key
        groups: dict[int, tuple[Shard, list[int]]] = {}  # shard key -> (shard, entry indexes)
        first_of: dict[int, int] = {}  # producer seq -> index of its first entry in this call
        aliases: list[tuple[int, int]] = []
        for index, (partition_key, _, explicit_hash, pseq) in enumerate(entries):
            if pseq is not None:
                if pseq in known:
                    results[index] = known[pseq]
                    continue
                if pseq in first_of:
                    aliases.append((index, first_of[pseq]))
                    continue
                first_of[pseq] = index
            if explicit_hash is None:
                shard = cached.get(partition_key) or route_key(partition_key)
            else:
                shard = route(explicit_hash)
            group = groups.get(shard.key)
            if group is None:
                group = groups[shard.key] = (shard, [])
            group[1].append(index)
        return groups, aliases

    def _admit(self, shard: Shard, indexes: list[int], entries: list[PutEntry], results: list[PutResult | None], mono: float) -> list[int]:
        """The indexes the shard's write limits let through; the others are marked THROTTLED."""
        bucket = self.limits.write(shard.key)
        sizes = [len(entries[i][1]) + len(entries[i][0]) for i in indexes]
        verdicts = [] if bucket.admit_all(len(sizes), sum(sizes), mono) else bucket.admit_many(sizes, mono)
        if not verdicts or all(verdicts):
            return indexes
        for index, ok in zip(indexes, verdicts):
            if not ok:
                results[index] = (shard.shard_id, THROTTLED)
        return [i for i, ok in zip(indexes, verdicts) if ok]

    def _number(self, groups: dict[int, tuple[Shard, list[int]]], entries: list[PutEntry], results: list[PutResult | None], now: float) -> tuple[list[tuple[int, int, int, float, bytes]], tuple[list[int], list[int], list[int]]]:
        """Each shard's admitted records get a block of consecutive numbers and become one segment
        row; returns the rows and what to remember for replays (producer seqs, shard keys, seqs)."""
        limited = self.limits.enabled
        mono = time.monotonic()
        seq = self.next_seq
        rows: list[tuple[int, int, int, float, bytes]] = []
        remembered: tuple[list[int], list[int], list[int]] = ([], [], [])
        for shard, indexes in groups.values():
            if limited:
                indexes = self._admit(shard, indexes, entries, results, mono)
                if not indexes:
                    continue
            first = seq
            for index in indexes:
                results[index] = (shard.shard_id, seq)
                producer_seq = entries[index][3]
                if producer_seq is not None:
                    remembered[0].append(producer_seq)
                    remembered[1].append(shard.key)
                    remembered[2].append(seq)
                seq += 1
            payload = segments.pack([entries[i][0] for i in indexes], [entries[i][1] for i in indexes])
            rows.append((shard.key, first, seq - 1, now, payload))
        self.next_seq = seq
        return rows, remembered

    # -- reads (worker threads) -----------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        return self._readers.get()

    def read(self, shard_key: int, from_seq: int, limit: int, max_bytes: int = MAX_READ_BYTES) -> ReadResult:
        """Up to ``limit`` records (and ``max_bytes``, but at least one record) of a shard from
        ``from_seq`` on (blocking: call off the loop).

        The shard's end and its records come from one snapshot, so "closed and fully read"
        is never concluded while a record written before the close is still uncommitted.
        """
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT end_seq FROM shards WHERE key=?", (shard_key,)).fetchone()
            end_seq = None if row is None else row[0]
            cursor = conn.execute(
                "SELECT first_seq, arrival, payload FROM segments WHERE shard_key=? AND last_seq>=? ORDER BY last_seq",
                (shard_key, from_seq),
            )
            rows: list[tuple[int, float, str, bytes]] = []
            sealed: list[tuple[int, int]] = []
            nbytes = 0
            at_tip = True
            for first, arrival, payload in cursor:
                skip = max(0, from_seq - first)
                before = len(rows)
                for offset, (key, data) in enumerate(segments.unpack(self.keys.open(payload, shard_key, first), skip), start=first + skip):
                    size = len(data) + len(key)
                    if len(rows) == limit or (rows and nbytes + size > max_bytes):
                        at_tip = False
                        break
                    rows.append((offset, arrival, key, data))
                    nbytes += size
                if payload[:4] == SEALED and len(rows) > before:
                    sealed.append((rows[before][0], rows[-1][0]))
                if not at_tip:
                    break
            cursor.close()
        finally:
            conn.execute("COMMIT")
        return ReadResult(rows, at_tip, nbytes, end_seq, sealed)

    def read_segments(self, shard_key: int, from_seq: int, max_records: int) -> tuple[list[tuple[int, float, bytes]], int | None]:
        """Raw segments ``(first_seq, arrival, payload)`` of a shard holding ``from_seq`` and later,
        about ``max_records`` records' worth, and the shard's end_seq from the same snapshot
        (blocking; for in-process readers such as analytics that decode segments themselves)."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT end_seq FROM shards WHERE key=?", (shard_key,)).fetchone()
            out: list[tuple[int, float, bytes]] = []
            count = 0
            cursor = conn.execute(
                "SELECT first_seq, last_seq, arrival, payload FROM segments WHERE shard_key=? AND last_seq>=? ORDER BY last_seq", (shard_key, from_seq)
            )
            for first, last, arrival, payload in cursor:
                out.append((first, arrival, payload))
                count += last - max(first, from_seq) + 1
                if count >= max_records:
                    break
            cursor.close()
        finally:
            conn.execute("COMMIT")
        return out, None if row is None else row[0]

    def first_seq_at(self, shard_key: int, timestamp: float) -> int | None:
        row = self._reader().execute(
            "SELECT first_seq FROM segments WHERE shard_key=? AND arrival>=? ORDER BY last_seq LIMIT 1", (shard_key, timestamp)
        ).fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        self._writer.close()
        self._readers.close()
        self._conn.close()
        self._lock_file.release()

