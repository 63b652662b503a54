"""The durable spool: every record the agent takes in waits here until the gateway acknowledged it.

The file (one SQLite file in WAL mode, plus ``<file>.lock``) and its migrations from older
versions are ``edge_agent.spool_schema``'s; in short: records wait in two segment tables behind a
``records`` view, and acknowledged records leave a whole segment at a time (its pages freed, not
rewritten); checkpoints, counters and small rings (the MQTT source's recent deliveries) live beside
them and commit in the same transactions.

Invariants:

- ``append`` returns only after the transaction holding the records is committed; with
  ``sync="full"`` (the default) that commit is fsynced, so an acknowledged record survives power
  loss. One writer thread owns every write and group-commits whatever arrives within
  ``commit_interval`` of the first waiting operation (the agent's default: 1 s; at once when 500
  records or 256 KiB are waiting), so a trickle of appends costs one fsync and a few pages per
  interval, not per record. ``submit`` is ``append`` without waiting (a future); an ``urgent`` one
  (and an append without records) commits the queue at once.
- Records leave only by ``ack`` (the gateway acknowledged them) or by the size-cap policy:
  acknowledged records are never read again and leave ``stats`` at once, but leave the file with
  their segment (see above), checked every ``ACK_FLUSH_SECONDS``: usually within
  ``SEGMENT_SECONDS`` plus a second or two. When no segment could be emptied for
  ``SEGMENT_STALE_SECONDS`` (a lane stalled, a long backlog), acknowledged records are deleted one
  by one again, and always before the size cap drops anything. A crash in between sends them
  again, and the gateway recognises the replays (agent id, seq).
  The size cap:
  when the payload bytes would pass ``max_bytes``, the oldest records of the first kind in
  ``drop_order`` that has any are dropped (default: video, then logs, then telemetry), counted
  and logged. A kind missing from ``drop_order`` is never dropped; when nothing droppable is
  left, the new append fails with ``SpoolFull`` (the source keeps it or rejects it).
- A lock file held with ``flock`` keeps a second process from opening the same spool.
- A spool SQLite cannot open (torn or corrupt file) is moved aside as ``<file>.corrupt-<time>``
  with whatever rows could still be read copied into a fresh spool; the count is logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import operator
import os
import queue
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent import metrics
from edge_agent.spool_schema import PUT_RESERVED, PUT_RING_SLOT, SEGMENTS, SLOT_MASK, create_or_migrate, ring_name_id, route_id, salvage

log = logging.getLogger("edge_agent.spool")

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_DROP_ORDER = ("video", "log", "telemetry")
#: How often acknowledged records are looked at for release (a segment emptied, or rows deleted).
ACK_FLUSH_SECONDS = 1.0
#: The active segment is sealed (new records go to the other, empty, one) after this long.
SEGMENT_SECONDS = 5.0
#: ... or once it holds this many records (bounds the acknowledged seqs held in memory).
SEGMENT_ROWS = 4096
#: No segment emptied for this long (or this many acknowledged records waiting): acknowledged
#: records are deleted one by one instead.
SEGMENT_STALE_SECONDS = 15.0
MAX_ACKED_WAITING = 20_000
#: Sequence numbers reserved per write of the ``seq.reserved`` counter.
SEQ_BLOCK = 4096
#: Longest an operation waits for others to share its commit (a bounded group-commit interval),
#: for a Spool made without one (tests, tools). The agent's ``[spool] commit_interval_ms`` defaults
#: to 1 s (``config.DEFAULT_COMMIT_INTERVAL_MS``): every commit costs pages and an fsync.
DEFAULT_COMMIT_INTERVAL = 0.1
#: SQLite page size of new spool files: a commit writes whole pages to the WAL.
PAGE_SIZE = 1024
#: WAL frames between checkpoints (with 1 KiB pages: ~16 MiB); a page rewritten many times between
#: two checkpoints is copied to the database file once, and a checkpoint copies about the whole
#: (small) file: 3,000 records/s wrote 2.8 bytes per payload byte with 4 MiB, 2.4 with 16 MiB.
WAL_AUTOCHECKPOINT_PAGES = 16384
#: The WAL file is truncated back to this after a checkpoint (above its usual size: reused, not regrown).
JOURNAL_SIZE_LIMIT = 20 * 1024 * 1024
#: A group this large commits without waiting out the interval: its fixed cost is amortised already
#: (a source catching up on a backlog is not slowed to one batch per interval).
FULL_GROUP_RECORDS = 500
FULL_GROUP_BYTES = 256 * 1024
LANES = ("records", "media")
_RING_ENTRY = struct.Struct(">qq")

class SpoolError(Exception):
    """Base of the spool's errors; sqlite3 errors never escape the spool untranslated."""


class SpoolClosed(SpoolError):
    pass


class SpoolLocked(SpoolError):
    """Another process holds the spool."""


class RecordTooLarge(SpoolError):
    """A single record is larger than the whole spool may be."""


class SpoolFull(SpoolError):
    """The cap is reached and the drop policy allows dropping nothing more."""


def lane_of(kind: str) -> str:
    return "media" if kind == "video" else "records"


class NewRecord(NamedTuple):
    """A record to spool (a named tuple: sources make one per message, at a third of a frozen dataclass's cost)."""

    kind: str
    stream: str
    partition_key: str
    data: bytes
    source: str
    timestamp_ms: int | None = None
    attrs: dict[str, Any] | None = None


class SpooledRecord(NamedTuple):
    """A record read back (a named tuple: ``read`` makes one per row, at a third of a frozen dataclass's cost)."""

    seq: int
    kind: str
    stream: str
    partition_key: str
    data: bytes
    source: str
    timestamp_ms: int
    attrs: dict[str, Any]


@dataclass(frozen=True)
class SpoolStats:
    records: dict[str, int]
    bytes: int
    dropped: dict[str, int]
    max_bytes: int


class RingEntry(NamedTuple):
    """Entry ``ordinal`` of ring ``name``, stored in ``slot`` (``ordinal % capacity``); a named tuple
    (one per MQTT message)."""

    name: str
    slot: int
    ordinal: int
    value: int


@dataclass
class _Append:
    records: Sequence[NewRecord]
    checkpoint: tuple[str, str] | None
    future: Future
    ring: Sequence[RingEntry] = ()
    #: Commit without waiting out the group-commit interval (its sender cannot go on until then).
    urgent: bool = False
    #: Payload bytes of ``records`` (summed once, in ``submit``).
    size: int = 0


_CLOSE = object()
_first = operator.itemgetter(0)
_ACKED = object()  # wakes the writer: acknowledged seqs wait to be released (sent by the first ack after none waited)


class Spool:
    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        drop_order: Sequence[str] = DEFAULT_DROP_ORDER,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        sync: str = "full",
    ) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.drop_order = tuple(drop_order)
        self.commit_interval = commit_interval
        self.sync = sync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(f"{self.path}.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise SpoolLocked(f"{self.path} is in use by another process") from exc

        self._writer_db = self._open_checked()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._changed = threading.Condition()

        db = self._writer_db
        self._bytes = 0
        self._counts = {lane: 0 for lane in LANES}
        self._max_seq = {lane: 0 for lane in LANES}
        self._segment_rows = [0] * len(SEGMENTS)  # rows in each segment, acknowledged or not
        top = [0] * len(SEGMENTS)
        for i, name in enumerate(SEGMENTS):
            for lane, count, max_seq, size in db.execute(f"SELECT lane, COUNT(*), MAX(seq), SUM(size) FROM {name} GROUP BY lane"):
                self._counts[lane] += count
                self._max_seq[lane] = max(self._max_seq[lane], max_seq)
                self._bytes += size
                self._segment_rows[i] += count
                top[i] = max(top[i], max_seq)
        # New records go to the active segment (the newer one); seqs up to _boundary are in the other.
        self._active = 0 if top[0] >= top[1] else 1
        self._boundary = top[1 - self._active]
        self._active_since = self._released_at = time.monotonic()
        self._ring_ids: dict[str, int] = {}
        self._route_ids: dict[tuple[str, str, str], int] = {}
        #: Readers' cache of the committed routes: id -> (kind, stream, source).
        self._routes: dict[int, tuple[str, str, str]] = {}
        # The writer thread is the only writer, so it hands out sequence numbers itself, after
        # the last reservation (or an older spool's AUTOINCREMENT counter).
        legacy = 0
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            legacy = db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence").fetchone()[0]
        reserved = db.execute("SELECT value FROM counters WHERE name = 'seq.reserved'").fetchone()
        self._last_seq = max(legacy, reserved[0] if reserved else 0, max(self._max_seq.values()))
        self._reserved = self._last_seq
        # Acknowledged, not deleted yet: seq -> (size, lane), only seqs of rows in the file (a
        # segment holding as many rows as it has acknowledged seqs is emptied). Guarded by _changed,
        # as are their totals.
        self._acked: dict[int, tuple[int, str]] = {}
        self._acked_bytes = 0
        self._acked_counts = dict.fromkeys(LANES, 0)
        self._deleted_now: list[int] = []  # acked or dropped seqs deleted by the open transaction
        self._dropped_upto: dict[str, int] = {}  # kind -> seq of its last record dropped (size cap)
        self._dropped = {name.removeprefix("dropped."): value for name, value in db.execute("SELECT name, value FROM counters WHERE name LIKE 'dropped.%'")}
        self._committed = self._snapshot()
        self._publish_gauges()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._writer.start()
        log.info(
            "spool %s open: %d records (%d media), %.1f MiB of %.1f MiB cap",
            self.path, sum(self._counts.values()), self._counts["media"], self._bytes / 2**20, max_bytes / 2**20,
        )

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is empty
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.sync.upper()}")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        # Debian's SQLite zeroes every freed page (secure_delete=ON): each deleted record page is
        # written once more. FAST zeroes deleted content only in pages written anyway.
        db.execute("PRAGMA secure_delete=FAST")
        return db

    def _open_checked(self) -> sqlite3.Connection:
        """Open the spool; a file SQLite can't use is set aside, its readable rows salvaged."""
        db = None
        try:
            db = self._connect()
            create_or_migrate(db)
            if db.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return db
            db.close()
        except sqlite3.DatabaseError as exc:
            log.error("spool %s cannot be opened (%s)", self.path, exc)
            if db is not None:
                db.close()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(f"{aside}{suffix}")
        db = self._connect()
        create_or_migrate(db)
        saved, lost = salvage(aside, db)
        log.error("spool %s was damaged: moved to %s, salvaged %d records, %d unreadable", self.path, aside, saved, lost)
        return db

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    # -- public API --------------------------------------------------------------------------

    def append(
        self, records: Sequence[NewRecord], checkpoint: tuple[str, str] | None = None, ring: Sequence[RingEntry] = (),
        urgent: bool = False,
    ) -> list[int]:
        """Commit ``records`` (and ``checkpoint``, and ``ring`` entries) durably; return their sequence numbers."""
        result: list[int] = self.submit(records, checkpoint, ring, urgent).result()
        return result

    def submit(
        self, records: Sequence[NewRecord], checkpoint: tuple[str, str] | None = None, ring: Sequence[RingEntry] = (),
        urgent: bool = False,
    ) -> Future:
        """``append`` without waiting: a future of the sequence numbers, set once the commit holding
        them is durable (or of the ``SpoolError``). Futures complete in submission order. ``urgent``
        commits what is queued at once instead of waiting out ``commit_interval`` (a sender that can
        hold no more uncommitted input, e.g. an MQTT broker's in-flight window). So does an append
        without records (a checkpoint or ring entries alone): that is bookkeeping its caller waits
        on (a forwarder's aggregate ranges before a send), rare, and not worth a commit interval."""
        sizes = [len(record.data) for record in records]
        if sizes and max(sizes) > self.max_bytes:
            record = records[sizes.index(max(sizes))]
            raise RecordTooLarge(f"record of {len(record.data)} bytes from {record.source} is larger than the spool cap ({self.max_bytes})")
        future: Future = Future()
        if not records and checkpoint is None and not ring and not urgent:
            future.set_result([])
            return future
        urgent = urgent or not records
        self._submit(_Append(records, checkpoint, future, ring, urgent, sum(sizes)))
        return future

    def ack(self, seqs: Iterable[int]) -> None:
        """Records the gateway acknowledged: gone from ``read`` and ``stats`` now, from the file
        with their segment (see the module docstring). Unknown (already dropped) seqs are ignored."""
        seq_list = list(seqs)
        if not seq_list:
            return
        self._check_open()
        found = self._sizes_and_lanes(self._reader(), seq_list)
        with self._changed:
            wake = not self._acked  # else the writer has a release due already (it re-arms while acks wait)
            # (totals of the newly acknowledged ones; a seq acknowledged twice counts once)
            new = found.values() if self._acked.keys().isdisjoint(found) else [v for seq, v in found.items() if seq not in self._acked]
            self._acked_bytes += sum([size for size, _ in new])
            for lane, n in Counter([lane for _, lane in new]).items():
                self._acked_counts[lane] += n
            self._acked.update(found)
        self._publish_gauges()
        if wake:
            self._queue.put(_ACKED)

    def read(self, lane: str, after_seq: int = 0, limit: int = 500, max_bytes: int = 5 * 1024 * 1024) -> list[SpooledRecord]:
        """The oldest records of ``lane`` after ``after_seq``, at most ``limit`` and about ``max_bytes``."""
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, not {lane!r}")
        self._check_open()
        acked = self._acked
        db = self._reader()
        out: list[SpooledRecord] = []
        total = 0
        while True:
            # Straight from the segments (no join per row): route ids become strings through a
            # cache of the committed routes, which are never changed or deleted.
            rows: list[Any] = []
            for name in SEGMENTS:
                # (the lane as a literal: the planner can use the partial index for 'media')
                rows += db.execute(
                    f"SELECT seq, route, partition_key, data, timestamp_ms, attrs FROM {name} WHERE lane = '{lane}' AND seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            if len(rows) > limit or (rows and rows[0][0] > rows[-1][0]):  # (both segments had some: merge)
                rows.sort(key=_first)
                del rows[limit:]
            routes = self._routes
            for seq, route, key, data, ts, attrs in rows:
                if seq in acked:  # acknowledged, its delete not committed yet
                    continue
                size = len(data)
                if out and total + size > max_bytes:
                    return out
                total += size
                kind, stream, source = routes.get(route) or self._route(db, route)
                out.append(SpooledRecord(seq, kind, stream, key, data, source, ts, json.loads(attrs) if attrs else {}))
                if len(out) >= limit:
                    return out
            if len(rows) < limit:
                return out
            after_seq = rows[-1][0]

    def _route(self, db: sqlite3.Connection, route: int) -> tuple[str, str, str]:
        """Route ``route``'s (kind, stream, source), read into the cache with every route committed so far."""
        self._routes = {id_: (kind, stream, source) for id_, kind, stream, source in db.execute("SELECT id, kind, stream, source FROM routes")}
        return self._routes[route]

    @staticmethod
    def _sizes_and_lanes(db: sqlite3.Connection, seqs: list[int]) -> dict[int, tuple[int, str]]:
        """seq -> (size, lane) of those of ``seqs`` still in the file."""
        lo, hi = min(seqs), max(seqs)
        if hi - lo < 2 * len(seqs) + 64:  # (the usual: a run of recent seqs) one range scan per segment
            wanted = set(seqs)
            found: dict[int, tuple[int, str]] = {}
            for name in SEGMENTS:
                found.update({seq: (size, lane) for seq, size, lane in db.execute(f"SELECT seq, size, lane FROM {name} WHERE seq BETWEEN ? AND ?", (lo, hi)) if seq in wanted})
            return found
        found = {}
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for name in SEGMENTS:
                found.update({seq: (size, lane) for seq, size, lane in db.execute(f"SELECT seq, size, lane FROM {name} WHERE seq IN ({marks})", chunk)})
        return found

    def checkpoint(self, key: str) -> str | None:
        self._check_open()
        row = self._reader().execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def ring(self, name: str) -> list[RingEntry]:
        """The committed entries of ring ``name``, oldest first."""
        self._check_open()
        db = self._reader()
        row = db.execute("SELECT id FROM ring_names WHERE name = ?", (name,)).fetchone()
        if row is None:
            return []
        rows = db.execute("SELECT key, entry FROM ring_slots WHERE key BETWEEN ? AND ?", (row[0] << 32, (row[0] << 32) | SLOT_MASK))
        return sorted((RingEntry(name, key & SLOT_MASK, *_RING_ENTRY.unpack(entry)) for key, entry in rows), key=lambda e: e.ordinal)

    def wait(self, lane: str, after_seq: int, timeout: float) -> bool:
        """Block until ``lane`` holds a committed record newer than ``after_seq`` (True) or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self._closed or self._committed_max_seq[lane] > after_seq, timeout) and not self._closed

    def stats(self) -> SpoolStats:
        """What is committed and not acknowledged (the writer's own counters run ahead while a
        transaction is open)."""
        with self._changed:
            committed = self._committed
            if not self._acked:
                return committed
            records = {lane: count - self._acked_counts[lane] for lane, count in committed.records.items()}
            acked_bytes = self._acked_bytes
        return SpoolStats(records, committed.bytes - acked_bytes, committed.dropped, committed.max_bytes)

    def _snapshot(self) -> SpoolStats:
        self._committed_max_seq = dict(self._max_seq)
        return SpoolStats(dict(self._counts), self._bytes, dict(self._dropped), self.max_bytes)

    def close(self) -> None:
        if self._closed:
            return
        self._queue.put(_CLOSE)
        self._writer.join(timeout=30)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._writer_db.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolClosed(f"spool {self.path} is closed")

    def _submit(self, op: _Append) -> None:
        self._check_open()
        self._queue.put(op)

    def _write_loop(self) -> None:
        acks_due: float | None = None  # when the acknowledged records must be deleted
        while True:
            timeout = None if acks_due is None else max(0.0, acks_due - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            stop = first is _CLOSE
            group: list[_Append] = []
            if isinstance(first, _Append):
                group.append(first)
                size = len(first.records)
                payload = first.size
                deadline = time.monotonic() + self.commit_interval
                urgent = first.urgent
                while size < FULL_GROUP_RECORDS and payload < FULL_GROUP_BYTES:
                    try:
                        wait = 0.0 if urgent else deadline - time.monotonic()
                        op = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if op is _CLOSE:
                        stop = True
                        break
                    if isinstance(op, _Append):
                        group.append(op)
                        urgent = urgent or op.urgent
                        size += len(op.records)
                        payload += op.size
            if self._acked and acks_due is None:
                acks_due = time.monotonic() + ACK_FLUSH_SECONDS
            flush = bool(self._acked) and (stop or len(self._acked) >= MAX_ACKED_WAITING or time.monotonic() >= (acks_due or 0))
            if group or flush:
                self._commit_group(group, flush, stop)
                if flush:  # acks still waiting (their segment not released yet, or acked meanwhile): look again later
                    acks_due = time.monotonic() + ACK_FLUSH_SECONDS if self._acked else None
            if stop:
                return

    def _commit_group(self, group: list[_Append], flush_acks: bool = False, final: bool = False) -> None:
        db = self._writer_db
        results: list[tuple[Future, Any]] = []
        saved_state = (self._bytes, dict(self._counts), dict(self._max_seq), dict(self._dropped), self._last_seq, self._reserved,
                       dict(self._dropped_upto), list(self._segment_rows), self._released_at)
        dropped_now: dict[str, int] = {}
        self._deleted_now = []
        try:
            db.execute("BEGIN IMMEDIATE")
            if flush_acks:
                self._release_acked(db, final)
            if group:
                self._maybe_seal()
            for op in group:
                try:
                    seqs = self._insert(db, op, dropped_now)
                except SpoolFull as exc:
                    results.append((op.future, exc))
                    continue
                results.append((op.future, seqs))
            for kind, n in dropped_now.items():
                db.execute(
                    "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (f"dropped.{kind}", n),
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            (self._bytes, self._counts, self._max_seq, self._dropped, self._last_seq, self._reserved, self._dropped_upto,
             self._segment_rows, self._released_at) = saved_state
            self._ring_ids.clear()  # names and routes added by the rolled back transaction are not in the file
            self._route_ids.clear()
            log.error("spool commit failed: %s", exc)
            error = SpoolError(f"spool commit failed: {exc}")
            for op in group:
                op.future.set_exception(error)
            return
        for kind, n in dropped_now.items():
            metrics.RECORDS_DROPPED.labels(kind).inc(n)
            log.warning("spool full (cap %d bytes): dropped %d oldest %s record(s)", self.max_bytes, n, kind)
        with self._changed:
            self._committed = self._snapshot()
            for seq in self._deleted_now:
                gone = self._acked.pop(seq, None)
                if gone is not None:
                    self._acked_bytes -= gone[0]
                    self._acked_counts[gone[1]] -= 1
            self._changed.notify_all()
        self._publish_gauges()
        for future, result in results:
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _insert(self, db: sqlite3.Connection, op: _Append, dropped_now: dict[str, int]) -> list[int]:
        incoming = op.size
        if self._bytes + incoming > self.max_bytes and len(self._acked) > len(self._deleted_now):
            self._delete_acked(db)  # acknowledged records make room before anything is dropped
        if self._bytes + incoming > self.max_bytes:
            self._make_room(db, self._bytes + incoming - self.max_bytes, dropped_now)
        if self._last_seq + len(op.records) > self._reserved:
            self._reserved = self._last_seq + len(op.records) + SEQ_BLOCK
            db.execute(PUT_RESERVED, (self._reserved,))
        now_ms = int(time.time() * 1000)
        rows: list[tuple[int, str, int, str, int, int, str | None, bytes]] = []
        append = rows.append
        routes = self._route_ids
        counts = self._counts
        max_seq = self._max_seq
        dumps = json.dumps
        first = seq = self._last_seq
        # A batch's records mostly share one (kind, stream, source): its lane and route are looked
        # up again only when that changes (route -1: none looked up yet).
        kind = stream = source = lane = ""
        route = -1
        for r in op.records:
            seq += 1
            if r.kind is not kind or r.stream is not stream or r.source is not source or route < 0:
                if route >= 0:
                    max_seq[lane] = seq - 1
                kind, stream, source = r.kind, r.stream, r.source
                lane = lane_of(kind)
                found = routes.get((kind, stream, source))
                route = routes[kind, stream, source] = route_id(db, kind, stream, source) if found is None else found
            counts[lane] += 1
            ts = r.timestamp_ms
            attrs = r.attrs
            data = r.data
            append((seq, lane, route, r.partition_key, now_ms if ts is None else ts, len(data), dumps(attrs) if attrs else None, data))
        if route >= 0:
            max_seq[lane] = seq
        self._last_seq = seq
        db.executemany(f"INSERT INTO {SEGMENTS[self._active]} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._segment_rows[self._active] += len(rows)
        seqs = list(range(first + 1, seq + 1))
        self._bytes += incoming
        if op.checkpoint is not None:
            db.execute(
                "INSERT INTO checkpoints(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                op.checkpoint,
            )
        if op.ring:
            # A slot keeps its size: its row is overwritten in place.
            pack = _RING_ENTRY.pack
            name = op.ring[0].name
            base = self._ring_id(db, name) << 32
            entries = []
            for e in op.ring:
                if e.name != name:
                    name = e.name
                    base = self._ring_id(db, name) << 32
                entries.append((base | e.slot, pack(e.ordinal, e.value)))
            db.executemany(PUT_RING_SLOT, entries)
        return seqs

    def _ring_id(self, db: sqlite3.Connection, name: str) -> int:
        ring_id = self._ring_ids.get(name)
        if ring_id is None:
            ring_id = self._ring_ids[name] = ring_name_id(db, name)
        return ring_id

    def _make_room(self, db: sqlite3.Connection, needed: int, dropped_now: dict[str, int]) -> None:
        """Drop the oldest records, kind by kind in ``drop_order``, until ``needed`` bytes are free."""
        freed = 0
        for kind in self.drop_order:
            while freed < needed:
                # Seqs only grow: no record of this kind is older than the last one dropped.
                rows = db.execute(
                    f"SELECT seq, size, lane FROM records WHERE seq > ? AND lane = '{lane_of(kind)}' AND kind = ? ORDER BY seq LIMIT 256",
                    (self._dropped_upto.get(kind, 0), kind),
                ).fetchall()
                if not rows:
                    break
                victims: list[int] = []
                for seq, size, _lane in rows:
                    self._dropped_upto[kind] = seq
                    victims.append(seq)
                    freed += size
                    if freed >= needed:
                        break
                self._delete(db, victims)
                self._deleted_now.extend(victims)
                dropped_now[kind] = dropped_now.get(kind, 0) + len(victims)
                self._dropped[kind] = self._dropped.get(kind, 0) + len(victims)
            if freed >= needed:
                return
        raise SpoolFull(f"spool at its cap of {self.max_bytes} bytes and the drop policy {self.drop_order} frees no more")

    def _maybe_seal(self) -> None:
        """Seal the active segment (new records go to the other one) once it is old or large
        enough and the other one is empty. Nothing is written: which segment is active follows
        from the seqs they hold."""
        active, other = self._active, 1 - self._active
        rows = self._segment_rows[active]
        if rows and not self._segment_rows[other] and (rows >= SEGMENT_ROWS or time.monotonic() - self._active_since >= SEGMENT_SECONDS):
            self._boundary = self._last_seq
            self._active = other
            self._active_since = time.monotonic()

    def _release_acked(self, db: sqlite3.Connection, final: bool) -> None:
        """Acknowledged records leave the file: a segment whose every row is acknowledged is
        emptied; when none could be for ``SEGMENT_STALE_SECONDS`` (or too many wait, or the spool
        closes), they are deleted one by one."""
        for segment in (1 - self._active, self._active):
            rows = self._segment_rows[segment]
            if not rows:
                continue
            older = segment != self._active  # the sealed segment holds the seqs up to _boundary
            with self._changed:
                seqs = [seq for seq in self._acked if (seq <= self._boundary) == older]
            if len(seqs) == rows:  # _acked holds only seqs of rows in the file: all of them
                self._empty(db, segment, seqs)
        with self._changed:
            waiting = len(self._acked) - len(self._deleted_now)
        if waiting and (final or waiting >= MAX_ACKED_WAITING or time.monotonic() - self._released_at >= SEGMENT_STALE_SECONDS):
            self._delete_acked(db)

    def _empty(self, db: sqlite3.Connection, segment: int, seqs: list[int]) -> None:
        """Delete every row of ``segment`` (all acknowledged, ``seqs``): SQLite frees the pages of
        a table emptied by a DELETE without WHERE instead of rewriting them."""
        db.execute(f"DELETE FROM {SEGMENTS[segment]}")
        with self._changed:
            for seq in seqs:
                size, lane = self._acked[seq]
                self._bytes -= size
                self._counts[lane] -= 1
        self._segment_rows[segment] = 0
        self._deleted_now.extend(seqs)
        self._released_at = time.monotonic()

    def _delete_acked(self, db: sqlite3.Connection) -> None:
        with self._changed:
            seqs = sorted(self._acked.keys() - set(self._deleted_now))
        self._delete(db, seqs)
        self._deleted_now.extend(seqs)

    def _delete(self, db: sqlite3.Connection, seqs: list[int]) -> None:
        """Delete these records one by one, each from its segment."""
        sealed = 1 - self._active
        for segment, part in ((sealed, [s for s in seqs if s <= self._boundary]), (self._active, [s for s in seqs if s > self._boundary])):
            for start in range(0, len(part), 500):
                chunk = part[start : start + 500]
                deleted = db.execute(
                    f"DELETE FROM {SEGMENTS[segment]} WHERE seq IN ({','.join('?' * len(chunk))}) RETURNING size, lane", chunk
                ).fetchall()
                self._segment_rows[segment] -= len(deleted)
                for size, lane in deleted:
                    self._bytes -= size
                    self._counts[lane] -= 1

    def _publish_gauges(self) -> None:
        committed = self.stats()
        metrics.SPOOL_BYTES.set(committed.bytes)
        for lane, count in committed.records.items():
            metrics.SPOOL_RECORDS.labels(lane).set(count)


@dataclass(frozen=True)
class SpoolContents:
    """What a spool file holds, as ``inspect`` reads it."""

    #: lane -> records waiting
    records: dict[str, int]
    bytes: int
    #: kind -> records dropped by the size cap, ever
    dropped: dict[str, int]
    #: checkpoint key -> value (source positions, the forwarders' last successful send...)
    checkpoints: dict[str, str]
    #: lane -> producer timestamp (epoch ms) of the oldest record waiting
    oldest_ms: dict[str, int]


def inspect(path: str | Path) -> SpoolContents:
    """Read a spool file without opening it as a spool: read-only, no lock (a running agent holds
    that), so ``edge-agent status`` works whether the agent runs or not. ``FileNotFoundError`` if
    there is no file, ``SpoolError`` if it cannot be read; a file whose schema is not written yet
    (the agent is creating it this instant) reads as empty."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no spool at {path}")
    records: dict[str, int] = dict.fromkeys(LANES, 0)
    size = 0
    dropped: dict[str, int] = {}
    oldest: dict[str, int] = {}
    checkpoints: dict[str, str] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'records'").fetchone()[0]:
                for lane, count, lane_bytes in db.execute("SELECT lane, COUNT(*), COALESCE(SUM(size), 0) FROM records GROUP BY lane"):
                    records[lane] = count
                    size += lane_bytes
                for name, value in db.execute("SELECT name, value FROM counters WHERE name LIKE 'dropped.%'"):
                    dropped[name.removeprefix("dropped.")] = value
                checkpoints = dict(db.execute("SELECT key, value FROM checkpoints").fetchall())
                for lane in LANES:  # the lane as a literal: each segment is read in seq order, not sorted
                    row = db.execute(f"SELECT timestamp_ms FROM records WHERE lane = '{lane}' ORDER BY seq LIMIT 1").fetchone()
                    if row:
                        oldest[lane] = row[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot read the spool {path}: {exc}") from exc
    return SpoolContents(records, size, dropped, checkpoints, oldest)
