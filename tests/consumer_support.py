"""Helpers for the consumer-library tests: a record processor that writes what it did to SQLite,
and a runner for ``edge-consumer`` worker processes.

``AuditProcessor`` (run inside worker processes) writes to ``$CONSUMER_AUDIT_DIR/<worker>.db``:
each batch as an interval (worker, shard, start, end) written *before* processing starts and
closed after, every record it got, and every checkpoint after the store accepted it. The tests
read all those files to check that no two workers processed a shard at once, that every record
was processed, and that duplicates only come after the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import ROOT, free_port, wait_for_port

from consumer import BaseProcessor, Checkpointer, Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, worker TEXT, shard TEXT, start REAL, end REAL);
CREATE TABLE IF NOT EXISTS records (worker TEXT, shard TEXT, seq TEXT, sub INTEGER, data BLOB, t REAL);
CREATE TABLE IF NOT EXISTS checkpoints (worker TEXT, shard TEXT, seq TEXT, sub INTEGER, t REAL);
"""


class AuditProcessor(BaseProcessor):
    """Checkpoints every ``CONSUMER_AUDIT_CHECKPOINT_EVERY`` batches (default 2) and on shutdown."""

    def __init__(self) -> None:
        self.worker = os.environ.get("CONSUMER_AUDIT_WORKER", str(os.getpid()))
        path = Path(os.environ["CONSUMER_AUDIT_DIR"]) / f"{self.worker}.db"
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # survives SIGKILL, which is all the test needs
        self.db.executescript(_SCHEMA)
        self.every = int(os.environ.get("CONSUMER_AUDIT_CHECKPOINT_EVERY", "2"))
        self.batches = 0

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
        batch = self.db.execute("INSERT INTO batches (worker, shard, start) VALUES (?, ?, ?)",
                                (self.worker, self.shard_id, time.time())).lastrowid
        now = time.time()
        self.db.execute("BEGIN")  # one transaction, not one per record
        self.db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
                            [(self.worker, self.shard_id, r.sequence_number, r.sub_sequence_number, r.data, now) for r in records])
        self.db.execute("COMMIT")
        self.batches += 1
        if self.batches % self.every == 0:
            self._checkpoint(checkpointer)
        self.db.execute("UPDATE batches SET end = ? WHERE id = ?", (time.time(), batch))

    def _checkpoint(self, checkpointer: Checkpointer) -> None:
        checkpointer.checkpoint()
        if checkpointer.last:
            self.db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)", (self.worker, self.shard_id, *checkpointer.last, time.time()))

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        self._checkpoint(checkpointer)


def read_audit(audit_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every worker's batches, records and checkpoints, merged."""
    out: dict[str, list[tuple[Any, ...]]] = {"batches": [], "records": [], "checkpoints": []}
    for path in sorted(audit_dir.glob("*.db")):
        db = sqlite3.connect(path, timeout=30)
        try:
            for table in out:
                out[table] += db.execute(f"SELECT * FROM {table}").fetchall()
        except sqlite3.OperationalError:  # a worker that never processed a batch may not have its tables yet
            pass
        finally:
            db.close()
    return out


class WorkerProcess:
    """An ``edge-consumer run`` process with the audit processor."""

    def __init__(self, config: Path, worker_id: str, audit_dir: Path, *extra: str) -> None:
        self.worker_id = worker_id
        self.log_path = audit_dir.parent / f"worker-{worker_id}.log"
        env = {**os.environ, "CONSUMER_AUDIT_DIR": str(audit_dir), "CONSUMER_AUDIT_WORKER": worker_id,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "consumer", "run", "--config", str(config), "--worker-id", worker_id,
                                          "--processor", "consumer_support:AuditProcessor", *extra],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class DynaliteProcess:
    """A real DynamoDB-API server (the npm package dynalite, installed by setup.sh) on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "DynaliteProcess":
        binary = ROOT / "tests" / "js" / "node_modules" / ".bin" / "dynalite"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} missing: run EDGE_SETUP_TEST_TOOLS=1 scripts/setup.sh")
        self.proc = subprocess.Popen(["node", str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--createTableMs", "0",
                                      "--deleteTableMs", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=30.0, proc=self.proc)  # node starts slowly on a loaded box
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
