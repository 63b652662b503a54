"""The store's single writer thread: group commit of concurrent write jobs.

Every mutation of the data-stream store is a *job* (a function of the SQLite connection)
submitted from the event loop. The writer drains whatever jobs are queued, runs each inside
its own SAVEPOINT (a failing job rolls back alone), commits them all in ONE transaction, and
only then resolves each caller's future. So an acknowledged record is always committed, and
100 concurrent PutRecords calls cost one fsync, not 100.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from gateway.errors import AwsError

log = logging.getLogger("gateway.kds.writer")

Job = Callable[[sqlite3.Connection], Any]
#: Most jobs folded into one transaction (bounds the latency of the first one).
MAX_GROUP = 256


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        before_commit: Callable[[sqlite3.Connection], None],
        after_failure: Callable[[], None],
        after_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._conn = conn
        self._before_commit = before_commit
        self._after_failure = after_failure
        self._after_commit = after_commit
        self._queue: queue.SimpleQueue[tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kds-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((job, future, loop))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit_group(batch)

    def _commit_group(self, batch: list[tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop]]) -> None:
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, _, _ in batch:
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, job(conn)))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    if not isinstance(exc, AwsError):
                        log.exception("write job failed")
                        self._after_failure()  # the job may have half-updated the in-memory model
                        exc = _commit_failure(exc) if isinstance(exc, sqlite3.Error) else AwsError("InternalFailure", "the store failed to write, see the gateway log", 500)
                    outcomes.append((False, exc))
            self._before_commit(conn)
            conn.execute("COMMIT")
            self._after_commit()
        except Exception as exc:  # sqlite3.Error above all; nothing may stop the writer thread
            log.exception("commit failed; nothing in this group was stored")
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            try:
                self._after_failure()
            except Exception:
                log.exception("could not reload the store's model")
            failure = _commit_failure(exc) if isinstance(exc, sqlite3.Error) else AwsError("InternalFailure", "the store failed to commit, see the gateway log", 500)
            outcomes = [(False, failure)] * len(batch)
        for (ok, value), (_, future, loop) in zip(outcomes, batch):
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:  # the loop is gone (shutdown)
                pass


def _commit_failure(exc: sqlite3.Error) -> AwsError:
    """What producers are told when a commit fails: a full disk says so, so operators know what to fix."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc):
        return AwsError("InternalFailure", "the gateway's disk is full: nothing in this request was stored; retry later", 500)
    return AwsError("InternalFailure", "the store failed to commit, see the gateway log", 500)
