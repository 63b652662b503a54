"""HTTP/2 per-connection limits on a real gateway, driven by a raw h2 client: too many streams,
rapid resets, garbage frames and oversized headers get a protocol error or an AWS-shaped 400, never
a crash; idle connections get GOAWAY; responses obey flow control and a stalled reader is reset."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import h2.errors
import h2.settings
import pytest
from h2_client import RawH2
from helpers import GatewayProcess, wait_until
from video_support import PutMediaClient, camera_fragments, create_stream

ERR = h2.errors.ErrorCodes
LIST_STREAMS = [("x-amz-target", "Kinesis_20131202.ListStreams"), ("content-type", "application/x-amz-json-1.1")]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("http2-limits")
    config = base / "gateway.toml"
    config.write_text("[server]\nheader_timeout_seconds = 2.0\nwrite_stall_seconds = 2.0\n")
    gw = GatewayProcess(base / "data", "--config", str(config)).start()
    yield gw
    gw.kill()


def still_serves(gw: GatewayProcess) -> None:
    """A fresh HTTP/2 connection and boto3 over HTTP/1.1 both get answers: nothing crashed."""
    client = RawH2(gw.port)
    try:
        sid = client.request("POST", "/", LIST_STREAMS, b"{}")
        client.wait(lambda: sid in client.ended, what="ListStreams")
        assert client.status[sid] == 200
    finally:
        client.close()
    gw.client().list_streams()
    assert gw.proc is not None and gw.proc.poll() is None


def test_more_streams_than_allowed_is_a_protocol_error(gateway: GatewayProcess) -> None:
    client = RawH2(gateway.port)
    try:
        # sent before the server's SETTINGS arrive, so the client library does not hold them back
        try:
            for _ in range(1000):
                client.request("POST", "/", LIST_STREAMS, end_stream=False)
        except ConnectionError:
            pass  # the gateway may have closed before the last ones
        client.wait(lambda: client.goaway is not None, what="GOAWAY")
        assert client.goaway == ERR.PROTOCOL_ERROR
        client.wait(lambda: client.closed, what="the connection to close")
    finally:
        client.close()
    still_serves(gateway)


def test_rapid_reset_gets_enhance_your_calm(gateway: GatewayProcess) -> None:
    client = RawH2(gateway.port)
    try:
        client.pump(1.0)  # the server's SETTINGS: stay within its stream limit
        for _ in range(400):
            sid = client.request("POST", "/", LIST_STREAMS, end_stream=False)
            client.conn.reset_stream(sid, ERR.CANCEL)
            client.flush()
            if client.goaway is not None:
                break
        client.wait(lambda: client.goaway is not None, what="GOAWAY")
        assert client.goaway == ERR.ENHANCE_YOUR_CALM
    finally:
        client.close()
    still_serves(gateway)


@pytest.mark.parametrize("flood", ["ping", "empty data", "settings"])
def test_idle_frame_floods_get_enhance_your_calm(gateway: GatewayProcess, flood: str) -> None:
    client = RawH2(gateway.port)
    try:
        sid = client.request("POST", "/", LIST_STREAMS, end_stream=False)
        for i in range(2100):
            if flood == "ping":
                client.conn.ping(i.to_bytes(8, "big"))
            elif flood == "empty data":
                client.conn.send_data(sid, b"")
            else:
                client.conn.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        try:
            client.flush()
        except ConnectionError:
            pass  # the gateway may have closed before the last ones
        client.wait(lambda: client.goaway is not None, what="GOAWAY")
        assert client.goaway == ERR.ENHANCE_YOUR_CALM
    finally:
        client.close()
    still_serves(gateway)


@pytest.mark.parametrize("garbage", [
    bytes(range(256)) * 4,  # a frame header announcing a 66 KB frame, then nonsense
    b"\x00\x00\x04\x00\x01\x00\x00\x00\x00" + b"data",  # DATA on stream 0
    b"\x00\x00\x05\x01\x05\x00\x00\x00\x03" + b"\xff\xff\xff\xff\xff",  # HEADERS with an undecodable HPACK block
])
def test_garbage_frames_get_goaway(gateway: GatewayProcess, garbage: bytes) -> None:
    client = RawH2(gateway.port)
    try:
        client.send_raw(garbage)
        client.wait(lambda: client.closed, what="the connection to close")
        assert client.goaway not in (None, ERR.NO_ERROR)
    finally:
        client.close()
    still_serves(gateway)


def test_oversized_headers(gateway: GatewayProcess) -> None:
    client = RawH2(gateway.port)
    try:
        long_field = client.request("POST", "/", [*LIST_STREAMS, ("x-long", "a" * 10_000)], b"{}")
        many_fields = client.request("POST", "/", [*LIST_STREAMS, *((f"x-h{i}", "v") for i in range(150))], b"{}")
        client.wait(lambda: {long_field, many_fields} <= client.ended, what="two refusals")
        for sid in (long_field, many_fields):
            assert client.status[sid] == 400 and client.json(sid)["__type"] == "InvalidArgumentException"
        ok = client.request("POST", "/", LIST_STREAMS, b"{}")  # the connection carries on
        client.wait(lambda: ok in client.ended, what="ListStreams")
        assert client.status[ok] == 200
        # a header list beyond SETTINGS_MAX_HEADER_LIST_SIZE ends the connection
        client.request("POST", "/", [*LIST_STREAMS, *((f"x-big{i}", "b" * 8000) for i in range(40))], b"{}")
        client.wait(lambda: client.closed, what="the connection to close")
        assert client.goaway not in (None, ERR.NO_ERROR)
    finally:
        client.close()
    still_serves(gateway)


def test_body_caps_apply_over_h2(gateway: GatewayProcess) -> None:
    """The app's 16 MiB body cap, declared (refused before a byte is read) or not (cut off while
    reading); the client is told to stop sending and the connection carries on."""
    client = RawH2(gateway.port)
    try:
        declared = client.request("POST", "/", [*LIST_STREAMS, ("content-length", str(20 << 20))], end_stream=False)
        client.send_body(declared, b"{" + b" " * 65536)
        client.wait(lambda: declared in client.ended, what="the early 413")
        assert client.status[declared] == 413 and client.json(declared)["__type"] == "InvalidArgumentException"
        client.wait(lambda: declared in client.resets, what="RST_STREAM after the early answer")
        assert client.resets[declared] == ERR.NO_ERROR  # answered early: the rest of the body is not wanted
        undeclared = client.request("POST", "/", LIST_STREAMS, end_stream=False)
        chunk = b" " * (1 << 20)
        for _ in range(17):
            if undeclared in client.ended or undeclared in client.resets:
                break
            client.send_body(undeclared, chunk)
        client.wait(lambda: undeclared in client.ended, what="the 413")
        assert client.status[undeclared] == 413 and client.json(undeclared)["__type"] == "InvalidArgumentException"
        get = client.request("GET", "/")  # a bodiless GET (the player page) on the same connection
        client.wait(lambda: get in client.ended, what="GET /")
        assert client.status[get] == 200 and b"<html" in bytes(client.data[get]).lower()
    finally:
        client.close()
    still_serves(gateway)


def test_idle_connections_are_closed(gateway: GatewayProcess) -> None:
    client = RawH2(gateway.port)
    silent = socket.create_connection(("127.0.0.1", gateway.port))
    try:
        sid = client.request("POST", "/", LIST_STREAMS, b"{}")
        client.wait(lambda: sid in client.ended, what="ListStreams")
        started = time.monotonic()
        client.wait(lambda: client.goaway is not None, timeout=8, what="GOAWAY on an idle connection")
        assert client.goaway == ERR.NO_ERROR and time.monotonic() - started > 1.0
        silent.settimeout(8)
        assert silent.recv(100) == b""  # a connection that never says which protocol it speaks
    finally:
        client.close()
        silent.close()


def test_getmedia_obeys_the_window_and_a_stalled_reader_is_reset(gateway: GatewayProcess) -> None:
    create_stream(gateway, "h2-window")
    fragments = camera_fragments(4)
    producer = PutMediaClient(gateway.url, "h2-window")
    producer.send_all(f.data for f in fragments)
    producer.wait_for(lambda acks: sum(a["EventType"] == "PERSISTED" for a in acks) == 4)
    producer.finish()
    window = 4096
    assert sum(len(f.data) for f in fragments) > 4 * window
    client = RawH2(gateway.port, window=window, auto_ack=False)
    try:
        body = json.dumps({"StreamName": "h2-window", "StartSelector": {"StartSelectorType": "EARLIEST"}}).encode()
        sid = client.request("POST", "/getMedia", [("content-type", "application/json")], body)
        client.wait(lambda: len(client.data.get(sid, b"")) >= window, what="a window of media")
        client.pump(0.5)
        assert len(client.data[sid]) == window  # not a byte beyond what the client allowed
        client.ack(sid)
        client.wait(lambda: len(client.data[sid]) >= 2 * window, what="more media once the window reopens")
        # now the client stops giving window: after write_stall_seconds the gateway resets the stream
        client.wait(lambda: sid in client.resets, timeout=10, what="RST_STREAM for a stalled reader")
        assert client.resets[sid] == ERR.CANCEL and sid not in client.ended
    finally:
        client.close()
    still_serves(gateway)


def test_gateway_log_has_no_tracebacks(gateway: GatewayProcess) -> None:
    wait_until(lambda: "serving" in gateway.log(), what="the start line")
    assert "Traceback" not in gateway.log(), gateway.log()[-3000:]
