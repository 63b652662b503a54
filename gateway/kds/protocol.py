"""The two encodings of the Kinesis JSON 1.1 protocol: JSON and CBOR (and the action its
``X-Amz-Target`` header names, for every JSON-protocol service on ``POST /``).

Same shapes, two spellings: JSON carries blobs as base64 strings and timestamps as epoch
seconds (float); CBOR (Java SDK, KPL, KCL) carries blobs as raw byte strings and timestamps as
epoch milliseconds. Handlers build responses through ``Codec.blob`` / ``Codec.ts`` so they never
care which one the client spoke.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, TypeVar

import cbor2

from gateway.errors import AwsError, serialization

H = TypeVar("H")

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
CBOR_CONTENT_TYPE = "application/x-amz-cbor-1.1"


def _cbor_epoch(value: Any, immutable: bool) -> dt.datetime:
    """Tag 1 as the AWS SDKs write it: epoch milliseconds (not the RFC's seconds)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError("tag 1 must wrap a number")
    return dt.datetime.fromtimestamp(value / 1000.0, tz=dt.timezone.utc)


class RawJson(bytes):
    """A response body a handler already encoded as JSON (only returned to JSON clients)."""


class Codec:
    """Decoding of requests and encoding of responses for one content type."""

    content_type = JSON_CONTENT_TYPE
    is_cbor = False

    def decode(self, body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise serialization(f"Request body is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise serialization("Start of list found where not expected" if isinstance(value, list) else "Expected null")
        return value

    def encode(self, value: dict[str, Any]) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    def blob(self, data: bytes) -> Any:
        return binascii.b2a_base64(data, newline=False).decode("ascii")

    def ts(self, seconds: float) -> Any:
        return round(seconds, 3)


class CborCodec(Codec):
    content_type = CBOR_CONTENT_TYPE
    is_cbor = True

    def decode(self, body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        try:
            value = cbor2.loads(body, semantic_decoders={1: _cbor_epoch})
        except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
            raise serialization(f"Request body is not valid CBOR: {exc}") from exc
        if not isinstance(value, dict):
            raise serialization("Start of list found where not expected" if isinstance(value, list) else "Expected null")
        return value

    def encode(self, value: dict[str, Any]) -> bytes:
        return cbor2.dumps(value)

    def blob(self, data: bytes) -> Any:
        return data

    def ts(self, seconds: float) -> Any:
        return int(round(seconds * 1000))


JSON = Codec()
CBOR = CborCodec()


def codec_for(content_type: str) -> Codec:
    return CBOR if content_type == CBOR_CONTENT_TYPE else JSON


def target_action(headers: Mapping[str, str], handlers: Mapping[str, H], endpoint: str) -> tuple[str, H]:
    """The action ``X-Amz-Target: <prefix>.<Action>`` names and its handler; UnknownOperationException
    ("... not supported by this ``endpoint``.") when it names none."""
    target = headers.get("X-Amz-Target", "")
    action = target.partition(".")[2]
    handler = handlers.get(action)
    if handler is None:
        raise AwsError("UnknownOperationException", f"Operation {action or target!r} is not supported by this {endpoint}.")
    return action, handler
