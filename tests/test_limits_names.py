"""Hostile stream and fragment names never reach outside the data dir and get AWS-shaped 4xx errors."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from helpers import GatewayProcess

HOSTILE = ["../escape", "../../../../tmp/escape", "a/b", "/abs", "x\x00y", "sp ace", "semi;colon", "\u00e9t\u00e9", "..\\win"]
CANARY = b"CANARY-outside-the-data-dir"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("names")
    (root / "canary").write_bytes(CANARY)
    gateway = GatewayProcess(root / "sandbox" / "data").start()
    yield gateway
    gateway.kill()


def outside_files(gw: GatewayProcess) -> set[Path]:
    root = gw.data_dir.parent.parent
    return {p for p in root.rglob("*") if gw.data_dir not in p.parents and p != gw.data_dir and not p.name.startswith("gateway-")}


def raw(gw: GatewayProcess, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    try:
        conn.putrequest("POST", path)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value.encode("latin-1", "replace"))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_rejected(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    response = info.value.response
    assert 400 <= response["ResponseMetadata"]["HTTPStatusCode"] < 500, response
    return str(response["Error"]["Code"])


def test_hostile_data_stream_names(gw: GatewayProcess) -> None:
    before = outside_files(gw)
    kinesis = gw.client("kinesis")
    for name in HOSTILE + ["a" * 129]:  # Kinesis stream names: 1..128 chars
        assert assert_rejected(kinesis.create_stream, StreamName=name, ShardCount=1) == "ValidationException"
        assert assert_rejected(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="k") == "ValidationException"
        assert assert_rejected(kinesis.describe_stream, StreamName=name) == "ValidationException"
    # "." and ".." match the AWS pattern [a-zA-Z0-9_.-]+; they must still live inside the data dir
    for name in (".", "..", "..."):
        try:
            kinesis.create_stream(StreamName=name, ShardCount=1)
        except ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] < 500
    assert outside_files(gw) == before


def test_hostile_video_stream_names(gw: GatewayProcess) -> None:
    before = outside_files(gw)
    video = gw.client("kinesisvideo")
    for name in HOSTILE + ["a" * 257]:  # Kinesis Video stream names: 1..256 chars
        assert_rejected(video.create_stream, StreamName=name, DataRetentionInHours=1)
        assert_rejected(video.describe_stream, StreamName=name)
    for name in HOSTILE + [".", ".."]:
        status, headers, body = raw(gw, "/putMedia", b"\x1a\x45\xdf\xa3", {
            "x-amzn-stream-name": name, "x-amzn-fragment-timecode-type": "ABSOLUTE", "x-amzn-producer-start-timestamp": "0"})
        # (a NUL byte never makes it past the HTTP parser: that 400 comes from the gateway's protocol handler)
        assert 400 <= status < 500 and "x-amzn-errortype" in headers, (name, status, body)
    assert outside_files(gw) == before


def test_fragment_numbers_cannot_name_files(gw: GatewayProcess) -> None:
    gw.client("kinesisvideo").create_stream(StreamName="frag-names", DataRetentionInHours=1)
    canary = str(gw.data_dir.parent.parent / "canary")
    for fragment in ["../../canary", canary, "1/../../canary", "\x00", "9" * 200, "-1"]:
        status, headers, body = raw(gw, "/getMediaForFragmentList", json.dumps({"StreamName": "frag-names", "Fragments": [fragment]}).encode(),
                                    {"Content-Type": "application/json"})
        assert CANARY not in body
        assert status < 500
        if status >= 400:
            assert "x-amzn-errortype" in headers
    assert gw.proc is not None and gw.proc.poll() is None
