"""Kinesis Video control plane through boto3 ``kinesisvideo`` against a real gateway process."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import GatewayProcess


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(Path(tmp_path_factory.mktemp("video-control")) / "data").start()
    yield proc
    proc.kill()


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_create_describe_update_delete(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    arn = kv.create_stream(StreamName="front-door", DataRetentionInHours=2, MediaType="video/h264", DeviceName="pi-1")["StreamARN"]
    assert arn.startswith("arn:aws:kinesisvideo:us-east-1:") and "/front-door/" in arn
    info = kv.describe_stream(StreamName="front-door")["StreamInfo"]
    assert (info["StreamARN"], info["Status"], info["DataRetentionInHours"], info["MediaType"], info["DeviceName"]) == (
        arn, "ACTIVE", 2, "video/h264", "pi-1")
    assert kv.describe_stream(StreamARN=arn)["StreamInfo"]["StreamName"] == "front-door"

    kv.update_data_retention(StreamName="front-door", CurrentVersion=info["Version"],
                             Operation="INCREASE_DATA_RETENTION", DataRetentionChangeInHours=10)
    updated = kv.describe_stream(StreamName="front-door")["StreamInfo"]
    assert updated["DataRetentionInHours"] == 12 and updated["Version"] != info["Version"]
    with pytest.raises(ClientError) as exc:  # the old version is stale now
        kv.update_data_retention(StreamName="front-door", CurrentVersion=info["Version"],
                                 Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=1)
    assert error_of(exc) == ("VersionMismatchException", 400)
    with pytest.raises(ClientError) as exc:
        kv.update_data_retention(StreamName="front-door", CurrentVersion=updated["Version"],
                                 Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=13)
    assert error_of(exc) == ("InvalidArgumentException", 400)

    kv.delete_stream(StreamARN=arn)
    with pytest.raises(ClientError) as exc:
        kv.describe_stream(StreamName="front-door")
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    # the name is free again, with a new ARN
    assert kv.create_stream(StreamName="front-door")["StreamARN"] != arn


def test_errors_have_model_names_and_statuses(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    kv.create_stream(StreamName="dup")
    with pytest.raises(ClientError) as exc:
        kv.create_stream(StreamName="dup")
    assert error_of(exc) == ("ResourceInUseException", 400)
    with pytest.raises(ClientError) as exc:
        kv.create_stream(StreamName="../../etc/passwd")
    assert error_of(exc) == ("InvalidArgumentException", 400)
    with pytest.raises(ClientError) as exc:
        kv.get_data_endpoint(StreamName="nope", APIName="GET_MEDIA")
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        kv.delete_stream(StreamARN="arn:aws:kinesisvideo:us-east-1:000000000000:stream/nope/1")
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    info = kv.describe_stream(StreamName="dup")["StreamInfo"]
    with pytest.raises(ClientError) as exc:
        kv.delete_stream(StreamARN=info["StreamARN"], CurrentVersion="0000")
    assert error_of(exc) == ("VersionMismatchException", 400)


def test_list_streams_prefix_and_pagination(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    names = [f"yard-{i:02d}" for i in range(7)]
    for name in names:
        kv.create_stream(StreamName=name)
    seen: list[str] = []
    kwargs: dict = {"MaxResults": 3, "StreamNameCondition": {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "yard-"}}
    while True:
        page = kv.list_streams(**kwargs)
        assert len(page["StreamInfoList"]) <= 3
        seen += [s["StreamName"] for s in page["StreamInfoList"]]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert seen == names
    paginated = [s["StreamName"] for p in kv.get_paginator("list_streams").paginate() for s in p["StreamInfoList"]]
    assert set(names) <= set(paginated)


def test_get_data_endpoint_is_this_gateway_for_every_api(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    kv.create_stream(StreamName="endpoint-check")
    for api in ("PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST", "GET_HLS_STREAMING_SESSION_URL", "GET_CLIP"):
        assert kv.get_data_endpoint(StreamName="endpoint-check", APIName=api)["DataEndpoint"] == gw.url


def test_update_stream_and_tags(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    kv.create_stream(StreamName="tagged", Tags={"site": "barn", "owner": "ops"})
    assert kv.list_tags_for_stream(StreamName="tagged")["Tags"] == {"site": "barn", "owner": "ops"}
    arn = kv.describe_stream(StreamName="tagged")["StreamInfo"]["StreamARN"]
    kv.tag_stream(StreamARN=arn, Tags={"site": "shed", "camera": "2"})
    kv.untag_stream(StreamName="tagged", TagKeyList=["owner", "missing"])
    assert kv.list_tags_for_stream(StreamARN=arn)["Tags"] == {"site": "shed", "camera": "2"}
    with pytest.raises(ClientError) as exc:
        kv.tag_stream(StreamName="tagged", Tags={f"k{i}": "v" for i in range(49)})
    assert error_of(exc) == ("TagsPerResourceExceededLimitException", 400)
    assert len(kv.list_tags_for_stream(StreamName="tagged")["Tags"]) == 2  # nothing applied

    version = kv.describe_stream(StreamName="tagged")["StreamInfo"]["Version"]
    kv.update_stream(StreamName="tagged", CurrentVersion=version, MediaType="video/h265", DeviceName="pi-9")
    info = kv.describe_stream(StreamName="tagged")["StreamInfo"]
    assert (info["MediaType"], info["DeviceName"]) == ("video/h265", "pi-9") and info["Version"] != version
    with pytest.raises(ClientError) as exc:
        kv.update_stream(StreamName="tagged", CurrentVersion=version, MediaType="video/h264")
    assert error_of(exc) == ("VersionMismatchException", 400)


def post(gw: GatewayProcess, path: str, body: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data.startswith(b"{") else {})
    finally:
        conn.close()


def test_odd_values_are_4xx_never_500(gw: GatewayProcess) -> None:
    gw.client("kinesisvideo").create_stream(StreamName="odd")
    big = "9" * 60
    cases = [
        ("/getDataEndpoint", '{"StreamName": "odd", "APIName": ["GET_MEDIA"]}'),
        ("/createStream", '{"StreamName": "odd-2", "DataRetentionInHours": 1e400}'),
        ("/createStream", '{"StreamName": "odd-3", "DataRetentionInHours": 99999999999999999999999}'),
        ("/listStreams", '{"MaxResults": 99999999999999999999999}'),
        ("/listFragments", '{"StreamName": "odd", "FragmentSelector": {"FragmentSelectorType": "SERVER_TIMESTAMP",'
                           ' "TimestampRange": {"StartTimestamp": NaN, "EndTimestamp": Infinity}}}'),
        ("/listFragments", '{"StreamName": "odd", "NextToken": "eyJhIjoiMSIsInMiOiJ4In0="}'),  # {"a":"1","s":"x"}
        ("/getMedia", f'{{"StreamName": "odd", "StartSelector": {{"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": "{big}"}}}}'),
        ("/getMediaForFragmentList", f'{{"StreamName": "odd", "Fragments": ["{big}"]}}'),
        ("/getMedia", '{"StreamName": "odd", "StartSelector": {"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": 1e300}}'),
        ("/describeStream", '[1, 2]'),
        ("/tagStream", '{"StreamName": "odd", "Tags": {"k": 5}}'),
    ]
    for path, body in cases:
        status, error = post(gw, path, body)
        assert 400 <= status < 500 and error.get("__type"), (path, body, status, error)
    for header, value in (("x-amzn-producer-start-timestamp", "inf"), ("X-Edge-Fragment-Seqs", "1,-2"),
                          ("x-amzn-producer-start-timestamp", "nan")):
        headers = {"x-amzn-stream-name": "odd", "x-amzn-fragment-timecode-type": "RELATIVE",
                   "x-amzn-producer-start-timestamp": "1700000000", "X-Edge-Producer-Id": "p", "X-Edge-Fragment-Seqs": "1"}
        status, error = post(gw, "/putMedia", "", {**headers, header: value})
        assert status == 400 and error["__type"] == "InvalidArgumentException", (header, value, status)
    assert "Traceback" not in gw.log()


def test_aws_cli_works_unchanged(gw: GatewayProcess) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    aws = str(Path(sys.executable).parent / "aws")

    def cli(*args: str) -> dict:
        out = subprocess.run([aws, *args, "--endpoint-url", gw.url, "--output", "json"], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    arn = cli("kinesisvideo", "create-stream", "--stream-name", "cli-cam", "--data-retention-in-hours", "24")["StreamARN"]
    assert cli("kinesisvideo", "describe-stream", "--stream-arn", arn)["StreamInfo"]["StreamName"] == "cli-cam"
    assert cli("kinesis-video-archived-media", "list-fragments", "--stream-name", "cli-cam") == {"Fragments": []}
