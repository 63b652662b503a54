"""Motion events from a synthetic camera: a square that moves for known periods, sent with PutMedia.

The gateway's motion watcher must write motion_start / motion_end records within one sampling
interval of the truth, and the player must draw the periods on its timeline.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from video_support import PutMediaClient, create_stream

from helpers import GatewayProcess, wait_until
from kvs import FragmentWriter

CHROMIUM = "/usr/bin/chromium"
SAMPLE_FPS = 5
INTERVAL_MS = 1000 // SAMPLE_FPS
#: When the square moves, in ms from the first frame.
MOVING = [(2000, 4000), (6000, 7500)]
SECONDS = 10
CONFIG = """
[[analytics.motion]]
video_stream = "porch"
output_stream = "motion"
sample_fps = 5
sensitivity = 0.8
end_after_seconds = 0.6
zones = [[0.0, 0.25, 1.0, 0.6]]
"""


def square_at(t_ms: int) -> int:
    """Left edge of the square at ``t_ms``: it advances 0.08 px/ms while moving, else stays."""
    moved = sum(max(0, min(t_ms, b) - a) for a, b in MOVING)
    return 20 + int(moved * 0.08)


def camera(start_ms: int, width: int = 320, height: int = 240, fps: int = 10) -> list[bytes]:
    rng = np.random.default_rng(3)
    writer = FragmentWriter(width, height, fps, fragment_seconds=1.0)
    fragments = []
    for i in range(SECONDS * fps):
        t = i * 1000 // fps
        frame = np.full((height, width, 3), 80, np.uint8) + rng.integers(0, 6, (height, width, 3), dtype=np.uint8)
        x = square_at(t)
        cv2.rectangle(frame, (x, 100), (x + 30, 130), (240, 240, 240), -1)
        fragments += writer.add_frame(frame, start_ms + t)
    return [f.data for f in fragments + writer.flush()]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("motion")
    (base / "gateway.toml").write_text(CONFIG)
    gateway = GatewayProcess(base / "data", "--config", str(base / "gateway.toml"), "--no-limits").start()  # the test polls GetRecords fast
    yield gateway
    gateway.kill()


def events(kinesis: Any) -> list[dict[str, Any]]:
    iterator = kinesis.get_shard_iterator(StreamName="motion", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return [json.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=iterator)["Records"]]


def test_motion_periods_become_records_and_timeline_spans(gw: GatewayProcess) -> None:
    kinesis = gw.client()
    kinesis.create_stream(StreamName="motion", ShardCount=1)
    create_stream(gw, "porch")
    start_ms = (int(time.time()) - 60) * 1000
    client = PutMediaClient(gw.url, "porch")
    client.send_all(camera(start_ms))
    assert sum(a["EventType"] == "PERSISTED" for a in client.finish()) == SECONDS

    wait_until(lambda: len(events(kinesis)) >= 4, timeout=20, what="two motion periods")
    got = events(kinesis)
    assert [e["event"] for e in got] == ["motion_start", "motion_end"] * 2
    truth = [start_ms + t for period in MOVING for t in period]
    for event, expected in zip(got, truth):
        assert event["videoStream"] == "porch"
        assert abs(event["timestampMillis"] - expected) <= INTERVAL_MS, (event, expected)

    def summary() -> dict[str, Any]:
        with urllib.request.urlopen(f"{gw.url}/analytics/motion/porch", timeout=5) as response:
            return json.load(response)  # type: ignore[no-any-return]

    wait_until(lambda: summary()["SamplesAnalysed"] == SECONDS * SAMPLE_FPS, timeout=10, what="every sample of the video analysed")
    assert [(p["StartMillis"], p["EndMillis"]) for p in summary()["Periods"]] == [
        (got[0]["timestampMillis"], got[1]["timestampMillis"]), (got[2]["timestampMillis"], got[3]["timestampMillis"])]

    gw.restart()  # SIGKILL: the periods come back from the stream, and no event is written twice
    wait_until(lambda: len(summary()["Periods"]) == 2, timeout=10, what="the periods after a restart")
    time.sleep(0.5)
    assert [e["timestampMillis"] for e in events(kinesis)] == [e["timestampMillis"] for e in got]

    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{gw.url}/player?stream=porch&mode=replay&start={start_ms / 1000}")
            page.wait_for_function("document.querySelectorAll('#timeline .span.motion').length === 2", timeout=15_000)
            assert page.evaluate("window.playerState.motion") == [[e["timestampMillis"] / 1000 for e in got[:2]], [e["timestampMillis"] / 1000 for e in got[2:]]]
            assert page.locator("#motion button").count() == 2
            page.goto(f"{gw.url}/analytics")  # the dashboard lists the detector, linked to the player
            page.wait_for_function("document.querySelector('#motion a') !== null", timeout=15_000)
            assert page.inner_text("#motion a") == "porch: 2 periods"
        finally:
            browser.close()


def test_unknown_stream_has_no_motion(gw: GatewayProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{gw.url}/analytics/motion/nope", timeout=5)
    assert info.value.code == 404
