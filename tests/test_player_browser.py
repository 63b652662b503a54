"""The web player in headless Chromium (Debian's, via Playwright): live video, then the recording
after a SIGKILL + restart of the gateway. Video flows camera -> FragmentWriter -> PutMedia.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from video_support import PutMediaClient, camera_fragments, create_stream

from helpers import GatewayProcess
from kvs import Fragment, FragmentWriter

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")


class LiveCamera(threading.Thread):
    """Sends 1-second fragments in real time, each once its last frame has been 'captured'."""

    def __init__(self, gw: GatewayProcess, stream: str, backlog_s: int = 3, seconds: int = 30) -> None:
        super().__init__(daemon=True)
        self.start_ms = int(time.time() * 1000) - backlog_s * 1000
        self.fragments = camera_fragments(backlog_s + seconds, start_ms=self.start_ms)
        self.client = PutMediaClient(gw.url, stream)
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        for fragment in self.fragments:
            due = (fragment.start_ms + fragment.duration_ms) / 1000
            if self.stopped.wait(max(0.0, due - time.time())):
                break
            try:
                self.client.send(fragment.data)
            except OSError:
                break
            self.sent += 1

    def wait_persisted(self, count: int, timeout: float = 20.0) -> None:
        """Until the gateway has stored ``count`` fragments of this camera (acked PERSISTED)."""
        self.client.wait_for(lambda acks: sum(a["EventType"] == "PERSISTED" for a in acks) >= count, timeout)

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        try:
            self.client.finish(timeout=10)
        except (OSError, TimeoutError):
            self.client.close()


def wait_js(page: Any, condition: str, timeout_ms: int = 20_000) -> None:
    """Wait until ``condition`` holds in the page; on timeout fail with the player's state and log."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, timeout=timeout_ms)
    except PlaywrightTimeout:
        state = page.evaluate("JSON.stringify({...window.playerState, timeline: undefined,"
                              " currentTime: document.getElementById('video').currentTime,"
                              " paused: document.getElementById('video').paused})")
        log = page.evaluate("document.getElementById('log').textContent")
        raise AssertionError(f"{condition!r} still false after {timeout_ms} ms; state={state}; log={log}") from None


def playback_advances(page: Any, seconds: float = 2.5) -> tuple[float, float]:
    wait_js(page, "window.playerState && window.playerState.appended >= 2 && !document.getElementById('video').paused")
    t1 = page.evaluate("document.getElementById('video').currentTime")
    page.wait_for_timeout(int(seconds * 1000))
    t2 = page.evaluate("document.getElementById('video').currentTime")
    return t1, t2


def media_errors(page: Any) -> list[str]:
    error = page.evaluate("(() => { const e = document.getElementById('video').error; return e ? e.code + ' ' + e.message : null })()")
    return ([error] if error else []) + page.evaluate("window.playerState.errors")


def test_page_assets_and_stills_for_mjpeg(tmp_path: Path, browser: Any) -> None:
    gw = GatewayProcess(tmp_path / "data").start()
    try:
        for path in ("/", "/player"):
            with urllib.request.urlopen(gw.url + path, timeout=10) as response:
                html = response.read().decode()
                assert response.headers["Content-Type"].startswith("text/html")
            assert '<video id="video"' in html and "/player/static/player.js" in html
            assert "http://" not in html and "https://" not in html  # nothing from a CDN
        with urllib.request.urlopen(gw.url + "/player/static/player.js", timeout=10) as response:
            assert "MediaSource" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(gw.url + "/player/static/..%2Fclips.py", timeout=10)
        assert info.value.code == 404

        # an MJPEG camera cannot go through MSE: the player shows GetImages stills instead
        create_stream(gw, "doorbell")
        start_ms = int(time.time() * 1000) - 30_000
        writer = FragmentWriter(64, 48, 5, fragment_seconds=1.0, codec="mjpeg-passthrough")
        fragments: list[Fragment] = []
        for i in range(20):
            jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), (i * 12) % 256, np.uint8))[1].tobytes()
            fragments += writer.add_packet(jpeg, start_ms + i * 200, keyframe=True)
        client = PutMediaClient(gw.url, "doorbell")
        client.send_all(f.data for f in fragments + writer.flush())
        assert sum(a["EventType"] == "PERSISTED" for a in client.finish()) == 4
        page = browser.new_page()
        try:
            page.goto(f"{gw.url}/player?stream=doorbell&mode=replay&start={start_ms / 1000}")
            wait_js(page, "window.playerState.stills >= 2")
            assert page.evaluate("document.getElementById('still').naturalWidth") == 64
            assert page.evaluate("document.getElementById('video').hidden")
            assert start_ms / 1000 <= page.evaluate("window.playerState.stillTime") <= start_ms / 1000 + 4
            assert page.evaluate("window.playerState.errors") == []
        finally:
            page.close()
    finally:
        gw.kill()


def test_plays_live_across_a_restart_then_the_recording(tmp_path: Path, browser: Any) -> None:
    data = tmp_path / "data"
    gw = GatewayProcess(data).start()
    create_stream(gw, "porch")
    create_stream(gw, "garage")
    camera = LiveCamera(gw, "porch")
    camera.start()
    page = browser.new_page()
    try:
        assert page.evaluate("MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42E01E\"')")
        camera.wait_persisted(3)
        page.goto(gw.url + "/player")
        page.wait_for_selector("#streams button[data-stream='garage']", timeout=10_000)
        page.click("#streams button[data-stream='porch']")  # the stream list opens live playback
        t1, t2 = playback_advances(page)
        assert t2 - t1 > 1.0, (t1, t2, media_errors(page))
        assert abs(t2 - time.time()) < 15  # media time is wall-clock time, close to live
        assert page.evaluate("window.playerState.mode") == "live"
        assert media_errors(page) == []
        page.wait_for_selector("#timeline .span", timeout=20_000)  # the recording is on the timeline
        page.evaluate("document.getElementById('video').pause()")  # a viewer's pause stays a pause
        page.wait_for_timeout(1200)
        assert page.evaluate("document.getElementById('video').paused")
        page.evaluate("document.getElementById('video').play()")

        # SIGKILL the gateway mid-playback and start a new process on the same data dir, this time
        # with a new session key, so the open page's token is refused (401): the player opens a
        # new session and live playback resumes by itself once video flows again
        camera.stop()
        gw.kill()
        (data / "playback-session.key").unlink()
        restarted_at = time.time()
        gw = GatewayProcess(data, port=gw.port).start()
        camera2 = LiveCamera(gw, "porch", backlog_s=1, seconds=15)
        camera2.start()
        try:
            wait_js(page, f"document.getElementById('video').currentTime > {restarted_at}", 30_000)
            t3 = page.evaluate("document.getElementById('video').currentTime")
            page.wait_for_timeout(1500)
            assert page.evaluate("document.getElementById('video').currentTime") > t3
            assert page.evaluate("document.getElementById('video').error") is None
            assert page.evaluate("window.playerState.sessions") >= 2
        finally:
            camera2.stop()
    finally:
        camera.stop()
        page.close()
    recorded_from = camera.start_ms / 1000

    gw.kill()  # SIGKILL again, then the recording in a new page
    gw = GatewayProcess(data, port=gw.port).start()
    page = browser.new_page()
    try:
        # reached by another name than the advertised 127.0.0.1 (as from another machine on the LAN)
        # window=2: each replay session lists 2 fragments, so playing on needs follow-up sessions
        page.goto(f"http://localhost:{gw.port}/player?stream=porch&mode=replay&window=2&start={recorded_from + 1}")
        t1, t2 = playback_advances(page)
        wait_js(page, "window.playerState.sessions >= 2 && window.playerState.appended >= 4")
        assert t2 - t1 > 1.0, (t1, t2, media_errors(page))
        assert recorded_from < t1 < recorded_from + 20  # playing the recording, not live
        assert media_errors(page) == []
        # seek by clicking the timeline near its start
        page.wait_for_selector("#timeline .span", timeout=10_000)
        box = page.locator("#timeline").bounding_box()
        before = page.evaluate("window.playerState.generation")
        page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)
        wait_js(page, f"window.playerState.generation > {before} && window.playerState.appended >= 1")
        t3, t4 = playback_advances(page, 2.0)
        assert t4 > t3 and t3 < recorded_from + 5
        assert media_errors(page) == []
    finally:
        page.close()
        gw.kill()


def test_player_signs_its_calls_when_the_gateway_verifies_sigv4(tmp_path: Path, browser: Any) -> None:
    access_key, secret_key = "AKIDPLAYERTEST", "player/secret+for/tests"
    data = tmp_path / "data"
    gw = GatewayProcess(data).start()
    start_ms = int(time.time() * 1000) - 20_000
    try:
        create_stream(gw, "secure")
        client = PutMediaClient(gw.url, "secure")
        client.send_all(f.data for f in camera_fragments(8, start_ms=start_ms))
        acks = client.finish()
        assert sum(a["EventType"] == "PERSISTED" for a in acks) == 8, (client.status, client.error_body, acks, gw.log()[-2000:])
    finally:
        gw.kill()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[auth]\ncredentials = {{ {access_key} = "{secret_key}" }}\n')
    gw = GatewayProcess(data, "--config", str(config), port=gw.port).start()
    page = browser.new_page()
    page.clock.set_system_time(time.time() - 3600)  # the viewer's clock is an hour off: signing uses the gateway's
    try:
        page.goto(gw.url + "/player")
        wait_js(page, "document.getElementById('auth').open")  # unsigned ListStreams refused: the form opens
        assert "MissingAuthenticationToken" in page.inner_text("#status")
        page.fill("#access-key", access_key)
        page.fill("#secret-key", "not the secret")
        page.click("#save-credentials")
        wait_js(page, "document.getElementById('status').textContent.includes('InvalidSignature')")
        page.fill("#secret-key", secret_key)
        page.click("#save-credentials")
        page.wait_for_selector("#streams button[data-stream='secure']", timeout=10_000)
        # the credentials stay with the tab: a playback link works signed too
        page.goto(f"{gw.url}/player?stream=secure&mode=replay&start={start_ms / 1000}")
        t1, t2 = playback_advances(page)
        assert t2 - t1 > 1.0, (t1, t2, media_errors(page))
        assert media_errors(page) == []
    finally:
        page.close()
        gw.kill()
