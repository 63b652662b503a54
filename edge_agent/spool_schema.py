"""The spool's SQLite file: its schema, the migration of files written by older versions, and the
salvage of a damaged one. ``edge_agent.spool`` reads and writes it.

Format (one SQLite file in WAL mode; ``edge_agent.spool`` adds ``<file>.lock``):

- ``records``: a view ``(seq, lane, kind, stream, partition_key, source, timestamp_ms, size,
  attrs, data)`` over two segment tables, ``records_0`` and ``records_1``, of rows ``(seq, lane,
  route, partition_key, timestamp_ms, size, attrs, data)``: ``route`` is the id of the row's
  (kind, stream, source) in ``routes``, stored once instead of ~25 bytes in every row (a ~70-byte
  reading took ~140 bytes of row with them).
  New records go to the *active* segment; every seq in the other one is older. Acknowledged records
  leave by segment: a segment whose every record is acknowledged is emptied at once (``DELETE``
  without ``WHERE``: SQLite frees its pages without rewriting them), and the active segment is
  sealed every ``spool.SEGMENT_SECONDS`` when the other one is empty, so records of the last few seconds
  are released together. Deleting acknowledged rows one by one rewrote (and rebalanced) every page
  they lived on: as many bytes again as inserting them. (A spool made before segments has one
  ``records`` table, and one made before routes has the strings in every row: the first open
  copies such rows into ``records_0`` / their segment, once.)
  ``seq`` is the ``INTEGER PRIMARY KEY``; sequence numbers increase and are never reused, even
  after deletes and restarts: the writer reserves them in blocks of ``spool.SEQ_BLOCK`` (counter
  ``seq.reserved``) and a restart continues after the reservation. (Spools made before this had
  ``AUTOINCREMENT`` and its ``sqlite_sequence``: the migration moves that into ``seq.reserved``.) The gateway relies on
  (agent id, seq) to recognise replays.
  ``lane`` is ``media`` for video fragments (sent with PutMedia) and ``records`` for everything
  else (sent with PutRecords). Only media rows are indexed (``records_<n>_media``, partial):
  records are read in seq order straight from the tables, and an index entry per row would cost
  pages on every commit.
- ``checkpoints(key, value)``: source positions (log file offsets...), written in the same
  transaction as the records they cover, so a restart resumes with no loss and no duplicate.
- ``counters(name, value)``: drops by kind, kept across restarts.
- ``ring_names(id, name)`` and ``ring_slots(key, entry)``: small fixed-size rings a source keeps
  beside its records (the MQTT source's recent deliveries, to recognise a redelivery): entry
  number ``ordinal`` lives in ``slot = ordinal % capacity``, row ``key = id << 32 | slot``, so a
  commit rewrites only the slots it changed. ``entry`` is (ordinal, value) as two big-endian int64
  (16 bytes, always): a row that keeps its size is overwritten in place, and ~40 fit in a page.
  (A spool made before this has one ``rings(name, slot, entry)`` table: its rows move over.)

Pages are 1 KiB (new files), the WAL is checkpointed every ``spool.WAL_AUTOCHECKPOINT_PAGES`` and
truncated back to ``spool.JOURNAL_SIZE_LIMIT``: on an SD card each fsynced commit costs whole pages,
so small pages and few commits are what keeps the bytes written near the payload's size.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("edge_agent.spool")

#: The segment tables behind the ``records`` view.
SEGMENTS = ("records_0", "records_1")

_RECORD_COLUMNS = """(
    seq INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    route INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    attrs TEXT,
    data BLOB NOT NULL
)"""
_SEGMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS {name} {columns};
CREATE INDEX IF NOT EXISTS {name}_media ON {name}(seq) WHERE lane = 'media';
"""
#: The view's columns, from a segment and its route.
_VIEW_ARM = ("SELECT s.seq AS seq, s.lane AS lane, r.kind AS kind, r.stream AS stream, s.partition_key AS partition_key,"
             " r.source AS source, s.timestamp_ms AS timestamp_ms, s.size AS size, s.attrs AS attrs, s.data AS data"
             " FROM {name} AS s JOIN routes AS r ON r.id = s.route")
_ROUTES_SCHEMA = """CREATE TABLE IF NOT EXISTS routes (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, stream TEXT NOT NULL, source TEXT NOT NULL, UNIQUE (kind, stream, source)
)"""
#: The whole schema of a new spool file.
SCHEMA = "".join(_SEGMENT_SCHEMA.format(name=name, columns=_RECORD_COLUMNS) for name in SEGMENTS) + f"""
{_ROUTES_SCHEMA};
CREATE VIEW IF NOT EXISTS records AS {" UNION ALL ".join(_VIEW_ARM.format(name=name) for name in SEGMENTS)};
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ring_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS ring_slots (key INTEGER PRIMARY KEY, entry BLOB NOT NULL);
"""


PUT_RESERVED = "INSERT INTO counters(name, value) VALUES ('seq.reserved', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"
PUT_RING_SLOT = "INSERT INTO ring_slots(key, entry) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET entry = excluded.entry"
SLOT_MASK = 0xFFFFFFFF


def create_or_migrate(db: sqlite3.Connection) -> None:
    """Create the schema, or bring a spool made by an older version to it, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        tables = {name: kind for name, kind in db.execute("SELECT name, type FROM sqlite_master")}
        # Record tables written before routes (one ``records`` table, or segments with the kind,
        # stream and source strings in every row) are copied into the current form once.
        old = [name for name in ("records", *SEGMENTS) if tables.get(name) == "table" and not _current(db, name)]
        if old:
            if tables.get("records") == "view":
                db.execute("DROP VIEW records")  # made again over the converted segments
            db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            floor = max([0] + [db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {name}").fetchone()[0] for name in old])
            if "sqlite_sequence" in tables:  # an AUTOINCREMENT table's counter goes with its table
                floor = max(floor, db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence").fetchone()[0])
            reserved = db.execute("SELECT value FROM counters WHERE name = 'seq.reserved'").fetchone()
            db.execute(PUT_RESERVED, (max(floor, reserved[0] if reserved else 0),))
            db.execute(_ROUTES_SCHEMA)
            for name in old:
                _convert(db, name, SEGMENTS[0] if name == "records" else name)
        for statement in SCHEMA.split(";"):
            db.execute(statement)
        if tables.get("rings") == "table":  # one row per (name, slot), before ring_slots
            put_ring_rows(db, db.execute("SELECT name, slot, entry FROM rings").fetchall())
            db.execute("DROP TABLE rings")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _current(db: sqlite3.Connection, table: str) -> bool:
    """Whether a record table has the current columns (a route id, no AUTOINCREMENT)."""
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    return "route" in columns and "AUTOINCREMENT" not in sql.upper()


def _convert(db: sqlite3.Connection, old: str, new: str) -> None:
    """Copy the rows of an older record table into table ``new`` of the current form."""
    db.execute(f"CREATE TABLE {new}_converted {_RECORD_COLUMNS}")
    db.execute(f"INSERT OR IGNORE INTO routes(kind, stream, source) SELECT DISTINCT kind, stream, source FROM {old}")
    db.execute(f"INSERT INTO {new}_converted SELECT o.seq, o.lane, r.id, o.partition_key, o.timestamp_ms, o.size, o.attrs, o.data"
               f" FROM {old} AS o JOIN routes AS r ON r.kind = o.kind AND r.stream = o.stream AND r.source = o.source")
    db.execute(f"DROP TABLE {old}")
    db.execute(f"ALTER TABLE {new}_converted RENAME TO {new}")
    db.execute(f"CREATE INDEX IF NOT EXISTS {new}_media ON {new}(seq) WHERE lane = 'media'")


def route_id(db: sqlite3.Connection, kind: str, stream: str, source: str) -> int:
    db.execute("INSERT OR IGNORE INTO routes(kind, stream, source) VALUES (?, ?, ?)", (kind, stream, source))
    route: int = db.execute("SELECT id FROM routes WHERE kind = ? AND stream = ? AND source = ?", (kind, stream, source)).fetchone()[0]
    return route


def ring_name_id(db: sqlite3.Connection, name: str) -> int:
    db.execute("INSERT OR IGNORE INTO ring_names(name) VALUES (?)", (name,))
    ring_id: int = db.execute("SELECT id FROM ring_names WHERE name = ?", (name,)).fetchone()[0]
    return ring_id


def put_ring_rows(db: sqlite3.Connection, rows: Iterable[tuple[str, int, bytes]]) -> None:
    """Write (ring name, slot, entry) rows."""
    ids: dict[str, int] = {}
    for name, slot, entry in rows:
        if name not in ids:
            ids[name] = ring_name_id(db, name)
        db.execute(PUT_RING_SLOT, ((ids[name] << 32) | slot, entry))


def salvage(damaged: Path, fresh: sqlite3.Connection) -> tuple[int, int]:
    """Copy every record still readable from ``damaged`` into ``fresh``; (saved, lost)."""
    saved = lost = 0
    routes: dict[tuple[str, str, str], int] = {}
    fresh.execute("BEGIN")
    try:
        old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        last = 0
        while True:
            try:
                row = old.execute(
                    "SELECT seq, lane, kind, stream, partition_key, source, timestamp_ms, size, attrs, data FROM records WHERE seq > ? ORDER BY seq LIMIT 1",
                    (last,),
                ).fetchone()
            except sqlite3.DatabaseError:
                lost += 1
                last += 1
                if lost > 100_000:
                    break
                continue
            if row is None:
                break
            last = row[0]
            seq, lane, kind, stream, key, source, *rest = row
            if (kind, stream, source) not in routes:
                routes[kind, stream, source] = route_id(fresh, kind, stream, source)
            fresh.execute(f"INSERT INTO {SEGMENTS[0]} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (seq, lane, routes[kind, stream, source], key, *rest))
            saved += 1
        for table, columns in (("checkpoints", 2), ("counters", 2)):
            try:
                rows = old.execute(f"SELECT * FROM {table}").fetchall()
            except sqlite3.DatabaseError:
                continue
            fresh.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * columns)})", rows)
        for query in ("SELECT name, slot, entry FROM rings",  # an older spool's
                      f"SELECT n.name, s.key & {SLOT_MASK}, s.entry FROM ring_slots s JOIN ring_names n ON n.id = s.key >> 32"):
            try:
                put_ring_rows(fresh, old.execute(query).fetchall())
            except sqlite3.DatabaseError:
                continue
        old.close()
    except sqlite3.DatabaseError as exc:
        log.error("nothing could be salvaged from %s: %s", damaged, exc)
    fresh.execute("COMMIT")
    return saved, lost
