"""HTTP/2 on the gateway's port: the AWS SDK for JavaScript v3 with its default settings (h2c prior
knowledge), httpx over HTTP/2, and boto3 over HTTP/1.1 on the same port of one real gateway."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import ROOT, GatewayProcess

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
    # HTTP/1.1 clients on the same port are unaffected
    with httpx.Client(timeout=10) as client:
        response = client.post(gateway.url + "/", content=b"{}", headers={"X-Amz-Target": "Kinesis_20131202.ListStreams",
                                                                         "Content-Type": "application/x-amz-json-1.1"})
        assert response.http_version == "HTTP/1.1" and response.status_code == 200
