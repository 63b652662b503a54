"""HTTP/2 on the gateway's port: the AWS SDK for JavaScript v3 with its default settings (h2c prior
knowledge, ALPN h2 on TLS), httpx and a raw h2 client, and boto3 over HTTP/1.1 on the same port;
PutMedia and GetMedia streaming over HTTP/2. Limits: tests/test_http2_limits.py."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from h2_client import RawH2
from helpers import ROOT, GatewayProcess, make_cert
from video_support import camera_fragments, create_stream

JS_DIR = ROOT / "tests" / "js"
NODE = "/usr/bin/node"


def run_js_kinesis(endpoint: str, stream: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run tests/js/kinesis_h2.mjs (the JS SDK, default settings) and return what it printed."""
    out = subprocess.run(
        [NODE, str(JS_DIR / "kinesis_h2.mjs"), endpoint, stream, *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_js_session(seen: dict) -> None:
    """What kinesis_h2.mjs must have seen: records back in order, a split, AWS error names."""
    assert "error" not in seen, seen
    assert seen["putRecordsFailed"] == 0
    assert seen["records"] == ["first"] + [f"record-{i}" for i in range(20)]
    parent = seen["putRecord"]["shardId"]
    children = [s for s in seen["shards"] if s["parent"] == parent]
    assert len(seen["shards"]) == 3 and len(children) == 2
    assert seen["missingStream"] == {"name": "ResourceNotFoundException", "status": 400}
    assert seen["badSplit"]["name"] == "ResourceNotFoundException"
    assert seen["duplicateStream"]["name"] == "ResourceInUseException"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("http2") / "data").start()
    yield gw
    gw.kill()


def test_js_sdk_default_client_over_h2c(gateway: GatewayProcess) -> None:
    check_js_session(run_js_kinesis(gateway.url, "js-h2c"))
    # the same stream, read by boto3 over HTTP/1.1 on the same port
    kinesis = gateway.client()
    assert len(kinesis.list_shards(StreamName="js-h2c")["Shards"]) == 3


def test_httpx_http2_prior_knowledge(gateway: GatewayProcess) -> None:
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        headers = {"X-Amz-Target": "Kinesis_20131202.ListStreams", "Content-Type": "application/x-amz-json-1.1"}
        response = client.post(gateway.url + "/", content=b"{}", headers=headers)
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200 and "StreamNames" in response.json()
        assert response.headers["x-amzn-RequestId"]
        # errors keep their AWS shape
        response = client.post(gateway.url + "/", content=b"{}", headers={**headers, "X-Amz-Target": "Kinesis_20131202.Nope"})
        assert response.http_version == "HTTP/2" and response.status_code == 400
        assert response.json()["__type"] == "UnknownOperationException"
        response = client.post(gateway.url + "/", content=b"{not json", headers=headers)
        assert response.status_code == 400 and response.json()["__type"] == "SerializationException"
        # a server-sent event stream (the analytics dashboard's) streams over h2
        with client.stream("GET", gateway.url + "/analytics/events") as events:
            assert events.http_version == "HTTP/2" and events.status_code == 200
            assert next(events.iter_lines()).startswith("event: stats")
    # HTTP/1.1 clients on the same port are unaffected
    with httpx.Client(timeout=10) as client:
        response = client.post(gateway.url + "/", content=b"{}", headers={"X-Amz-Target": "Kinesis_20131202.ListStreams",
                                                                         "Content-Type": "application/x-amz-json-1.1"})
        assert response.http_version == "HTTP/1.1" and response.status_code == 200


def test_many_concurrent_streams_on_one_connection(gateway: GatewayProcess) -> None:
    gateway.client().create_stream(StreamName="h2-mux", ShardCount=1)
    client = RawH2(gateway.port)
    try:
        headers = [("x-amz-target", "Kinesis_20131202.PutRecord"), ("content-type", "application/x-amz-json-1.1")]
        ids = [client.request("POST", "/", headers, json.dumps({"StreamName": "h2-mux", "PartitionKey": str(i), "Data": "aGk="}).encode())
               for i in range(60)]
        client.wait(lambda: all(i in client.ended for i in ids), what="60 responses")
        assert {client.status[i] for i in ids} == {200}
        assert len({client.json(i)["SequenceNumber"] for i in ids}) == 60
    finally:
        client.close()


def test_putmedia_and_getmedia_stream_over_h2(gateway: GatewayProcess) -> None:
    create_stream(gateway, "h2-video")
    fragments = camera_fragments(3)
    client = RawH2(gateway.port)
    try:
        head = [("x-amzn-stream-name", "h2-video"), ("x-amzn-fragment-timecode-type", "ABSOLUTE"),
                ("x-amzn-producer-start-timestamp", f"{time.time():.3f}"), ("content-type", "application/octet-stream")]
        sid = client.request("POST", "/putMedia", head, end_stream=False)

        def persisted() -> list[str]:
            return [a["FragmentNumber"] for a in client.json_lines(sid) if a["EventType"] == "PERSISTED"]

        for i, fragment in enumerate(fragments):
            client.send_body(sid, fragment.data)
            # each fragment is acknowledged while the request body is still open: both directions stream
            client.wait(lambda: len(persisted()) == i + 1, what=f"PERSISTED for fragment {i}")
        client.send_body(sid, b"", end_stream=True)
        client.wait(lambda: sid in client.ended, what="the PutMedia response to end")
        numbers = persisted()
        assert client.status[sid] == 200 and len(set(numbers)) == 3
    finally:
        client.close()
    total = sum(len(f.data) for f in fragments)
    body = {"StreamName": "h2-video", "StartSelector": {"StartSelectorType": "EARLIEST"}}
    with httpx.Client(http1=False, http2=True, timeout=10) as http:
        with http.stream("POST", gateway.url + "/getMedia", json=body) as response:
            assert response.http_version == "HTTP/2" and response.status_code == 200
            got = b""
            for chunk in response.iter_bytes():
                got += chunk
                if len(got) >= total:
                    break  # the tail would wait for more fragments: leave (the stream is reset)
    assert got.count(b"\x1a\x45\xdf\xa3") == 3  # three MKV documents (EBML headers)
    positions = [got.find(n.encode()) for n in numbers]  # each tagged with its fragment number, in order
    assert -1 not in positions and positions == sorted(positions)


def test_h2c_upgrade_from_http11(gateway: GatewayProcess) -> None:
    """curl --http2 on http:// asks to upgrade its first request (Upgrade: h2c), body included."""
    def curl(*args: str) -> tuple[str, str]:
        out = subprocess.run(["curl", "-sS", "--http2", "-w", "\\n%{http_version} %{http_code}", *args],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        body, _, status = out.stdout.rpartition("\n")
        return body, status

    body, status = curl("-H", "X-Amz-Target: Kinesis_20131202.ListStreams", "-H", "Content-Type: application/x-amz-json-1.1",
                        "-d", "{}", gateway.url + "/")
    assert status == "2 200" and "StreamNames" in json.loads(body)
    body, status = curl(gateway.url + "/")  # a bodiless GET
    assert status == "2 200" and "<html" in body.lower()
    response = httpx.post(gateway.url + "/", content=b"{}", headers={"X-Amz-Target": "Kinesis_20131202.ListStreams",
                                                                     "Upgrade": "h2c", "Connection": "Upgrade"})
    assert response.status_code == 200  # no HTTP2-Settings: not an upgrade request, served over HTTP/1.1


@pytest.mark.parametrize("head, expected", [
    (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n", "upgrade"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\nContent-Length: 4\r\n\r\n{}", False),
    (b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\nContent-Length: 2\r\n\r\n{}", "upgrade"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c", False),  # head not complete yet
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None),  # plain HTTP/1.1
    (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABk\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\nContent-Length: 99999999\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: !!\r\n\r\n", None),  # not base64url
    (b"GET / HTTP/1.1\r\n Upgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n", None),  # malformed: aiohttp answers it
    (b"x" * 70_000, None),  # no head end within the limit
])
def test_which_requests_upgrade(head: bytes, expected: object) -> None:
    from gateway.http2 import H2cUpgrade, h2c_upgrade

    got = h2c_upgrade(head)
    if expected == "upgrade":
        assert isinstance(got, H2cUpgrade) and got.consumed == len(head)
        assert got.headers[:4] == [(b":method", head.split(b" ")[0]), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"h")]
        assert not any(name in (b"upgrade", b"http2-settings", b"host") for name, _ in got.headers)
    else:
        assert got is expected


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    """A gateway on HTTPS that requires SigV4 (key AKIDEXAMPLE / secret)."""
    base = tmp_path_factory.mktemp("http2-tls")
    cert, key = make_cert(base)
    config = base / "gateway.toml"
    config.write_text(f'[tls]\ncertfile = "{cert}"\nkeyfile = "{key}"\n[auth]\ncredentials = {{ AKIDEXAMPLE = "secret" }}\n')
    gw = GatewayProcess(base / "data", "--config", str(config)).start()
    yield gw, cert
    gw.kill()


def test_js_sdk_default_client_over_tls_alpn_h2_with_sigv4(tls_gateway: tuple[GatewayProcess, Path]) -> None:
    gw, cert = tls_gateway
    url, trust = f"https://127.0.0.1:{gw.port}", {"NODE_EXTRA_CA_CERTS": str(cert)}
    check_js_session(run_js_kinesis(url, "js-tls", env=trust))
    # signatures over HTTP/2 are checked (the SDK signs :authority, not Host)
    seen = run_js_kinesis(url, "js-tls-wrong", "AKIDEXAMPLE", "wrong", env=trust)
    assert seen["error"]["name"] == "InvalidSignatureException"
    seen = run_js_kinesis(url, "js-tls-unknown", "AKIDUNKNOWN", "secret", env=trust)
    assert seen["error"]["name"] == "UnrecognizedClientException"


def test_alpn_picks_the_protocol_per_connection(tls_gateway: tuple[GatewayProcess, Path]) -> None:
    gw, cert = tls_gateway
    url = f"https://127.0.0.1:{gw.port}/"
    unsigned = {"X-Amz-Target": "Kinesis_20131202.ListStreams", "Content-Type": "application/x-amz-json-1.1"}
    for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
        with httpx.Client(http2=http2, verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as client:
            response = client.post(url, content=b"{}", headers=unsigned)
            assert response.http_version == version
            assert response.status_code == 400 and response.json()["__type"] == "MissingAuthenticationTokenException"
    # what a browser gets over https (ALPN h2): the player page, and a server-sent event stream
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as browser:
        page = browser.get(url)
        assert page.http_version == "HTTP/2" and page.status_code == 200 and "<html" in page.text.lower()
        # stream data is not served unsigned while the gateway verifies SigV4: an AWS-shaped 403 over h2
        events = browser.get(url + "analytics/events")
        assert events.http_version == "HTTP/2" and events.status_code == 403
        assert events.json()["__type"] == "AccessDeniedException"
    # boto3 (HTTP/1.1) on the same port
    kinesis = boto3.client("kinesis", endpoint_url=url, region_name="us-east-1", verify=str(cert),
                           aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    kinesis.create_stream(StreamName="boto3-tls", ShardCount=1)
    assert "boto3-tls" in kinesis.list_streams()["StreamNames"]
