"""MQTT source against a real Mosquitto and a real paho publisher, into a real spool."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import ConfigError
from edge_agent.metrics import REGISTRY
from edge_agent.sources import SOURCE_TYPES
from edge_agent.sources import mqtt_wire as wire
from edge_agent.sources.mqtt import MqttConfig
from edge_agent.spool import Spool
from helpers import MosquittoProcess, committed, wait_for_port, wait_until

ROOT = Path(__file__).resolve().parent.parent


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def spooled(path: Path) -> list[tuple[bytes, str, str]]:
    """(data, partition_key, attrs) of every record, read straight from the SQLite file."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [(bytes(d), k, a) for d, k, a in db.execute("SELECT data, partition_key, attrs FROM records ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def rejected(source: str, reason: str) -> float:
    return REGISTRY.get_sample_value("edge_agent_records_rejected_total", {"source": source, "reason": reason}) or 0.0


@pytest.fixture
def subscribed() -> Iterator[Callable[[str], bool]]:
    """``subscribed(name)``: True once source ``name`` has been granted its subscriptions (its
    "subscribed to" log line), so a test publishes only when the broker will route to it."""
    names: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "%s: subscribed to %s" == record.msg:
                names.append(str(record.args[0]))  # type: ignore[index]

    logger = logging.getLogger("edge_agent.sources.mqtt")
    handler, level = Seen(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda name: name in names
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_messages_land_in_spool_with_topic_key_and_binary_payloads(mosquitto, tmp_path: Path, run_source, subscribed) -> None:
    topic_root = f"plant-{uuid.uuid4().hex[:6]}"
    name = f"mqtt-{topic_root}"
    config = MqttConfig.from_dict(
        {"name": name, "stream": "telemetry", "host": "127.0.0.1", "port": mosquitto.port, "topics": [f"{topic_root}/+/temp"],
         "max_payload_bytes": 1000},
        "sources.mqtt[0]",
    )
    spool = Spool(tmp_path / "spool.db")
    run_source(config, spool)
    pub = publisher(mosquitto.port)
    try:
        wait_until(lambda: pub.is_connected() and subscribed(name))
        binary = bytes(range(256))
        pub.publish(f"{topic_root}/a/temp", b"21.5", qos=1).wait_for_publish(5)
        pub.publish(f"{topic_root}/b/temp", binary, qos=1).wait_for_publish(5)
        pub.publish(f"{topic_root}/b/humidity", b"not subscribed", qos=1).wait_for_publish(5)
        pub.publish(f"{topic_root}/c/temp", b"x" * 1001, qos=1).wait_for_publish(5)
        for i in range(100):
            pub.publish(f"{topic_root}/a/temp", f"{i}".encode(), qos=1)
        pub.publish(f"{topic_root}/a/temp", b"last", qos=1).wait_for_publish(5)
        wait_until(lambda: committed(spool, "records") >= 103)
        wait_until(lambda: rejected(name, "too_large") == 1)
    finally:
        pub.loop_stop()
        pub.disconnect()
    records = spool.read("records", limit=1000)
    assert [r.data for r in records[:2]] == [b"21.5", binary]
    assert records[1].partition_key == f"{topic_root}/b/temp"
    assert records[1].attrs == {}  # topic = partition key, QoS 1, not retained: nothing to add
    assert records[1].kind == "telemetry" and records[1].stream == "telemetry" and records[1].source == name
    same_topic = [r.data for r in records if r.partition_key == f"{topic_root}/a/temp"]
    assert same_topic == [b"21.5"] + [f"{i}".encode() for i in range(100)] + [b"last"]  # in order
    assert all(b"not subscribed" != r.data for r in records)
    assert len(records) == 103
    spool.close()


def test_a_full_spool_leaves_messages_unacknowledged_not_lost(mosquitto, tmp_path: Path, run_source, subscribed, caplog) -> None:
    """Nothing may be dropped and the spool is full: messages wait (unacknowledged) until the
    forwarder frees room, then arrive once each, in order."""
    topic = f"full-{uuid.uuid4().hex[:6]}/t"
    # keepalive 1 s: pings go on, and are answered, while a batch waits for room
    config = MqttConfig.from_dict({"stream": "s", "host": "127.0.0.1", "port": mosquitto.port, "topics": [topic], "keepalive": 1},
                                  "sources.mqtt[0]")
    # A short commit interval: the source must outrun the 0.2 s drain below to fill the spool.
    spool = Spool(tmp_path / "spool.db", max_bytes=20_000, drop_order=(), commit_interval=0.005)
    run_source(config, spool)
    pub = publisher(mosquitto.port)
    expected = [f"{i:04d}".encode() + b"x" * 496 for i in range(200)]  # 100 kB through a 20 kB spool
    delivered: list[bytes] = []
    try:
        wait_until(lambda: pub.is_connected() and subscribed(config.name))
        for payload in expected:
            pub.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 30
        while len(delivered) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.2)  # the source runs into the cap meanwhile
            assert spool.stats().bytes <= 20_000
            batch = spool.read("records", limit=1000)
            delivered += [r.data for r in batch]
            spool.ack(r.seq for r in batch)
    finally:
        pub.loop_stop()
        pub.disconnect()
    assert delivered == expected
    assert any("spool full, waiting" in r.getMessage() for r in caplog.records)
    assert not any("disconnected" in r.getMessage() for r in caplog.records)
    spool.close()


def test_mqtt5_session_gets_messages_published_while_away(mosquitto, tmp_path: Path, run_source, subscribed) -> None:
    topic = f"v5-{uuid.uuid4().hex[:6]}/data"
    config = MqttConfig.from_dict(
        {"stream": "s", "host": "127.0.0.1", "port": mosquitto.port, "topics": [topic], "protocol": "5",
         "client_id": f"v5-{uuid.uuid4().hex[:6]}", "session_expiry": 300},
        "sources.mqtt[0]",
    )
    spool = Spool(tmp_path / "spool.db")
    stop = run_source(config, spool)
    pub = publisher(mosquitto.port)
    try:
        wait_until(lambda: pub.is_connected() and subscribed(config.name))
        pub.publish(topic, b"before", qos=1).wait_for_publish(5)
        wait_until(lambda: committed(spool, "records") == 1)
        stop.set()
        time.sleep(0.5)
        for i in range(5):
            pub.publish(topic, f"away-{i}".encode(), qos=1).wait_for_publish(5)
        run_source(config, spool)
        wait_until(lambda: committed(spool, "records") == 6)
    finally:
        pub.loop_stop()
        pub.disconnect()
    assert [r.data for r in spool.read("records")] == [b"before"] + [f"away-{i}".encode() for i in range(5)]
    spool.close()


class RestartableBroker(MosquittoProcess):
    """Mosquitto that keeps its session store across restarts (run as root it would otherwise
    switch to the ``mosquitto`` user, which cannot write the test's private directory)."""

    def start(self) -> "RestartableBroker":
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {self.workdir}/\n{user}")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        return self


def test_reconnects_after_the_broker_restarts(tmp_path: Path, run_source, subscribed) -> None:
    """The broker goes away and comes back (its session store on disk): the source reconnects by
    itself and gets what was published for it meanwhile."""
    broker = RestartableBroker(tmp_path / "broker").start()
    try:
        config = MqttConfig.from_dict(
            {"stream": "s", "host": "127.0.0.1", "port": broker.port, "topics": ["dev/#"], "client_id": "restart-test",
             "reconnect_min": 1.0, "reconnect_max": 1.0},
            "sources.mqtt[0]",
        )
        spool = Spool(tmp_path / "spool.db")
        run_source(config, spool)
        pub = publisher(broker.port)
        wait_until(lambda: pub.is_connected() and subscribed(config.name))
        pub.publish("dev/1", b"before", qos=1).wait_for_publish(5)
        wait_until(lambda: committed(spool, "records") == 1)
        pub.loop_stop()
        pub.disconnect()
        broker.stop()
        time.sleep(1.5)  # the source notices and retries against a closed port
        broker.start()
        pub = publisher(broker.port)  # published before the source is back: queued in its session
        wait_until(lambda: pub.is_connected())
        pub.publish("dev/1", b"while-reconnecting", qos=1).wait_for_publish(5)
        wait_until(lambda: committed(spool, "records") == 2, timeout=20)
        pub.publish("dev/2", b"after", qos=1).wait_for_publish(5)
        wait_until(lambda: committed(spool, "records") == 3)
        pub.loop_stop()
        pub.disconnect()
        assert [r.data for r in spool.read("records")] == [b"before", b"while-reconnecting", b"after"]
        spool.close()
    finally:
        broker.stop()


def make_tls_files(d: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=edge-test-ca")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
        "-days", "1", "-extfile", "san.ext")


def start_tls_mosquitto(broker: MosquittoProcess, auth: str) -> None:
    """Run Mosquitto with a TLS listener on ``broker.port`` (certificates in its workdir) and ``auth`` lines."""
    d = broker.workdir
    user = "user root\n" if os.geteuid() == 0 else ""
    (d / "mosquitto.conf").write_text(
        f"listener {broker.port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n{auth}{user}"
    )
    broker.proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(broker.port, proc=broker.proc)


class TlsBroker(MosquittoProcess):
    """Mosquitto with TLS and a password file: anonymous clients refused."""

    def start(self) -> "TlsBroker":
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        make_tls_files(d)
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "edge", "s3cret"], check=True, capture_output=True)
        start_tls_mosquitto(self, f"allow_anonymous false\npassword_file {d}/passwd\n")
        return self


@pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("mosquitto_passwd"), reason="needs openssl and mosquitto_passwd")
def test_tls_and_password(tmp_path: Path, run_source, subscribed) -> None:
    broker = TlsBroker(tmp_path / "tls").start()
    try:
        base = {"stream": "s", "host": "127.0.0.1", "port": broker.port, "topics": ["secure/#"], "ca_file": str(broker.workdir / "ca.pem")}
        good = MqttConfig.from_dict({**base, "name": "mqtt-tls-good", "username": "edge", "password": "s3cret"}, "sources.mqtt[0]")
        bad = MqttConfig.from_dict({**base, "name": "mqtt-tls-bad", "username": "edge", "password": "wrong",
                                    "reconnect_min": 1.0, "reconnect_max": 1.0}, "sources.mqtt[1]")
        assert good.use_tls
        spool_good, spool_bad = Spool(tmp_path / "good.db"), Spool(tmp_path / "bad.db")
        run_source(good, spool_good)
        run_source(bad, spool_bad)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-pub")
        pub.tls_set(ca_certs=str(broker.workdir / "ca.pem"))
        pub.username_pw_set("edge", "s3cret")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            wait_until(lambda: pub.is_connected() and subscribed("mqtt-tls-good"))
            pub.publish("secure/a", b"over tls", qos=1).wait_for_publish(5)
            wait_until(lambda: committed(spool_good, "records") == 1)
        finally:
            pub.loop_stop()
            pub.disconnect()
        assert spool_good.read("records")[0].data == b"over tls"
        assert committed(spool_bad, "records") == 0  # refused by the broker, retried, never crashed
        spool_good.close()
        spool_bad.close()
    finally:
        broker.stop()


class MutualTlsBroker(MosquittoProcess):
    """Mosquitto that lets in only clients with a certificate signed by its CA."""

    def start(self) -> "MutualTlsBroker":
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        make_tls_files(d)
        for name in ("client", "other"):
            subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"], cwd=d, check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                        "-out", "client.pem", "-days", "1"], cwd=d, check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", "other.csr", "-signkey", "other.key", "-out", "other.pem", "-days", "1"],
                       cwd=d, check=True, capture_output=True)  # self-signed: not the broker's CA
        start_tls_mosquitto(self, "require_certificate true\nallow_anonymous true\n")
        return self


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_tls_client_certificate(tmp_path: Path, run_source, subscribed, caplog) -> None:
    broker = MutualTlsBroker(tmp_path / "mtls").start()
    d = broker.workdir
    try:
        base = {"stream": "s", "host": "127.0.0.1", "port": broker.port, "topics": ["m/#"], "ca_file": str(d / "ca.pem")}
        good = MqttConfig.from_dict({**base, "name": "mqtt-cert", "cert_file": str(d / "client.pem"), "key_file": str(d / "client.key")},
                                    "sources.mqtt[0]")
        bad = MqttConfig.from_dict({**base, "name": "mqtt-cert-bad", "cert_file": str(d / "other.pem"), "key_file": str(d / "other.key"),
                                    "reconnect_min": 0.2, "reconnect_max": 0.2}, "sources.mqtt[1]")
        spool_good, spool_bad = Spool(tmp_path / "good.db"), Spool(tmp_path / "bad.db")
        run_source(good, spool_good)
        run_source(bad, spool_bad)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mtls-pub")
        pub.tls_set(ca_certs=str(d / "ca.pem"), certfile=str(d / "client.pem"), keyfile=str(d / "client.key"))
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            wait_until(lambda: pub.is_connected() and subscribed("mqtt-cert"))
            pub.publish("m/a", b"mutual", qos=1).wait_for_publish(5)
            wait_until(lambda: committed(spool_good, "records") == 1)
            wait_until(lambda: any("mqtt-cert-bad: cannot connect" in r.getMessage() for r in caplog.records))
        finally:
            pub.loop_stop()
            pub.disconnect()
        assert spool_good.read("records")[0].data == b"mutual"
        assert committed(spool_bad, "records") == 0 and not subscribed("mqtt-cert-bad")
    finally:
        broker.stop()


AGENT = """
import sys, threading, signal
from edge_agent.sources.mqtt import MqttConfig
from edge_agent.spool import Spool
spool = Spool(sys.argv[1])
config = MqttConfig.from_dict({"stream": "s", "host": "127.0.0.1", "port": int(sys.argv[2]), "topics": [sys.argv[3]],
                               "client_id": sys.argv[4], "name": "mqtt-kill"}, "sources.mqtt[0]")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
print("ready", flush=True)
config.build(spool, "a").run(stop)
spool.close()
"""


def test_sigkill_mid_stream_loses_nothing(mosquitto, tmp_path: Path) -> None:
    """SIGKILL the agent while QoS 1 messages stream in: the broker redelivers the unacknowledged ones."""
    topic = f"kill-{uuid.uuid4().hex[:6]}/t"
    client_id = f"kill-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "spool.db"

    def agent() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", AGENT, str(path), str(mosquitto.port), topic, client_id],
                                cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    proc = agent()
    n = 600
    pub = publisher(mosquitto.port)
    try:
        wait_until(lambda: pub.is_connected())
        wait_until(lambda: len(spooled(path)) == 0 and path.exists())
        time.sleep(0.5)  # subscribed
        infos = []
        for i in range(n):
            infos.append(pub.publish(topic, f"m{i:04d}".encode(), qos=1))
            if i == n // 3:
                wait_until(lambda: len(spooled(path)) > 50)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            if i % 50 == 0:
                time.sleep(0.02)
        for info in infos:
            info.wait_for_publish(10)
        during = len(spooled(path))
        assert during < n  # messages are waiting at the broker for the dead agent
        proc = agent()
        wait_until(lambda: {d for d, _, _ in spooled(path)} == {f"m{i:04d}".encode() for i in range(n)}, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        pub.loop_stop()
        pub.disconnect()
        if proc.poll() is None:
            proc.kill()
    datas = [d for d, _, _ in spooled(path)]
    # what was committed but whose PUBACK died with the process comes again, and is recognised
    assert max(datas.count(d) for d in set(datas)) == 1


@pytest.mark.parametrize("qos", [1, 2])
def test_redelivery_of_committed_messages_is_not_spooled_twice(mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subscribed, qos) -> None:
    """The window a SIGKILL can hit, held open on purpose: messages committed, PUBACKs (QoS 2:
    PUBRECs) never sent. The broker redelivers every one (DUP); the next session acknowledges them
    without spooling them again."""
    topic = f"dup-{uuid.uuid4().hex[:6]}/t"
    config = MqttConfig.from_dict({"stream": "s", "host": "127.0.0.1", "port": mosquitto.port, "topics": [topic], "qos": qos,
                                   "client_id": f"dup-{uuid.uuid4().hex[:6]}", "name": "mqtt-dup"}, "sources.mqtt[0]")
    path = tmp_path / "spool.db"
    pub = publisher(mosquitto.port)
    spool = Spool(path)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(wire, "ack_packets", lambda words: b"")  # the process "died" before acking
            stop = threading.Event()
            first = threading.Thread(target=config.build(spool, "a").run, args=(stop,))
            first.start()
            wait_until(lambda: subscribed("mqtt-dup"))
            for i in range(40):
                pub.publish(topic, f"d{i}".encode(), qos=qos).wait_for_publish(5)
            # unacknowledged, the broker stops at its in-flight window (all 40 fit in our Receive Maximum)
            wait_until(lambda: len(spool.read("records", limit=100)) >= 20)
            time.sleep(0.3)
            stop.set()
            first.join(10)
        stop = threading.Event()
        second = threading.Thread(target=config.build(spool, "a").run, args=(stop,))
        second.start()
        # the broker redelivers the unacknowledged ones (DUP), then the rest
        wait_until(lambda: len({r.data for r in spool.read("records", limit=1000)}) == 40)
        time.sleep(0.5)
        stop.set()
        second.join(10)
        datas = [r.data for r in spool.read("records", limit=1000)]
        assert sorted(datas) == sorted(f"d{i}".encode() for i in range(40))
        # and they were acknowledged this time: a third session gets nothing more
        third_stop = threading.Event()
        third = threading.Thread(target=config.build(spool, "a").run, args=(third_stop,))
        third.start()
        time.sleep(1.0)
        third_stop.set()
        third.join(10)
        assert len(spool.read("records", limit=1000)) == 40
    finally:
        spool.close()
        pub.loop_stop()
        pub.disconnect()


def test_config_errors_name_every_bad_key() -> None:
    assert SOURCE_TYPES["mqtt"] is MqttConfig
    with pytest.raises(ConfigError) as err:
        MqttConfig.from_dict({"stream": "s", "topics": ["a"], "qos": 3, "port": "1883", "colour": "red"}, "sources.mqtt[1]")
    message = str(err.value)
    assert "sources.mqtt[1].qos: expected 0, 1 or 2" in message
    assert "sources.mqtt[1].port: expected an integer" in message
    assert "sources.mqtt[1].colour: unknown key" in message
    with pytest.raises(ConfigError, match=r"topics\[0\]: '#' must be a whole level"):
        MqttConfig.from_dict({"stream": "s", "topics": ["a/#/b"]}, "sources.mqtt[0]")
    with pytest.raises(ConfigError, match="max_payload_bytes: at most 1048576"):
        MqttConfig.from_dict({"stream": "s", "topics": ["a"], "max_payload_bytes": 2_000_000}, "sources.mqtt[0]")
    with pytest.raises(ConfigError, match=r"sources\.mqtt\[0\]\.stream: required"):
        MqttConfig.from_dict({"topics": ["a"]}, "sources.mqtt[0]")
    assert MqttConfig.from_dict({"stream": "s", "topics": "a/b"}, "sources.mqtt[4]").name == "mqtt-4"


def test_dedupe_memory_moves_from_an_old_json_checkpoint_to_the_ring(tmp_path: Path) -> None:
    """A spool written before the ring held the recent deliveries as one JSON checkpoint: the
    source still recognises those redeliveries, and keeps them in the ring from then on."""
    from edge_agent.sources.mqtt_recent import RECENT_DELIVERIES, RecentDeliveries, identity

    old = wire.Publish(b"t/a", b"payload", 1, 7, True, False, None, 7)
    delivery = identity(old)
    with Spool(tmp_path / "spool.db") as spool:
        pairs = [[i % 65535 + 1, i] for i in range(RECENT_DELIVERIES + 5)] + [[7, delivery & 0xFFFFFFFF]]
        spool.append([], checkpoint=("mqtt-recent:legacy", json.dumps(pairs)))
        recent = RecentDeliveries(spool, "legacy")
        assert delivery in recent and len(recent) == RECENT_DELIVERIES
        ring = spool.ring("mqtt-recent:legacy")
        assert len(ring) == RECENT_DELIVERIES and ring[-1].value == delivery
    with Spool(tmp_path / "spool.db") as spool:  # from the ring this time
        again = RecentDeliveries(spool, "legacy")
        assert again.identities() == recent.identities() and again.ordinal == RECENT_DELIVERIES


def test_attrs_say_only_what_the_record_does_not(tmp_path: Path) -> None:
    from edge_agent.sources.mqtt import MqttSource

    config = MqttConfig.from_dict({"stream": "s", "topics": ["#"]}, "sources.mqtt[0]")
    with Spool(tmp_path / "spool.db") as spool:
        source = MqttSource(config, spool, "agent")
        plain = source._record(wire.Publish(b"a/b", b"x", 1, 1, False, False, None, 1), 0)
        odd = source._record(wire.Publish(b"x" * 300, b"x", 0, 0, False, True, "application/json", 1), 0)
    assert plain is not None and plain.attrs is None
    assert odd is not None and odd.attrs == {"topic": "x" * 300, "qos": 0, "retain": True, "content_type": "application/json"}
