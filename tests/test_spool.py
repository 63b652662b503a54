"""The spool: durable group commit, paging, acks, the size-cap drop policy, locking, recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_agent.spool import NewRecord, RecordTooLarge, RingEntry, Spool, SpoolFull, SpoolLocked


def rec(kind: str = "telemetry", data: bytes = b"x", key: str = "k", stream: str = "s") -> NewRecord:
    return NewRecord(kind=kind, stream=stream, partition_key=key, data=data, source=f"{kind}-0")


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        seqs = spool.append([rec(data=f"r{i}".encode()) for i in range(10)])
        video = spool.append([rec(kind="video", data=b"frag")])
        assert seqs == sorted(seqs) and len(set(seqs)) == 10
        page = spool.read("records", limit=4)
        assert [r.data for r in page] == [b"r0", b"r1", b"r2", b"r3"]
        page2 = spool.read("records", after_seq=page[-1].seq, limit=100)
        assert [r.data for r in page2] == [f"r{i}".encode() for i in range(4, 10)]
        assert [r.seq for r in spool.read("media")] == video
        spool.ack(seqs[:5])
        assert [r.data for r in spool.read("records")] == [f"r{i}".encode() for i in range(5, 10)]
        stats = spool.stats()
        assert stats.records == {"records": 5, "media": 1}
        assert stats.bytes == sum(len(f"r{i}") for i in range(5, 10)) + 4


def test_sequence_numbers_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        seqs = spool.append([rec(), rec()])
        spool.ack(seqs)
    with Spool(path) as spool:
        again = spool.append([rec()])
    assert again[0] > max(seqs)


def test_ring_entries_commit_with_records_and_overwrite_their_slot(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        for ordinal in range(1, 11):  # a ring of 4 slots: the last 4 entries remain
            spool.append([rec(data=b"m%d" % ordinal)], ring=[RingEntry("r", ordinal % 4, ordinal, -ordinal << 40)])
        spool.append([], ring=[RingEntry("other", 0, 1, 7)])
    with Spool(path) as spool:
        assert [(e.slot, e.ordinal, e.value) for e in spool.ring("r")] == [(3, 7, -7 << 40), (0, 8, -8 << 40), (1, 9, -9 << 40), (2, 10, -10 << 40)]
        assert spool.ring("other") == [RingEntry("other", 0, 1, 7)]
        assert spool.ring("missing") == []


def test_commits_are_grouped_within_the_commit_interval(tmp_path: Path) -> None:
    """Appends from many threads within one interval share one transaction (one fsync)."""
    with Spool(tmp_path / "spool.db", commit_interval=0.2) as spool:
        commits = []
        original = spool._commit_group
        spool._commit_group = lambda group, *more: (commits.append(len(group)), original(group, *more))  # type: ignore[method-assign]
        threads = [threading.Thread(target=spool.append, args=([rec()],)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(commits) == 8 and len(commits) <= 2
        assert spool.stats().records["records"] == 8


def test_submit_returns_at_once_and_an_urgent_submit_commits_the_queue(tmp_path: Path) -> None:
    """Submitted appends wait for the interval together; an urgent one commits them all now, in order."""
    with Spool(tmp_path / "spool.db", commit_interval=30.0) as spool:
        waiting = spool.submit([rec(data=b"a")])
        time.sleep(0.05)
        assert not waiting.done()
        started = time.monotonic()
        now = spool.submit([rec(data=b"b")], urgent=True)
        assert now.result(timeout=5)[0] > waiting.result(timeout=0)[0]
        assert time.monotonic() - started < 5
        assert [r.data for r in spool.read("records")] == [b"a", b"b"]
        assert spool.submit([]).result(timeout=0) == []
        waiting = spool.submit([rec(data=b"c")])
        spool.submit([], checkpoint=("k", "v")).result(timeout=5)  # bookkeeping alone commits at once
        assert waiting.result(timeout=0) and spool.checkpoint("k") == "v"


def test_read_pages_by_bytes(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.append([rec(data=b"a" * 1000) for _ in range(10)])
        assert len(spool.read("records", max_bytes=3500)) == 3
        assert len(spool.read("records", max_bytes=10)) == 1  # never an empty page while records wait


def test_checkpoint_commits_with_records(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        spool.append([rec(kind="log", data=b"line")], checkpoint=("logs/app.log", "42"))
        assert spool.checkpoint("logs/app.log") == "42"
        assert spool.checkpoint("missing") is None
    with Spool(path) as spool:
        assert spool.checkpoint("logs/app.log") == "42"


def test_size_cap_drops_video_then_logs_then_telemetry(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", max_bytes=1000) as spool:
        spool.append([rec("telemetry", b"t" * 100) for _ in range(3)])
        spool.append([rec("log", b"l" * 100) for _ in range(3)])
        spool.append([rec("video", b"v" * 300)])
        assert spool.stats().bytes == 900
        spool.append([rec("telemetry", b"n" * 250)])  # needs 150 more: the video goes first
        assert spool.stats().dropped == {"video": 1}
        assert spool.read("media") == []
        spool.append([rec("telemetry", b"m" * 400)])  # 850 + 400: the three logs go
        assert spool.stats().dropped == {"video": 1, "log": 3}
        spool.append([rec("telemetry", b"o" * 200)])  # 950 + 200: then the oldest telemetry
        stats = spool.stats()
        assert stats.dropped == {"video": 1, "log": 3, "telemetry": 2}
        assert stats.bytes == 950
        kept = [r.data[:1] for r in spool.read("records")]
        assert kept == [b"t", b"n", b"m", b"o"]  # oldest telemetry dropped, newest kept


def test_drops_survive_restart_and_policy_can_refuse(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, max_bytes=200, drop_order=("video",)) as spool:
        spool.append([rec("video", b"v" * 150)])
        spool.append([rec("telemetry", b"t" * 150)])
        with pytest.raises(SpoolFull):
            spool.append([rec("telemetry", b"u" * 100)])
        with pytest.raises(RecordTooLarge):
            spool.append([rec("telemetry", b"w" * 201)])
        assert [r.data[:1] for r in spool.read("records")] == [b"t"]
    with Spool(path, max_bytes=200) as spool:
        assert spool.stats().dropped == {"video": 1}


def test_concurrent_appends_group_commit(tmp_path: Path) -> None:
    # 200 appends in a row per thread: a short commit interval keeps the test quick
    with Spool(tmp_path / "spool.db", commit_interval=0.005) as spool:
        results: list[list[int]] = []

        def producer(n: int) -> None:
            for i in range(200):
                results.append(spool.append([rec(key=str(n), data=f"{n}-{i}".encode())]))

        threads = [threading.Thread(target=producer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        all_seqs = [s for r in results for s in r]
        assert len(all_seqs) == len(set(all_seqs)) == 1600
        got = spool.read("records", limit=5000)
        assert len(got) == 1600
        for n in range(8):  # per-producer order kept
            assert [r.data for r in got if r.partition_key == str(n)] == [f"{n}-{i}".encode() for i in range(200)]


def test_wait_wakes_on_append(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        assert spool.wait("records", 0, timeout=0.05) is False
        threading.Timer(0.1, lambda: spool.append([rec()])).start()
        start = time.monotonic()
        assert spool.wait("records", 0, timeout=5) is True
        assert time.monotonic() - start < 2


def test_second_process_cannot_open(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path):
        code = f"from edge_agent.spool import Spool, SpoolLocked\ntry:\n    Spool({str(path)!r})\nexcept SpoolLocked:\n    raise SystemExit(3)\n"
        assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    with pytest.raises(SpoolLocked):
        with Spool(path):
            Spool(path)


WRITER = """
import sys
from edge_agent.spool import NewRecord, Spool
spool = Spool(sys.argv[1], commit_interval=0.01)
i = 0
while True:
    seqs = spool.append([NewRecord("telemetry", "s", "k", f"{i}-{j}".encode(), "w") for j in range(50)])
    print(seqs[-1], flush=True)
    i += 1
"""


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked = []
    deadline = time.monotonic() + 20
    while len(acked) < 40 and time.monotonic() < deadline:
        acked.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) == 40
    with Spool(path) as spool:
        seqs = {r.seq for r in spool.read("records", limit=1_000_000, max_bytes=1 << 30)}
    assert all(s in seqs for s in acked)
    assert max(seqs) >= acked[-1]


def test_damaged_spool_is_set_aside_and_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, sync="normal") as spool:
        spool.append([rec(data=os.urandom(200)) for _ in range(2000)])
    with open(path, "r+b") as f:  # tear a page in the middle of the file
        f.seek(os.path.getsize(path) // 2)
        f.write(os.urandom(4096))
    with Spool(path) as spool:
        kept = spool.read("records", limit=5000, max_bytes=1 << 30)
        assert 0 < len(kept) < 2000
        assert spool.append([rec()])  # and it works
    assert list(tmp_path.glob("spool.db.corrupt-*"))


def test_garbage_file_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    with Spool(path) as spool:
        assert spool.read("records") == []
        spool.append([rec()])
        assert len(spool.read("records")) == 1
