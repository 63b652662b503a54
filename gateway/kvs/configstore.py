"""Where a video stream's configurations live: ``<data dir>/video/configs.sqlite3``::

    configs(stream_arn, kind, value, created, updated)   kind: image | notification | edge

keyed by the stream's ARN, which names one incarnation of a stream (a re-created stream starts
without the old one's configurations). Values are the API's JSON shapes (plus SyncStatus and the
agent's status for ``edge``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS configs(stream_arn TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, PRIMARY KEY(stream_arn, kind));
"""
FILE = "configs.sqlite3"


class StreamConfigs:
    """The configurations table; thread-safe, every call is one short transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite.connect(path, "full")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def get(self, arn: str, kind: str) -> tuple[dict[str, Any], float, float] | None:
        with self._lock:
            row = self._db.execute("SELECT value, created, updated FROM configs WHERE stream_arn=? AND kind=?", (arn, kind)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1], row[2])

    def put(self, arn: str, kind: str, value: dict[str, Any]) -> tuple[float, float]:
        now = time.time()
        with self._lock:
            row = self._db.execute("SELECT created FROM configs WHERE stream_arn=? AND kind=?", (arn, kind)).fetchone()
            created = now if row is None else row[0]
            self._db.execute("INSERT OR REPLACE INTO configs VALUES (?,?,?,?,?)", (arn, kind, json.dumps(value), created, now))
        return created, now

    def delete(self, arn: str, kind: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM configs WHERE stream_arn=? AND kind=?", (arn, kind))

    def all(self, kind: str) -> list[tuple[str, dict[str, Any], float, float]]:
        with self._lock:
            rows = self._db.execute("SELECT stream_arn, value, created, updated FROM configs WHERE kind=? ORDER BY stream_arn", (kind,)).fetchall()
        return [(arn, json.loads(value), created, updated) for arn, value, created, updated in rows]

    def close(self) -> None:
        self._db.close()


CONFIGS = web.AppKey("video_configs", StreamConfigs)
