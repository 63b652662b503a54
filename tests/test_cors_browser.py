"""Cross-origin use of the gateway, as a new user tries it: their own web page (served from
another loopback port) plays the gateway's HLS with hls.js in headless Chromium, ON_DEMAND and
LIVE, and calls the Kinesis API with fetch(); a page from an origin not in ``[cors]
allowed_origins`` cannot read anything. Preflights and headers are checked on the wire too."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_player_browser import CHROMIUM, CHROMIUM_ARGS, LiveCamera
from video_support import PutMediaClient, camera_fragments, create_stream

from helpers import ROOT, GatewayProcess, free_port

HLS_JS = ROOT / "tests" / "js" / "node_modules" / "hls.js" / "dist" / "hls.min.js"
ARCHIVED = "kinesis-video-archived-media"
PAGE = """<!doctype html><html><body><video id="v" muted playsinline></video>
<script src="/hls.min.js"></script>
<script>
window.state = {frags: 0, errors: [], manifest: false};
function play(url) {
  const video = document.getElementById('v');
  const hls = new Hls({liveSyncDurationCount: 2});
  hls.on(Hls.Events.MANIFEST_PARSED, () => { window.state.manifest = true; video.play(); });
  hls.on(Hls.Events.FRAG_LOADED, () => { window.state.frags++; });
  hls.on(Hls.Events.ERROR, (e, d) => { window.state.errors.push(d.type + ':' + d.details + (d.fatal ? ':fatal' : '')); });
  hls.loadSource(url);
  hls.attachMedia(video);
}
async function listStreams(endpoint) {
  const r = await fetch(endpoint + '/', {method: 'POST', body: '{}', headers: {
    'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': 'Kinesis_20131202.ListStreams'}});
  return {status: r.status, requestId: r.headers.get('x-amzn-RequestId'), body: await r.json()};
}
</script></body></html>"""

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")


class _Page(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body, kind = (HLS_JS.read_bytes(), "application/javascript") if self.path == "/hls.min.js" else (PAGE.encode(), "text/html")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[int]:
    """The user's own web site: a page and hls.js, on a port of its own."""
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Page))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, site: int) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("cors")
    config = root / "gateway.toml"
    config.write_text(f'[cors]\nallowed_origins = ["http://127.0.0.1:{site}"]\n')
    gateway = GatewayProcess(root / "data", "--config", str(config)).start()
    yield gateway
    gateway.kill()


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_preflight_and_headers_on_the_wire(gw: GatewayProcess, site: int) -> None:
    origin = f"http://127.0.0.1:{site}"
    status, headers = request(gw.url + "/", "OPTIONS", {"Origin": origin, "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "content-type,x-amz-target,authorization"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == origin and "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "content-type,x-amz-target,authorization"
    status, headers = request(gw.url + "/hls/v1/getHLSMasterPlaylist.m3u8", "OPTIONS", {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers = request(gw.url + "/", "POST", {"Origin": origin, "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.DescribeStream"}, b'{"StreamName": "nope"}')
    assert status == 400  # errors too: the page's SDK must be able to read the error type
    assert headers["Access-Control-Allow-Origin"] == origin and "x-amzn-ErrorType" in headers["Access-Control-Expose-Headers"]
    status, headers = request(gw.url + "/", "POST", {"Origin": "http://evil.example", "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"}, b"{}")
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


def _play(browser: Any, site: int, url: str) -> dict[str, Any]:
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{site}/index.html")
        page.evaluate(f"play({json.dumps(url)})")
        try:
            page.wait_for_function("document.getElementById('v').currentTime > 1.5", timeout=25_000)
        finally:
            state: dict[str, Any] = page.evaluate("({...window.state, t: document.getElementById('v').currentTime})")
        return state
    finally:
        page.close()


def test_hls_js_plays_on_demand_from_another_origin(gw: GatewayProcess, site: int, browser: Any) -> None:
    create_stream(gw, "cors-vod")
    start_ms = (int(time.time() * 1000) - 60_000) // 1000 * 1000
    client = PutMediaClient(gw.url, "cors-vod")
    client.send_all(f.data for f in camera_fragments(4, start_ms=start_ms))
    assert sum(a["EventType"] == "PERSISTED" for a in client.finish()) == 4
    url = gw.client(ARCHIVED).get_hls_streaming_session_url(
        StreamName="cors-vod", PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {"StartTimestamp": start_ms / 1000, "EndTimestamp": (start_ms + 4000) / 1000}},
    )["HLSStreamingSessionURL"]
    state = _play(browser, site, url)
    assert state["manifest"] and state["frags"] >= 2 and not [e for e in state["errors"] if e.endswith(":fatal")], state


def test_hls_js_plays_live_from_another_origin(gw: GatewayProcess, site: int, browser: Any) -> None:
    create_stream(gw, "cors-live")
    camera = LiveCamera(gw, "cors-live", backlog_s=3, seconds=20)
    camera.start()
    try:
        camera.wait_persisted(3)
        url = gw.client(ARCHIVED).get_hls_streaming_session_url(StreamName="cors-live", PlaybackMode="LIVE")["HLSStreamingSessionURL"]
        state = _play(browser, site, url)
        assert state["manifest"] and state["frags"] >= 2 and not [e for e in state["errors"] if e.endswith(":fatal")], state
    finally:
        camera.stop()


def test_fetch_from_the_page_and_from_an_origin_not_allowed(gw: GatewayProcess, site: int, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{site}/index.html")
        got = page.evaluate(f"listStreams({json.dumps(gw.url)})")  # a preflighted POST, as the JS SDK sends
        assert got["status"] == 200 and got["requestId"] and "StreamNames" in got["body"]
        page.goto(f"http://localhost:{site}/index.html")  # same page, another origin
        refused = page.evaluate(f"listStreams({json.dumps(gw.url)}).then(() => 'read', e => e.name)")
        assert refused == "TypeError"  # the browser blocks it
    finally:
        page.close()
