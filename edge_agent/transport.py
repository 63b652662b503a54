"""The agent's one HTTP stack: a keep-alive urllib3 pool, SigV4 signing, AWS errors translated.

Both senders go through it: PutRecords (``edge_agent.kinesis_client``) and GetDataEndpoint +
PutMedia (``edge_agent.media_forwarder``). Why not botocore clients: on a Pi their per-request
overhead (model-driven serialisation, endpoint rules) costs several ms of CPU per call and their
models ~11 MB of RSS per service; botocore is used for what it is best at, credentials and the
SigV4 signer. Every failure leaves as ``SendError``: ``code`` is the AWS error code of an error
answer, or ``"connection"`` when no answer came (refused, reset, timed out, TLS).

PutMedia's body is streamed with chunked encoding through the same pool. urllib3 writes the whole
body before it reads the answer, so acks are read after the request's last fragment went out;
the media forwarder bounds a request to ``media_fragments_per_request`` fragments for that reason.
If the gateway answers early (an unknown stream) and closes, urllib3 still reads its answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import urllib3

from edge_agent import aws
from edge_agent.config import GatewaySection
from edge_agent.errors import CONNECTION, SendError

#: The exactly-once headers (``gateway.wire`` reads them): who sends, and one spool seq per record
#: of a PutRecords call / per fragment of a PutMedia body, so the gateway recognises a replay.
PRODUCER_HEADER = "X-Edge-Producer-Id"
RECORD_SEQS_HEADER = "X-Edge-Record-Seqs"
FRAGMENT_SEQS_HEADER = "X-Edge-Fragment-Seqs"
#: Connections kept per host: one sender thread each uses one at a time.
POOL_SIZE = 2
#: Most bytes of an error answer read (its JSON is small; a proxy's HTML page may not be).
MAX_ERROR_BODY = 65536


def aws_error(status: int, headers: Mapping[str, str], body: bytes) -> SendError:
    """The ``SendError`` of an AWS error answer (JSON ``__type``/``message``, or ``x-amzn-ErrorType``)."""
    message = body[:300].decode("utf-8", errors="replace")
    code = ""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = str(parsed.get("__type") or "")
        message = str(parsed.get("message") or parsed.get("Message") or message)
    code = code or headers.get("x-amzn-ErrorType", "") or ""
    code = code.split("#")[-1].split(":")[0] or f"HTTP{status}"
    return SendError(code, message, status)


class Transport:
    """Signed requests to the gateway (or AWS) over one connection pool."""

    def __init__(self, session: Any, gateway: GatewaySection) -> None:
        self.session = session
        self.region = gateway.region
        timeout = urllib3.Timeout(connect=gateway.connect_timeout_seconds, read=gateway.read_timeout_seconds)
        kwargs: dict[str, Any] = {"timeout": timeout, "retries": False, "maxsize": POOL_SIZE}
        if gateway.ca_file:
            kwargs["ca_certs"] = gateway.ca_file
        self._pool = urllib3.PoolManager(**kwargs)

    def _signed(self, url: str, service: str, headers: Mapping[str, str], body: bytes | None) -> dict[str, str]:
        return aws.sign("POST", url, headers, self.session, self.region, service, body)

    def post(self, url: str, service: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        """POST a signed body; the answer's body when it is a 200, else ``SendError``."""
        try:
            response = self._pool.request("POST", url, body=body, headers=self._signed(url, service, headers, body))
        except urllib3.exceptions.HTTPError as exc:
            raise SendError(CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            raise aws_error(response.status, response.headers, response.data[:MAX_ERROR_BODY])
        return bytes(response.data)

    def post_json(self, url: str, service: str, payload: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        """POST a JSON document; the answer's JSON object, else ``SendError``."""
        data = self.post(url, service, json.dumps(payload, separators=(",", ":")).encode(), headers)
        try:
            result = json.loads(data or b"{}")
        except ValueError as exc:
            raise SendError("InvalidResponse", "the answer is not JSON", 200) from exc
        if not isinstance(result, dict):
            raise SendError("InvalidResponse", "the answer is not a JSON object", 200)
        return result

    def post_stream(self, url: str, service: str, chunks: Iterable[bytes], headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """POST ``chunks`` with chunked encoding (signed UNSIGNED-PAYLOAD); the 200 answer, unread."""
        try:
            response = self._pool.request("POST", url, body=chunks, headers=self._signed(url, service, headers, None),
                                          chunked=True, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise SendError(CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            try:
                body = response.read(MAX_ERROR_BODY)
            except urllib3.exceptions.HTTPError:
                body = b""
            response.release_conn()
            raise aws_error(response.status, response.headers, body)
        return response

    def close(self) -> None:
        self._pool.clear()
