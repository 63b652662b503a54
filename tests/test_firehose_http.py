"""Firehose HTTP endpoint destinations and HTTP transforms against a receiver running in the test:
request format and headers, GZIP bodies, request ids stable across retries, the retry window,
S3 backup of failed (and all) data."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError
from firehose_support import objects, s3_config, start_gateway
from helpers import GatewayProcess, wait_until

NOW = {"SizeInMBs": 1, "IntervalInSeconds": 0}
UPPER = "arn:aws:lambda:us-east-1:000000000000:function:upper"


class Receiver:
    """An HTTP endpoint: records every request; ``fail[path]`` = how many more requests get a 500."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                doc = json.loads(body)
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": doc, "gzip": raw != body})
                    failing = receiver.fail.get(self.path, 0)
                    if failing:
                        receiver.fail[self.path] = failing - 1
                if failing:
                    self._answer(500, {"requestId": doc.get("requestId"), "errorMessage": "try again"})
                elif self.path == "/transform":
                    out = [{"recordId": r["recordId"], "result": "Ok", "data": base64.b64encode(base64.b64decode(r["data"]).upper()).decode()} for r in doc["records"]]
                    self._answer(200, {"records": out})
                else:
                    self._answer(200, {"requestId": doc["requestId"], "timestamp": doc["timestamp"]})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("firehose-http"), f'[firehose.transforms]\n"{UPPER}" = "{receiver.url}/transform"\n', "--no-limits")
    yield gw
    gw.kill()


def http_destination(receiver: Receiver, path: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"EndpointConfiguration": {"Url": receiver.url + path, "Name": "test", "AccessKey": "sekrit"},
            "BufferingHints": NOW, "S3Configuration": s3_config(bucket), **extra}


def test_request_format_gzip_headers_and_all_data_backup(gateway: GatewayProcess, receiver: Receiver) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="http-ok",
        HttpEndpointDestinationConfiguration=http_destination(
            receiver, "/ok", "http-ok-backup", S3BackupMode="AllData",
            RequestConfiguration={"ContentEncoding": "GZIP", "CommonAttributes": [{"AttributeName": "site", "AttributeValue": "north"}]},
        ),
    )
    described = firehose.describe_delivery_stream(DeliveryStreamName="http-ok")["DeliveryStreamDescription"]["Destinations"][0]
    endpoint = described["HttpEndpointDestinationDescription"]["EndpointConfiguration"]
    assert endpoint == {"Url": receiver.url + "/ok", "Name": "test"}  # the access key is never echoed
    sent = [b"rec-%d" % i for i in range(50)]
    firehose.put_record_batch(DeliveryStreamName="http-ok", Records=[{"Data": r} for r in sent])
    wait_until(lambda: sum(len(r["body"]["records"]) for r in receiver.to("/ok")) == 50, what="50 records posted")
    got = [base64.b64decode(rec["data"]) for r in receiver.to("/ok") for rec in r["body"]["records"]]
    assert got == sent
    first = receiver.to("/ok")[0]
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert first["gzip"] and headers["content-type"] == "application/json"
    assert headers["x-amz-firehose-access-key"] == "sekrit" and headers["x-amz-firehose-protocol-version"] == "1.0"
    assert headers["x-amz-firehose-request-id"] == first["body"]["requestId"]
    assert json.loads(headers["x-amz-firehose-common-attributes"]) == {"commonAttributes": {"site": "north"}}
    assert headers["x-amz-firehose-source-arn"].endswith(":deliverystream/http-ok")
    wait_until(lambda: b"".join(objects(gateway, "http-ok-backup").values()) == b"".join(sent), what="the AllData backup")


def test_retries_keep_the_request_id(gateway: GatewayProcess, receiver: Receiver) -> None:
    receiver.fail["/flaky"] = 2
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="http-flaky", HttpEndpointDestinationConfiguration=http_destination(receiver, "/flaky", "http-flaky-backup"))
    firehose.put_record(DeliveryStreamName="http-flaky", Record={"Data": b"once"})
    wait_until(lambda: len(receiver.to("/flaky")) == 3, what="two failures and a success")
    ids = {r["body"]["requestId"] for r in receiver.to("/flaky")}
    headers = {r["headers"]["X-Amz-Firehose-Request-Id"] for r in receiver.to("/flaky")}
    assert len(ids) == 1 and ids == headers
    assert objects(gateway, "http-flaky-backup") == {}  # FailedDataOnly: nothing failed in the end


def test_after_the_retry_window_failed_data_goes_to_s3(gateway: GatewayProcess, receiver: Receiver) -> None:
    receiver.fail["/down"] = 10**6
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="http-down",
        HttpEndpointDestinationConfiguration=http_destination(receiver, "/down", "http-down-backup", RetryOptions={"DurationInSeconds": 1}),
    )
    firehose.put_record_batch(DeliveryStreamName="http-down", Records=[{"Data": b"a"}, {"Data": b"b"}])
    wait_until(lambda: objects(gateway, "http-down-backup"), what="the failed batch in S3")
    [(key, body)] = objects(gateway, "http-down-backup").items()
    assert key.startswith("http-endpoint-failed/")
    docs = [json.loads(line) for line in body.splitlines()]
    assert [base64.b64decode(d["rawData"]) for d in docs] == [b"a", b"b"]
    assert all(d["errorCode"] == "HttpEndpoint.RequestFailed" and "HTTP 500" in d["errorMessage"] for d in docs)
    assert len(receiver.to("/down")) >= 2  # retried before giving up


def test_plain_http_only_on_loopback(gateway: GatewayProcess) -> None:
    with pytest.raises(ClientError) as info:
        gateway.client("firehose").create_delivery_stream(
            DeliveryStreamName="http-remote",
            HttpEndpointDestinationConfiguration={"EndpointConfiguration": {"Url": "http://example.com/x"}, "S3Configuration": s3_config("x")},
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"  # the model's https:// pattern, as on AWS


def test_transform_at_an_http_url(gateway: GatewayProcess, receiver: Receiver) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="url-transform",
        ExtendedS3DestinationConfiguration=s3_config("url-transform", BufferingHints=NOW, ProcessingConfiguration={
            "Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": UPPER}]}]}),
    )
    firehose.put_record_batch(DeliveryStreamName="url-transform", Records=[{"Data": b"abc\n"}, {"Data": b"def\n"}])
    wait_until(lambda: objects(gateway, "url-transform"), what="the transformed object")
    assert list(objects(gateway, "url-transform").values()) == [b"ABC\nDEF\n"]
    [event] = [r["body"] for r in receiver.to("/transform")]
    assert set(event) >= {"invocationId", "deliveryStreamArn", "region", "records"}
    assert {"recordId", "approximateArrivalTimestamp", "data"} <= set(event["records"][0])
