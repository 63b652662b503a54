"""The MQTT source's own protocol handling: QoS 2, the broker's in-flight window, MQTT 5 Receive
Maximum, the fallback to 3.1.1, and brokers that misbehave (garbage, no PINGRESP).

Real Mosquitto where it can show the behaviour; a scripted broker on a loopback socket for what
Mosquitto never does (refuse MQTT 5, send garbage, go silent)."""

from __future__ import annotations

import logging
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.sources import mqtt_wire as wire
from edge_agent.sources.mqtt import MqttConfig
from edge_agent.spool import Spool
from helpers import ScriptedServer, committed, wait_until


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Callable[[str], bool]:
    caplog.set_level(logging.INFO, logger="edge_agent.sources.mqtt")
    return lambda text: any(text in r.getMessage() for r in caplog.records)


def publisher(port: int, version: int = mqtt.MQTTv311) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=version)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def source_config(port: int, topic: str, **extra: object) -> MqttConfig:
    return MqttConfig.from_dict({"stream": "s", "host": "127.0.0.1", "port": port, "topics": [topic],
                                 "client_id": f"c-{uuid.uuid4().hex[:8]}", "reconnect_min": 0.1, "reconnect_max": 0.2, **extra},
                                "sources.mqtt[0]")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_the_brokers_window_commits_at_once_not_after_the_commit_interval(mosquitto, tmp_path: Path, run_source, logged, protocol) -> None:
    """A 30 s commit interval, 300 QoS 1 messages: the broker sends 20 (3.1.1: Mosquitto's default
    window) or 10 (our MQTT 5 Receive Maximum) and waits; each full window is committed at once.
    The tail (fewer than a window: reads can split windows) waits out the interval, so it is not awaited."""
    topic = f"win-{uuid.uuid4().hex[:6]}/t"
    spool = Spool(tmp_path / "spool.db", commit_interval=30.0)
    config = source_config(mosquitto.port, topic, protocol=protocol, receive_maximum=10)
    window = config.broker_max_inflight if protocol == "3.1.1" else config.receive_maximum
    run_source(config, spool)
    pub = publisher(mosquitto.port)
    try:
        wait_until(lambda: logged(f"{config.name}: subscribed to"))
        for i in range(300):
            pub.publish(topic, f"{i:03d}".encode(), qos=1)
        wait_until(lambda: committed(spool, "records") > 300 - window, timeout=10)
    finally:
        pub.loop_stop()
        pub.disconnect()
    got = [r.data for r in spool.read("records", limit=1000)]
    assert got == [f"{i:03d}".encode() for i in range(len(got))]


def test_mosquitto_honours_the_v5_receive_maximum(mosquitto, tmp_path: Path, run_source, logged, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing acknowledged: Mosquitto sends exactly Receive Maximum messages (not its default 20)."""
    monkeypatch.setattr(wire, "ack_packets", lambda words: b"")
    topic = f"rm-{uuid.uuid4().hex[:6]}/t"
    spool = Spool(tmp_path / "spool.db", commit_interval=0.01)
    config = source_config(mosquitto.port, topic, receive_maximum=35)
    run_source(config, spool)
    pub = publisher(mosquitto.port)
    try:
        wait_until(lambda: logged(f"{config.name}: subscribed to"))
        for i in range(80):
            pub.publish(topic, b"m", qos=1).wait_for_publish(5)
        wait_until(lambda: committed(spool, "records") == 35)
        time.sleep(0.5)  # (not a synchronisation: nothing more may come)
        assert committed(spool, "records") == 35
    finally:
        pub.loop_stop()
        pub.disconnect()


# -- a scripted broker -------------------------------------------------------------------------


def read_packet(conn: socket.socket) -> tuple[int, bytes]:
    """(first byte, body) of the next packet; (0, b"") when the client closed the connection."""
    head = conn.recv(1)
    if not head:
        return 0, b""
    length = shift = 0
    while True:
        byte = conn.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            return 0, b""
        body += chunk
    return head[0], body


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int, v5: bool = False) -> bytes:
    body = struct.pack(">H", len(topic)) + topic + (struct.pack(">H", packet_id) if qos else b"") + (b"\x00" if v5 else b"") + payload
    return bytes([0x30 | qos << 1, len(body)]) + body


class ScriptedBroker(ScriptedServer):
    """A broker on a loopback port (``port``) whose n-th connection ``script(conn, n)`` plays."""


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[socket.socket, int], None]], ScriptedBroker]]:
    brokers: list[ScriptedBroker] = []

    def start(script: Callable[[socket.socket, int], None]) -> ScriptedBroker:
        brokers.append(ScriptedBroker(script))
        return brokers[-1]

    yield start
    for broker in brokers:
        broker.close()
        assert not broker.errors, broker.errors


def log_in(conn: socket.socket, level: int, suback: bytes = b"\x01") -> None:
    """Take CONNECT (at protocol ``level``) and SUBSCRIBE, grant them."""
    kind, body = read_packet(conn)
    assert kind == 0x10 and body[6] == level and body[7] & 0x02 == 0  # CONNECT, clean session/start 0
    conn.sendall(b"\x20\x02\x00\x00" if level == 4 else b"\x20\x03\x00\x00\x00")
    kind, body = read_packet(conn)
    assert kind == 0x82
    props = b"\x00" if level == 5 else b""
    conn.sendall(bytes([0x90, 2 + len(props) + len(suback)]) + body[:2] + props + suback)


def drain(conn: socket.socket) -> None:
    while read_packet(conn)[0]:
        pass


def test_falls_back_to_3_1_1_and_acknowledges_after_the_commit(scripted, tmp_path: Path, run_source, logged) -> None:
    """A broker that refuses MQTT 5 gets 3.1.1; a refused topic is logged; PUBACK (QoS 1) and PUBREC
    (QoS 2) come only once the message is in the spool file, PUBCOMP answers PUBREL."""
    path = tmp_path / "spool.db"
    spooled_at_ack: list[int] = []

    def in_file() -> int:
        import sqlite3

        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            db.close()

    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            kind, body = read_packet(conn)
            assert kind == 0x10 and body[6] == 5
            conn.sendall(b"\x20\x02\x00\x01")  # 3.1.1 CONNACK: unacceptable protocol version
            return
        log_in(conn, 4, suback=b"\x02\x80")
        conn.sendall(publish_packet(b"a/1", b"qos1", 1, 5))
        assert read_packet(conn) == (0x40, b"\x00\x05")
        spooled_at_ack.append(in_file())
        conn.sendall(publish_packet(b"a/2", b"qos2", 2, 6))
        assert read_packet(conn) == (0x50, b"\x00\x06")  # PUBREC
        spooled_at_ack.append(in_file())
        conn.sendall(b"\x62\x02\x00\x06")  # PUBREL
        assert read_packet(conn) == (0x70, b"\x00\x06")  # PUBCOMP
        spooled_at_ack.append(-1)
        drain(conn)

    broker = scripted(script)
    spool = Spool(path, commit_interval=0.2)
    config = source_config(broker.port, "a/#", qos=2, topics=["a/#", "b/#"])
    run_source(config, spool)
    wait_until(lambda: len(spooled_at_ack) == 3)
    assert spooled_at_ack == [1, 2, -1]
    assert logged("does not speak MQTT 5") and logged("refused the subscription to 'b/#'") and logged("subscribed to a/#")
    assert [(r.data, r.attrs) for r in spool.read("records")] == [(b"qos1", {}), (b"qos2", {"qos": 2})]


def test_a_broker_sending_garbage_is_dropped_and_reconnected(scripted, tmp_path: Path, run_source, logged) -> None:
    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            read_packet(conn)
            conn.sendall(b"\xff\xff\xff\xff\xff\xff")  # not a CONNACK
        elif n == 1:
            log_in(conn, 5)
            conn.sendall(publish_packet(b"a/1", b"x", 3, 1, v5=True))  # QoS 3
        else:
            log_in(conn, 5)
            conn.sendall(publish_packet(b"a/1", b"after garbage", 1, 1, v5=True))
            assert read_packet(conn)[0] == 0x40
        drain(conn)

    broker = scripted(script)
    spool = Spool(tmp_path / "spool.db", commit_interval=0.01)
    run_source(source_config(broker.port, "a/#"), spool)
    wait_until(lambda: committed(spool, "records") == 1)
    assert broker.connections == 3
    assert logged("malformed packet from the broker: remaining length longer than 4 bytes") and logged("malformed packet from the broker: PUBLISH with QoS 3")
    assert spool.read("records")[0].data == b"after garbage"


def test_a_silent_broker_is_given_up_after_a_keepalive(scripted, tmp_path: Path, run_source, logged) -> None:
    pings: list[float] = []

    def script(conn: socket.socket, n: int) -> None:
        log_in(conn, 5)
        if n == 0:  # never answers PINGREQ
            while (kind := read_packet(conn)[0]) == 0xC0:
                pings.append(time.monotonic())
            assert kind == 0  # the client closed
        else:
            conn.sendall(publish_packet(b"a/1", b"alive", 1, 1, v5=True))
            drain(conn)

    broker = scripted(script)
    spool = Spool(tmp_path / "spool.db", commit_interval=0.01)
    run_source(source_config(broker.port, "a/#", keepalive=1), spool)
    wait_until(lambda: committed(spool, "records") == 1, timeout=10)
    assert len(pings) >= 1 and logged("no answer to PINGREQ within 1 s")
