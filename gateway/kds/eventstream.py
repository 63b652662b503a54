"""The AWS event-stream framing (``application/vnd.amazon.eventstream``) SubscribeToShard speaks.

One message on the wire, all integers big-endian::

    total length (u32) | headers length (u32) | prelude CRC32 (of the 8 bytes before it)
    headers: name length (u8) | name (UTF-8) | value type (u8, 7 = string) | length (u16) | value
    payload (the event, JSON or CBOR as the request was)
    message CRC32 (of every byte before it, prelude CRC included)

Three kinds of message, told apart by the ``:message-type`` header: ``event`` (with
``:event-type``: ``initial-response`` first, then ``SubscribeToShardEvent``), ``exception``
(``:exception-type``: a modelled error such as ``ResourceInUseException``, payload
``{"message": ...}``), and ``error`` (``:error-code`` / ``:error-message``, no payload). Only
string headers are written, which is all the Kinesis events use. botocore's
``botocore/eventstream.py`` parses exactly this; ``decode`` here reads it back for tests.
"""

from __future__ import annotations

import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7
#: botocore refuses larger messages (``_MAX_PAYLOAD_LENGTH``); SubscribeToShard events stay far below.
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        raw_value = value.encode()
        out += struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def message(headers: dict[str, str], payload: bytes = b"") -> bytes:
    """One framed message with its two CRCs."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"event payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} bytes clients accept")
    head = _headers(headers)
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude_crc = zlib.crc32(prelude)
    body = prelude + struct.pack("!I", prelude_crc) + head + payload
    return body + struct.pack("!I", zlib.crc32(body))


def event(event_type: str, payload: bytes, content_type: str) -> bytes:
    return message({":message-type": "event", ":event-type": event_type, ":content-type": content_type}, payload)


def exception(code: str, payload: bytes, content_type: str) -> bytes:
    """A modelled exception (its payload is the error shape, ``{"message": ...}``)."""
    return message({":message-type": "exception", ":exception-type": code, ":content-type": content_type}, payload)


def decode(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a buffer of whole messages into (headers, payload), checking both CRCs (tests, tools)."""
    out = []
    offset = 0
    while offset < len(data):
        total, head_len, prelude_crc = struct.unpack_from("!III", data, offset)
        if zlib.crc32(data[offset : offset + 8]) != prelude_crc:
            raise ValueError(f"prelude CRC mismatch at byte {offset}")
        end = offset + total
        (message_crc,) = struct.unpack_from("!I", data, end - 4)
        if zlib.crc32(data[offset : end - 4]) != message_crc:
            raise ValueError(f"message CRC mismatch at byte {offset}")
        headers: dict[str, str] = {}
        pos = offset + 12
        while pos < offset + 12 + head_len:
            name_len = data[pos]
            name = data[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind, value_len = struct.unpack_from("!BH", data, pos)
            if kind != _STRING:
                raise ValueError(f"header {name!r} has type {kind}; only strings are read here")
            headers[name] = data[pos + 3 : pos + 3 + value_len].decode()
            pos += 3 + value_len
        out.append((headers, bytes(data[pos : end - 4])))
        offset = end
    return out
