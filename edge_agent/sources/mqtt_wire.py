"""MQTT 3.1.1 and 5 packets, as far as a subscriber needs them: encode what it sends, decode what a
broker sends. Formats from the OASIS specifications (MQTT 3.1.1 chapter 3, MQTT 5.0 chapter 3).

A packet is a fixed header (type in the high nibble of byte 0, flags in the low one), a "remaining
length" (1-4 bytes, 7 bits each, least significant first) and that many bytes. ``PacketReader``
takes whatever ``recv`` returned, returns every complete packet in it and keeps the tail for the
next read, so a read holding several packets, or a packet split across reads, costs one pass.
Malformed input raises ``MalformedPacket``: the caller drops the connection (the broker redelivers).

A PUBLISH too large to keep (``skip_above``) is not buffered whole: its header is read, the rest of
it is skipped as it streams in, and it comes out as a ``Publish`` with ``payload=None`` so the
caller can count and acknowledge it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
PACKET_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ", PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}
#: Protocol levels in CONNECT.
V311, V5 = 4, 5
#: The longest remaining length the 4-byte encoding can say (256 MiB).
MAX_REMAINING_LENGTH = 268_435_455

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # 3.1.1, and 5 with reason 0 (normal disconnection) left out

#: MQTT 5 property identifiers this client writes or reads.
PROP_CONTENT_TYPE = 0x03
PROP_SESSION_EXPIRY = 0x11
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_REASON_STRING = 0x1F
PROP_RECEIVE_MAXIMUM = 0x21
PROP_TOPIC_ALIAS = 0x23
# Every MQTT 5 property by the form of its value (spec 2.2.2.2), so an unknown one is skipped right.
_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_FORMS = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT, 0x11: _FOUR, 0x12: _STRING,
    0x13: _TWO, 0x15: _STRING, 0x16: _BINARY, 0x17: _BYTE, 0x18: _FOUR, 0x19: _BYTE, 0x1A: _STRING, 0x1C: _STRING,
    0x1F: _STRING, 0x21: _TWO, 0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR, 0x28: _BYTE,
    0x29: _BYTE, 0x2A: _BYTE,
}

#: CONNACK return codes of MQTT 3.1.1 and reason codes of MQTT 5, as the log says them.
CONNACK_REASONS = {
    1: "unacceptable protocol version", 2: "client identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error", 0x83: "implementation specific error",
    0x84: "unsupported protocol version", 0x85: "client identifier not valid", 0x86: "bad user name or password",
    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x8C: "bad authentication method", 0x95: "packet too large", 0x97: "quota exceeded", 0x9C: "use another server",
    0x9D: "server moved", 0x9F: "connection rate exceeded",
}
SUBACK_REASONS = {
    0x80: "unspecified error", 0x83: "implementation specific error", 0x87: "not authorized", 0x8F: "topic filter invalid",
    0x91: "packet identifier in use", 0x97: "quota exceeded", 0x9E: "shared subscriptions not supported",
    0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}
#: The CONNACK codes that say "this broker does not speak that protocol version" (3.1.1 code 1, 5 reason 0x84).
UNSUPPORTED_VERSION = (1, 0x84)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class MalformedPacket(Exception):
    """The broker sent bytes that are not a packet a client may receive."""


def reason_text(code: int, table: dict[int, str]) -> str:
    return f"{table.get(code, 'reason')} (0x{code:02x})"


# -- encoding ----------------------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _properties(props: dict[int, int]) -> bytes:
    """Integer properties only (all this client sends): two-byte or four-byte by their form."""
    body = b"".join(bytes([pid]) + (_U16.pack(v) if _PROPERTY_FORMS[pid] == _TWO else _U32.pack(v)) for pid, v in props.items())
    return _remaining_length(len(body)) + body


def encode_connect(
    client_id: str, keepalive: int, version: int, username: str | None = None, password: str | None = None,
    session_expiry: int = 0, receive_maximum: int = 0,
) -> bytes:
    """CONNECT keeping the session (3.1.1 clean session 0; 5 clean start 0 with a session expiry)."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string("MQTT") + bytes([version, flags]) + _U16.pack(keepalive)
    if version == V5:
        props = {PROP_SESSION_EXPIRY: session_expiry}
        if receive_maximum:
            props[PROP_RECEIVE_MAXIMUM] = receive_maximum
        body += _properties(props)
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(CONNECT << 4, body)


def encode_subscribe(packet_id: int, topics: tuple[str, ...], qos: int, version: int) -> bytes:
    body = _U16.pack(packet_id) + (b"\x00" if version == V5 else b"")
    body += b"".join(_string(topic) + bytes([qos]) for topic in topics)
    return _packet(SUBSCRIBE << 4 | 0b0010, body)


def ack_packet(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC or PUBCOMP for ``packet_id`` (success; MQTT 5 lets the reason code be left out)."""
    return bytes((kind << 4, 2, packet_id >> 8, packet_id & 0xFF))


#: An acknowledgement as one 32-bit word: ``ACK_WORDS[qos] | packet_id`` is the PUBACK (QoS 1) or
#: PUBREC (QoS 2) of ``ack_packet``; a batch's words become its packets with one ``ack_packets``.
ACK_WORDS = (0, (PUBACK << 4) << 24 | 2 << 16, (PUBREC << 4) << 24 | 2 << 16)


def ack_packets(words: list[int]) -> bytes:
    """The packets of ``ACK_WORDS`` words, in order, as one write."""
    return struct.pack(f">{len(words)}I", *words)


# -- decoding ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Publish:
    topic: bytes
    #: None: larger than the reader keeps (skipped, only to be counted and acknowledged).
    payload: bytes | None
    qos: int
    packet_id: int
    dup: bool
    retain: bool
    content_type: str | None = None
    #: Payload size (also of a skipped one).
    size: int = 0


@dataclass(slots=True)
class Packet:
    """Any other packet: its type, the flags nibble and the body after the fixed header."""

    kind: int
    flags: int
    body: bytes


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    """A variable byte integer at ``i``: (value, index after it)."""
    value = shift = 0
    while True:
        if i >= end or shift > 21:
            raise MalformedPacket("bad variable byte integer")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def parse_properties(buf: bytes, i: int, end: int) -> tuple[dict[int, Any], int]:
    """The MQTT 5 properties at ``i`` (length first) as {identifier: value}; and the index after them.
    A user property (0x26) may repeat: only the last is kept (nothing here reads them)."""
    length, i = _varint(buf, i, end)
    stop = i + length
    if stop > end:
        raise MalformedPacket("properties run past the packet")
    props: dict[int, Any] = {}
    while i < stop:
        pid, i = _varint(buf, i, stop)
        form = _PROPERTY_FORMS.get(pid)
        value: Any
        if form == _BYTE:
            value, i = buf[i], i + 1
        elif form == _TWO:
            value, i = int.from_bytes(buf[i:i + 2], "big"), i + 2
        elif form == _FOUR:
            value, i = int.from_bytes(buf[i:i + 4], "big"), i + 4
        elif form == _VARINT:
            value, i = _varint(buf, i, stop)
        elif form in (_STRING, _BINARY):
            n = int.from_bytes(buf[i:i + 2], "big")
            value, i = bytes(buf[i + 2:i + 2 + n]), i + 2 + n
        elif form == _PAIR:
            n = int.from_bytes(buf[i:i + 2], "big")
            i += 2 + n
            n = int.from_bytes(buf[i:i + 2], "big")
            value, i = None, i + 2 + n
        else:
            raise MalformedPacket(f"unknown property 0x{pid:02x}")
        if i > stop:
            raise MalformedPacket(f"property 0x{pid:02x} runs past the properties")
        props[pid] = value
    return props, stop


class PacketReader:
    """Splits the byte stream from a broker into packets (see the module docstring)."""

    def __init__(self, version: int, skip_above: int = MAX_REMAINING_LENGTH) -> None:
        self.version = version
        self.skip_above = skip_above
        self._buf = b""
        self._skip = 0  # bytes of an oversized PUBLISH still to discard

    def feed(self, data: bytes) -> list[Publish | Packet]:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buf = self._buf + data if self._buf else data
        out: list[Publish | Packet] = []
        i, n = 0, len(buf)
        v5 = self.version == V5
        skip_above = self.skip_above
        while n - i >= 2:
            first = buf[i]
            length = buf[i + 1]
            j = i + 2
            if length & 0x80:  # a remaining length of more than one byte
                length, j = _remaining(buf, i + 1, n)
                if j < 0:
                    break
            end = j + length
            kind = first >> 4
            if kind != PUBLISH and length > MAX_CONTROL_PACKET:
                raise MalformedPacket(f"{PACKET_NAMES.get(kind, kind)} of {length} bytes")
            if end > n:
                if kind == PUBLISH and length > self.skip_above:
                    # oversized: once its header is here, report it and skip the rest as it arrives
                    publish = _publish(first, buf, j, end, n, v5, keep=False)
                    if publish is not None:
                        out.append(publish)
                        self._skip = end - n
                        i = n
                    elif n - j > MAX_CONTROL_PACKET:
                        raise MalformedPacket("PUBLISH header longer than any topic and properties")
                break
            if kind == PUBLISH:
                # The common case inline: QoS 1 or 2, kept, a topic, no MQTT 5 properties; the rest
                # (and anything malformed) goes through _publish.
                k = j + 2 + (buf[j] << 8 | buf[j + 1]) if length >= 2 else end
                h = k + 2 + v5  # where the payload starts
                if (first & 0x06) in (0x02, 0x04) and j + 2 < k and h <= end and (not v5 or buf[k + 2] == 0) and length <= skip_above:
                    packet_id = buf[k] << 8 | buf[k + 1]
                    if packet_id:
                        out.append(Publish(bytes(buf[j + 2:k]), buf[h:end], first >> 1 & 3, packet_id, first & 0x08 != 0,
                                           first & 0x01 != 0, None, end - h))
                        i = end
                        continue
                out.append(_publish(first, buf, j, end, end, v5, keep=length <= skip_above))  # type: ignore[arg-type]
            elif kind:
                out.append(Packet(kind, first & 0x0F, buf[j:end]))
            else:
                raise MalformedPacket("packet type 0")
            i = end
        self._buf = buf[i:] if i < n else b""
        return out


#: Longest packet other than PUBLISH accepted from a broker (CONNACK, SUBACK... are a few bytes
#: plus reason strings and user properties); also the most a PUBLISH header may take.
MAX_CONTROL_PACKET = 256 * 1024


def _remaining(buf: bytes, i: int, n: int) -> tuple[int, int]:
    """The remaining length at ``i``: (value, index after it), or (0, -1) when it is not all here yet."""
    value = shift = 0
    for k in range(i, min(i + 4, n)):
        byte = buf[k]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, k + 1
        shift += 7
    if n - i >= 4:
        raise MalformedPacket("remaining length longer than 4 bytes")
    return 0, -1


def _publish(first: int, buf: bytes, i: int, end: int, avail: int, v5: bool, keep: bool) -> Publish | None:
    """The PUBLISH whose variable header starts at ``i`` and which ends at ``end``; only ``avail``
    bytes of ``buf`` are here (``avail < end`` for an oversized one read before it is whole): None
    when its header is not all here yet. ``keep`` False leaves the payload out."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    limit = min(end, avail)
    if i + 2 > limit:
        _need_more(limit, end, "PUBLISH shorter than its topic length")
        return None
    k = i + 2 + (buf[i] << 8 | buf[i + 1])
    if k > limit:
        _need_more(limit, end, "PUBLISH topic runs past the packet")
        return None
    topic = buf[i + 2:k]
    packet_id = 0
    if qos:
        if k + 2 > limit:
            _need_more(limit, end, "PUBLISH shorter than its packet identifier")
            return None
        packet_id = buf[k] << 8 | buf[k + 1]
        if not packet_id:
            raise MalformedPacket("PUBLISH QoS>0 with packet identifier 0")
        k += 2
    content_type = None
    if v5:
        if k < limit and buf[k] == 0:  # no properties: the common case
            k += 1
        else:
            try:
                props, k = parse_properties(buf, k, limit)
            except MalformedPacket:
                if limit < end:
                    return None
                raise
            if PROP_TOPIC_ALIAS in props:  # we allow none (no Topic Alias Maximum in CONNECT)
                raise MalformedPacket("PUBLISH with a topic alias")
            ctype = props.get(PROP_CONTENT_TYPE)
            content_type = ctype.decode(errors="replace") if ctype is not None else None
    if k > limit:
        _need_more(limit, end, "PUBLISH header runs past the packet")
        return None
    if not topic:
        raise MalformedPacket("PUBLISH without a topic")
    return Publish(bytes(topic), buf[k:end] if keep else None, qos, packet_id, bool(first & 0x08), bool(first & 0x01), content_type, end - k)


def _need_more(limit: int, end: int, problem: str) -> None:
    """A header cut short: fine while more of the packet is on its way (``limit < end``), else malformed."""
    if limit >= end:
        raise MalformedPacket(problem)
