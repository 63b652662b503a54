"""The spool's segments (acknowledged records leave a whole table at a time) and the migration of
spool files written by older versions."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest

from edge_agent import spool as spool_module
from edge_agent.spool import NewRecord, RingEntry, Spool
from helpers import wait_until


def rec(data: bytes = b"x", kind: str = "telemetry") -> NewRecord:
    return NewRecord(kind=kind, stream="s", partition_key="k", data=data, source="test-0")


def rows_in(path: Path, table: str) -> int:
    """Rows of one table, read straight from the file (as a second process would)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def test_acknowledged_segments_are_emptied_while_newer_records_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_SECONDS", 0.0)  # every commit seals the active segment if it can
    path = tmp_path / "spool.db"
    with Spool(path, commit_interval=0.005) as spool:
        first = spool.append([rec(b"a%d" % i) for i in range(5)])  # segment 0
        second = spool.append([rec(b"b%d" % i) for i in range(5)])  # sealed 0: segment 1
        assert rows_in(path, "records_0") == 5 and rows_in(path, "records_1") == 5
        spool.ack(second[:4])  # not all of segment 1, none of segment 0: nothing can go
        spool.ack([10**9])  # an unknown seq counts for nothing
        spool.ack(first)
        wait_until(lambda: rows_in(path, "records_0") == 0, what="the acknowledged segment emptied")
        assert rows_in(path, "records_1") == 5  # four acknowledged rows wait for their last one
        assert [r.data for r in spool.read("records")] == [b"b4"]
        assert spool.stats().records["records"] == 1
        third = spool.append([rec(b"c")])  # into the emptied segment 0
        assert rows_in(path, "records_0") == 1 and third[0] > second[-1]
    assert rows_in(path, "records_1") == 1  # closing deleted the acknowledged rows
    with Spool(path) as spool:  # the newer segment is found again; order across segments holds
        assert [r.data for r in spool.read("records")] == [b"b4", b"c"]
        assert spool.append([rec(b"d")])[0] > third[0]
        assert [r.data for r in spool.read("records")][-2:] == [b"c", b"d"]


def test_acknowledged_records_are_deleted_one_by_one_when_no_segment_empties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record never acknowledged (a stalled lane) keeps its segment: the acknowledged records
    around it are deleted one by one after SEGMENT_STALE_SECONDS instead."""
    monkeypatch.setattr(spool_module, "SEGMENT_STALE_SECONDS", 0.0)
    path = tmp_path / "spool.db"
    with Spool(path, commit_interval=0.005) as spool:
        video = spool.append([rec(b"frag", kind="video")])
        seqs = spool.append([rec(b"r%d" % i) for i in range(20)])
        spool.ack(seqs)
        wait_until(lambda: rows_in(path, "records") == 1, what="acknowledged rows deleted")
        assert [r.seq for r in spool.read("media")] == video


def test_acks_that_came_while_others_waited_leave_without_another_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an ack that finds none waiting wakes the writer (not one wake per forwarder request);
    acks that come while others wait leave with the writer's next look, with no append to wake it."""
    monkeypatch.setattr(spool_module, "ACK_FLUSH_SECONDS", 0.05)
    path = tmp_path / "spool.db"
    with Spool(path, commit_interval=0.005) as spool:
        seqs = spool.append([rec(b"r%d" % i) for i in range(10)])
        releases: list[bool] = []
        commit_group = spool._commit_group
        spool._commit_group = lambda group, flush=False, final=False: (releases.append(flush), commit_group(group, flush, final))  # type: ignore[method-assign]
        spool.ack(seqs[:5])
        wait_until(lambda: any(releases), what="a first look at the acknowledged records")
        assert rows_in(path, "records") == 10  # half the segment is not acknowledged: nothing left
        spool.ack(seqs[5:])  # others wait: no wake-up
        wait_until(lambda: rows_in(path, "records") == 0, what="the later acks released too")


def test_close_deletes_every_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, commit_interval=0.005) as spool:
        seqs = spool.append([rec(b"r%d" % i) for i in range(10)])
        spool.ack(seqs[:3])
    assert rows_in(path, "records") == 7


LEGACY_SCHEMA = """
CREATE TABLE records (
    seq INTEGER PRIMARY KEY {autoincrement}, lane TEXT NOT NULL, kind TEXT NOT NULL, stream TEXT NOT NULL,
    partition_key TEXT NOT NULL, source TEXT NOT NULL, timestamp_ms INTEGER NOT NULL, size INTEGER NOT NULL,
    attrs TEXT, data BLOB NOT NULL
);
CREATE INDEX records_media ON records(seq) WHERE lane = 'media';
CREATE TABLE checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE rings (name TEXT NOT NULL, slot INTEGER NOT NULL, entry BLOB NOT NULL, UNIQUE (name, slot));
"""


@pytest.mark.parametrize("autoincrement", ["", "AUTOINCREMENT"])
def test_a_spool_written_by_an_older_version_opens_and_moves_to_segments(tmp_path: Path, autoincrement: str) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.executescript(LEGACY_SCHEMA.format(autoincrement=autoincrement))
    db.executemany("INSERT INTO records VALUES (?, 'records', 'telemetry', 's', 'k', 'mqtt-0', 1, 2, NULL, ?)",
                   [(seq, b"o%d" % seq) for seq in (5, 6, 7)])
    db.execute("INSERT INTO records VALUES (8, 'media', 'video', 'cam', 'k', 'camera-0', 1, 4, NULL, x'00010203')")
    if autoincrement:
        db.execute("UPDATE sqlite_sequence SET seq = 100 WHERE name = 'records'")  # seqs 9-100 were used and deleted
    else:
        db.execute("INSERT INTO counters VALUES ('seq.reserved', 200)")
    db.execute("INSERT INTO checkpoints VALUES ('logs-0:1:2', '{\"offset\": 42}')")
    db.executemany("INSERT INTO rings VALUES ('mqtt-recent:c', ?, ?)", [(slot, struct.pack(">qq", 10 + slot, -slot)) for slot in range(3)])
    db.commit()
    db.close()
    floor = 100 if autoincrement else 200
    with Spool(path, commit_interval=0.005) as spool:
        old = spool.read("records")
        assert [r.data for r in old] == [b"o5", b"o6", b"o7"]
        assert [r.seq for r in spool.read("media")] == [8]
        assert spool.checkpoint("logs-0:1:2") == '{"offset": 42}'
        assert [(e.slot, e.ordinal, e.value) for e in spool.ring("mqtt-recent:c")] == [(0, 10, 0), (1, 11, -1), (2, 12, -2)]
        new = spool.append([rec(b"n")])
        assert new[0] > floor
        spool.ack([r.seq for r in old] + [8] + new)
    with Spool(path, commit_interval=0.005) as spool:
        assert spool.read("records") == [] and spool.read("media") == []
        assert spool.append([rec()])[0] > new[0]
        assert [e.ordinal for e in spool.ring("mqtt-recent:c")] == [10, 11, 12]
    db = sqlite3.connect(path)
    tables = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    db.close()
    assert "rings" not in tables and "records" not in tables
    assert not any("AUTOINCREMENT" in (sql or "").upper() for sql in tables.values())  # made anew once emptied


def test_segments_written_before_routes_are_converted_once(tmp_path: Path) -> None:
    """Segments that kept kind, stream and source in every row (this session's first segments)."""
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    for name in ("records_0", "records_1"):
        db.execute(LEGACY_SCHEMA.split(";")[0].replace("records", name, 1).format(autoincrement=""))
    db.execute("CREATE VIEW records AS SELECT * FROM records_0 UNION ALL SELECT * FROM records_1")
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO records_0 VALUES (3, 'records', 'log', 'logs', 'k', 'logs-0', 1, 2, NULL, x'6131')")
    db.execute("INSERT INTO records_1 VALUES (4, 'records', 'telemetry', 's', 'k', 'mqtt-0', 1, 2, '{\"qos\": 0}', x'6132')")
    db.commit()
    db.close()
    with Spool(path, commit_interval=0.005) as spool:
        got = spool.read("records")
        assert [(r.seq, r.kind, r.stream, r.source, r.data, r.attrs) for r in got] == [
            (3, "log", "logs", "logs-0", b"a1", {}), (4, "telemetry", "s", "mqtt-0", b"a2", {"qos": 0})]
        assert spool.append([rec(b"n")])[0] > 4
        assert [r.data for r in spool.read("records")] == [b"a1", b"a2", b"n"]
    db = sqlite3.connect(path)
    assert {row[1] for row in db.execute("PRAGMA table_info(records_1)")} >= {"route"}
    db.close()
