"""SigV4 on a real gateway process: boto3 with the right key passes; everything else gets AWS's errors."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import cbor2
import pytest
from botocore import UNSIGNED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from fuzz_support import SCALE
from helpers import REGION, GatewayProcess, aws_client, free_port, wait_for_port

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # what helpers.aws_client signs with
LIMITED, LIMITED_SECRET = "AKIDLIMITED", "limited-secret"
AUTH_TOML = f"""
[auth]
credentials = {{ {KEY} = "{SECRET}", {LIMITED} = "{LIMITED_SECRET}" }}
allowed_streams = {{ {LIMITED} = ["allowed", "allowed-video"] }}
"""
AUTH_ERRORS = {
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "AccessDeniedException",
    "NotAuthorizedException",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("auth")
    (tmp / "gateway.toml").write_text(AUTH_TOML)
    gateway = GatewayProcess(tmp / "data", "--config", str(tmp / "gateway.toml"), "--no-limits").start()
    yield gateway
    gateway.kill()


def client(gw: GatewayProcess, service: str, key: str, secret: str, **config: Any) -> Any:
    return boto3.client(
        service, endpoint_url=gw.url, region_name=REGION, aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def sign(
    gw: GatewayProcess, service: str, path: str, body: bytes, headers: dict[str, str],
    key: str = KEY, secret: str = SECRET, signed_body: bytes | None = None,
) -> dict[str, str]:
    """Headers botocore's signer adds for this request; ``signed_body`` lets a test sign other bytes."""
    request = AWSRequest(method="POST", url=gw.url + path, data=body if signed_body is None else signed_body, headers=headers)
    SigV4Auth(Credentials(key, secret), service, REGION).add_auth(request)
    return dict(request.headers.items())


def post(gw: GatewayProcess, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


KINESIS_JSON = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"}


def test_signed_boto3_clients_pass(gw: GatewayProcess) -> None:
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="signed", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="signed", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    kinesis.put_record(StreamName="signed", Data=b"hello", PartitionKey="k")
    shard = kinesis.describe_stream(StreamName="signed")["StreamDescription"]["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(StreamName="signed", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=it)["Records"]] == [b"hello"]
    video = gw.client("kinesisvideo")
    video.create_stream(StreamName="signed-video", DataRetentionInHours=1)
    assert "signed-video" in [s["StreamName"] for s in video.list_streams()["StreamInfoList"]]
    # the media and archived-media clients sign for "kinesisvideo" too
    assert gw.client("kinesis-video-archived-media").list_fragments(StreamName="signed-video")["Fragments"] == []
    assert error_of(client(gw, "kinesis-video-archived-media", KEY, "wrong").list_fragments, StreamName="signed-video")[:2] == (
        "InvalidSignatureException", 403)


def test_unsigned_requests_are_rejected(gw: GatewayProcess) -> None:
    assert error_of(client(gw, "kinesis", KEY, SECRET, signature_version=UNSIGNED).list_streams)[:2] == (
        "MissingAuthenticationTokenException", 400)
    assert error_of(client(gw, "kinesisvideo", KEY, SECRET, signature_version=UNSIGNED).list_streams)[:2] == (
        "MissingAuthenticationTokenException", 403)


def test_unknown_key_and_wrong_secret(gw: GatewayProcess) -> None:
    assert error_of(client(gw, "kinesis", "AKIDUNKNOWN", SECRET).list_streams)[:2] == ("UnrecognizedClientException", 400)
    assert error_of(client(gw, "kinesisvideo", "AKIDUNKNOWN", SECRET).list_streams)[:2] == ("UnrecognizedClientException", 403)
    code, status, message = error_of(client(gw, "kinesis", KEY, "not-the-secret").list_streams)
    assert (code, status) == ("InvalidSignatureException", 400)
    assert "signature we calculated does not match" in message
    assert error_of(client(gw, "kinesisvideo", KEY, "not-the-secret").list_streams)[:2] == ("InvalidSignatureException", 403)
    # the operator sees who was refused, once a minute per client and error, not once per request
    for _ in range(3):
        error_of(client(gw, "kinesis", "AKIDUNKNOWN", SECRET).list_streams)
    log = gw.log()
    assert log.count("refused POST / from 127.0.0.1: UnrecognizedClientException") == 1
    assert f"from 127.0.0.1 key {KEY}: InvalidSignatureException" in log
    assert SECRET not in log


def test_tampered_body_and_wrong_service_scope(gw: GatewayProcess) -> None:
    body = json.dumps({"Limit": 10}).encode()
    headers = sign(gw, "kinesis", "/", body, KINESIS_JSON)
    status, _, raw = post(gw, "/", body, headers)
    assert status == 200, raw
    tampered = json.dumps({"Limit": 11}).encode()
    status, resp_headers, raw = post(gw, "/", tampered, headers)
    assert (status, json.loads(raw)["__type"]) == (400, "InvalidSignatureException")
    assert resp_headers["x-amzn-errortype"] == "InvalidSignatureException"
    # a signature made for kinesisvideo is not valid for kinesis
    status, _, raw = post(gw, "/", body, sign(gw, "kinesisvideo", "/", body, KINESIS_JSON))
    assert json.loads(raw) == {"__type": "InvalidSignatureException", "message": "Credential should be scoped to correct service: 'kinesis'. "}


def test_malformed_authorization_header(gw: GatewayProcess) -> None:
    headers = sign(gw, "kinesis", "/", b"{}", KINESIS_JSON)
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/kinesis/aws4_request"
    status, _, raw = post(gw, "/", b"{}", headers)
    assert status == 400 and json.loads(raw)["__type"] == "IncompleteSignatureException"
    headers["Authorization"] = "AWS4-HMAC-SHA512 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00"
    assert json.loads(post(gw, "/", b"{}", headers)[2])["__type"] == "IncompleteSignatureException"
    headers = {k: v for k, v in sign(gw, "kinesis", "/", b"{}", KINESIS_JSON).items() if k != "X-Amz-Date"}
    assert "X-Amz-Date" in json.loads(post(gw, "/", b"{}", headers)[2])["message"]


@pytest.mark.parametrize("minutes, phrase", [(-10, "Signature expired"), (10, "Signature not yet current")])
def test_stale_or_future_signatures(gw: GatewayProcess, monkeypatch: pytest.MonkeyPatch, minutes: int, phrase: str) -> None:
    skewed = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: skewed)
    code, status, message = error_of(gw.client("kinesis").list_streams)
    assert (code, status) == ("InvalidSignatureException", 400)
    assert message.startswith(phrase)
    # inside the allowed skew (default 300 s) the same clock error is fine
    skewed = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(minutes=minutes / 5)
    gw.client("kinesis").list_streams()


def test_key_limited_to_its_streams(gw: GatewayProcess) -> None:
    admin = gw.client("kinesis")
    for name in ("allowed", "forbidden"):
        admin.create_stream(StreamName=name, ShardCount=1)
    limited = client(gw, "kinesis", LIMITED, LIMITED_SECRET)
    limited.get_waiter("stream_exists").wait(StreamName="allowed", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    limited.put_record(StreamName="allowed", Data=b"x", PartitionKey="k")
    code, status, message = error_of(limited.put_record, StreamName="forbidden", Data=b"x", PartitionKey="k")
    assert (code, status) == ("AccessDeniedException", 400)
    assert f"user/{LIMITED} is not authorized to perform: kinesis:PutRecord" in message
    arn = admin.describe_stream_summary(StreamName="forbidden")["StreamDescriptionSummary"]["StreamARN"]
    assert error_of(limited.describe_stream_summary, StreamARN=arn)[0] == "AccessDeniedException"
    limited.list_streams()  # no stream named: allowed

    admin_video = gw.client("kinesisvideo")
    for name in ("allowed-video", "forbidden-video"):
        admin_video.create_stream(StreamName=name, DataRetentionInHours=1)
    limited_video = client(gw, "kinesisvideo", LIMITED, LIMITED_SECRET)
    limited_video.describe_stream(StreamName="allowed-video")
    assert error_of(limited_video.describe_stream, StreamName="forbidden-video")[:2] == ("AccessDeniedException", 401)
    # the media APIs answer NotAuthorizedException, also for PutMedia's header-named stream
    headers = {"x-amzn-stream-name": "forbidden-video", "x-amzn-fragment-timecode-type": "ABSOLUTE",
               "x-amzn-producer-start-timestamp": "0", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    status, resp_headers, _ = post(gw, "/putMedia", b"", sign(gw, "kinesisvideo", "/putMedia", b"", headers, LIMITED, LIMITED_SECRET))
    assert (status, resp_headers["x-amzn-errortype"]) == (401, "NotAuthorizedException")


def test_putmedia_streaming_signatures(gw: GatewayProcess) -> None:
    """PutMedia is signed without hashing the body: UNSIGNED-PAYLOAD, or the empty-body hash (KVS producer SDK)."""
    gw.client("kinesisvideo").create_stream(StreamName="media-auth", DataRetentionInHours=1)
    base = {"x-amzn-stream-name": "media-auth", "x-amzn-fragment-timecode-type": "ABSOLUTE", "x-amzn-producer-start-timestamp": "0"}
    body = b"\x1a\x45\xdf\xa3 not really mkv"
    for headers in (
        sign(gw, "kinesisvideo", "/putMedia", body, {**base, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}),
        sign(gw, "kinesisvideo", "/putMedia", body, base, signed_body=b""),
    ):
        status, resp_headers, raw = post(gw, "/putMedia", body, headers)
        assert resp_headers.get("x-amzn-errortype") not in AUTH_ERRORS, raw
        assert status == 200  # past auth: the handler acks (here an ERROR ack for the garbage body)
    status, resp_headers, _ = post(gw, "/putMedia", body, base)
    assert (status, resp_headers["x-amzn-errortype"]) == (403, "MissingAuthenticationTokenException")


def test_cbor_requests_are_verified_and_answered_in_cbor(gw: GatewayProcess) -> None:
    body = cbor2.dumps({"Limit": 5})
    headers = {"Content-Type": "application/x-amz-cbor-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"}
    status, _, raw = post(gw, "/", body, sign(gw, "kinesis", "/", body, headers))
    assert status == 200 and "StreamNames" in cbor2.loads(raw)
    status, resp_headers, raw = post(gw, "/", body, sign(gw, "kinesis", "/", body, headers, secret="wrong"))
    assert status == 400 and resp_headers["content-type"].startswith("application/x-amz-cbor-1.1")
    assert cbor2.loads(raw)["__type"] == "InvalidSignatureException"


def test_get_routes_are_not_api_calls(gw: GatewayProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/no-such-page")
    resp = conn.getresponse()
    assert resp.status == 404 and json.loads(resp.read())["__type"] == "UnknownOperationException"


def start_gateway(tmp: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "--port", str(port), "--data-dir", str(tmp / "data"), *args]
    log = open(tmp / f"gw-{port}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parent.parent)
    log.close()
    wait_for_port(port, proc=proc)
    return proc, port


def test_credentials_from_environment(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.toml"
    creds.write_text('credentials = { FILEKEY = "file-secret" }\nmax_clock_skew_seconds = 60\n')
    env = {**os.environ, "EDGE_GATEWAY_CREDENTIALS_FILE": str(creds), "EDGE_GATEWAY_ACCESS_KEY_ID": "ENVKEY",
           "EDGE_GATEWAY_SECRET_ACCESS_KEY": "env-secret"}
    proc, port = start_gateway(tmp_path, env)
    try:
        url = f"http://127.0.0.1:{port}"
        for key, secret in (("FILEKEY", "file-secret"), ("ENVKEY", "env-secret")):
            boto3.client("kinesisvideo", endpoint_url=url, region_name=REGION, aws_access_key_id=key, aws_secret_access_key=secret).list_streams()
        with pytest.raises(ClientError, match="UnrecognizedClientException"):
            aws_client("kinesisvideo", url).list_streams()
    finally:
        proc.kill()
        proc.wait()
    log = (tmp_path / f"gw-{port}.log").read_text()
    assert "SigV4 required (2 access keys)" in log


def test_bad_credentials_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main  # in-process: these paths exit before anything is served

    bad = tmp_path / "bad.toml"
    bad.write_text('[auth]\ncredentials = { K = "s" }\nallowed_streams = { OTHER = ["x"] }\n')
    assert main(["--config", str(bad)]) == 2
    assert "auth.allowed_streams.OTHER" in capsys.readouterr().err
    monkeypatch.setenv("EDGE_GATEWAY_CREDENTIALS_FILE", str(tmp_path / "missing.toml"))
    assert main([]) == 2
    assert "missing.toml" in capsys.readouterr().err
    monkeypatch.delenv("EDGE_GATEWAY_CREDENTIALS_FILE")
    monkeypatch.setenv("EDGE_GATEWAY_ACCESS_KEY_ID", "KEY-WITHOUT-SECRET")
    assert main([]) == 2
    assert "EDGE_GATEWAY_SECRET_ACCESS_KEY" in capsys.readouterr().err


def test_start_line_says_whether_auth_is_on(gateway: GatewayProcess) -> None:
    from gateway.config import AuthConfig, GatewayConfig
    from gateway.server import security_summary

    assert "unsigned requests accepted (loopback only)" in gateway.log()
    summary, warning = security_summary(GatewayConfig(host="0.0.0.0"))
    assert "unsigned requests accepted" in summary and warning and "WITHOUT credentials" in warning
    summary, warning = security_summary(GatewayConfig(host="0.0.0.0", auth=AuthConfig(credentials={"K": "s"})))
    assert summary == "SigV4 required (1 access key)" and warning and "without TLS" in warning


def test_agent_signed_putmedia_is_persisted(gw: GatewayProcess) -> None:
    """The edge agent's own PutMedia signer (UNSIGNED-PAYLOAD, service kinesisvideo) passes, fragments are stored."""
    import botocore.session
    from video_support import camera_fragments

    from edge_agent.aws import sign_streaming_request

    gw.client("kinesisvideo").create_stream(StreamName="agent-video", DataRetentionInHours=1)
    session = botocore.session.Session()
    session.set_credentials(LIMITED, LIMITED_SECRET)
    body = b"".join(f.data for f in camera_fragments(2, fps=5, width=64, height=48))
    base = {"x-amzn-stream-name": "agent-video", "x-amzn-fragment-timecode-type": "ABSOLUTE",
            "x-amzn-producer-start-timestamp": "1700000000.000"}
    status, headers, raw = post(gw, "/putMedia", body, sign_streaming_request("POST", gw.url + "/putMedia", base, session, REGION))
    assert (status, headers.get("x-amzn-errortype")) == (401, "NotAuthorizedException")  # not one of LIMITED's streams
    session.set_credentials(KEY, SECRET)
    status, _, raw = post(gw, "/putMedia", body, sign_streaming_request("POST", gw.url + "/putMedia", base, session, REGION))
    acks = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert status == 200 and [a["EventType"] for a in acks].count("PERSISTED") == 2, acks


def test_unknown_callers_are_refused_before_their_body_is_read(gw: GatewayProcess) -> None:
    import socket
    import time

    for extra in (b"", b"Authorization: AWS4-HMAC-SHA256 Credential=AKIDNOBODY/20240101/us-east-1/kinesis/aws4_request, "
                       b"SignedHeaders=host;x-amz-date, Signature=00\r\nX-Amz-Date: 20240101T000000Z\r\n"):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            start = time.monotonic()
            # 15 MB announced, none sent: the answer must not wait for it
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                         b"X-Amz-Target: Kinesis_20131202.PutRecords\r\nContent-Length: 15000000\r\n" + extra + b"\r\n")
            head = sock.recv(65536)
            assert time.monotonic() - start < 5  # not the 60 s body timeout
        assert head.startswith(b"HTTP/1.1 400")
        assert b"MissingAuthenticationTokenException" in head or b"UnrecognizedClientException" in head


@st.composite
def mangled_auth(draw: st.DrawFn, valid: dict[str, str]) -> dict[str, str]:
    headers = dict(valid)
    name = draw(st.sampled_from(["Authorization", "X-Amz-Date", "Host", "X-Amz-Target"]))
    value = headers.get(name, "")
    kind = draw(st.sampled_from(["random", "flip", "truncate", "drop"]))
    if kind == "random":
        headers[name] = draw(st.from_regex(r"[ -~]{0,300}", fullmatch=True))
    elif kind == "flip" and value:
        pos = draw(st.integers(0, len(value) - 1))
        headers[name] = value[:pos] + draw(st.sampled_from("0aZ=,/; ")) + value[pos + 1:]
    elif kind == "truncate":
        headers[name] = value[: draw(st.integers(0, len(value)))]
    else:
        headers.pop(name, None)
    return headers


def test_fuzzed_signature_headers_never_pass_or_crash(gw: GatewayProcess) -> None:
    body = json.dumps({"Limit": 1}).encode()
    valid = sign(gw, "kinesis", "/", body, KINESIS_JSON)
    seen: dict[str, int] = {}

    @settings(max_examples=120 * SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(headers=mangled_auth(valid))
    def run(headers: dict[str, str]) -> None:
        status, resp_headers, raw = post(gw, "/", body, headers)
        if status == 200:  # only a change that leaves what was signed intact (spacing, separators) may pass
            signature = valid["Authorization"].rpartition("Signature=")[2]
            assert signature in headers.get("Authorization", "") and f"Credential={KEY}/" in headers["Authorization"], headers
            return
        assert status in (400, 403, 404), (headers, status, raw[:200])
        code = resp_headers.get("x-amzn-errortype", "")
        assert code in AUTH_ERRORS | {"UnknownOperationException", "InvalidArgumentException"}, (headers, raw[:200])
        seen[code] = seen.get(code, 0) + 1

    run()
    assert gw.proc is not None and gw.proc.poll() is None
    assert {"InvalidSignatureException", "IncompleteSignatureException"} <= set(seen), seen
