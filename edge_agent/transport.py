"""The agent's one HTTP stack: keep-alive connections (``edge_agent.http_client``), SigV4
signing, AWS errors translated.

Both senders go through it: PutRecords (``edge_agent.kinesis_client``) and GetDataEndpoint +
PutMedia (``edge_agent.media_forwarder``). Why not botocore clients: on a Pi their per-request
overhead (model-driven serialisation, endpoint rules) costs several ms of CPU per call and their
models ~11 MB of RSS per service; why not urllib3: its general machinery cost ~5 times the CPU of
``http_client`` per PutRecords, and ~2 MiB of RSS. Credentials may still come from botocore's
chain (``edge_agent.aws``). Every failure leaves as ``SendError``: ``code`` is the AWS error code
of an error answer, or ``"connection"`` when no answer came (refused, reset, timed out, TLS).

PutMedia's body is streamed with chunked encoding over the same kind of connection. The whole
body is written before the answer is read, so acks are read after the request's last fragment
went out; the media forwarder bounds a request to ``media_fragments_per_request`` fragments for
that reason. If the gateway answers early (an unknown stream) and closes, its answer is still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from edge_agent import aws
from edge_agent.config import GatewaySection
from edge_agent.errors import CONNECTION, SendError
from edge_agent.http_client import Client, Response

#: The exactly-once headers (``gateway.wire`` reads them): who sends, and one spool seq per record
#: of a PutRecords call / per fragment of a PutMedia body, so the gateway recognises a replay.
PRODUCER_HEADER = "X-Edge-Producer-Id"
RECORD_SEQS_HEADER = "X-Edge-Record-Seqs"
FRAGMENT_SEQS_HEADER = "X-Edge-Fragment-Seqs"
#: Most bytes of an error answer read (its JSON is small; a proxy's HTML page may not be).
MAX_ERROR_BODY = 65536


def aws_error(status: int, headers: Mapping[str, str], body: bytes) -> SendError:
    """The ``SendError`` of an AWS error answer (JSON ``__type``/``message``, or ``x-amzn-ErrorType``);
    ``headers`` with lower-case names."""
    message = body[:300].decode("utf-8", errors="replace")
    code = ""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = str(parsed.get("__type") or "")
        message = str(parsed.get("message") or parsed.get("Message") or message)
    code = code or headers.get("x-amzn-errortype", "") or ""
    code = code.split("#")[-1].split(":")[0] or f"HTTP{status}"
    return SendError(code, message, status)


class Transport:
    """Signed requests to the gateway (or AWS) over kept-alive connections."""

    def __init__(self, session: Any, gateway: GatewaySection) -> None:
        self.session = session
        self.region = gateway.region
        self._http = Client(gateway.connect_timeout_seconds, gateway.read_timeout_seconds, gateway.ca_file)

    def _signed(self, url: str, service: str, headers: Mapping[str, str], body: bytes | None) -> dict[str, str]:
        return aws.sign("POST", url, headers, self.session, self.region, service, body)

    def post(self, url: str, service: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        """POST a signed body; the answer's body when it is a 200, else ``SendError``."""
        try:
            response = self._http.request("POST", url, self._signed(url, service, headers, body), body)
            data = response.read(None if response.status == 200 else MAX_ERROR_BODY)
        except OSError as exc:
            raise SendError(CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            raise aws_error(response.status, response.headers, data)
        return data

    def post_json(self, url: str, service: str, payload: Mapping[str, Any] | bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """POST a JSON document (or its encoding); the answer's JSON object, else ``SendError``."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        data = self.post(url, service, body, headers)
        try:
            result = json.loads(data or b"{}")
        except ValueError as exc:
            raise SendError("InvalidResponse", "the answer is not JSON", 200) from exc
        if not isinstance(result, dict):
            raise SendError("InvalidResponse", "the answer is not a JSON object", 200)
        return result

    def post_stream(self, url: str, service: str, chunks: Iterable[bytes], headers: Mapping[str, str]) -> Response:
        """POST ``chunks`` with chunked encoding (signed UNSIGNED-PAYLOAD); the 200 answer, its body
        unread (``Response.stream``; ``close`` it when done)."""
        try:
            response = self._http.request("POST", url, self._signed(url, service, headers, None), chunks)
        except OSError as exc:
            raise SendError(CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            try:
                body = response.read(MAX_ERROR_BODY)
            except OSError:
                body = b""
            response.close()
            raise aws_error(response.status, response.headers, body)
        return response

    def close(self) -> None:
        self._http.close()
