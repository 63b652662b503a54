"""Durable video storage: one file per fragment plus an SQLite index (WAL).

Public API (stable; the playback modules use it — call the sync methods via ``asyncio.to_thread``)::

    store = request.app[VIDEO_STORE]                       # VideoStore (key in gateway.kvs.keys)
    infos = store.list_fragments("cam", start_ms, end_ms, by="PRODUCER_TIMESTAMP", limit=100, after=None)
    data = store.read_fragment("cam", infos[0].fragment_number)   # standalone MKV doc with KVS tags
    FragmentInfo(fragment_number: str, producer_ts_ms, server_ts_ms, duration_ms, size, frame_count)
    stream = store.describe("cam")                         # StreamRecord (retention, ARN, ...)

    # the same by stream id (one describe() per request instead of per call), and cursors:
    store.list_fragments_by_id(stream.id, ...); store.read_fragment_by_id(stream.id, number)
    store.last_fragment_number(stream.id)                  # newest, or None
    store.number_before_time(stream.id, ms, by)            # after= cursor for "from this time on"
    fragment_number(stream_id, seq) / parse_fragment_number(number) -> (stream_id, seq)

    events = request.app[VIDEO_EVENTS]                     # FragmentEvents, for live tails:
    ev = events.event("cam")           # take the event BEFORE querying the store,
    infos = store.list_fragments(..., after=last_number)   # then, if nothing new,
    await events.wait(ev, timeout=5)                       # wait for the next PERSISTED fragment

``list_fragments`` returns fragments overlapping ``[start_ms, end_ms]`` (either bound may be None) on the
chosen clock, ordered by fragment number, after ``after`` (exclusive) when given. Errors raised are
``AwsError`` subclasses (``ResourceNotFoundException``...), so handlers can let them propagate.

On-disk layout (under ``<data dir>/video``) and invariants:

    lock                           flock'ed while a gateway has the store open (a second one refuses)
    index.db                       SQLite index: streams, fragments, producer_seqs (exactly-once replays)
    tmp/<uuid>.part                fragments being written; wiped on start
    streams/<id>/<seq//1000>/<seq>.mkv   one fragment (file names derive from ids, never from stream names)

* A fragment is written to ``tmp``, fsynced, renamed into place, and only then its index row is committed;
  a row therefore always points to a complete file, and PERSISTED is acked after the commit.
* Deletion (retention, DeleteStream) commits the row removal first and unlinks files after.
* On open, files without an index row (a crash between rename and commit, or between a deletion's commit
  and its unlink) and directories of deleted streams are removed, so no partial fragment is ever served.
* Fragment numbers are decimal strings ``BASE + stream_id * 10**20 + seq``: 47 digits like AWS ones, unique
  across streams, increasing within one, and never reused (``streams.last_seq`` keeps the high-water
  mark even when retention empties a stream; the counter also restarts above any orphan seen).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway import sqlite
from gateway.errors import AwsError
from gateway.sqlite import LockFile, Readers, StoreInUseError
from gateway.wire import DEFAULT_REGION
from gateway.kvs.model import (BY_PRODUCER, BY_SERVER, DEFAULT_ACCOUNT, MAX_FRAGMENT_MS, FragmentInfo,
                                 FragmentNotFoundError, NewFragment, StreamExistsError, StreamNotFoundError,
                                 StreamRecord, Tagger, VersionMismatchError, fragment_number, parse_fragment_number)

log = logging.getLogger("gateway.kvs.store")

__all__ = [  # the model is re-exported: ``from gateway.kvs.store import FragmentInfo`` keeps working
    "BY_PRODUCER", "BY_SERVER", "FragmentInfo",
    "FragmentNotFoundError", "NewFragment", "StreamNotFoundError", "StreamRecord", "VideoStore",
    "fragment_number", "parse_fragment_number", "StoreInUseError",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL,
    device_name TEXT,
    media_type TEXT,
    kms_key_id TEXT,
    retention_hours INTEGER NOT NULL DEFAULT 0,
    version TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    last_seq INTEGER NOT NULL DEFAULT 0  -- highest seq ever committed: numbers are never reused
);
CREATE TABLE IF NOT EXISTS fragments (
    stream_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    producer_ts_ms INTEGER NOT NULL,
    server_ts_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    frame_count INTEGER NOT NULL,
    PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fragments_by_producer_ts ON fragments (stream_id, producer_ts_ms);
CREATE INDEX IF NOT EXISTS fragments_by_server_ts ON fragments (stream_id, server_ts_ms);
CREATE TABLE IF NOT EXISTS producer_seqs (
    stream_id INTEGER NOT NULL,
    producer_id TEXT NOT NULL,
    producer_seq INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (stream_id, producer_id, producer_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS producer_seqs_by_seq ON producer_seqs (stream_id, seq);
"""


def _record(row: sqlite3.Row) -> StreamRecord:
    return StreamRecord(row["id"], row["name"], row["arn"], row["device_name"], row["media_type"],
                        row["kms_key_id"], row["retention_hours"], row["version"], row["created_ms"])


class VideoStore:
    """Streams and fragments of the video API. Thread-safe; every method blocks (disk, SQLite)."""

    def __init__(self, root: Path, durability: str = "normal", account_id: str = DEFAULT_ACCOUNT) -> None:
        self.root = Path(root)
        #: The account in stream ARNs (``account_id`` of the gateway config).
        self.account_id = account_id
        self.full_sync = durability == "full"
        (self.root / "streams").mkdir(parents=True, exist_ok=True)
        self._lock_file = LockFile(self.root / "lock", str(self.root))
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir()
        self._db_path = self.root / "index.db"
        self._write_lock = threading.Lock()
        self._readers = Readers(self._db_path, rows=True)
        self._writer = sqlite.connect(self._db_path, durability, rows=True)
        self._writer.executescript(SCHEMA)
        if "last_seq" not in {row[1] for row in self._writer.execute("PRAGMA table_info(streams)")}:  # older index
            self._writer.execute("ALTER TABLE streams ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0")
        self._stream_locks: dict[int, threading.Lock] = {}
        self._next_seq: dict[int, int] = {}
        self._bytes: dict[int, int] = {}
        self._bytes_lock = threading.Lock()
        self._retention_lock = threading.Lock()
        self._recover()

    # -- connections -------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        return self._readers.get()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def close(self) -> None:
        self._readers.close()
        with self._write_lock:
            self._writer.close()
        self._lock_file.release()

    # -- recovery ----------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Remove files no index row points to; set each stream's counters.

        Orphans can only sit below a stream's oldest indexed fragment (an interrupted deletion) or
        above its newest (an interrupted write), so only the first and last 1000-fragment
        directories are listed: opening a long stream costs a few directory reads, not one per file.
        """
        rows = self._writer.execute("SELECT id, last_seq FROM streams").fetchall()
        live = {row["id"]: row["last_seq"] for row in rows}
        removed = 0
        for stream_dir in (self.root / "streams").iterdir():
            if not stream_dir.name.isdigit() or int(stream_dir.name) not in live:
                shutil.rmtree(stream_dir, ignore_errors=True)
                removed += 1
        for stream_id in live:
            low, high, total = self._writer.execute(
                "SELECT MIN(seq), MAX(seq), COALESCE(SUM(size), 0) FROM fragments WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            highest = max(high or 0, live[stream_id])
            stream_dir = self.root / "streams" / str(stream_id)
            buckets = sorted(int(d.name) for d in stream_dir.iterdir() if d.name.isdigit()) if stream_dir.exists() else []
            for bucket in buckets:
                if low is not None and low // 1000 < bucket < high // 1000:
                    continue  # wholly inside the indexed range: nothing can be orphaned there
                bucket_dir = stream_dir / f"{bucket:06d}"
                indexed = {r[0] for r in self._writer.execute(
                    "SELECT seq FROM fragments WHERE stream_id = ? AND seq BETWEEN ? AND ?",
                    (stream_id, bucket * 1000, bucket * 1000 + 999))}
                for path in bucket_dir.glob("*"):
                    seq = int(path.stem) if path.stem.isdigit() and path.suffix == ".mkv" else -1
                    if seq not in indexed:
                        highest = max(highest, seq)
                        path.unlink(missing_ok=True)
                        removed += 1
                if not indexed:
                    with contextlib.suppress(OSError):
                        bucket_dir.rmdir()
            self._next_seq[stream_id] = highest + 1
            self._bytes[stream_id] = int(total)
            self._stream_locks[stream_id] = threading.Lock()
        if removed:
            log.warning("removed %d orphan fragment file(s)/dir(s) left by an interrupted write or deletion", removed)

    # -- streams -----------------------------------------------------------------------------------

    def create_stream(self, name: str, *, retention_hours: int = 0, media_type: str | None = None,
                      device_name: str | None = None, kms_key_id: str | None = None, region: str = DEFAULT_REGION,
                      tags: dict[str, str] | None = None) -> StreamRecord:
        now_ms = int(time.time() * 1000)
        arn = f"arn:aws:kinesisvideo:{region}:{self.account_id}:stream/{name}/{now_ms}"
        try:
            with self._transaction() as db:
                cur = db.execute(
                    "INSERT INTO streams (name, arn, device_name, media_type, kms_key_id, retention_hours, version, created_ms, tags)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, arn, device_name, media_type, kms_key_id, retention_hours, secrets.token_hex(10), now_ms, json.dumps(tags or {})),
                )
                stream_id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise StreamExistsError(name) from exc
        self._next_seq[stream_id] = 1
        self._bytes[stream_id] = 0
        self._stream_locks[stream_id] = threading.Lock()
        return self.describe(name)

    def describe(self, name: str | None = None, arn: str | None = None) -> StreamRecord:
        if arn is not None:
            row = self._reader().execute("SELECT * FROM streams WHERE arn = ?", (arn,)).fetchone()
        else:
            row = self._reader().execute("SELECT * FROM streams WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StreamNotFoundError(name or arn or "")
        return _record(row)

    def list_streams(self, prefix: str = "", after_name: str = "", limit: int = 10000) -> list[StreamRecord]:
        rows = self._reader().execute(
            "SELECT * FROM streams WHERE name > ? AND substr(name, 1, ?) = ? ORDER BY name LIMIT ?",
            (after_name, len(prefix), prefix, limit),
        ).fetchall()
        return [_record(r) for r in rows]

    def delete_stream(self, arn: str, current_version: str | None = None) -> None:
        stream = self.describe(arn=arn)
        if current_version is not None and current_version != stream.version:
            raise VersionMismatchError(stream.version)
        with self._transaction() as db:
            db.execute("DELETE FROM fragments WHERE stream_id = ?", (stream.id,))
            db.execute("DELETE FROM producer_seqs WHERE stream_id = ?", (stream.id,))
            db.execute("DELETE FROM streams WHERE id = ?", (stream.id,))
        with self._stream_lock(stream.id):
            shutil.rmtree(self.root / "streams" / str(stream.id), ignore_errors=True)
            self._next_seq.pop(stream.id, None)
        with self._bytes_lock:
            self._bytes.pop(stream.id, None)

    def update_retention(self, name: str | None, arn: str | None, current_version: str, change_hours: int, increase: bool) -> None:
        stream = self.describe(name, arn)
        if current_version != stream.version:
            raise VersionMismatchError(stream.version)
        hours = stream.retention_hours + (change_hours if increase else -change_hours)
        if hours < 0:
            raise AwsError("InvalidArgumentException", f"Retention would become {hours} hours (current {stream.retention_hours})")
        with self._transaction() as db:
            db.execute("UPDATE streams SET retention_hours = ?, version = ? WHERE id = ?", (hours, secrets.token_hex(10), stream.id))

    def update_stream(self, stream: StreamRecord, current_version: str, device_name: str | None, media_type: str | None) -> None:
        if current_version != stream.version:
            raise VersionMismatchError(stream.version)
        with self._transaction() as db:
            db.execute("UPDATE streams SET device_name = COALESCE(?, device_name), media_type = COALESCE(?, media_type),"
                       " version = ? WHERE id = ?", (device_name, media_type, secrets.token_hex(10), stream.id))

    def tags(self, stream_id: int) -> dict[str, str]:
        row = self._reader().execute("SELECT tags FROM streams WHERE id = ?", (stream_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def change_tags(self, stream_id: int, add: dict[str, str], remove: list[str], limit: int = 50) -> None:
        """Add/overwrite ``add`` and drop ``remove``; more than ``limit`` tags is refused, nothing changed."""
        with self._transaction() as db:
            row = db.execute("SELECT tags FROM streams WHERE id = ?", (stream_id,)).fetchone()
            if row is None:
                raise AwsError("ResourceNotFoundException", "Stream was deleted", 404)
            tags = {**json.loads(row[0]), **add}
            for key in remove:
                tags.pop(key, None)
            if len(tags) > limit:
                raise AwsError("TagsPerResourceExceededLimitException", f"A stream can have at most {limit} tags", 400)
            db.execute("UPDATE streams SET tags = ? WHERE id = ?", (json.dumps(tags), stream_id))

    def _stream_lock(self, stream_id: int) -> threading.Lock:
        lock = self._stream_locks.get(stream_id)
        if lock is None:
            lock = self._stream_locks.setdefault(stream_id, threading.Lock())
        return lock

    # -- ingest ------------------------------------------------------------------------------------

    def lookup_replay(self, stream_id: int, producer_id: str, producer_seq: int, producer_ts_ms: int) -> str | None:
        """Fragment number already stored for (producer, seq), if any (exactly-once replays).

        A replay must also carry the stored fragment's producer timestamp: a producer whose
        sequence restarted (a wiped spool) reuses seqs for new video, which must be stored.
        """
        row = self._reader().execute(
            "SELECT p.seq FROM producer_seqs p JOIN fragments f ON f.stream_id = p.stream_id AND f.seq = p.seq"
            " WHERE p.stream_id = ? AND p.producer_id = ? AND p.producer_seq = ? AND f.producer_ts_ms = ?",
            (stream_id, producer_id, producer_seq, producer_ts_ms),
        ).fetchone()
        return fragment_number(stream_id, row[0]) if row else None

    def persist(self, stream_id: int, fragment: NewFragment, tagger: Tagger | None = None,
                producer: tuple[str, int] | None = None) -> tuple[str, bool]:
        """Store ``fragment`` durably; return (fragment number, stored). ``stored`` is False for a replay.

        ``tagger(mkv, number)`` returns the bytes to store (the doc with its KVS tags). The per-stream lock
        keeps numbers committed in increasing order, which live readers rely on.
        """
        with self._stream_lock(stream_id):
            if producer is not None:
                existing = self.lookup_replay(stream_id, *producer, fragment.producer_ts_ms)
                if existing is not None:
                    return existing, False
            if stream_id not in self._next_seq:
                raise AwsError("ResourceNotFoundException", "Stream was deleted", 404)
            seq = self._next_seq[stream_id]
            self._next_seq[stream_id] = seq + 1
            number = fragment_number(stream_id, seq)
            data = tagger(fragment.mkv, number) if tagger else fragment.mkv
            final = self._fragment_path(stream_id, seq)
            tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            except BaseException:  # a full disk, typically: leave nothing behind
                tmp.unlink(missing_ok=True)
                raise
            if self.full_sync:
                _fsync_dir(final.parent)
            try:
                with self._transaction() as db:
                    if db.execute("UPDATE streams SET last_seq = MAX(last_seq, ?) WHERE id = ?", (seq, stream_id)).rowcount == 0:
                        raise AwsError("ResourceNotFoundException", "Stream was deleted", 404)
                    db.execute(
                        "INSERT INTO fragments VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (stream_id, seq, fragment.producer_ts_ms, fragment.server_ts_ms, fragment.duration_ms, len(data), fragment.frame_count),
                    )
                    if producer is not None:
                        db.execute("INSERT OR REPLACE INTO producer_seqs VALUES (?, ?, ?, ?)", (stream_id, producer[0], producer[1], seq))
            except BaseException:
                final.unlink(missing_ok=True)
                raise
            self._add_bytes(stream_id, len(data))
            return number, True

    def _add_bytes(self, stream_id: int, delta: int) -> None:
        with self._bytes_lock:
            if stream_id in self._bytes:
                self._bytes[stream_id] = max(0, self._bytes[stream_id] + delta)

    def _fragment_path(self, stream_id: int, seq: int) -> Path:
        return self.root / "streams" / str(stream_id) / f"{seq // 1000:06d}" / f"{seq:012d}.mkv"

    # -- reads -------------------------------------------------------------------------------------

    def list_fragments(self, stream: str, start_ms: int | None = None, end_ms: int | None = None,
                       by: str = BY_PRODUCER, limit: int = 1000, after: str | None = None) -> list[FragmentInfo]:
        stream_id = self.describe(stream).id
        return self.list_fragments_by_id(stream_id, start_ms, end_ms, by, limit, after)

    def list_fragments_by_id(self, stream_id: int, start_ms: int | None = None, end_ms: int | None = None,
                             by: str = BY_PRODUCER, limit: int = 1000, after: str | None = None,
                             starting_within: bool = False) -> list[FragmentInfo]:
        """Fragments overlapping ``[start_ms, end_ms]``; with ``starting_within`` only those that
        start inside it (ListFragments' rule: a fragment begun before the start is left out)."""
        column = "server_ts_ms" if by == BY_SERVER else "producer_ts_ms"
        sql = "SELECT * FROM fragments WHERE stream_id = ?"
        params: list[object] = [stream_id]
        if after is not None:
            after_stream, after_seq = parse_fragment_number(after)
            if after_stream != stream_id:
                raise AwsError("InvalidArgumentException", f"Fragment {after} is not of this stream")
            sql += " AND seq > ?"
            params.append(after_seq)
        if start_ms is not None and starting_within:
            sql += f" AND {column} >= ?"
            params.append(start_ms)
        elif start_ms is not None:
            sql += f" AND {column} > ? AND {column} + duration_ms > ?"
            params += [start_ms - MAX_FRAGMENT_MS - 1, start_ms]
        if end_ms is not None:
            sql += f" AND {column} <= ?"
            params.append(end_ms)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        rows = self._reader().execute(sql, params).fetchall()
        return [FragmentInfo(fragment_number(stream_id, r["seq"]), r["producer_ts_ms"], r["server_ts_ms"],
                             r["duration_ms"], r["size"], r["frame_count"]) for r in rows]

    def number_before_time(self, stream_id: int, start_ms: int, by: str = BY_PRODUCER) -> str | None:
        """A cursor (``after=``) just before the first fragment containing or following ``start_ms``.

        Uses the timestamp index alone, so starting from a time is cheap however long the stream is.
        """
        column = "server_ts_ms" if by == BY_SERVER else "producer_ts_ms"
        row = self._reader().execute(
            f"SELECT seq FROM fragments WHERE stream_id = ? AND {column} > ? AND {column} + duration_ms > ?"
            f" ORDER BY {column}, seq LIMIT 1",
            (stream_id, start_ms - MAX_FRAGMENT_MS - 1, start_ms),
        ).fetchone()
        return fragment_number(stream_id, row[0] - 1) if row else None

    def stream_exists(self, stream_id: int) -> bool:
        return self._reader().execute("SELECT 1 FROM streams WHERE id = ?", (stream_id,)).fetchone() is not None

    def last_fragment_number(self, stream_id: int) -> str | None:
        row = self._reader().execute("SELECT MAX(seq) FROM fragments WHERE stream_id = ?", (stream_id,)).fetchone()
        return fragment_number(stream_id, row[0]) if row and row[0] is not None else None

    def read_fragment(self, stream: str, number: str) -> bytes:
        return self.read_fragment_by_id(self.describe(stream).id, number)

    def read_fragment_by_id(self, stream_id: int, number: str) -> bytes:
        owner, seq = parse_fragment_number(number)
        if owner != stream_id:
            raise FragmentNotFoundError(number)
        row = self._reader().execute("SELECT 1 FROM fragments WHERE stream_id = ? AND seq = ?", (stream_id, seq)).fetchone()
        if row is None:
            raise FragmentNotFoundError(number)
        try:
            return self._fragment_path(stream_id, seq).read_bytes()
        except FileNotFoundError as exc:  # deleted by retention after the row check
            raise FragmentNotFoundError(number) from exc

    def existing_numbers(self, stream_id: int, numbers: list[str]) -> set[str]:
        """Which of ``numbers`` are indexed fragments of the stream."""
        seqs: dict[int, str] = {}
        for number in numbers:
            owner, seq = parse_fragment_number(number)
            if owner == stream_id:
                seqs[seq] = number
        found: set[str] = set()
        items = list(seqs)
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._reader().execute(f"SELECT seq FROM fragments WHERE stream_id = ? AND seq IN ({marks})", [stream_id, *part])
            found.update(seqs[r[0]] for r in rows)
        return found

    def stream_bytes(self, stream_id: int) -> int:
        return self._bytes.get(stream_id, 0)

    # -- retention ---------------------------------------------------------------------------------

    def delete_oldest(self, stream_id: int, *, older_than_ms: int | None = None, keep_bytes: int | None = None,
                      batch: int = 500) -> int:
        """Delete the oldest fragments older than ``older_than_ms`` (server clock) or beyond ``keep_bytes``.

        Index rows go first (one transaction), files after, so a crash leaves only orphan files that the
        next open removes. Returns the number of fragments deleted.
        """
        with self._retention_lock:  # the sweep and the post-ingest budget check never race
            return self._delete_oldest(stream_id, older_than_ms, keep_bytes, batch)

    def _delete_oldest(self, stream_id: int, older_than_ms: int | None, keep_bytes: int | None, batch: int) -> int:
        deleted = 0
        for _ in itertools.count():
            rows = self._reader().execute(
                "SELECT seq, size, server_ts_ms FROM fragments WHERE stream_id = ? ORDER BY seq LIMIT ?", (stream_id, batch)
            ).fetchall()
            victims: list[int] = []
            freed = 0
            total = self._bytes.get(stream_id, 0)
            for row in rows:
                too_old = older_than_ms is not None and row["server_ts_ms"] < older_than_ms
                too_big = keep_bytes is not None and total - freed > keep_bytes
                if not (too_old or too_big):
                    break
                victims.append(row["seq"])
                freed += row["size"]
            if not victims:
                return deleted
            with self._transaction() as db:
                db.executemany("DELETE FROM fragments WHERE stream_id = ? AND seq = ?", [(stream_id, s) for s in victims])
                db.executemany("DELETE FROM producer_seqs WHERE stream_id = ? AND seq = ?", [(stream_id, s) for s in victims])
            self._add_bytes(stream_id, -freed)
            for seq in victims:
                self._fragment_path(stream_id, seq).unlink(missing_ok=True)
            self._remove_empty_dirs(stream_id, {seq // 1000 for seq in victims})
            deleted += len(victims)
            if len(victims) < batch:
                return deleted
        return deleted  # pragma: no cover

    def _remove_empty_dirs(self, stream_id: int, buckets: set[int]) -> None:
        """Drop bucket directories retention emptied (under the stream lock, so no write races it)."""
        with self._stream_lock(stream_id):
            for bucket in buckets:
                with contextlib.suppress(OSError):  # not empty (or gone): keep it
                    (self.root / "streams" / str(stream_id) / f"{bucket:06d}").rmdir()

    def streams(self) -> list[StreamRecord]:
        return [_record(r) for r in self._reader().execute("SELECT * FROM streams ORDER BY id")]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

