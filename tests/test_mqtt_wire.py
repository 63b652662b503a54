"""The MQTT packet codec (edge_agent/sources/mqtt_wire.py) on bytes built here from the spec's formats."""

from __future__ import annotations

import struct

import pytest

from edge_agent.sources import mqtt_wire as wire


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


def publish(topic: bytes, payload: bytes, qos: int = 1, packet_id: int = 1, dup: bool = False, retain: bool = False,
            props: bytes | None = None) -> bytes:
    """A PUBLISH as a broker sends it; ``props`` not None: MQTT 5 (the property bytes, length added here)."""
    body = utf8(topic) + (struct.pack(">H", packet_id) if qos else b"")
    if props is not None:
        body += varint(len(props)) + props
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + varint(len(body + payload)) + body + payload


@pytest.mark.parametrize("size", [0, 100, 127 - 9, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_remaining_lengths_of_one_to_four_bytes(size: int) -> None:
    packet = publish(b"t/x", b"p" * size)
    [got] = wire.PacketReader(wire.V311).feed(packet)
    assert isinstance(got, wire.Publish) and got.payload == b"p" * size and got.size == size


def test_several_packets_in_one_read_and_a_packet_split_across_reads() -> None:
    stream = (publish(b"a", b"1", qos=0) + publish(b"b", b"2" * 300, qos=1, packet_id=7, dup=True)
              + bytes([0x62, 2, 0, 7]) + b"\xd0\x00" + publish(b"c", b"3", qos=2, packet_id=65535, retain=True))
    whole = wire.PacketReader(wire.V311).feed(stream)
    assert [(p.topic, p.payload, p.qos, p.packet_id, p.dup, p.retain) for p in whole if isinstance(p, wire.Publish)] == [
        (b"a", b"1", 0, 0, False, False), (b"b", b"2" * 300, 1, 7, True, False), (b"c", b"3", 2, 65535, False, True)]
    assert [(p.kind, p.flags, p.body) for p in whole if isinstance(p, wire.Packet)] == [(wire.PUBREL, 2, b"\x00\x07"), (wire.PINGRESP, 0, b"")]
    for step in (1, 2, 3, 5, 64):  # every split point, the remaining length's bytes included
        reader = wire.PacketReader(wire.V311)
        pieces = [reader.feed(stream[i:i + step]) for i in range(0, len(stream), step)]
        assert [p for piece in pieces for p in piece] == whole


def test_v5_properties_are_skipped_and_content_type_kept() -> None:
    props = (b"\x01\x01"                                 # payload format indicator (byte)
             + b"\x02" + struct.pack(">I", 3600)          # message expiry interval (four bytes)
             + b"\x08" + utf8(b"reply/here")              # response topic (string)
             + b"\x09" + utf8(b"\x00\xffcorr")            # correlation data (binary)
             + b"\x26" + utf8(b"k") + utf8(b"v")          # user property (string pair)
             + b"\x0b" + varint(200_000)                  # subscription identifier (variable byte integer)
             + b"\x03" + utf8(b"application/json"))       # content type
    reader = wire.PacketReader(wire.V5)
    first, second = reader.feed(publish(b"t", b"{}", props=props) + publish(b"u", b"x", qos=0, props=b""))
    assert isinstance(first, wire.Publish) and first.payload == b"{}" and first.content_type == "application/json"
    assert isinstance(second, wire.Publish) and second.payload == b"x" and second.content_type is None
    # the same bytes read as MQTT 3.1.1 would take the properties for payload: the version matters
    assert wire.PacketReader(wire.V311).feed(publish(b"t", b"{}", props=b""))[0].payload == b"\x00{}"  # type: ignore[union-attr]
    # the common MQTT 5 case: QoS 1/2 without properties
    assert reader.feed(publish(b"t/a", b"xy", qos=2, packet_id=5, dup=True, retain=True, props=b"")) == [
        wire.Publish(b"t/a", b"xy", 2, 5, True, True, None, 2)]


@pytest.mark.parametrize("stream, problem", [
    (bytes([0x36, 5]) + utf8(b"t") + b"\x00\x01", "QoS 3"),
    (b"\x30\xff\xff\xff\xff\x01", "remaining length"),
    (bytes([0x32, 5, 0, 9]) + b"xyz", "topic runs past the packet"),
    (bytes([0x32, 5]) + utf8(b"t") + b"\x00\x00", "packet identifier 0"),
    (publish(b"t", b"x", props=b"\x23\x00\x01"), "topic alias"),
    (publish(b"t", b"x", props=b"\x7f\x00"), "unknown property"),
    (publish(b"", b"x", qos=0), "without a topic"),
    (publish(b"", b"x", qos=1), "without a topic"),
    (b"\x00\x00", "type 0"),
    (b"\x90" + varint(10_000_000), "SUBACK of 10000000 bytes"),
])
def test_malformed_packets_are_refused(stream: bytes, problem: str) -> None:
    with pytest.raises(wire.MalformedPacket, match=problem):
        wire.PacketReader(wire.V5 if b"\x23" in stream or b"\x7f" in stream else wire.V311).feed(stream)


def test_an_oversized_publish_is_reported_without_being_kept() -> None:
    reader = wire.PacketReader(wire.V311, skip_above=1000)
    big = publish(b"big/one", b"z" * 200_000, qos=1, packet_id=9)
    stream = big + publish(b"small", b"ok", packet_id=10)
    out = []
    for i in range(0, len(stream), 4096):
        out += reader.feed(stream[i:i + 4096])
        assert len(reader._buf) <= 4096  # never holds the big payload
    assert [(p.topic, p.payload, p.size, p.packet_id) for p in out if isinstance(p, wire.Publish)] == [
        (b"big/one", None, 200_000, 9), (b"small", b"ok", 2, 10)]


def test_what_the_client_sends() -> None:
    connect = wire.encode_connect("cid", 60, wire.V5, "user", "pw", session_expiry=300, receive_maximum=1000)
    assert connect[0] == 0x10 and connect[1] == len(connect) - 2
    body = connect[2:]
    assert body[:8] == b"\x00\x04MQTT\x05\xc0" and body[8:10] == b"\x00\x3c"  # level 5, user+password, clean start 0
    assert body[10:] == varint(8) + b"\x11" + struct.pack(">I", 300) + b"\x21" + struct.pack(">H", 1000) + utf8(b"cid") + utf8(b"user") + utf8(b"pw")
    assert wire.encode_connect("cid", 60, wire.V311)[2:] == utf8(b"MQTT") + b"\x04\x00\x00\x3c" + utf8(b"cid")
    assert wire.encode_subscribe(1, ("a/#", "b"), 2, wire.V311) == b"\x82\x0c\x00\x01" + utf8(b"a/#") + b"\x02" + utf8(b"b") + b"\x02"
    assert wire.encode_subscribe(1, ("a",), 1, wire.V5) == b"\x82\x07\x00\x01\x00" + utf8(b"a") + b"\x01"
    assert wire.ack_packet(wire.PUBREC, 0x1234) == b"\x50\x02\x12\x34"
    assert wire.ack_packets([wire.ACK_WORDS[1] | 7, wire.ACK_WORDS[2] | 0x1234]) == wire.ack_packet(wire.PUBACK, 7) + b"\x50\x02\x12\x34"
