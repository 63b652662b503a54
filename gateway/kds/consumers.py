"""Enhanced fan-out consumers: RegisterStreamConsumer, DescribeStreamConsumer,
ListStreamConsumers and DeregisterStreamConsumer.

On disk (``kds.sqlite3``, next to the streams)::

    consumers(stream_key, name, created, tags JSON)   PRIMARY KEY (stream_key, name)

A consumer's ARN is AWS's: ``arn:aws:kinesis:<region>:<account>:stream/<stream>/consumer/<name>:<created
epoch seconds>``, so an ARN of a deregistered consumer never names a new one of the same name
(registered in a later second). Its status is derived from the clock, not stored: ``CREATING`` for
``[consumers] activation_seconds`` after registration, then ``ACTIVE`` -- nothing to schedule and
nothing to lose in a restart. Deregistering deletes the row at once (AWS shows ``DELETING`` for a
moment; here the consumer is simply gone) and ends its subscriptions.

With limits on, at most 5 consumers of the account may be CREATING at once (AWS: registering a 6th
then is LimitExceededException).

Writes are writer jobs that check the table itself (the 20-per-stream limit, names in use), so
two concurrent registrations cannot both pass; the in-memory copy the handlers read is replaced
on the event loop once the job has committed. Queues on a stream count against the same limit.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import AwsError, in_use, invalid_argument, limit_exceeded, not_found
from gateway.wire import decode_token, encode_token

if TYPE_CHECKING:  # the store creates this module's table, so only types come from there
    from gateway.kds.api import Call
    from gateway.kds.store import Store, Stream

SCHEMA = """
CREATE TABLE IF NOT EXISTS consumers(stream_key INTEGER NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}', PRIMARY KEY(stream_key, name));
"""
#: Registered consumers (enhanced fan-out consumers and queues together) per stream, as AWS.
MAX_CONSUMERS_PER_STREAM = 20
#: Consumers the account may have CREATING at once (as AWS).
MAX_CREATING_CONSUMERS = 5
#: ListStreamConsumers page size when MaxResults is not given (as AWS).
DEFAULT_LIST_LIMIT = 100
MAX_TAGS = 50

_ARN_RE = re.compile(r"arn:aws[a-z-]*:kinesis:([a-z0-9-]*):(\d{12}):stream/([a-zA-Z0-9_.-]+)/consumer/([a-zA-Z0-9_.-]+):(\d+)")


@dataclass(frozen=True)
class Consumer:
    stream_key: int
    name: str
    created: float
    tags: str = "{}"

    @property
    def arn_suffix(self) -> str:
        return f"/consumer/{self.name}:{int(self.created)}"


def retagged(tags_json: str, add: dict[str, str], remove: list[str], what: str) -> str:
    """The tags column after TagResource / UntagResource on a consumer or queue (``what``);
    LimitExceededException past ``MAX_TAGS``."""
    tags = {**json.loads(tags_json), **add}
    for key in remove:
        tags.pop(key, None)
    if len(tags) > MAX_TAGS:
        raise limit_exceeded(f"A {what} can have at most {MAX_TAGS} tags.")
    return json.dumps(tags)


def forget_stream(conn: sqlite3.Connection, stream_key: int) -> None:
    """Drop a deleted stream's consumers (called from the DeleteStream job)."""
    conn.execute("DELETE FROM consumers WHERE stream_key=?", (stream_key,))


def registered_count(conn: sqlite3.Connection, stream_key: int) -> int:
    """Consumers and queues registered on a stream, from the table (inside a writer job)."""
    (n,) = conn.execute("SELECT (SELECT count(*) FROM consumers WHERE stream_key=?) + (SELECT count(*) FROM queues WHERE stream_key=?)", (stream_key, stream_key)).fetchone()
    return int(n)


class Consumers:
    """The registered consumers of every stream (an in-memory copy of the table)."""

    def __init__(self, store: Store, activation_seconds: float) -> None:
        self.store = store
        self.activation_seconds = activation_seconds
        self._by_stream: dict[int, dict[str, Consumer]] = {}
        #: Called with a consumer once it is deregistered (ends its subscriptions).
        self.on_deregister: list[Callable[[Consumer], None]] = []

    async def load(self) -> None:
        def job(conn: sqlite3.Connection) -> list[tuple[int, str, float, str]]:
            if "tags" not in {row[1] for row in conn.execute("PRAGMA table_info(consumers)")}:  # a table from before tags
                conn.execute("ALTER TABLE consumers ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")
            return conn.execute("SELECT stream_key, name, created, tags FROM consumers").fetchall()

        by_stream: dict[int, dict[str, Consumer]] = {}
        for stream_key, name, created, tags in await self.store.run(job):
            by_stream.setdefault(stream_key, {})[name] = Consumer(stream_key, name, created, tags)
        self._by_stream = by_stream

    def status(self, consumer: Consumer) -> str:
        return "ACTIVE" if time.time() >= consumer.created + self.activation_seconds else "CREATING"

    def of_stream(self, stream: Stream) -> list[Consumer]:
        """In registration order."""
        return sorted(self._by_stream.get(stream.key, {}).values(), key=lambda c: (c.created, c.name))

    def count(self, stream: Stream) -> int:
        return len(self._by_stream.get(stream.key, {}))

    def named(self, stream: Stream, name: str) -> Consumer:
        consumer = self._by_stream.get(stream.key, {}).get(name)
        if consumer is None:
            raise not_found(f"Consumer {name} under stream {stream.name} not found.")
        return consumer

    def by_arn(self, arn: str) -> tuple[Stream, Consumer]:
        """The live stream and consumer an ARN names (not found if either is gone or re-created)."""
        match = _ARN_RE.fullmatch(arn)
        if match is None:
            raise invalid_argument(f"ConsumerARN {arn} is not a Kinesis stream consumer ARN.")
        stream = self.store.stream(match.group(3))
        consumer = self.named(stream, match.group(4))
        if int(consumer.created) != int(match.group(5)):
            raise not_found(f"Consumer {arn} not found.")
        return stream, consumer

    def forget_stream(self, stream: Stream) -> None:
        """After DeleteStream: its consumers are gone (their rows went in the same job)."""
        gone = self._by_stream.get(stream.key, {})
        self._by_stream = {k: v for k, v in self._by_stream.items() if k != stream.key}
        for consumer in gone.values():
            for hook in self.on_deregister:
                hook(consumer)

    def _replace(self, stream_key: int, consumers: dict[str, Consumer]) -> None:
        self._by_stream = {**self._by_stream, stream_key: consumers}

    async def register(self, stream: Stream, name: str, tags: dict[str, str]) -> Consumer:
        store = self.store

        def job(conn: sqlite3.Connection) -> Consumer:
            if store.streams.get(stream.name) is not stream:
                raise not_found(f"Stream {stream.name} not found.")
            if conn.execute("SELECT 1 FROM consumers WHERE stream_key=? AND name=?", (stream.key, name)).fetchone():
                raise in_use(f"Consumer {name} under stream {stream.name} already exists.")
            if registered_count(conn, stream.key) >= MAX_CONSUMERS_PER_STREAM:
                raise limit_exceeded(f"Stream {stream.name} already has {MAX_CONSUMERS_PER_STREAM} registered consumers.")
            if len(tags) > MAX_TAGS:
                raise invalid_argument(f"A consumer can have at most {MAX_TAGS} tags.")
            now = time.time()
            if store.limits.enabled:
                (creating,) = conn.execute("SELECT count(*) FROM consumers WHERE created > ?", (now - self.activation_seconds,)).fetchone()
                if creating >= MAX_CREATING_CONSUMERS:
                    raise limit_exceeded(f"The account already has {MAX_CREATING_CONSUMERS} consumers in CREATING status; retry when one is ACTIVE.")
            consumer = Consumer(stream.key, name, now, json.dumps(tags))
            conn.execute("INSERT INTO consumers(stream_key, name, created, tags) VALUES (?,?,?,?)", (stream.key, name, consumer.created, consumer.tags))
            return consumer

        consumer: Consumer = await store.run(job)
        self._replace(stream.key, {**self._by_stream.get(stream.key, {}), name: consumer})
        return consumer

    async def retag(self, stream: Stream, consumer: Consumer, add: dict[str, str], remove: list[str]) -> None:
        """TagResource / UntagResource on a consumer ARN."""

        def job(conn: sqlite3.Connection) -> Consumer:
            row = conn.execute("SELECT tags FROM consumers WHERE stream_key=? AND name=? AND created=?", (consumer.stream_key, consumer.name, consumer.created)).fetchone()
            if row is None:
                raise not_found(f"Consumer {consumer.name} under stream {stream.name} not found.")
            tags = retagged(row[0], add, remove, "consumer")
            conn.execute("UPDATE consumers SET tags=? WHERE stream_key=? AND name=?", (tags, consumer.stream_key, consumer.name))
            return replace(consumer, tags=tags)

        updated: Consumer = await self.store.run(job)
        self._replace(stream.key, {**self._by_stream.get(stream.key, {}), updated.name: updated})

    async def deregister(self, stream: Stream, consumer: Consumer) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM consumers WHERE stream_key=? AND name=? AND created=?", (consumer.stream_key, consumer.name, consumer.created))

        await self.store.run(job)
        self._replace(stream.key, {n: c for n, c in self._by_stream.get(stream.key, {}).items() if n != consumer.name})
        for hook in self.on_deregister:
            hook(consumer)


CONSUMERS = web.AppKey("kds_consumers", Consumers)


def _registry(call: Call) -> Consumers:
    return call.request.app[CONSUMERS]


def _description(call: Call, stream: Stream, consumer: Consumer, registry: Consumers, with_stream: bool) -> dict[str, Any]:
    out = {
        "ConsumerName": consumer.name,
        "ConsumerARN": call.arn(stream.name) + consumer.arn_suffix,
        "ConsumerStatus": registry.status(consumer),
        "ConsumerCreationTimestamp": call.codec.ts(consumer.created),
    }
    if with_stream:
        out["StreamARN"] = call.arn(stream.name)
    return out


def _named(call: Call, p: dict[str, Any]) -> tuple[Stream, Consumer]:
    """The consumer named by ConsumerARN, or by StreamARN + ConsumerName (as AWS, one or the other)."""
    registry = _registry(call)
    arn = p.get("ConsumerARN")
    if arn is not None:
        if "StreamARN" in p or "ConsumerName" in p:
            raise invalid_argument("Specify either ConsumerARN, or StreamARN and ConsumerName, not both.")
        return registry.by_arn(arn)
    if "StreamARN" not in p or "ConsumerName" not in p:
        raise invalid_argument("Specify either ConsumerARN, or both StreamARN and ConsumerName.")
    stream = call.stream({"StreamARN": p["StreamARN"]})
    return stream, registry.named(stream, p["ConsumerName"])


async def register_stream_consumer(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream({"StreamARN": p["StreamARN"]})
    registry = _registry(call)
    consumer = await registry.register(stream, p["ConsumerName"], p.get("Tags", {}))
    return {"Consumer": _description(call, stream, consumer, registry, with_stream=False)}


async def describe_stream_consumer(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream, consumer = _named(call, p)
    return {"ConsumerDescription": _description(call, stream, consumer, _registry(call), with_stream=True)}


async def list_stream_consumers(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream({"StreamARN": p["StreamARN"]})
    created = p.get("StreamCreationTimestamp")
    if created is not None and int(created) != int(stream.created):
        raise not_found(f"Stream {stream.name} created at {created} not found.")
    registry = _registry(call)
    consumers = registry.of_stream(stream)
    start = 0
    if "NextToken" in p:
        try:
            mark = decode_token(p["NextToken"])
        except ValueError as exc:
            raise invalid_argument("Invalid NextToken.") from exc
        if mark.get("stream") != stream.name or not isinstance(mark.get("created"), float) or not isinstance(mark.get("name"), str):
            raise invalid_argument("Invalid NextToken.")
        start = next((i for i, c in enumerate(consumers) if (c.created, c.name) > (mark["created"], mark["name"])), len(consumers))
    limit = p.get("MaxResults", DEFAULT_LIST_LIMIT)
    page = consumers[start : start + limit]
    out: dict[str, Any] = {"Consumers": [_description(call, stream, c, registry, with_stream=False) for c in page]}
    if start + limit < len(consumers):
        last = page[-1]
        out["NextToken"] = encode_token({"stream": stream.name, "created": last.created, "name": last.name})
    return out


async def deregister_stream_consumer(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream, consumer = _named(call, p)
    await _registry(call).deregister(stream, consumer)
    return {}


def is_consumer_arn(arn: str) -> bool:
    return "/consumer/" in arn


def _tagged(call: Call, arn: str) -> tuple[Stream, Consumer]:
    """The consumer a ResourceARN names (the tagging calls word a miss as for any resource)."""
    try:
        return _registry(call).by_arn(arn)
    except AwsError as exc:
        raise not_found(f"Resource {arn} not found.") from exc


async def tag_consumer(call: Call, arn: str, add: dict[str, str], remove: list[str]) -> None:
    stream, consumer = _tagged(call, arn)
    await _registry(call).retag(stream, consumer, add, remove)


def consumer_tags(call: Call, arn: str) -> dict[str, str]:
    tags: dict[str, str] = json.loads(_tagged(call, arn)[1].tags)
    return tags


HANDLERS = {
    "DeregisterStreamConsumer": deregister_stream_consumer,
    "DescribeStreamConsumer": describe_stream_consumer,
    "ListStreamConsumers": list_stream_consumers,
    "RegisterStreamConsumer": register_stream_consumer,
}
