"""Idle inputs (``idle_timeout_seconds``) on a real gateway process, fed by boto3.

A sensor that stops sending leaves its last event-time window open (the watermark moves only with
new records); with an idle timeout the input's watermark follows the gateway's clock once no record
came for that long, so the window comes out. The gateway is SIGKILLed before and after the idle
close: the window still comes out exactly once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import GatewayProcess, wait_until
from test_analytics import app_summary, put, rows, stamp

IDLE_TIMEOUT = 1.0

CONFIG = f"""
[[analytics.applications]]
name = "sensors"
poll_seconds = 0.05
  [[analytics.applications.inputs]]
  stream = "idle-in"
  columns = ["k VARCHAR", "ts TIMESTAMP"]
  event_time = "ts"
  allowed_lateness_seconds = 0.5
  idle_timeout_seconds = {IDLE_TIMEOUT}
  [[analytics.applications.queries]]
  name = "counts"
  output_stream = "idle-counts"
  sql = '''SELECT window_start, k, count(*) AS n
           FROM TABLE(TUMBLE(TABLE idle_in, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY ALL'''
  [[analytics.applications.queries]]
  name = "visits"
  output_stream = "idle-sessions"
  sql = '''SELECT window_start, window_end, k, count(*) AS n
           FROM TABLE(SESSION(TABLE idle_in PARTITION BY k, DESCRIPTOR(ts), INTERVAL '2' SECONDS)) GROUP BY ALL'''
"""


@pytest.fixture()
def gw(tmp_path: Path) -> Iterator[GatewayProcess]:
    (tmp_path / "gateway.toml").write_text(CONFIG)
    gateway = GatewayProcess(tmp_path / "data", "--config", str(tmp_path / "gateway.toml"), "--no-limits").start()
    kinesis = gateway.client()
    for stream in ("idle-in", "idle-counts", "idle-sessions"):
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    yield gateway
    gateway.kill()


def readings(k: str, times: list[float]) -> list[bytes]:
    return [json.dumps({"k": k, "ts": t}).encode() for t in times]


def test_a_stopped_sensor_s_last_window_comes_out_once_across_sigkills(gw: GatewayProcess) -> None:
    kinesis = gw.client()
    # a sensor sends 5 readings, all in one 1 s window 10 s ago, then stops
    start = math.floor(time.time()) - 10
    put(kinesis, "idle-in", readings("a", [start + 0.1 * i for i in range(5)]))
    killed = time.monotonic()
    gw.restart()  # SIGKILL before the idle close: the restarted application counts idleness anew
    wait_until(lambda: rows(kinesis, "idle-counts"), timeout=15, what="the stopped sensor's last window")
    assert time.monotonic() - killed >= IDLE_TIMEOUT, "the window closed before the input was idle"
    summary = app_summary(gw, "sensors")
    assert summary["Inputs"][0]["Idle"] is True
    assert summary["Late"] == 0

    gw.restart()  # SIGKILL right after the idle close
    wait_until(lambda: app_summary(gw, "sensors")["Inputs"][0]["Idle"], timeout=15, what="idle again after the restart")
    # the sensor resumes on the gateway's clock: its readings are on time, not late; once its
    # window is in the output stream, anything the restart emitted again would be there before it
    now = time.time()
    put(kinesis, "idle-in", readings("b", [now, now]))
    wait_until(lambda: any(r["k"] == "b" for r in rows(kinesis, "idle-counts")), timeout=15, what="the resumed sensor's window")
    counts = rows(kinesis, "idle-counts")
    assert counts == [{"window_start": stamp(start), "k": "a", "n": 5}, {"window_start": stamp(math.floor(now)), "k": "b", "n": 2}]
    wait_until(lambda: rows(kinesis, "idle-sessions"), timeout=15, what="the stopped sensor's session")
    sessions: list[dict[str, Any]] = rows(kinesis, "idle-sessions")
    assert sessions[0] == {"window_start": stamp(start), "window_end": stamp(start + 0.4 + 2), "k": "a", "n": 5}
    assert [s["k"] for s in sessions].count("a") == 1
    assert app_summary(gw, "sensors")["Late"] == 0
