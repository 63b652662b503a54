"""The chaos tests' fault proxy injects the faults it claims to."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from faultproxy import FaultMix, FaultProxy


class Echo(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Echo.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def post(url: str, body: bytes, timeout: float = 5) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def only(fault: str, **kw: float) -> FaultMix:
    weights = {"pass_": 0.0, "reset": 0.0, "stall": 0.0, "slow": 0.0, "drop_response": 0.0}
    weights["pass_" if fault == "pass" else fault] = 1.0
    return FaultMix(**weights, **kw)  # type: ignore[arg-type]


def test_pass_through(echo_port: int) -> None:
    proxy = FaultProxy(echo_port, only("pass")).start()
    try:
        assert post(proxy.url, b"hello" * 1000) == b"hello" * 1000
        assert proxy.counts["pass"] == 1
    finally:
        proxy.stop()


def test_drop_response_delivers_request_but_loses_answer(echo_port: int) -> None:
    proxy = FaultProxy(echo_port, only("drop_response")).start()
    try:
        before = Echo.hits
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            post(proxy.url, b"x")
        deadline = time.monotonic() + 5
        while Echo.hits == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert Echo.hits == before + 1  # the server did the work; the client never heard
    finally:
        proxy.stop()


def test_reset_and_slow(echo_port: int) -> None:
    proxy = FaultProxy(echo_port, only("reset")).start()
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            post(proxy.url, b"y" * 100_000)
    finally:
        proxy.stop()
    proxy = FaultProxy(echo_port, only("slow", slow_bytes_per_sec=50_000)).start()
    try:
        start = time.monotonic()
        assert post(proxy.url, b"z" * 20_000) == b"z" * 20_000
        assert time.monotonic() - start > 0.3
    finally:
        proxy.stop()


import http.client  # noqa: E402
