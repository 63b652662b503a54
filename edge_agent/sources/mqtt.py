"""MQTT source: subscribe on a broker, spool each message, acknowledge it only once it is durable.

Delivery: the session is persistent (MQTT 3.1.1 ``clean_session=False``; MQTT 5 ``clean_start=False``
with a session expiry) and paho runs with ``manual_ack=True``, so a QoS 1 message is PUBACKed only
after the spool transaction holding it committed. A crash or SIGKILL before that makes the broker
deliver it again, never lost. Nor twice: the (packet id, checksum) of the latest committed QoS>0
messages is saved in the same spool transaction, and a redelivery (DUP flag) matching one is
acknowledged without being spooled again. That memory is a ring of ``RECENT_DELIVERIES`` entries
in the spool's ``rings`` table: a commit writes only the slots of the messages it holds. Packet ids cycle through 65535 values per session, far
more than the broker keeps in flight, so a match is the same delivery. QoS 2 is accepted but paho sends PUBREC on receipt, so it gives no more than QoS 1
across a crash; use QoS 1. QoS 0 messages are lost while the agent is down, as MQTT defines.

Record rules:

- data: the payload bytes exactly as published; binary and non-UTF-8 payloads are kept as is
  (Kinesis data is opaque bytes). attrs hold only what the record does not say already, to keep
  spool rows small: ``topic`` when it is longer than the partition key (its last 256 characters),
  ``qos`` when it is not 1, ``retain`` when set, ``content_type`` when an MQTT 5 publisher set one.
- partition key: the topic (its last 256 characters), so one topic stays in order.
- a payload larger than ``max_payload_bytes`` is rejected (reason ``too_large``), a topic that is
  not valid UTF-8 is rejected (``bad_topic``); both are still acknowledged, otherwise the broker
  would redeliver them forever.

Backpressure: while the spool cannot take more (full, and its drop policy may free nothing),
messages stay unacknowledged at the broker; at most ``QUEUE_SIZE`` messages / ``QUEUE_BYTES``
wait in memory, then paho stops reading the socket and TCP pushes back on the broker.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import zlib
from collections import deque
import threading
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.sources.base import (
    MAX_RECORD_BYTES,
    Rejects,
    Source,
    SourceConfig,
    SpoolWriter,
    now_ms,
    partition_key,
    positive,
    run_forever,
)
from edge_agent.spool import NewRecord, RingEntry, Spool

log = logging.getLogger("edge_agent.sources.mqtt")

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 1883
DEFAULT_QOS: Literal[0, 1, 2] = 1
DEFAULT_KEEPALIVE = 60
DEFAULT_SESSION_EXPIRY = 7 * 24 * 3600
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
DEFAULT_RECONNECT_MIN = 1.0
DEFAULT_RECONNECT_MAX = 30.0
#: Messages (and payload bytes) received but not yet committed; past either, paho's network
#: thread waits, which pushes back on the broker through TCP instead of filling the memory.
QUEUE_SIZE = 10_000
QUEUE_BYTES = 16 * 1024 * 1024
#: Most messages (and bytes) committed in one spool append.
BATCH_RECORDS = 500
BATCH_BYTES = 4 * 1024 * 1024
#: Committed deliveries remembered to recognise redeliveries (brokers keep ~20..1000 in flight).
RECENT_DELIVERIES = 1024


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
    #: MQTT protocol version.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
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
    #: ``"telemetry"`` or ``"log"``: decides the drop priority when the spool is full.
    kind: Literal["telemetry", "log"] = "telemetry"
    #: Seconds between reconnect attempts grow from ``reconnect_min`` to ``reconnect_max``.
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX

    def check(self) -> list[str]:
        problems = super().check()
        problems += positive(self, "keepalive", "max_payload_bytes", "reconnect_min", "reconnect_max")
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


@dataclass
class _Received:
    generation: int
    mid: int
    qos: int
    topic: str | None
    payload: bytes
    retain: bool
    content_type: str | None
    timestamp_ms: int
    dup: bool = False

    def identity(self) -> int:
        """What tells a redelivery of this message apart from another message: packet id and checksum."""
        return self.mid << 32 | zlib.crc32(self.payload, zlib.crc32((self.topic or "").encode()))


class MqttSource(Source):
    def __init__(self, config: MqttConfig, spool: Spool, agent_id: str) -> None:
        self.config = config
        self.name = config.name
        self.client_id = config.client_id or f"edge-{agent_id}-{config.name}"
        self.rejects = Rejects(self.name, log)
        self.writer = SpoolWriter(spool, self.name, self.rejects)
        # a batch must fit in the spool even when the drop policy can free nothing for it
        self.batch_bytes = max(1, min(BATCH_BYTES, spool.max_bytes // 8))
        self._queue: queue.Queue[_Received] = queue.Queue(QUEUE_SIZE)
        self._generation = 0
        self._ring = f"mqtt-recent:{self.client_id}"
        self._recent: deque[int] = deque(maxlen=RECENT_DELIVERIES)
        self._ordinal = 0  # of the latest committed QoS>0 delivery
        self._load_recent(spool)
        self._closing = threading.Event()  # set while shutting down: stop waiting on a full queue
        self._queued_bytes = 0
        self._room = threading.Condition()

    def _load_recent(self, spool: Spool) -> None:
        entries = spool.ring(self._ring)
        if not entries:  # a spool written before the ring: one JSON checkpoint of (mid, crc) pairs
            saved = spool.checkpoint(self._ring)
            pairs = json.loads(saved) if saved else []
            entries = [self._entry(i + 1, mid << 32 | crc) for i, (mid, crc) in enumerate(pairs[-RECENT_DELIVERIES:])]
            if entries:
                spool.append([], ring=entries)
        self._recent.extend(e.value for e in entries)
        self._ordinal = entries[-1].ordinal if entries else 0

    def _entry(self, ordinal: int, identity: int) -> RingEntry:
        return RingEntry(self._ring, ordinal % RECENT_DELIVERIES, ordinal, identity)

    # -- paho callbacks (network thread) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("%s: broker %s:%d refused the connection: %s", self.name, self.config.host, self.config.port, reason)
            return
        self._generation += 1
        log.info(
            "%s: connected to %s:%d as %s (session present: %s)",
            self.name, self.config.host, self.config.port, self.client_id, bool(flags.session_present),
        )
        subscriptions: list[tuple[str, int]] = [(topic, self.config.qos) for topic in self.config.topics]
        client.subscribe(subscriptions)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("%s: disconnected from %s:%d: %s; reconnecting", self.name, self.config.host, self.config.port, reason)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any) -> None:
        granted = []
        for topic, reason in zip(self.config.topics, reasons):
            if reason.is_failure:
                log.error("%s: broker refused the subscription to %r: %s", self.name, topic, reason)
            else:
                granted.append(topic)
        if granted:
            log.info("%s: subscribed to %s", self.name, ", ".join(granted))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic: str | None = message.topic
        except UnicodeDecodeError:
            topic = None
        content_type = None
        props = message.properties
        if props is not None and hasattr(props, "ContentType"):
            content_type = str(props.ContentType)
        item = _Received(
            self._generation, message.mid, message.qos, topic, bytes(message.payload), bool(message.retain), content_type, now_ms(),
            bool(message.dup),
        )
        with self._room:  # a full queue holds the network thread: TCP backpressure
            while self._queued_bytes > QUEUE_BYTES and not self._closing.is_set():
                self._room.wait(0.5)
            self._queued_bytes += len(item.payload)
        while not self._closing.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # -- the committing thread ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        run_forever(self.name, stop, lambda: self._session(stop), log)

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.use_tls:
            client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(int(max(1, cfg.reconnect_min)), int(max(1, cfg.reconnect_max)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _session(self, stop: threading.Event) -> bool:
        cfg = self.config
        try:
            client = self._make_client()
        except (OSError, ValueError, ssl.SSLError) as exc:  # a missing or unreadable CA/cert/key file
            log.error("%s: cannot set up the MQTT client (TLS files?): %s; retrying", self.name, exc)
            return False
        properties = None
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry
            client.connect_async(cfg.host, cfg.port, cfg.keepalive, clean_start=False, properties=properties)
        else:
            client.connect_async(cfg.host, cfg.port, cfg.keepalive)
        self._closing.clear()
        client.loop_start()
        try:
            while not stop.is_set():
                batch = self._take(timeout=0.2)
                if batch:
                    self._commit(batch, client, stop)
            # Commit what already arrived; later arrivals stay unacked and come back next session.
            while batch := self._take(timeout=0):
                self._commit(batch, client, stop)
            return True
        finally:
            self._closing.set()
            client.disconnect()
            client.loop_stop()
            self._drop_unacked()

    def _take(self, timeout: float) -> list[_Received]:
        try:
            first = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        size = len(first.payload)
        while len(batch) < BATCH_RECORDS and size < self.batch_bytes:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            size += len(item.payload)
        with self._room:
            self._queued_bytes -= size
            self._room.notify_all()
        return batch

    def _commit(self, batch: list[_Received], client: mqtt.Client, stop: threading.Event) -> None:
        records = []
        recent = set(self._recent) if any(item.dup for item in batch) else set()
        ring: list[RingEntry] = []
        ordinal = self._ordinal
        for item in batch:
            if item.qos > 0:
                identity = item.identity()
                if item.dup and identity in recent:
                    log.debug("%s: message %d redelivered after a crash; already spooled", self.name, item.mid)
                    continue  # acknowledged below, not spooled twice
                ordinal += 1
                ring.append(self._entry(ordinal, identity))
            record = self._record(item)
            if record is not None:
                records.append(record)
        if records or ring:
            self.writer.append(records, stop, ring=ring[-RECENT_DELIVERIES:])
            self._recent.extend(e.value for e in ring)
            self._ordinal = ordinal
        # PUBACKs go out in the order the PUBLISHes arrived (MQTT 4.6), and only for messages of
        # the current connection: older ones will be redelivered by the broker anyway.
        for item in batch:
            if item.qos > 0 and item.generation == self._generation:
                client.ack(item.mid, item.qos)

    def _record(self, item: _Received) -> NewRecord | None:
        cfg = self.config
        if item.topic is None:
            self.rejects("bad_topic", "a message's topic is not valid UTF-8")
            return None
        key = partition_key(item.topic)
        if len(item.payload) > cfg.max_payload_bytes or len(item.payload) + len(key.encode()) > MAX_RECORD_BYTES:
            self.rejects("too_large", f"{len(item.payload)} bytes on {item.topic!r} (max_payload_bytes = {cfg.max_payload_bytes})")
            return None
        attrs: dict[str, Any] | None = None
        if key != item.topic or item.qos != 1 or item.retain or item.content_type is not None:
            attrs = {"topic": item.topic} if key != item.topic else {}
            if item.qos != 1:
                attrs["qos"] = item.qos
            if item.retain:
                attrs["retain"] = True
            if item.content_type is not None:
                attrs["content_type"] = item.content_type
        return NewRecord(cfg.kind, cfg.stream, key, item.payload, self.name, item.timestamp_ms, attrs)

    def _drop_unacked(self) -> None:
        """Forget messages received after the last commit: the broker redelivers QoS 1/2 ones."""
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += 1
        with self._room:
            self._queued_bytes = 0
        if dropped:
            log.info("%s: %d message(s) not committed at shutdown; the broker keeps QoS>0 ones", self.name, dropped)
