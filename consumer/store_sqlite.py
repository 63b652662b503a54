"""The embedded lease store: one SQLite file shared by every worker process on a host.

On-disk format (one SQLite file in WAL mode; many applications may share it):

- ``leases(application, lease_key, lease_owner, lease_counter, checkpoint, checkpoint_sub,
  owner_switches, parent_shard_ids, child_shard_ids, checkpoint_owner, starting_hash_key,
  ending_hash_key, updated_ms)``, primary key ``(application, lease_key)``. The columns are the
  KCL lease attributes (see ``consumer.leases``); the shard id lists are JSON arrays;
  ``updated_ms`` is wall-clock time of the last write, for people reading the table (expiry never
  uses it: workers compare ``lease_counter`` values over time instead).

Invariants:

- Every mutation is one ``UPDATE ... WHERE`` whose condition is the lease's ``lease_counter`` /
  ``lease_owner`` / ``checkpoint_owner`` as the caller last saw them; SQLite serialises writers
  across processes, so of two workers taking the same lease exactly one sees its row change.
- No lock file, unlike the spool: sharing the file between processes is the point. It must be
  on a local disk (SQLite locking is unreliable on NFS); workers on many hosts use DynamoDB.
- sqlite3 errors are translated to ``LeaseStoreError`` here; "database is locked" beyond the
  busy timeout is one too (the caller treats it as a failed renew, which is safe).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from consumer.errors import LeaseStoreError
from consumer.leases import Lease, LeaseStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    application TEXT NOT NULL,
    lease_key TEXT NOT NULL,
    lease_owner TEXT,
    lease_counter INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT NOT NULL,
    checkpoint_sub INTEGER NOT NULL DEFAULT 0,
    owner_switches INTEGER NOT NULL DEFAULT 0,
    parent_shard_ids TEXT NOT NULL DEFAULT '[]',
    child_shard_ids TEXT NOT NULL DEFAULT '[]',
    checkpoint_owner TEXT,
    starting_hash_key TEXT,
    ending_hash_key TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (application, lease_key)
)
"""
_COLUMNS = ("lease_key, lease_owner, lease_counter, checkpoint, checkpoint_sub, owner_switches, parent_shard_ids, "
            "child_shard_ids, checkpoint_owner, starting_hash_key, ending_hash_key")
#: Seconds a write waits for another process's transaction before it counts as failed.
BUSY_TIMEOUT_SECONDS = 5.0


def _lease(row: Any) -> Lease:
    return Lease(key=row[0], owner=row[1], counter=row[2], checkpoint=row[3], checkpoint_sub=row[4], owner_switches=row[5],
                 parents=tuple(json.loads(row[6])), children=tuple(json.loads(row[7])), checkpoint_owner=row[8],
                 starting_hash_key=row[9], ending_hash_key=row[10])


def _now_ms() -> int:
    return int(time.time() * 1000)


class SqliteLeaseStore(LeaseStore):
    """Leases of one application in an SQLite file (created if missing)."""

    def __init__(self, path: str | Path, application: str) -> None:
        self.path = Path(path)
        self.application = application
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise LeaseStoreError(f"cannot open lease store {self.path}: {exc}") from exc

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise LeaseStoreError(f"lease store {self.path}: {exc}") from exc

    def _update(self, key: str, assignments: str, condition: str, args: tuple[Any, ...]) -> Lease | None:
        rows = self._run(
            f"UPDATE leases SET {assignments}, updated_ms = ? WHERE application = ? AND lease_key = ? AND ({condition}) "
            f"RETURNING {_COLUMNS}",
            (*args[: assignments.count("?")], _now_ms(), self.application, key, *args[assignments.count("?"):]),
        )
        return _lease(rows[0]) if rows else None

    def ensure_table(self) -> None:
        self._run(_SCHEMA)

    def list_leases(self) -> list[Lease]:
        rows = self._run(f"SELECT {_COLUMNS} FROM leases WHERE application = ? ORDER BY lease_key", (self.application,))
        return [_lease(r) for r in rows]

    def get(self, key: str) -> Lease | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM leases WHERE application = ? AND lease_key = ?", (self.application, key))
        return _lease(rows[0]) if rows else None

    def create(self, lease: Lease) -> bool:
        rows = self._run(
            "INSERT INTO leases (application, lease_key, lease_owner, lease_counter, checkpoint, checkpoint_sub, owner_switches, "
            "parent_shard_ids, child_shard_ids, checkpoint_owner, starting_hash_key, ending_hash_key, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING lease_key",
            (self.application, lease.key, lease.owner, lease.counter, lease.checkpoint, lease.checkpoint_sub, lease.owner_switches,
             json.dumps(list(lease.parents)), json.dumps(list(lease.children)), lease.checkpoint_owner, lease.starting_hash_key,
             lease.ending_hash_key, _now_ms()),
        )
        return bool(rows)

    def renew(self, lease: Lease) -> Lease | None:
        return self._update(lease.key, "lease_counter = lease_counter + 1", "lease_owner = ? AND lease_counter = ?",
                            (lease.owner, lease.counter))

    def take(self, lease: Lease, owner: str, handoff_from: str | None = None) -> Lease | None:
        return self._update(
            lease.key,
            "lease_owner = ?, checkpoint_owner = ?, lease_counter = lease_counter + 1, owner_switches = owner_switches + 1",
            "lease_counter = ?", (owner, handoff_from, lease.counter),
        )

    def finish_handoff(self, key: str, previous_owner: str) -> bool:
        return self._update(key, "checkpoint_owner = NULL", "checkpoint_owner = ?", (previous_owner,)) is not None

    def release(self, lease: Lease) -> bool:
        return self._update(lease.key, "lease_owner = NULL, lease_counter = lease_counter + 1", "lease_owner = ?",
                            (lease.owner,)) is not None

    def checkpoint(self, key: str, worker: str, checkpoint: str, sub: int = 0, children: tuple[str, ...] | None = None) -> bool:
        assignments = "checkpoint = ?, checkpoint_sub = ?, owner_switches = 0"
        args: tuple[Any, ...] = (checkpoint, sub)
        if children is not None:
            assignments += ", child_shard_ids = ?"
            args += (json.dumps(list(children)),)
        condition = "(checkpoint_owner IS NULL AND lease_owner = ?) OR checkpoint_owner = ?"
        return self._update(key, assignments, condition, (*args, worker, worker)) is not None

    def delete(self, key: str) -> None:
        self._run("DELETE FROM leases WHERE application = ? AND lease_key = ?", (self.application, key))

    def close(self) -> None:
        with self._lock:
            self._db.close()
