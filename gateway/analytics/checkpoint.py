"""An application's durable state: where it has read to, its open windows and its unsent output.

On-disk format (``<data dir>/analytics/<application>.sqlite3``, WAL, plus ``<file>.lock``):

- ``meta(key, value)``: ``producer`` — the id the application's output is written under
  (``analytics/<name>/<random token>``; a new file gets a new token, so its output numbers
  never collide with those of a deleted file's).
- ``positions(input, shard_key, next_seq)``: the next record to read, per input table and shard.
- ``watermarks(input, max_event_us)``: the newest event time seen per input (the watermark is
  this minus the allowed lateness).
- ``windows(query, sql, emitted_until_us, pending)``: per window query, the end up to which
  windows were emitted and the buffered rows of the windows still open, as an Arrow IPC stream.
  A query whose SQL changed starts with empty state (logged).
- ``outbox(id, destination, partition_key, data)``: output records computed but not yet known
  to be stored in their data stream. ``id`` is AUTOINCREMENT: never reused.
- ``counters(name, value)``: records read, malformed, late, output rows per query.

Invariants:

- One ``save`` transaction holds a micro-batch's new positions, watermarks, window state,
  counters AND its output records in the outbox: after a crash the state is either wholly
  before the batch (it is read again, giving the same windows) or wholly after it.
- Outbox records are written to their stream with ``X-Edge-Producer-Id`` semantics: producer
  ``meta.producer``, producer seq = ``outbox.id``. A record written before the crash but still
  in the outbox is recognised by the gateway and not stored twice; only then is it deleted. So
  every window is emitted exactly once, whatever moment the process dies at.
- A lock file held with ``flock`` keeps a second process from running the same application.
- SQLite errors are raised as ``CheckpointError`` (the engine marks the application failed).
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from gateway import sqlite
from gateway.sqlite import LockFile, StoreInUseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions(input TEXT NOT NULL, shard_key INTEGER NOT NULL, next_seq INTEGER NOT NULL,
    PRIMARY KEY(input, shard_key));
CREATE TABLE IF NOT EXISTS watermarks(input TEXT PRIMARY KEY, max_event_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS windows(query TEXT PRIMARY KEY, sql TEXT NOT NULL, emitted_until_us INTEGER, pending BLOB);
CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL,
    partition_key TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class CheckpointError(Exception):
    """The checkpoint file cannot be opened, read or written."""


@dataclass
class WindowState:
    sql: str
    emitted_until_us: int | None = None
    #: Buffered rows of open windows (None: none yet).
    pending: pa.Table | None = None


@dataclass
class State:
    """Everything ``save`` writes; ``load`` returns the last saved one."""

    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)
    windows: dict[str, WindowState] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


#: An output record waiting in the outbox: (id, destination stream, partition key, data).
OutboxRecord = tuple[int, str, str, bytes]


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def _from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(blob).read_all()


class Checkpoint:
    def __init__(self, path: Path, durability: str = "normal") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = LockFile(Path(f"{path}.lock"), str(path))
        except StoreInUseError as exc:
            raise CheckpointError(f"{path} is in use by another process") from exc
        try:
            self._conn = sqlite.connect(path, durability)
            self._conn.executescript(SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE key='producer'").fetchone()
            if row is None:
                token = secrets.token_hex(8)
                self._conn.execute("INSERT INTO meta(key, value) VALUES ('producer', ?)", (f"analytics/{path.stem}/{token}",))
                row = (f"analytics/{path.stem}/{token}",)
        except sqlite3.Error as exc:
            self.close()
            raise CheckpointError(f"{path}: {exc}") from exc
        self.producer: str = row[0]

    def load(self) -> State:
        try:
            conn = self._conn
            state = State()
            for table, shard_key, seq in conn.execute("SELECT input, shard_key, next_seq FROM positions"):
                state.positions[(table, shard_key)] = seq
            state.watermarks = dict(conn.execute("SELECT input, max_event_us FROM watermarks").fetchall())
            for query, sql, until, pending in conn.execute("SELECT query, sql, emitted_until_us, pending FROM windows"):
                state.windows[query] = WindowState(sql, until, None if pending is None else _from_ipc(pending))
            state.counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            return state
        except (sqlite3.Error, pa.ArrowException) as exc:
            raise CheckpointError(f"{self.path}: cannot read the checkpoint: {exc}") from exc

    def save(self, state: State, changed_windows: list[str], outbox: list[tuple[str, str, bytes]]) -> None:
        """Commit positions, watermarks, counters, the windows named in ``changed_windows`` and new outbox records at once."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO positions(input, shard_key, next_seq) VALUES (?,?,?)",
                                 [(t, k, s) for (t, k), s in state.positions.items()])
                conn.executemany("INSERT OR REPLACE INTO watermarks(input, max_event_us) VALUES (?,?)", list(state.watermarks.items()))
                conn.executemany("INSERT OR REPLACE INTO counters(name, value) VALUES (?,?)", list(state.counters.items()))
                for query in changed_windows:
                    w = state.windows[query]
                    blob = None if w.pending is None else _to_ipc(w.pending)
                    conn.execute("INSERT OR REPLACE INTO windows(query, sql, emitted_until_us, pending) VALUES (?,?,?,?)",
                                 (query, w.sql, w.emitted_until_us, blob))
                conn.executemany("INSERT INTO outbox(destination, partition_key, data) VALUES (?,?,?)", outbox)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise CheckpointError(f"{self.path}: cannot save the checkpoint: {exc}") from exc

    def outbox(self, limit: int = 5000) -> list[OutboxRecord]:
        try:
            return self._conn.execute("SELECT id, destination, partition_key, data FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        except sqlite3.Error as exc:
            raise CheckpointError(f"{self.path}: cannot read the outbox: {exc}") from exc

    def delivered(self, last_id: int) -> None:
        """Forget outbox records up to ``last_id``: their streams have them."""
        try:
            self._conn.execute("DELETE FROM outbox WHERE id<=?", (last_id,))
        except sqlite3.Error as exc:
            raise CheckpointError(f"{self.path}: cannot update the outbox: {exc}") from exc

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        self._lock.release()


def checkpoint_path(data_dir: Path, application: str) -> Path:
    return data_dir / "analytics" / f"{application}.sqlite3"


__all__ = ["Checkpoint", "CheckpointError", "OutboxRecord", "State", "WindowState", "checkpoint_path"]
