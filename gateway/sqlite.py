"""SQLite and lock-file plumbing the gateway's stores share (``gateway/kds``, ``gateway/kvs``).

Each store is one WAL-mode file with one writer connection and read connections kept per
thread (a connection is not shared between threads while in use), and a lock file held with
``flock`` for the store's lifetime, so two gateway processes never open one data dir: the
second gets ``StoreInUseError`` at start.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from pathlib import Path
from typing import IO

#: How long a connection waits on another's lock before SQLite reports "database is locked".
BUSY_TIMEOUT_SECONDS = 30


class StoreInUseError(RuntimeError):
    """Another process holds the store's lock file: two gateways must never share a data dir."""


def connect(path: Path, durability: str, *, rows: bool = False, read_only: bool = False) -> sqlite3.Connection:
    """A WAL connection in autocommit mode (transactions are explicit); ``durability="full"``
    fsyncs every commit, ``"normal"`` survives a process crash but not a power cut."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
    if rows:
        conn.row_factory = sqlite3.Row
    if read_only:
        conn.execute("PRAGMA query_only=ON")
    else:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    return conn


class Readers:
    """One read-only connection per thread (reads run in ``asyncio.to_thread`` workers)."""

    def __init__(self, path: Path, *, rows: bool = False) -> None:
        self._path = path
        self._rows = rows
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self._path, "normal", rows=self._rows, read_only=True)
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class LockFile:
    """An exclusive ``flock`` on ``path``, held until ``release``; ``StoreInUseError`` if taken."""

    def __init__(self, path: Path, what: str) -> None:
        self._file: IO[bytes] = open(path, "a+b")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._file.close()
            raise StoreInUseError(f"{what} is in use by another gateway process") from exc

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
