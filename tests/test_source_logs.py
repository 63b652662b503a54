"""Log source on real files: rotation by rename and copytruncate, checkpoints across SIGKILL, long lines."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.sources import SOURCE_TYPES
from edge_agent.sources.logs import LogsConfig
from edge_agent.spool import Spool
from helpers import committed, wait_until

ROOT = Path(__file__).resolve().parent.parent
FAST = {"poll_interval": 0.05, "rotate_wait": 0.3}


def lines(spool: Spool) -> list[bytes]:
    return [r.data for r in spool.read("records", limit=100_000, max_bytes=1 << 30)]


def append(path: Path, *text: str) -> None:
    with open(path, "a") as f:
        for t in text:
            f.write(t + "\n")


class Runner:
    """Starts sources in threads over one spool; ``restart`` stops and starts them again."""

    def __init__(self, spool_path: Path) -> None:
        self.spool = Spool(spool_path)
        self.running: list[tuple[threading.Thread, threading.Event]] = []

    def start(self, **settings: object) -> LogsConfig:
        config = LogsConfig.from_dict({"stream": "logs", "name": "logs-test", **FAST, **settings}, "sources.logs[0]")
        stop = threading.Event()
        thread = threading.Thread(target=config.build(self.spool, "agent").run, args=(stop,), daemon=True)
        thread.start()
        self.running.append((thread, stop))
        return config

    def stop(self) -> None:
        for thread, stop in self.running:
            stop.set()
            thread.join(10)
            assert not thread.is_alive()
        self.running.clear()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path / "spool.db")
    yield r
    r.stop()
    r.spool.close()


def test_rename_rotation_and_new_files(runner: Runner, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "one", "two")
    # rotate_wait: the renamed file must stay open while the three files' commits go through
    runner.start(paths=[str(tmp_path / "*.log")], rotate_wait=2.0)
    wait_until(lambda: len(lines(runner.spool)) == 2)
    with open(log, "a") as writer:  # the application keeps its descriptor across the rename
        writer.write("three\n")
        writer.flush()
        log.rename(tmp_path / "app.log.1")
        writer.write("four (after rename)\n")
        writer.flush()
        append(log, "five (new file)")
        append(tmp_path / "other.log", "other-1")
        wait_until(lambda: len(lines(runner.spool)) == 6)
        writer.write("six (late, old file)\n")
    wait_until(lambda: len(lines(runner.spool)) == 7)
    records = runner.spool.read("records", limit=100)
    by_key: dict[str, list[bytes]] = {}
    for r in records:
        by_key.setdefault(r.partition_key, []).append(r.data)
    assert set(by_key) == {str(log), str(tmp_path / "other.log")}  # a renamed file keeps the key it was found under
    assert by_key[str(tmp_path / "other.log")] == [b"other-1"]
    old_file = [d for d in by_key[str(log)] if d != b"five (new file)"]
    assert old_file == [b"one", b"two", b"three", b"four (after rename)", b"six (late, old file)"]
    assert sorted(lines(runner.spool)) == sorted(set(lines(runner.spool)))  # no duplicates


def test_double_star_finds_files_in_new_subdirectories(runner: Runner, tmp_path: Path) -> None:
    runner.start(paths=[str(tmp_path / "**" / "*.log")])
    time.sleep(0.2)
    (tmp_path / "svc" / "a").mkdir(parents=True)
    append(tmp_path / "svc" / "a" / "x.log", "deep")
    append(tmp_path / "top.log", "top")
    wait_until(lambda: sorted(lines(runner.spool)) == [b"deep", b"top"])


def test_copytruncate_with_the_copy_matched_is_exactly_once(runner: Runner, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, *[f"line-{i:03d}" for i in range(100)])
    runner.start(paths=[str(tmp_path / "app.log*")], poll_interval=0.2, rotate_wait=2.0)
    wait_until(lambda: len(lines(runner.spool)) == 100)
    # lines the source has not seen yet, then logrotate's copytruncate, all within one poll
    append(log, *[f"line-{i:03d}" for i in range(100, 150)])
    shutil.copyfile(log, tmp_path / "app.log.1")
    with open(log, "r+") as f:
        f.truncate(0)
    append(log, *[f"line-{i:03d}" for i in range(150, 160)])
    wait_until(lambda: len(lines(runner.spool)) >= 160)
    time.sleep(0.5)
    assert sorted(lines(runner.spool)) == [f"line-{i:03d}".encode() for i in range(160)]


def test_compressed_rotations_are_excluded(runner: Runner, tmp_path: Path) -> None:
    import gzip

    append(tmp_path / "app.log", "plain")
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(b"old rotated\n"))
    runner.start(paths=[str(tmp_path / "app.log*")])
    wait_until(lambda: len(lines(runner.spool)) == 1)
    time.sleep(0.3)
    assert lines(runner.spool) == [b"plain"]


def test_copytruncate_without_the_copy_reads_the_file_again_from_the_start(runner: Runner, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "a-long-first-line-of-the-old-content", "b")
    runner.start(paths=[str(log)])
    wait_until(lambda: len(lines(runner.spool)) == 2)
    with open(log, "r+") as f:
        f.truncate(0)
    wait_until(lambda: os.path.getsize(log) == 0)
    time.sleep(0.2)
    append(log, "after-truncate-1", "after-truncate-2")
    wait_until(lambda: len(lines(runner.spool)) == 4)
    # truncated and refilled past the old size before the next poll: the first bytes differ
    with open(log, "r+") as f:
        f.truncate(0)
        f.write("X" * 100 + "\n")
    wait_until(lambda: len(lines(runner.spool)) == 5)
    assert lines(runner.spool) == [b"a-long-first-line-of-the-old-content", b"b", b"after-truncate-1", b"after-truncate-2", b"X" * 100]


def test_long_line_is_cut_and_marked(runner: Runner, tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    with open(log, "wb") as f:
        f.write(b"before\n" + b"z" * 10_000_000 + b"\nafter\n")
    runner.start(paths=[str(log)], max_line_bytes=100_000)
    wait_until(lambda: len(lines(runner.spool)) == 3)
    before, big, after = runner.spool.read("records", limit=10, max_bytes=1 << 30)
    assert (before.data, after.data) == (b"before", b"after")
    assert big.data == b"z" * 100_000
    assert big.attrs == {"truncated": True, "original_bytes": 10_000_000}


def test_last_line_without_newline_is_held_until_complete_or_rotated(runner: Runner, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"complete\nhalf")
    runner.start(paths=[str(log)])
    wait_until(lambda: len(lines(runner.spool)) == 1)
    time.sleep(0.3)
    assert lines(runner.spool) == [b"complete"]
    with open(log, "ab") as f:
        f.write(b" and the rest\nnever finished")
    wait_until(lambda: len(lines(runner.spool)) == 2)
    assert lines(runner.spool)[1] == b"half and the rest"
    log.unlink()  # deleted under the source: the held line is emitted once the file is given up
    wait_until(lambda: len(lines(runner.spool)) == 3)
    last = runner.spool.read("records", limit=10)[-1]
    assert last.data == b"never finished" and last.attrs == {"partial": True}


def test_start_at_end_skips_existing_content_but_not_new_files(runner: Runner, tmp_path: Path) -> None:
    old = tmp_path / "old.log"
    append(old, "history-1", "history-2")
    with open(old, "a") as f:
        f.write("in progr")
    runner.start(paths=[str(tmp_path / "*.log")], start_at="end")
    time.sleep(0.3)
    with open(old, "a") as f:
        f.write("ess\n")
    append(tmp_path / "new.log", "new-1")
    wait_until(lambda: len(lines(runner.spool)) == 2)
    runner.stop()
    append(old, "while-away")
    runner.start(paths=[str(tmp_path / "*.log")], start_at="end")  # not the first run: resume
    wait_until(lambda: len(lines(runner.spool)) == 3)
    time.sleep(0.3)
    assert sorted(lines(runner.spool)) == sorted([b"in progress", b"new-1", b"while-away"])


def test_changes_while_the_agent_is_away(runner: Runner, tmp_path: Path) -> None:
    """Stopped, then: one file rewritten in place (same inode, new content), one rotated by
    copytruncate with its copy matched. On restart neither loses nor repeats a line."""
    rewritten, rotated = tmp_path / "rewritten.log", tmp_path / "rotated.log"
    append(rewritten, "old-1", "old-2")
    append(rotated, "r-1", "r-2")
    runner.start(paths=[str(tmp_path / "*.log*")])
    wait_until(lambda: len(lines(runner.spool)) == 4)
    runner.stop()
    rewritten.write_text("brand-new-content-1\nbrand-new-content-2\n")  # longer than what was read
    append(rotated, "r-3")  # written, never read before the rotation
    shutil.copyfile(rotated, tmp_path / "rotated.log.1")
    rotated.write_text("")
    append(rotated, "r-4")
    runner.start(paths=[str(tmp_path / "*.log*")])
    wait_until(lambda: len(lines(runner.spool)) == 8)
    time.sleep(0.3)
    assert sorted(lines(runner.spool)) == sorted(
        [b"old-1", b"old-2", b"r-1", b"r-2", b"brand-new-content-1", b"brand-new-content-2", b"r-3", b"r-4"]
    )


def test_a_full_spool_holds_the_source_back_without_loss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing may be dropped (empty drop order) and the spool is full: the source waits, its
    offset stays put, and it carries on once the forwarder frees room."""
    log = tmp_path / "app.log"
    expected = [f"line-{i:05d}-" + "x" * 40 for i in range(3000)]  # ~150 KB
    append(log, *expected)
    # A short commit interval: the source must outrun the 0.1 s drain below to fill the spool.
    spool = Spool(tmp_path / "spool.db", max_bytes=64 * 1024, drop_order=(), commit_interval=0.005)
    config = LogsConfig.from_dict({"stream": "logs", "paths": [str(log)], **FAST}, "sources.logs[0]")
    stop = threading.Event()
    thread = threading.Thread(target=config.build(spool, "agent").run, args=(stop,), daemon=True)
    thread.start()
    delivered: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(delivered) < len(expected) and time.monotonic() < deadline:
            wait_until(lambda: committed(spool, "records") > 0)
            time.sleep(0.1)  # let the source run into the cap
            assert spool.stats().bytes <= 64 * 1024
            batch = spool.read("records", limit=10_000)
            delivered += [r.data for r in batch]
            spool.ack(r.seq for r in batch)  # what a forwarder does once the gateway took them
    finally:
        stop.set()
        thread.join(10)
        spool.close()
    assert delivered == [e.encode() for e in expected]
    assert any("spool full, waiting" in r.getMessage() for r in caplog.records)  # it really was held back


AGENT = """
import sys, threading, signal
from edge_agent.sources.logs import LogsConfig
from edge_agent.spool import Spool
spool = Spool(sys.argv[1])
config = LogsConfig.from_dict({"stream": "logs", "paths": [sys.argv[2]], "poll_interval": 0.02, "rotate_wait": 0.5,
                               "name": "logs-kill"}, "sources.logs[0]")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
config.build(spool, "a").run(stop)
spool.close()
"""


def spooled(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [bytes(d) for (d,) in db.execute("SELECT data FROM records ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def test_sigkill_and_restart_resume_from_checkpoints_exactly_once(tmp_path: Path) -> None:
    """A writer keeps logging (and rotating) while the agent is SIGKILLed twice: every line lands once."""
    spool_path = tmp_path / "spool.db"
    log = tmp_path / "app.log"
    log.touch()
    done = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        f = open(log, "a")
        while not done.is_set():
            for _ in range(20):
                line = f"line-{i:06d} " + "x" * (i % 50)
                f.write(line + "\n")
                written.append(line)
                i += 1
            f.flush()
            if i % 2000 == 0:  # rotate by rename now and then
                f.close()
                log.rename(tmp_path / f"app.log.{i}")
                f = open(log, "a")
            time.sleep(0.002)
        f.close()

    def agent() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", AGENT, str(spool_path), str(tmp_path / "app.log*")], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    proc = agent()
    try:
        for _ in range(2):
            wait_until(lambda: len(spooled(spool_path)) > len(written) // 3 and len(written) > 1000, timeout=30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            time.sleep(0.2)
            proc = agent()
        time.sleep(0.5)
        done.set()
        thread.join(10)
        wait_until(lambda: len(spooled(spool_path)) >= len(written), timeout=30)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
    got = [d.decode() for d in spooled(spool_path)]
    assert list(tmp_path.glob("app.log.*"))  # rotation happened during the run
    assert len(got) == len(written)
    assert sorted(got) == sorted(written)


def test_config_rules() -> None:
    assert SOURCE_TYPES["logs"] is LogsConfig
    config = LogsConfig.from_dict({"stream": "s", "paths": "/var/log/*.log"}, "sources.logs[2]")
    assert (config.name, config.paths, config.start_at) == ("logs-2", ("/var/log/*.log",), "beginning")
    with pytest.raises(ConfigError) as err:
        LogsConfig.from_dict({"stream": "s", "paths": ["/x"], "start_at": "middle", "poll_interval": "fast"}, "sources.logs[0]")
    assert "sources.logs[0].start_at: expected 'beginning' or 'end'" in str(err.value)
    assert "sources.logs[0].poll_interval: expected a number" in str(err.value)
    with pytest.raises(ConfigError, match="max_line_bytes: at most"):
        LogsConfig.from_dict({"stream": "s", "paths": ["/x"], "max_line_bytes": 5_000_000}, "sources.logs[0]")
