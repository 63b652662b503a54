"""A lean PutRecords client: the Kinesis JSON 1.1 wire call, SigV4-signed with botocore's signer.

Why not a botocore ``kinesis`` client: on a Pi its per-request overhead (model-driven
serialisation, user-agent building, endpoint rules) costs several ms of CPU per call and its
loaded model and endpoint rules ~11 MB of RSS. This sends exactly what botocore sends
(``X-Amz-Target: Kinesis_20131202.PutRecords``, ``application/x-amz-json-1.1``, base64 data,
SigV4 for service ``kinesis``) over a keep-alive urllib3 pool, so it reaches our gateway and
real AWS alike. Errors are raised as botocore's own exception types (``ClientError`` with the
AWS error code, ``EndpointConnectionError``/``ReadTimeoutError`` for the network), so callers
handle them exactly as they would a botocore client's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from edge_agent import aws
from edge_agent.config import GatewaySection

TARGET = "Kinesis_20131202.PutRecords"
CONTENT_TYPE = "application/x-amz-json-1.1"


class KinesisClient:
    """``put_records(StreamName, Records, headers)`` → the PutRecords response as a dict."""

    def __init__(self, session: Any, gateway: GatewaySection, endpoint_url: str | None = None) -> None:
        self.session = session
        self.region = gateway.region
        self.url = (endpoint_url or gateway.endpoint_url).rstrip("/") + "/"
        timeout = urllib3.Timeout(connect=gateway.connect_timeout_seconds, read=gateway.read_timeout_seconds)
        kwargs: dict[str, Any] = {"timeout": timeout, "retries": False, "maxsize": 2}
        if urlsplit(self.url).scheme == "https" and gateway.ca_file:
            kwargs["ca_certs"] = gateway.ca_file
        self._pool = urllib3.PoolManager(**kwargs)

    def put_records(self, StreamName: str, Records: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None) -> dict[str, Any]:  # noqa: N803 - botocore's names
        body = json.dumps({
            "StreamName": StreamName,
            "Records": [{"Data": base64.b64encode(r["Data"]).decode("ascii"), "PartitionKey": r["PartitionKey"]} for r in Records],
        }, separators=(",", ":")).encode()
        request = AWSRequest(method="POST", url=self.url, data=body,
                             headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET, **(headers or {})})
        SigV4Auth(aws.frozen_credentials(self.session), "kinesis", self.region).add_auth(request)
        try:
            response = self._pool.request("POST", self.url, body=body, headers=dict(request.headers.items()))
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise ReadTimeoutError(endpoint_url=self.url, error=exc) from exc
        except urllib3.exceptions.ProtocolError as exc:
            raise ConnectionClosedError(endpoint_url=self.url, error=exc) from exc
        except urllib3.exceptions.HTTPError as exc:  # refused, DNS, TLS...
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        return self._parse(response)

    def _parse(self, response: Any) -> dict[str, Any]:
        try:
            payload = json.loads(response.data or b"{}")
        except ValueError:
            payload = {}
        if response.status != 200 or not isinstance(payload, dict):
            payload = payload if isinstance(payload, dict) else {}
            code = str(payload.get("__type") or response.headers.get("x-amzn-ErrorType") or f"HTTP{response.status}")
            code = code.split("#")[-1].split(":")[0]
            message = str(payload.get("message") or payload.get("Message") or "")
            raise ClientError({"Error": {"Code": code, "Message": message},
                               "ResponseMetadata": {"HTTPStatusCode": response.status}}, "PutRecords")
        return payload

    def close(self) -> None:
        self._pool.clear()
