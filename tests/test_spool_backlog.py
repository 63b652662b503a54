"""A week offline: a spool holding a large backlog opens in bounded time and memory and pages through."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from edge_agent.spool import Spool

BACKLOG = 300_000

PROBE = """
import json, resource, sys, time
from edge_agent.spool import Spool
t0 = time.monotonic()
spool = Spool(sys.argv[1], max_bytes=1 << 34)
opened = time.monotonic() - t0
rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seen = last = 0
while True:
    page = spool.read("records", after_seq=last, limit=500)
    if not page:
        break
    seen += len(page)
    last = page[-1].seq
rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"opened_s": opened, "records": spool.stats().records["records"], "seen": seen,
                  "rss_open_kb": rss_open, "rss_end_kb": rss_end, "paged_s": time.monotonic() - t0 - opened}))
spool.close()
"""


def test_large_backlog_opens_fast_and_pages_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    Spool(path).close()  # schema: a fresh spool writes its first segment, records_0
    db = sqlite3.connect(path)
    payload = os.urandom(100)
    db.execute("INSERT INTO routes(id, kind, stream, source) VALUES (1, 'telemetry', 's', 'mqtt-0')")
    db.executemany(
        "INSERT INTO records_0(lane, route, partition_key, timestamp_ms, size, attrs, data) VALUES (?,?,?,?,?,?,?)",
        (("records", 1, f"k{i % 50}", i, 100, None, payload) for i in range(BACKLOG)),
    )
    db.commit()
    db.close()
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True).stdout
    figures = json.loads(out)
    print(figures)
    assert figures["records"] == figures["seen"] == BACKLOG
    assert figures["opened_s"] < 5
    # ~40 MB of payload went through; paging must not keep it: memory grows by well under that.
    assert figures["rss_end_kb"] - figures["rss_open_kb"] < 20_000
