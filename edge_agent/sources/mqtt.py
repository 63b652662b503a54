"""MQTT source: subscribe on a broker, spool each message, acknowledge it only once it is durable.

The agent speaks MQTT itself (``mqtt_wire``: the packets; ``mqtt_connection``: socket, TLS,
keepalive) instead of using paho-mqtt: measured on the agent's load, paho cost ~30 µs of CPU per
QoS 1 message even in a tight loop (18 ms/s of its network thread at 200 msg/s, plus a thread
handoff per message and a wake-up of its thread per PUBACK), more than the whole agent's budget
(9 ms/s at 300 records/s). Reading 64 KiB at a time, parsing every packet in it and sending one
batch's acknowledgements in one write costs ~10 µs per message in the running agent (2 ms/s).

One network thread per source does everything: it polls the socket and a wake pipe, parses what
arrived, turns the messages into records and hands them to the spool (``Spool.submit``); when the
commit is durable the spool's future wakes it, and it sends that batch's PUBACKs (QoS 1) or PUBRECs
(QoS 2) in one write, in arrival order (MQTT 4.6). A PUBREL is answered with PUBCOMP at once (its
message was committed before the PUBREC). One batch is committing at a time, the next one fills
meanwhile (``mqtt_commits``): batches commit in order, so one topic stays in order even when a
commit is retried.

Delivery: the session is persistent (MQTT 3.1.1 clean session 0; MQTT 5 clean start 0 with a
session expiry), so a QoS 1/2 message not acknowledged before a crash or SIGKILL is delivered again,
never lost. Nor twice: a redelivery of a message already committed is recognised
(``mqtt_recent``) and acknowledged without being spooled again. QoS 0 messages are lost while the
agent is down, as MQTT defines.

The broker's in-flight window: a broker sends only so many QoS 1/2 messages before it waits for
their acknowledgements (MQTT 5: the Receive Maximum we send, ``receive_maximum``; MQTT 3.1.1: the
broker's own setting, Mosquitto's ``max_inflight_messages`` = 20, ``broker_max_inflight``). When the
uncommitted messages fill it, the batch is committed at once (``urgent``) instead of waiting out the
spool's ``commit_interval``: the broker would send nothing more until then. So MQTT 5 (the default;
3.1.1 is used when a broker refuses version 5) lets a long commit interval group hundreds of
messages per commit, where 3.1.1 commits every 20.

Record rules:

- data: the payload bytes exactly as published; binary and non-UTF-8 payloads are kept as is
  (Kinesis data is opaque bytes). attrs hold only what the record does not say already, to keep
  spool rows small: ``topic`` when it is longer than the partition key (its last 256 characters),
  ``qos`` when it is not 1, ``retain`` when set, ``content_type`` when an MQTT 5 publisher set one.
- partition key: the topic (its last 256 characters), so one topic stays in order.
- a payload larger than ``max_payload_bytes`` is rejected (reason ``too_large``; it is not even kept
  in memory), a topic that is not valid UTF-8 is rejected (``bad_topic``); both are still
  acknowledged, otherwise the broker would redeliver them forever.

Backpressure: while the spool cannot take more (full, and its drop policy may free nothing), the
batch is retried with backoff and messages stay unacknowledged at the broker; once the next batch
holds ``BATCH_RECORDS`` messages or ``BATCH_BYTES`` (at most 1/8 of the spool), the source stops
reading the socket and TCP pushes back on the broker. A malformed packet from the broker is logged and the connection dropped
and made again (the broker redelivers); it never stops the source.
"""

from __future__ import annotations

import logging
import math
import os
import select
import ssl
import time
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.sources import mqtt_wire as wire
from edge_agent.sources.base import (
    MAX_RECORD_BYTES,
    Backoff,
    Rejects,
    Source,
    SourceConfig,
    now_ms,
    partition_key,
    positive,
)
from edge_agent.sources.mqtt_commits import BATCH_RECORDS, Commits
from edge_agent.sources.mqtt_connection import ConnectionLost, Login, MqttConnection, Refused, tls_context
from edge_agent.sources.mqtt_recent import RECENT_DELIVERIES, RecentDeliveries, identity
from edge_agent.spool import NewRecord, Spool, SpoolClosed

log = logging.getLogger("edge_agent.sources.mqtt")

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 1883
DEFAULT_QOS: Literal[0, 1, 2] = 1
DEFAULT_KEEPALIVE = 60
DEFAULT_SESSION_EXPIRY = 7 * 24 * 3600
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
DEFAULT_RECONNECT_MIN = 1.0
DEFAULT_RECONNECT_MAX = 30.0
#: MQTT 5: unacknowledged QoS 1/2 messages the broker may send us (Mosquitto honours it).
DEFAULT_RECEIVE_MAXIMUM = 1000
#: MQTT 3.1.1: what the broker sends unacknowledged (Mosquitto's ``max_inflight_messages`` default).
DEFAULT_BROKER_MAX_INFLIGHT = 20
#: Longest the network thread sleeps without looking at its stop event.
POLL_SECONDS = 0.5
#: While a batch commits, the socket is read when the commit is done, or sooner when the broker's
#: window could fill meanwhile, but not more often than every ``LINGER_MIN`` seconds, and at least
#: every ``LINGER_MAX`` (and half a keepalive: a PINGRESP must be seen while a batch waits long on
#: a full spool).
LINGER_MIN, LINGER_MAX = 0.002, 1.0
#: At shutdown, how long the source waits for what arrived to be committed and acknowledged.
SHUTDOWN_SECONDS = 10.0
#: Topics whose text and partition key are kept (``_topic``); past that the memory starts again.
TOPICS_REMEMBERED = 1024
@dataclass(frozen=True)
class MqttConfig(SourceConfig):
    """``[[sources.mqtt]]``: subscribe to topics on an MQTT broker."""

    KIND = "mqtt"

    #: Kinesis data stream the messages go to.
    stream: str
    #: Topic filters to subscribe to; ``+`` and ``#`` wildcards allowed (``plant/+/temp``, ``plant/#``).
    topics: tuple[str, ...]
    #: Unique source name (metrics, logs); default ``mqtt-<index>``.
    name: str = ""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Subscription QoS. 1 (the default) is the one that survives an agent crash without loss.
    qos: Literal[0, 1, 2] = DEFAULT_QOS
    #: Client id; must stay the same across restarts for the broker to keep the session.
    #: Default ``edge-<agent id>-<name>``.
    client_id: str = ""
    #: Seconds between MQTT pings when idle.
    keepalive: int = DEFAULT_KEEPALIVE
    #: MQTT protocol version. With "5" (the default) the agent falls back to 3.1.1, with a warning,
    #: when the broker refuses version 5.
    protocol: Literal["3.1.1", "5"] = "5"
    #: MQTT 5: seconds the broker keeps the session (and queues QoS 1 messages) while we are away.
    session_expiry: int = DEFAULT_SESSION_EXPIRY
    username: str | None = None
    password: str | None = None
    #: Use TLS. Implied when any of ``ca_file``, ``cert_file``, ``key_file`` is set.
    tls: bool = False
    #: CA bundle that signed the broker's certificate (default: the system's).
    ca_file: str | None = None
    #: Client certificate and key, for brokers that authenticate clients by certificate.
    cert_file: str | None = None
    key_file: str | None = None
    #: Larger payloads are rejected (counted, acknowledged). At most 1 MiB (the Kinesis record cap).
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    #: MQTT 5: most unacknowledged QoS 1/2 messages the broker may send (Receive Maximum). When
    #: that many are waiting for the spool, it commits at once; at most ``RECENT_DELIVERIES``.
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    #: MQTT 3.1.1: how many unacknowledged QoS 1/2 messages the broker sends before it waits
    #: (Mosquitto: ``max_inflight_messages``, default 20). When that many are waiting for the spool,
    #: it commits at once. Too high stalls the source for the spool's commit interval each time.
    broker_max_inflight: int = DEFAULT_BROKER_MAX_INFLIGHT
    #: ``"telemetry"`` or ``"log"``: decides the drop priority when the spool is full.
    kind: Literal["telemetry", "log"] = "telemetry"
    #: Seconds between reconnect attempts grow from ``reconnect_min`` to ``reconnect_max``.
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX

    def check(self) -> list[str]:
        problems = super().check()
        problems += positive(self, "keepalive", "max_payload_bytes", "reconnect_min", "reconnect_max", "broker_max_inflight")
        if not 1 <= self.receive_maximum <= RECENT_DELIVERIES:
            problems.append(f"receive_maximum: expected 1..{RECENT_DELIVERIES} (the redeliveries the source can recognise)")
        if self.keepalive > 65535:
            problems.append("keepalive: at most 65535")
        if self.broker_max_inflight > RECENT_DELIVERIES:
            problems.append(f"broker_max_inflight: at most {RECENT_DELIVERIES}")
        if not 0 < self.port < 65536:
            problems.append("port: expected 1-65535")
        if not self.topics:
            problems.append("topics: at least one topic filter is required")
        for i, topic in enumerate(self.topics):
            problem = topic_filter_problem(topic)
            if problem:
                problems.append(f"topics[{i}]: {problem}")
        if self.max_payload_bytes > MAX_RECORD_BYTES:
            problems.append(f"max_payload_bytes: at most {MAX_RECORD_BYTES} (the Kinesis record limit)")
        if self.reconnect_max < self.reconnect_min:
            problems.append("reconnect_max: must be >= reconnect_min")
        if self.session_expiry < 0:
            problems.append("session_expiry: must be >= 0")
        if self.password is not None and self.username is None:
            problems.append("password: needs username")
        if self.key_file is not None and self.cert_file is None:
            problems.append("key_file: needs cert_file")
        return problems

    @property
    def use_tls(self) -> bool:
        return self.tls or any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    def build(self, spool: Spool, agent_id: str) -> MqttSource:
        return MqttSource(self, spool, agent_id)


def topic_filter_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid MQTT topic filter, or None."""
    if not topic:
        return "must not be empty"
    if "\0" in topic:
        return "must not contain NUL"
    if len(topic.encode()) > 65535:
        return "longer than 65535 bytes"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


class MqttSource(Source):
    def __init__(self, config: MqttConfig, spool: Spool, agent_id: str) -> None:
        self.config = config
        self.name = config.name
        self.spool = spool
        self.client_id = config.client_id or f"edge-{agent_id}-{config.name}"
        self.rejects = Rejects(self.name, log)
        self._max_record = min(MAX_RECORD_BYTES, spool.max_bytes)
        self._version = wire.V5 if config.protocol == "5" else wire.V311
        self.recent = RecentDeliveries(spool, self.client_id)
        self._conn: MqttConnection | None = None
        self.commits = Commits(spool, self.name, self._wake)
        self._wake_r = self._wake_w = -1  # the pipe commits wake the network thread through
        self._wake_lock = threading.Lock()
        self._rate = 0.0  # messages/s lately (sets how long reads may linger)
        self._topics: dict[bytes, tuple[str | None, str, int]] = {}  # see _topic

    # -- running ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        backoff = Backoff(self.config.reconnect_min, self.config.reconnect_max)
        try:
            while not stop.is_set():
                try:
                    connected = self._connect()
                    if connected:
                        backoff.reset()
                        self._pump(stop, None)
                    elif connected is None:
                        continue  # protocol fallback: again at once
                except ConnectionLost as exc:
                    self._disconnected(str(exc))
                except wire.MalformedPacket as exc:
                    self._disconnected(f"malformed packet from the broker: {exc}")
                except SpoolClosed:
                    return
                except Exception:
                    log.exception("%s: failed; reconnecting", self.name)
                    self._disconnected(None)
                if not stop.is_set():  # wait to reconnect; the batches move on meanwhile
                    try:
                        self._pump(stop, time.monotonic() + max(self.config.reconnect_min, backoff.next()))
                    except SpoolClosed:
                        return
            self._finish()
        finally:
            if self._conn is not None:
                self._conn.close(polite=True)
                self._conn = None
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def _connect(self) -> bool | None:
        """Connect, log in and subscribe: True; False after a failure (logged); None to retry at once."""
        cfg = self.config
        try:
            tls = tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file) if cfg.use_tls else None
        except (OSError, ValueError, ssl.SSLError) as exc:  # a missing or unreadable CA/cert/key file
            log.error("%s: cannot set up the MQTT client (TLS files?): %s; retrying", self.name, exc)
            return False
        v5 = self._version == wire.V5
        login = Login(self.client_id, cfg.keepalive, self._version, cfg.username, cfg.password,
                      cfg.session_expiry if v5 else 0, cfg.receive_maximum if v5 else 0)
        try:
            conn = MqttConnection.open(cfg.host, cfg.port, login, tls, skip_above=cfg.max_payload_bytes + 128 * 1024)
        except Refused as exc:
            if exc.unsupported_version and v5:
                log.warning("%s: broker %s:%d does not speak MQTT 5 (%s); using MQTT 3.1.1", self.name, cfg.host, cfg.port, exc)
                self._version = wire.V311
                return None
            log.error("%s: broker %s:%d refused the connection: %s", self.name, cfg.host, cfg.port, exc)
            return False
        except ConnectionLost as exc:
            log.warning("%s: cannot connect to %s:%d: %s; retrying", self.name, cfg.host, cfg.port, exc)
            return False
        log.info("%s: connected to %s:%d as %s (session present: %s)", self.name, cfg.host, cfg.port, self.client_id, conn.session_present)
        self._conn = conn
        try:
            conn.send(wire.encode_subscribe(1, cfg.topics, cfg.qos, self._version))
        except ConnectionLost as exc:
            self._disconnected(str(exc))
            return False
        return True

    def _disconnected(self, reason: str | None) -> None:
        if self._conn is not None:
            self._conn.close(polite=False)
            self._conn = None
        self.commits.forget_acks()
        if reason is not None:
            log.warning("%s: disconnected from %s:%d: %s; reconnecting", self.name, self.config.host, self.config.port, reason)

    def _pump(self, stop: threading.Event, until: float | None) -> None:
        """Read, spool and acknowledge until ``stop``, until ``until`` (waiting to reconnect: only
        the batches move on), or until the connection is lost (``ConnectionLost``).

        Wake-ups cost more than parsing (~15 µs of CPU for a bare one on the test VM, several times
        that in a busy agent), so the socket is read at once only when nothing is waiting for the
        spool; while a batch commits, what arrives is read when the commit is done, or sooner
        (``_linger()``) if the broker's window could fill meanwhile: one wake-up per commit."""
        conn = self._conn if until is None else None
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        watched: int | None = None  # the socket's poll events; None: not polled (reading paused)
        last_read = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if until is not None and now >= until:
                return
            self._settle(now)
            self._flush(False)
            timeout = POLL_SECONDS
            read_at: float | None = None
            if conn is not None:
                full = self.commits.full()
                idle = self.commits.idle()
                # idle: wake on data; busy: on a timer (0 still reports a hang-up); full: not at all
                events = None if full else select.POLLIN if idle else 0
                if events != watched:
                    if watched is None:
                        poller.register(conn.fileno(), events)  # type: ignore[arg-type]
                    elif events is None:
                        poller.unregister(conn.fileno())
                    else:
                        poller.modify(conn.fileno(), events)
                    watched = events
                timeout = min(timeout, conn.tick(not full))
                if not full:
                    if conn.has_buffered():
                        read_at = now
                    else:
                        read_at = math.inf if idle else last_read + min(self._linger(), conn.keepalive / 2)
                    timeout = min(timeout, max(0.0, read_at - now))
            if self.commits.retry_at is not None:
                timeout = min(timeout, max(0.0, self.commits.retry_at - now))
            if until is not None:
                timeout = min(timeout, until - now)
            ready = False
            for fd, _ in poller.poll(timeout * 1000):
                if fd == self._wake_r:
                    self._drain_wake()
                else:
                    ready = True
            if conn is not None and read_at is not None and (ready or time.monotonic() >= read_at):
                now = time.monotonic()
                packets = conn.read(wait=ready)
                received = self._handle(conn, packets)
                self._rate = 0.5 * self._rate + 0.5 * received / max(now - last_read, 0.001)
                last_read = now

    def _linger(self) -> float:
        """How long reading may wait while a batch commits: half the time the broker's window
        takes to fill at the recent rate, within ``LINGER_MIN``..``LINGER_MAX``. (What arrives
        meanwhile waits in the socket instead of the next batch: it is committed no later.)"""
        room = self._window() - self.commits.unacked()
        return max(LINGER_MIN, min(LINGER_MAX, room / max(self._rate, 1.0) / 2))

    def _wake(self, _: Future) -> None:
        """A commit finished (spool writer thread): wake the network thread."""
        with self._wake_lock:  # never a write to a closed descriptor's number, reused since
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except BlockingIOError:  # the pipe is full: it will wake anyway
                    pass

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)  # what is left (unlikely) wakes the next poll
        except BlockingIOError:
            pass

    # -- incoming packets ----------------------------------------------------------------------

    def _handle(self, conn: MqttConnection, packets: list[wire.Publish | wire.Packet]) -> int:
        """Take in what one read brought; return the number of messages taken."""
        replies: list[bytes] = []
        taken = len(packets)
        timestamp = now_ms()
        commits = self.commits
        batch = commits.pending
        records, ring, acks = batch.records, batch.ring, batch.acks
        recent, record_of, ack_words, publish_type = self.recent, self._record, wire.ACK_WORDS, wire.Publish
        full_at = 0 if commits.full() else BATCH_RECORDS  # messages in the batch before commits.full() needs asking
        for n, packet in enumerate(packets):
            if type(packet) is publish_type:
                assert isinstance(packet, wire.Publish)
                if batch.messages >= full_at and commits.full():  # the rest waits, parsed, until this batch is on its way
                    conn.unread(packets[n:])
                    taken = n
                    break
                batch.messages += 1
                if packet.qos:
                    delivery = identity(packet)
                    acks.append(ack_words[packet.qos] | packet.packet_id)
                    batch.unacked += 1
                    if packet.dup and delivery in recent:
                        log.debug("%s: message %d redelivered after a crash; already spooled", self.name, packet.packet_id)
                        continue  # acknowledged with this batch, not spooled twice
                    ring.append(recent.add(delivery))
                record = record_of(packet, timestamp)
                if record is not None:
                    records.append(record)
                    batch.size += packet.size
                    if batch.size >= commits.batch_bytes:
                        full_at = 0
            else:
                assert isinstance(packet, wire.Packet)
                self._control(packet, replies)
        if replies:
            conn.send(b"".join(replies))
        return taken

    def _control(self, packet: wire.Packet, replies: list[bytes]) -> None:
        kind, body = packet.kind, packet.body
        if kind == wire.PUBREL and packet.flags == 0b0010 and len(body) >= 2:
            replies.append(wire.ack_packet(wire.PUBCOMP, body[0] << 8 | body[1]))
        elif kind == wire.PINGRESP:
            pass  # reading anything shows the broker alive
        elif kind == wire.SUBACK and len(body) >= 2:
            self._subscribed(body)
        elif kind == wire.DISCONNECT:
            reason = wire.reason_text(body[0], wire.CONNACK_REASONS) if body else "no reason given"
            raise ConnectionLost(f"the broker disconnected us: {reason}")
        else:
            raise wire.MalformedPacket(f"unexpected {wire.PACKET_NAMES.get(kind, kind)} (flags {packet.flags:#x}, {len(body)} bytes)")

    def _subscribed(self, body: bytes) -> None:
        i = 2
        if self._version == wire.V5:
            _, i = wire.parse_properties(body, i, len(body))
        codes = body[i:]
        granted = []
        for topic, code in zip(self.config.topics, codes):
            if code >= 0x80:
                log.error("%s: broker refused the subscription to %r: %s", self.name, topic, wire.reason_text(code, wire.SUBACK_REASONS))
            else:
                granted.append(topic)
        if granted:
            log.info("%s: subscribed to %s", self.name, ", ".join(granted))

    def _record(self, publish: wire.Publish, timestamp_ms: int) -> NewRecord | None:
        cfg = self.config
        topics = self._topics.get(publish.topic)
        if topics is None:
            topics = self._topic(publish.topic)
        topic, key, key_bytes = topics
        if topic is None:
            self.rejects("bad_topic", "a message's topic is not valid UTF-8")
            return None
        size = publish.size
        if publish.payload is None or size > cfg.max_payload_bytes or size + key_bytes > self._max_record:
            self.rejects("too_large", f"{size} bytes on {topic!r} (max_payload_bytes = {cfg.max_payload_bytes})")
            return None
        attrs: dict[str, Any] | None = None
        if key is not topic or publish.qos != 1 or publish.retain or publish.content_type is not None:
            attrs = {"topic": topic} if key is not topic else {}
            if publish.qos != 1:
                attrs["qos"] = publish.qos
            if publish.retain:
                attrs["retain"] = True
            if publish.content_type is not None:
                attrs["content_type"] = publish.content_type
        return NewRecord(cfg.kind, cfg.stream, key, publish.payload, self.name, timestamp_ms, attrs)

    def _topic(self, raw: bytes) -> tuple[str | None, str, int]:
        """A topic as text, its partition key (the topic itself, the same object, when it fits) and
        the key's UTF-8 size; (None, "", 0) when not UTF-8. Remembered: a source sees few topics."""
        try:
            topic: str | None = raw.decode()
        except UnicodeDecodeError:
            topic = None
        key = partition_key(topic) if topic is not None else ""
        if key == topic:
            key = topic
        if len(self._topics) >= TOPICS_REMEMBERED:
            self._topics.clear()
        found = self._topics[raw] = (topic, key, len(key.encode()))
        return found

    # -- committing and acknowledging ----------------------------------------------------------

    def _window(self) -> int:
        return self.config.receive_maximum if self._version == wire.V5 else self.config.broker_max_inflight

    def _flush(self, finishing: bool) -> None:
        """Commit at once when the broker's window is full (it sends nothing more until we
        acknowledge) or the next batch is; at leisure otherwise."""
        commits = self.commits
        commits.flush(finishing or commits.unacked() >= self._window() or commits.full())

    def _settle(self, now: float) -> None:
        acks = self.commits.settle(now)
        if acks and self._conn is not None:
            self._conn.send(acks)

    def _finish(self) -> None:
        """Shutting down: commit and acknowledge what arrived; later messages stay at the broker."""
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        commits = self.commits
        try:
            while commits.left() and commits.retry_at is None and time.monotonic() < deadline:
                try:
                    self._settle(time.monotonic())
                except ConnectionLost:
                    self._disconnected(None)
                self._flush(True)
                if not commits.wait(max(0.0, deadline - time.monotonic())):
                    break
        except SpoolClosed:
            pass
        if commits.left():
            log.info("%s: %d message(s) not committed at shutdown; the broker keeps QoS>0 ones", self.name, commits.left())
