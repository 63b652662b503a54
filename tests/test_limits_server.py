"""Resource limits on a real gateway: body and header caps, slow clients, the connection cap."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import GatewayProcess

TIMEOUTS_TOML = """
[server]
header_timeout_seconds = 2
body_timeout_seconds = 2
body_idle_seconds = 2
"""
KINESIS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("limits")
    (tmp / "gateway.toml").write_text(TIMEOUTS_TOML)
    gateway = GatewayProcess(tmp / "data", "--config", str(tmp / "gateway.toml")).start()
    yield gateway
    gateway.kill()


def request(gw: GatewayProcess, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
            **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kwargs)  # type: ignore[arg-type]
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_alive(gw: GatewayProcess) -> None:
    assert gw.proc is not None and gw.proc.poll() is None
    status, _, body = request(gw, "POST", "/", b"{}", KINESIS)
    assert status == 200 and "StreamNames" in json.loads(body)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(0.2)
    received = b""
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - start


def test_oversize_body_gets_an_aws_413(gw: GatewayProcess) -> None:
    big = b"x" * (17 * MiB)
    status, headers, body = request(gw, "POST", "/", big, {**KINESIS, "X-Amz-Target": "Kinesis_20131202.PutRecords"})
    assert status == 413 and headers["x-amzn-errortype"] == "InvalidArgumentException"
    assert "exceeds the gateway's limit" in json.loads(body)["message"]
    # without a Content-Length the cap applies while reading
    chunks = (b"y" * MiB for _ in range(17))
    status, headers, body = request(gw, "POST", "/createStream", chunks, {"Content-Type": "application/json"}, encode_chunked=True)
    assert status == 413 and json.loads(body)["__type"] == "InvalidArgumentException"
    assert_alive(gw)


def test_oversize_or_too_many_headers_get_400(gw: GatewayProcess) -> None:
    for path, headers in (("/", {**KINESIS, "X-Big": "a" * 10_000}),
                          ("/", {**KINESIS, **{f"X-H{i}": "v" for i in range(200)}}),
                          ("/" + "p" * 10_000, KINESIS)):
        status, resp_headers, body = request(gw, "POST", path, b"{}", headers)
        # the head never parsed, yet the answer is still an AWS error (and the connection closes)
        assert (status, resp_headers["x-amzn-errortype"]) == (400, "InvalidArgumentException"), body
        assert json.loads(body)["__type"] == "InvalidArgumentException" and resp_headers["x-amzn-requestid"]
    assert "Traceback" not in gw.log()  # a bad head is the client's problem: one log line, no traceback
    assert_alive(gw)


def test_slow_request_head_is_closed_in_bounded_time(gw: GatewayProcess) -> None:
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nX-Slow: " + b"z" * 100
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        start = time.monotonic()
        closed = False
        for byte in head:  # slowloris: one byte every 100 ms, never finishing the head
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - start > 8:
                break
        if not closed:
            received, _ = read_until_closed(sock, 5)
            assert received == b""
        elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 8, elapsed  # closed by header_timeout_seconds = 2, not by the client
    assert_alive(gw)


def test_slow_body_gets_408_then_closed(gw: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"POST /listStreams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"MaxResults\":")
        received, elapsed = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 408")
    assert b"RequestTimeoutException" in received
    assert elapsed < 7, elapsed  # 2 s body timeout + 2 s lingering + slack
    assert_alive(gw)


def test_stalled_putmedia_body_is_cut_off(gw: GatewayProcess) -> None:
    status, _, _ = request(gw, "POST", "/createStream", json.dumps({"StreamName": "stall", "DataRetentionInHours": 1}),
                           {"Content-Type": "application/json"})
    assert status == 200
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"POST /putMedia HTTP/1.1\r\nHost: 127.0.0.1\r\nx-amzn-stream-name: stall\r\n"
                     b"x-amzn-fragment-timecode-type: ABSOLUTE\r\nx-amzn-producer-start-timestamp: 0\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n4\r\n\x1a\x45\xdf\xa3\r\n")
        _, elapsed = read_until_closed(sock, 15)
    assert elapsed < 8, elapsed  # body_idle_seconds = 2 (+ watchdog tick and slack)
    assert "/putMedia: no body bytes for 2 s" in gw.log()
    assert_alive(gw)


def test_connection_cap_answers_503_at_once(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("[server]\nmax_connections = 4\n")
    gw = GatewayProcess(tmp_path / "data", "--config", str(tmp_path / "gateway.toml")).start()
    held: list[socket.socket] = []
    try:
        time.sleep(0.2)  # the readiness probe's connection is gone
        held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(4)]
        time.sleep(0.2)
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as extra:
            extra.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            received, _ = read_until_closed(extra, 5)
        assert time.monotonic() - start < 3  # no waiting: answered at accept time
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"x-amzn-ErrorType: ServiceUnavailableException" in head
        assert b"x-amzn-RequestId: " in head and b"{request_id}" not in head
        assert json.loads(body)["__type"] == "ServiceUnavailableException"
        for sock in held:
            sock.close()
        held = []
        deadline = time.monotonic() + 5
        while True:  # the freed slots are reusable
            try:
                assert_alive(gw)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert "connection limit 4 reached" in gw.log()
    finally:
        for sock in held:
            sock.close()
        gw.kill()


def test_deeply_nested_json_is_a_400_everywhere(gw: GatewayProcess) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    for path, headers in (("/", {**KINESIS, "X-Amz-Target": "Kinesis_20131202.PutRecords"}),
                          ("/createStream", {"Content-Type": "application/json"}),
                          ("/listFragments", {"Content-Type": "application/json"})):
        status, resp_headers, body = request(gw, "POST", path, deep, headers)
        assert (status, resp_headers["x-amzn-errortype"]) == (400, "SerializationException"), (path, body)
    # just under the scan threshold the handlers' own parsers cope (no 500)
    status, _, body = request(gw, "POST", "/", b"[" * 790 + b"]" * 790, KINESIS)
    assert 400 <= status < 500, body
    assert_alive(gw)


def test_example_config_documents_the_server_defaults() -> None:
    from gateway.config import ServerConfig, load_config

    example = load_config(Path(__file__).parent.parent / "configs" / "gateway.example.toml")
    assert example.server == ServerConfig()


def test_nonsense_server_limits_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main  # in-process: the error comes before anything is served

    for line, key in (("max_connections = 0", "server.max_connections"), ("body_timeout_seconds = -1", "server.body_timeout_seconds"),
                      ("max_header_bytes = 10", "server.max_header_bytes"), ("header_timeout_seconds = 'soon'", "server.header_timeout_seconds")):
        (tmp_path / "bad.toml").write_text(f"[server]\n{line}\n")
        assert main(["--config", str(tmp_path / "bad.toml")]) == 2
        assert key in capsys.readouterr().err


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "data").start()
    assert_alive(gw)
    start = time.monotonic()
    gw.stop()  # SIGTERM
    assert gw.proc is not None and gw.proc.returncode == 0
    assert time.monotonic() - start < 10
    assert "shutting down" in gw.log()


def test_body_budget_makes_requests_wait_for_room(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("[server]\nmax_buffered_body_bytes = 1000000\nbody_timeout_seconds = 2\n")
    gw = GatewayProcess(tmp_path / "data", "--config", str(tmp_path / "gateway.toml")).start()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as hog:
            # declares 900 kB, sends a little, stalls: its reservation holds 90 % of the budget
            hog.sendall(b"POST /listStreams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 900000\r\n\r\n{\"MaxResults\": 1, ")
            time.sleep(0.3)
            start = time.monotonic()
            status, _, _ = request(gw, "POST", "/listStreams", b"{}", {"Content-Type": "application/json"})
            assert status == 200 and time.monotonic() - start < 1.5  # small bodies still fit (a wait would last until the hog times out, ~1.7 s)
            big = b'{"MaxResults": 1, "pad": "' + b"p" * 899_000 + b'"}'
            status, headers, _ = request(gw, "POST", "/listStreams", big, {"Content-Type": "application/json"})
            waited = time.monotonic() - start
            assert status != 503 and waited > 1.2, (status, waited)  # admitted once the hog timed out (2 s)
            received, _ = read_until_closed(hog, 5)
            assert received.startswith(b"HTTP/1.1 408")
        assert_alive(gw)
    finally:
        gw.kill()


def test_body_budget_queue_and_timeout() -> None:
    import asyncio

    from gateway.errors import AwsError
    from gateway.limits import BodyBudget

    async def scenario() -> None:
        budget = BodyBudget(100)
        assert await budget.reserve(80) == 80
        assert await budget.reserve(20) == 20  # exactly full
        waiter = asyncio.create_task(budget.reserve(50, timeout=2))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        budget.release(80)
        assert await waiter == 50 and budget.used == 70
        with pytest.raises(AwsError) as info:
            await budget.reserve(40, timeout=0.1)
        assert (info.value.code, info.value.status) == ("ServiceUnavailableException", 503)
        budget.release(20)
        budget.release(50)
        assert budget.used == 0
        assert await budget.reserve(500) == 500  # alone, even an oversize body is let through
        budget.release(500)

    asyncio.run(scenario())


def test_client_that_stops_reading_is_disconnected(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("[server]\nwrite_stall_seconds = 2\n")
    gw = GatewayProcess(tmp_path / "data", "--no-limits", "--config", str(tmp_path / "gateway.toml")).start()
    try:
        kinesis = gw.client("kinesis")
        kinesis.create_stream(StreamName="big", ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName="big", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
        for _ in range(2):
            kinesis.put_records(StreamName="big", Records=[{"Data": os.urandom(1_000_000), "PartitionKey": "k"} for _ in range(4)])
        shard = kinesis.list_shards(StreamName="big")["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName="big", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        body = json.dumps({"ShardIterator": iterator, "Limit": 10000}).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        with sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                         b"X-Amz-Target: Kinesis_20131202.GetRecords\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            # a slow reader that keeps reading is not a stalled one: pauses of 0.7 s, under the 2 s limit
            early = b""
            for _ in range(5):
                time.sleep(0.7)
                early += sock.recv(256 * 1024)
            assert early.startswith(b"HTTP/1.1 200") and "stopped reading" not in gw.log()
            deadline = time.monotonic() + 15
            while "stopped reading" not in gw.log() and time.monotonic() < deadline:
                time.sleep(0.2)  # not reading: the response (~10.7 MB) backs up into the gateway
            assert "stopped reading for 2 s" in gw.log()
            received, _ = read_until_closed(sock, 10)
        assert len(early + received) < 10_000_000  # cut off, not delivered
        assert_alive(gw)
    finally:
        gw.kill()
