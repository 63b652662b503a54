"""Log source: follow files matching globs, one record per line, resuming exactly where it stopped.

Rules, in the order a newcomer asks about them:

- **Identity and checkpoints.** A file is known by device + inode; its checkpoint (key
  ``logs/<source>/<dev>:<ino>``) holds the offset after the last line handed to the spool and a hash
  of the file's first bytes (up to ``HEAD_BYTES``), so a reused inode is recognised as a new file.
  The checkpoint is written in the same spool transaction as the lines it covers: after a crash
  the agent resumes with no line lost and none repeated. Checkpoints belong to the source's
  ``name``: renaming a source makes it start over.
- **Where reading starts.** A file with a checkpoint resumes there. On the source's very first run
  files that already exist start at ``start_at`` (``"beginning"`` or ``"end"``); any file found
  later (created, rotated in, or appeared while the agent was down) is read from its beginning.
- **Rotation by rename** (``app.log`` → ``app.log.1``, new ``app.log``): the open file is drained to
  its end, then closed once it has not grown for ``rotate_wait`` seconds; the new file is read
  from the start. Lines keep the partition key of the path the file was found at.
- **Rotation by copytruncate**: a file that shrinks (or whose first bytes change) is read again
  from offset 0. If the glob also matches the copy (``app.log*``), the copy is recognised by its
  first bytes and read from the truncated file's checkpoint, so lines written just before the
  truncation are taken from the copy, once. If the copy is not matched, lines written between the
  last poll and the truncation are lost (that race is inherent to copytruncate).
- **Long lines** are cut at ``max_line_bytes`` and marked ``attrs = {"truncated": true,
  "original_bytes": n}``; the rest of the line is skipped without being held in memory.
- **A last line without newline** is held until its newline arrives; if the file is rotated away
  or deleted instead, it is emitted after ``rotate_wait`` with ``attrs = {"partial": true}``.
- **Blank lines** are skipped (counted as ``empty`` rejects); a trailing ``\\r`` is removed.
- **Deleted files** are drained through the open descriptor, then closed.
- **While the agent is down**, a file renamed to a name ``paths`` does not match is not read
  further, so include the rotated names (``app.log*``; compressed ones are in ``exclude``).

Record data: the line's bytes as written (not re-encoded). Partition key: the file path.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.sources.base import (
    MAX_RECORD_BYTES,
    Rejects,
    Source,
    SourceConfig,
    SpoolWriter,
    now_ms,
    partition_key,
    positive,
    run_forever,
)
from edge_agent.spool import NewRecord, Spool

log = logging.getLogger("edge_agent.sources.logs")

DEFAULT_MAX_LINE_BYTES = 256 * 1024
DEFAULT_POLL_INTERVAL = 0.5
DEFAULT_ROTATE_WAIT = 5.0
DEFAULT_EXCLUDE = ("*.gz", "*.bz2", "*.xz", "*.zst", "*.zip", "*.lz4")
#: How many leading bytes identify a file's content (with its inode).
HEAD_BYTES = 1024
#: One read; and the most read from one file before the others get a turn.
CHUNK_BYTES = 256 * 1024
PER_FILE_POLL_BYTES = 8 * 1024 * 1024
#: Most lines (and bytes) committed in one spool append.
BATCH_RECORDS = 1000
BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LogsConfig(SourceConfig):
    """``[[sources.logs]]``: tail log files, one record per line."""

    KIND = "logs"

    #: Kinesis data stream the lines go to.
    stream: str
    #: Glob patterns of files to follow, e.g. ``["/var/log/app/*.log"]``; ``**`` spans directories.
    #: Include rotated names (``app.log*``) to make copytruncate rotation lossless.
    paths: tuple[str, ...]
    #: Unique source name (metrics, logs, checkpoint keys); default ``logs-<index>``.
    name: str = ""
    #: Glob patterns (matched against the file name) to leave alone even when ``paths`` match:
    #: by default compressed rotations, which are not text.
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    #: Where to start in files that exist on the source's first run: ``"beginning"`` or ``"end"``.
    start_at: Literal["beginning", "end"] = "beginning"
    #: Longer lines are cut to this many bytes and marked truncated.
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    #: Seconds between looks at the files (and for new files matching ``paths``).
    poll_interval: float = DEFAULT_POLL_INTERVAL
    #: Seconds a rotated-away or deleted file is kept open after it last grew.
    rotate_wait: float = DEFAULT_ROTATE_WAIT
    #: ``"log"`` or ``"telemetry"``: decides the drop priority when the spool is full.
    kind: Literal["log", "telemetry"] = "log"

    def check(self) -> list[str]:
        problems = super().check()
        problems += positive(self, "max_line_bytes", "poll_interval")
        if not self.paths or not all(self.paths):
            problems.append("paths: at least one non-empty glob pattern is required")
        if self.max_line_bytes > MAX_RECORD_BYTES - 1024:
            problems.append(f"max_line_bytes: at most {MAX_RECORD_BYTES - 1024} (the Kinesis record limit less the key)")
        if self.rotate_wait < 0:
            problems.append("rotate_wait: must be >= 0")
        return problems

    def build(self, spool: Spool, agent_id: str) -> LogsSource:
        return LogsSource(self, spool)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class _Head:
    """The first ``length`` bytes of a file hash to ``digest``."""

    length: int
    digest: str

    def matches(self, fd: int) -> bool:
        return _digest(os.pread(fd, self.length, 0)) == self.digest if self.length else True


@dataclass(frozen=True)
class _Truncation:
    """A file that was truncated after being read to ``offset``: a copy of it resumes there."""

    head: _Head
    offset: int
    at: float


@dataclass
class _Tail:
    """One followed file (an open descriptor, so renames and deletes don't lose it)."""

    dev: int
    ino: int
    path: str  # where it is now
    origin: str  # where it was found: the partition key, stable across a rename
    fd: int
    offset: int  # end of the last line handed to the spool (the checkpoint)
    head: _Head
    read_pos: int = 0  # how far the file has been read (offset + the pending line)
    pending: bytearray = field(default_factory=bytearray)  # the unfinished line, at most max_line_bytes
    pending_total: int = 0  # its full length so far
    pending_cr: bool = False  # its last byte so far is a \r (part of a \r\n ending)
    last_growth: float = field(default_factory=time.monotonic)
    present: bool = True  # matched by the last scan

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


class LogsSource(Source):
    def __init__(self, config: LogsConfig, spool: Spool) -> None:
        self.config = config
        self.name = config.name
        self.spool = spool
        self.rejects = Rejects(self.name, log)
        self.writer = SpoolWriter(spool, self.name, self.rejects)
        # a batch must fit in the spool even when the drop policy can free nothing for it
        self.batch_bytes = max(1, min(BATCH_BYTES, spool.max_bytes // 8))
        self.tails: dict[tuple[int, int], _Tail] = {}
        self.truncations: list[_Truncation] = []
        self.deferred: dict[tuple[int, int], float] = {}  # possible copies, waiting for a truncation
        self._first_run = False
        self._unreadable: set[str] = set()

    def run(self, stop: threading.Event) -> None:
        run_forever(self.name, stop, lambda: self._session(stop), log)

    def _checkpoint_key(self, suffix: str) -> str:
        return f"logs/{self.name}/{suffix}"

    # -- the poll loop -----------------------------------------------------------------------

    def _session(self, stop: threading.Event) -> bool:
        marker = self._checkpoint_key("started")
        self._first_run = self.spool.checkpoint(marker) is None
        try:
            self._scan(stop)
            if self._first_run:
                self.writer.append([], stop, checkpoint=(marker, str(now_ms())))
                self._first_run = False
            while not stop.is_set():
                busy = False
                for tail in list(self.tails.values()):
                    busy |= self._follow(tail, stop)
                self._scan(stop)
                self._close_finished(stop)
                if not busy:
                    stop.wait(self.config.poll_interval)
            return True
        finally:
            for tail in self.tails.values():
                os.close(tail.fd)
            self.tails.clear()

    def _scan(self, stop: threading.Event) -> None:
        """Find files matching the globs; open the new ones at the right offset."""
        seen: set[tuple[int, int]] = set()
        fresh: list[tuple[str, os.stat_result]] = []
        for pattern in self.config.paths:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if any(fnmatch.fnmatch(os.path.basename(path), ex) for ex in self.config.exclude):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in seen:
                    continue
                seen.add(ident)
                tail = self.tails.get(ident)
                if tail is not None:
                    tail.path = path
                else:
                    fresh.append((path, st))
        for ident, tail in self.tails.items():
            tail.present = ident in seen
        # Files with checkpoints first: one truncated while we were away tells a copy where to resume.
        with_cp, without = [], []
        for path, st in fresh:
            fd = self._open(path)
            if fd is None:
                continue
            cp = self._stored(st)
            if cp is None:
                without.append((path, st, fd))
            else:
                with_cp.append((path, st, fd, cp))
        for path, st, fd, cp in with_cp:
            self._start(path, st, fd, self._resume_offset(path, st, fd, cp), stop)
        for path, st, fd in without:
            offset = self._new_file_offset(path, st, fd)
            if offset is None:
                os.close(fd)  # maybe a copy about to be explained by a truncation: next scan
                continue
            self._start(path, st, fd, offset, stop)
        for ident in list(self.deferred):
            if ident not in seen:
                del self.deferred[ident]

    def _open(self, path: str) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if path not in self._unreadable:  # once, not at every poll
                self._unreadable.add(path)
                log.warning("%s: cannot open %s: %s", self.name, path, exc)
            return None
        self._unreadable.discard(path)
        return fd

    def _stored(self, st: os.stat_result) -> dict[str, Any] | None:
        value = self.spool.checkpoint(self._checkpoint_key(f"{st.st_dev}:{st.st_ino}"))
        return json.loads(value) if value else None

    def _resume_offset(self, path: str, st: os.stat_result, fd: int, cp: dict[str, Any]) -> int:
        head = _Head(int(cp["head_len"]), str(cp["head"]))
        offset = int(cp["offset"])
        if head.length <= st.st_size and head.matches(fd) and offset <= st.st_size:
            return offset
        if offset and head.length:
            self.truncations.append(_Truncation(head, offset, time.monotonic()))
        log.info("%s: %s changed while the agent was away (truncated or a reused inode); reading it from the start", self.name, path)
        return 0

    def _new_file_offset(self, path: str, st: os.stat_result, fd: int) -> int | None:
        """Where to start a file that has no checkpoint; None to decide on a later scan."""
        for trunc in reversed(self.truncations):
            if trunc.head.length <= st.st_size and trunc.offset <= st.st_size and trunc.head.matches(fd):
                log.info("%s: %s is the copy of a truncated file; resuming it at %d", self.name, path, trunc.offset)
                self.truncations.remove(trunc)
                return trunc.offset
        ident = (st.st_dev, st.st_ino)
        looks_like_copy = any(
            t.head.length and t.offset and t.head.length <= st.st_size and t.head.matches(fd) for t in self.tails.values()
        )
        if looks_like_copy:
            since = self.deferred.setdefault(ident, time.monotonic())
            if time.monotonic() - since < self.config.rotate_wait:
                return None
        self.deferred.pop(ident, None)
        if self._first_run and self.config.start_at == "end":
            return _last_line_end(fd, st.st_size)
        return 0

    def _start(self, path: str, st: os.stat_result, fd: int, offset: int, stop: threading.Event) -> None:
        tail = _Tail(st.st_dev, st.st_ino, path, path, fd, offset, _head_of(fd, st.st_size), read_pos=offset)
        self.tails[(st.st_dev, st.st_ino)] = tail
        log.info("%s: following %s from offset %d", self.name, path, offset)
        if self._first_run and offset:
            self._commit(tail, [], offset, stop)  # remember "start at end" across a restart

    # -- one file ----------------------------------------------------------------------------

    def _follow(self, tail: _Tail, stop: threading.Event) -> bool:
        """Read what is new in ``tail``; True if there may be more right away."""
        try:
            size = os.fstat(tail.fd).st_size
            if size < tail.read_pos or not tail.head.matches(tail.fd):
                self._truncated(tail, size)
            if tail.head.length < HEAD_BYTES and size > tail.head.length:
                tail.head = _head_of(tail.fd, size)
            budget = PER_FILE_POLL_BYTES
            records: list[NewRecord] = []
            batch_bytes = 0
            while budget > 0 and not stop.is_set():
                chunk = os.pread(tail.fd, min(CHUNK_BYTES, self.batch_bytes), tail.read_pos)
                if not chunk:
                    break
                tail.last_growth = time.monotonic()
                budget -= len(chunk)
                for record in self._lines(tail, chunk):
                    records.append(record)
                    batch_bytes += len(record.data)
                if len(records) >= BATCH_RECORDS or batch_bytes >= self.batch_bytes:
                    self._commit(tail, records, self._line_end(tail), stop)
                    records, batch_bytes = [], 0
            if records or self._line_end(tail) != tail.offset:
                self._commit(tail, records, self._line_end(tail), stop)
            return budget <= 0
        except OSError as exc:
            log.warning("%s: reading %s failed: %s", self.name, tail.path, exc)
            return False

    @staticmethod
    def _line_end(tail: _Tail) -> int:
        return tail.read_pos - tail.pending_total

    def _truncated(self, tail: _Tail, size: int) -> None:
        log.info("%s: %s was truncated (size %d, read to %d); reading it from the start", self.name, tail.path, size, tail.read_pos)
        if tail.offset and tail.head.length:
            self.truncations.append(_Truncation(tail.head, tail.offset, time.monotonic()))
            self.truncations = self.truncations[-16:]
        tail.offset = tail.read_pos = tail.pending_total = 0
        tail.pending.clear()
        tail.pending_cr = False
        tail.head = _head_of(tail.fd, size)

    def _lines(self, tail: _Tail, chunk: bytes) -> list[NewRecord]:
        parts = chunk.split(b"\n")
        tail.read_pos += len(chunk)
        out = []
        limit = self.config.max_line_bytes
        kind, stream, name = self.config.kind, self.config.stream, self.name
        key, ts = partition_key(tail.origin), now_ms()
        blank = 0
        for part in parts[:-1]:
            if tail.pending_total or len(part) > limit:  # the rare paths: a continued or long line
                total = tail.pending_total + len(part)
                ends_cr = part.endswith(b"\r") if part else tail.pending_cr
                if len(tail.pending) < limit:
                    tail.pending += part[: limit - len(tail.pending)]
                line = bytes(tail.pending)
                tail.pending.clear()
                tail.pending_total = 0
                tail.pending_cr = False
                record = self._record(tail, line, total, ends_cr)
                if record is not None:
                    out.append(record)
                continue
            if part.endswith(b"\r"):
                part = part[:-1]
            if part:
                out.append(NewRecord(kind, stream, key, part, name, ts))
            else:
                blank += 1
        if blank:
            self.rejects("empty", f"{blank} blank line(s) in {tail.path}", blank)
        last = parts[-1]
        if len(tail.pending) < limit:
            tail.pending += last[: limit - len(tail.pending)]
        tail.pending_total += len(last)
        if last:
            tail.pending_cr = last.endswith(b"\r")
        return out

    def _record(self, tail: _Tail, line: bytes, total: int, ends_cr: bool, partial: bool = False) -> NewRecord | None:
        if ends_cr:  # a \r\n line ending is not part of the line (nor of original_bytes)
            total -= 1
            line = line[:total]
        if not line:
            self.rejects("empty", f"blank line in {tail.path}")
            return None
        attrs: dict[str, Any] | None = None
        if total > len(line):
            attrs = {"truncated": True, "original_bytes": total}
            self.rejects.log.info("%s: cut a %d-byte line in %s to %d bytes", self.name, total, tail.path, len(line))
        if partial:
            attrs = {**(attrs or {}), "partial": True}
        return NewRecord(self.config.kind, self.config.stream, partition_key(tail.origin), line, self.name, now_ms(), attrs)

    def _commit(self, tail: _Tail, records: list[NewRecord], offset: int, stop: threading.Event) -> None:
        value = json.dumps({"offset": offset, "head_len": tail.head.length, "head": tail.head.digest, "path": tail.path})
        self.writer.append(records, stop, checkpoint=(self._checkpoint_key(tail.key), value))
        tail.offset = offset

    def _close_finished(self, stop: threading.Event) -> None:
        """Close files that were rotated away or deleted and have been quiet for ``rotate_wait``."""
        now = time.monotonic()
        for ident, tail in list(self.tails.items()):
            if tail.present or now - tail.last_growth < self.config.rotate_wait:
                continue
            self._follow(tail, stop)
            if tail.pending_total:
                record = self._record(tail, bytes(tail.pending), tail.pending_total, tail.pending_cr, partial=True)
                end = tail.read_pos
                tail.pending.clear()
                tail.pending_total = 0
                self._commit(tail, [record] if record else [], end, stop)
            log.info("%s: %s is gone (rotated or deleted) and fully read; closing it", self.name, tail.path)
            os.close(tail.fd)
            del self.tails[ident]
        cutoff = now - max(60.0, self.config.rotate_wait * 2)
        self.truncations = [t for t in self.truncations if t.at > cutoff]


def _head_of(fd: int, size: int) -> _Head:
    data = os.pread(fd, min(size, HEAD_BYTES), 0)
    return _Head(len(data), _digest(data))


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none in the last 64 KiB)."""
    start = max(0, size - 65536)
    data = os.pread(fd, size - start, start)
    nl = data.rfind(b"\n")
    return start + nl + 1 if nl >= 0 else (size if start else 0)
