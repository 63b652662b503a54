"""The wire itself: bad input over raw HTTP, the CBOR variant, and the AWS CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cbor2
import pytest
from helpers import GatewayProcess
from kds_support import kds_gateway  # noqa: F401  (fixture)

JSON_TYPE = "application/x-amz-json-1.1"
CBOR_TYPE = "application/x-amz-cbor-1.1"


@pytest.fixture(scope="module")
def gw(kds_gateway: GatewayProcess) -> GatewayProcess:
    kds_gateway.client("kinesis").create_stream(StreamName="wire", ShardCount=1)
    return kds_gateway


def call(gw: GatewayProcess, action: str, body: bytes, content_type: str = JSON_TYPE) -> tuple[int, str, bytes]:
    request = urllib.request.Request(gw.url + "/", data=body, method="POST", headers={"Content-Type": content_type, "X-Amz-Target": f"Kinesis_20131202.{action}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def json_error(gw: GatewayProcess, action: str, body: Any) -> tuple[int, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, payload = call(gw, action, raw)
    return status, json.loads(payload)["__type"]


RECORD = {"Data": base64.b64encode(b"ok").decode(), "PartitionKey": "k"}


@pytest.mark.parametrize(
    ("action", "body", "expected"),
    [
        ("PutRecord", b"{not json", "SerializationException"),
        ("PutRecord", b"[1, 2]", "SerializationException"),
        ("PutRecord", {"StreamName": 5, "Data": "b2s=", "PartitionKey": "k"}, "SerializationException"),
        ("PutRecord", {"StreamName": "wire", "Data": "***", "PartitionKey": "k"}, "SerializationException"),
        ("PutRecord", {"StreamName": "wire", "Data": "\u00e9t\u00e9", "PartitionKey": "k"}, "SerializationException"),
        ("PutRecords", {"StreamName": "wire", "Records": [{"Data": "\u00e9t\u00e9", "PartitionKey": "k"}]}, "SerializationException"),
        ("PutRecords", {"StreamName": "wire", "Records": "nope"}, "SerializationException"),
        ("GetRecords", {"ShardIterator": "x", "Limit": "ten"}, "SerializationException"),
        ("PutRecord", {"StreamName": "wire", "Data": "b2s="}, "ValidationException"),
        ("PutRecord", {"StreamName": "wire", "Data": "b2s=", "PartitionKey": ""}, "ValidationException"),
        ("PutRecord", {"StreamName": "wire", "Data": "b2s=", "PartitionKey": "k" * 257}, "ValidationException"),
        ("PutRecord", {"StreamName": "wire", "Data": base64.b64encode(b"x" * (1024 * 1024)).decode(), "PartitionKey": "k"}, "ValidationException"),
        ("PutRecords", {"StreamName": "wire", "Records": []}, "ValidationException"),
        ("PutRecords", {"StreamName": "wire", "Records": [RECORD] * 501}, "ValidationException"),
        ("PutRecords", {"StreamName": "wire", "Records": [{"Data": base64.b64encode(b"x" * 1000_000).decode(), "PartitionKey": "k"}] * 6}, "InvalidArgumentException"),
        ("PutRecord", {"StreamName": "wire", "Data": "b2s=", "PartitionKey": "k", "ExplicitHashKey": "1" * 40}, "ValidationException"),
        ("PutRecords", {"StreamName": "wire", "Records": [{"Data": "b2s=", "PartitionKey": "k", "ExplicitHashKey": "0123"}]}, "ValidationException"),
        ("PutRecords", {"StreamName": "wire", "Records": [{"Data": "b2s=", "PartitionKey": "k", "ExplicitHashKey": "9" * 39}]}, "InvalidArgumentException"),
        ("GetRecords", {}, "ValidationException"),
        ("GetRecords", {"ShardIterator": "forged.token"}, "InvalidArgumentException"),
        ("GetShardIterator", {"StreamName": "wire", "ShardId": "shardId-000000000000", "ShardIteratorType": "SOMEWHERE"}, "ValidationException"),
        ("PutRecord", {"StreamName": "missing", "Data": "b2s=", "PartitionKey": "k"}, "ResourceNotFoundException"),
        ("PutRecord", {"Data": "b2s=", "PartitionKey": "k"}, "ValidationException"),
        ("CreateStream", {"StreamName": "wire", "ShardCount": 1}, "ResourceInUseException"),
        ("FlyToTheMoon", {}, "UnknownOperationException"),
        ("ListShards", {"NextToken": None}, "ValidationException"),
    ],
)
def test_bad_input_gets_aws_errors(gw: GatewayProcess, action: str, body: Any, expected: str) -> None:
    status, code = json_error(gw, action, body)
    assert (status, code) == (400, expected)


def test_bad_batch_stores_nothing_and_good_data_still_flows(gw: GatewayProcess) -> None:
    status, code = json_error(gw, "PutRecords", {"StreamName": "wire", "Records": [RECORD, {"Data": "b2s=", "PartitionKey": ""}]})
    assert (status, code) == (400, "ValidationException")
    status, _, payload = call(gw, "PutRecords", json.dumps({"StreamName": "wire", "Records": [RECORD]}).encode())
    assert status == 200 and json.loads(payload)["FailedRecordCount"] == 0
    assert "Traceback" not in gw.log()


def test_cbor_round_trip(gw: GatewayProcess) -> None:
    def cbor_call(action: str, body: dict[str, Any]) -> tuple[int, Any]:
        status, ctype, payload = call(gw, action, cbor2.dumps(body), CBOR_TYPE)
        assert ctype == CBOR_TYPE
        return status, cbor2.loads(payload) if payload else None  # operations without output: empty body

    status, _ = cbor_call("CreateStream", {"StreamName": "cbor", "ShardCount": 1})
    assert status == 200
    blob = bytes(range(256))
    status, put = cbor_call("PutRecord", {"StreamName": "cbor", "Data": blob, "PartitionKey": "bin"})
    assert status == 200 and put["ShardId"] == "shardId-000000000000"
    status, desc = cbor_call("DescribeStream", {"StreamName": "cbor"})
    created = desc["StreamDescription"]["StreamCreationTimestamp"]
    assert isinstance(created, int) and abs(created - time.time() * 1000) < 60_000
    at = cbor2.CBORTag(1, int((time.time() - 60) * 1000))  # how the Java SDK writes timestamps
    status, it = cbor_call("GetShardIterator", {"StreamName": "cbor", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": at})
    assert status == 200
    status, got = cbor_call("GetRecords", {"ShardIterator": it["ShardIterator"]})
    [record] = got["Records"]
    assert record["Data"] == blob and isinstance(record["Data"], bytes)
    assert record["SequenceNumber"] == put["SequenceNumber"]
    stamp = record["ApproximateArrivalTimestamp"]
    assert isinstance(stamp, int) and abs(stamp - time.time() * 1000) < 60_000
    status, err = cbor_call("DescribeStream", {"StreamName": "nope"})
    assert status == 400 and err["__type"] == "ResourceNotFoundException"
    status, _, payload = call(gw, "PutRecord", b"\xff\x00garbage", CBOR_TYPE)
    assert status == 400 and cbor2.loads(payload)["__type"] == "SerializationException"


def test_aws_cli(gw: GatewayProcess, tmp_path: Path) -> None:
    aws = Path(sys.executable).parent / "aws"
    if not aws.exists():
        pytest.skip("awscli is not installed in the venv")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))

    def cli(*args: str) -> Any:
        out = subprocess.run([str(aws), "kinesis", *args, "--endpoint-url", gw.url, "--output", "json"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    gw.client("kinesis").create_stream(StreamName="cli", ShardCount=1)
    put = cli("put-record", "--stream-name", "cli", "--data", "hello from the cli", "--partition-key", "p")
    it = gw.client("kinesis").get_shard_iterator(StreamName="cli", ShardId=put["ShardId"], ShardIteratorType="TRIM_HORIZON")
    got = cli("get-records", "--shard-iterator", it["ShardIterator"])
    assert base64.b64decode(got["Records"][0]["Data"]) == b"hello from the cli"
    assert got["Records"][0]["SequenceNumber"] == put["SequenceNumber"] and got["MillisBehindLatest"] == 0


def test_cbor_put_records_batch(gw: GatewayProcess) -> None:
    records = [{"Data": bytes([i]) * 10, "PartitionKey": f"k{i}"} for i in range(20)] + [{"Data": b"\x00", "PartitionKey": "e", "ExplicitHashKey": "0"}]
    status, ctype, payload = call(gw, "PutRecords", cbor2.dumps({"StreamName": "wire", "Records": records}), CBOR_TYPE)
    result = cbor2.loads(payload)
    assert (status, ctype, result["FailedRecordCount"]) == (200, CBOR_TYPE, 0)
    assert len(result["Records"]) == 21 and all(r["ShardId"] == "shardId-000000000000" for r in result["Records"])
    status, _, payload = call(gw, "PutRecords", cbor2.dumps({"StreamName": "wire", "Records": [{"Data": "not bytes", "PartitionKey": "k"}]}), CBOR_TYPE)
    assert status == 400 and cbor2.loads(payload)["__type"] == "SerializationException"


def test_forged_next_tokens_are_invalid_arguments(gw: GatewayProcess) -> None:
    for action, token in (("ListStreams", {"after": 5}), ("ListShards", {"stream": "wire", "after": []}), ("ListShards", {"stream": "wire", "after": "a", "filter": {"Type": "AT_TIMESTAMP", "Timestamp": "x"}})):
        forged = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
        status, code = json_error(gw, action, {"NextToken": forged})
        assert status == 400 and code in ("InvalidArgumentException", "SerializationException")
