"""Queues on a stream (control plane): CreateQueue, DescribeQueue, ListQueues, UpdateQueue, DeleteQueue.

A queue hands a stream's records out to competing receivers, one record to one receiver at a time,
with per-record delivery state (see ``queue_delivery``). On disk, in ``kds.sqlite3``::

    queues(key, name UNIQUE, resource_id UNIQUE, stream_key, created, updated, visibility_seconds,
           dead_letter ('BUILT_IN' | 'NONE'), max_receive, start_type, start_ts, tags JSON)

As the model documents: one stream per queue, on-demand streams only, the ARN's resource id is
generated (``arn:aws:kinesis:<region>:<account>:queue/<id>``, not the name), names are unique per
account, a queue counts against the stream's 20 registered consumers, a stream with queues cannot be
deleted, VisibilityTimeoutSeconds defaults to 30 and dead-letter handling to BUILT_IN with a
MaxReceiveCount of 6. Status comes from the clock like a consumer's: CREATING (or UPDATING after an
UpdateQueue) for ``[consumers] activation_seconds``, then ACTIVE; DeleteQueue removes the queue, its
cursors and its delivery state in one job, so its receipt handles stop being valid at once (there is
no DELETING state to wait out). With limits on, at most 5 queues of the account may be CREATING at
once (AWS's quota on queues CREATING or DELETING): a sixth CreateQueue gets LimitExceededException.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.auth import VERIFIER
from gateway.errors import AwsError, in_use, invalid_argument, limit_exceeded, not_found, validation
from gateway.kds import consumers as registered
from gateway.wire import decode_token, encode_token

if TYPE_CHECKING:
    from gateway.kds.api import Call
    from gateway.kds.store import Store, Stream

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues(
    key INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, resource_id TEXT UNIQUE NOT NULL, stream_key INTEGER NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, visibility_seconds INTEGER NOT NULL, dead_letter TEXT NOT NULL,
    max_receive INTEGER, start_type TEXT NOT NULL, start_ts REAL, tags TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS queues_by_stream ON queues(stream_key);
"""
DEFAULT_VISIBILITY_SECONDS = 30
DEFAULT_MAX_RECEIVE_COUNT = 6
DEFAULT_LIST_LIMIT = 100
#: Queues the account may have CREATING (or, on AWS, DELETING) at once.
MAX_CREATING = 5
MAX_TAGS = registered.MAX_TAGS
_COLUMNS = "key, name, resource_id, stream_key, created, updated, visibility_seconds, dead_letter, max_receive, start_type, start_ts, tags"


@dataclass(frozen=True)
class Queue:
    key: int
    name: str
    resource_id: str
    stream_key: int
    created: float
    updated: float
    visibility_seconds: int
    dead_letter: str
    max_receive: int | None
    start_type: str
    start_ts: float | None
    tags: str

    @property
    def dead_letter_after(self) -> int | None:
        """Receives after which an unacknowledged record is dead-lettered (None: never)."""
        return self.max_receive if self.dead_letter == "BUILT_IN" else None


def count_on_stream(conn: sqlite3.Connection, stream_key: int) -> int:
    (n,) = conn.execute("SELECT count(*) FROM queues WHERE stream_key=?", (stream_key,)).fetchone()
    return int(n)


class Queues:
    """Every queue (an in-memory copy of the table, replaced on the event loop after each commit)."""

    def __init__(self, store: Store, activation_seconds: float) -> None:
        self.store = store
        self.activation_seconds = activation_seconds
        self._by_id: dict[str, Queue] = {}
        self._changed: dict[int, asyncio.Event] = {}
        #: Set at shutdown: long polls answer at once instead of holding the server open.
        self.closing = False

    async def load(self) -> None:
        rows = await self.store.run(lambda conn: conn.execute(f"SELECT {_COLUMNS} FROM queues").fetchall())
        self._by_id = {row[2]: Queue(*row) for row in rows}

    def all(self) -> list[Queue]:
        return sorted(self._by_id.values(), key=lambda q: q.name)

    def status(self, queue: Queue) -> str:
        now = time.time()
        if now < queue.created + self.activation_seconds:
            return "CREATING"
        if queue.updated > queue.created and now < queue.updated + self.activation_seconds:
            return "UPDATING"
        return "ACTIVE"

    def by_arn(self, arn: str) -> Queue:
        _, sep, resource_id = arn.partition(":queue/")
        queue = self._by_id.get(resource_id) if sep else None
        if queue is None:
            raise not_found(f"Queue {arn} not found.")
        return queue

    def changed(self, queue: Queue) -> asyncio.Event:
        """Set (and replaced) when records of ``queue`` may have become visible other than by a put."""
        event = self._changed.get(queue.key)
        if event is None:
            event = self._changed[queue.key] = asyncio.Event()
        return event

    def touch(self, queue: Queue) -> None:
        event = self._changed.pop(queue.key, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        self.closing = True
        for event in self._changed.values():
            event.set()
        self._changed.clear()

    def _put(self, queue: Queue) -> None:
        self._by_id = {**self._by_id, queue.resource_id: queue}

    async def create(self, stream: Stream, name: str, start: dict[str, Any], attributes: dict[str, Any], tags: dict[str, str]) -> Queue:
        store = self.store
        start_type = start.get("Type", "LATEST")
        visibility, dead_letter, max_receive = _attributes(attributes, None)
        if "Timestamp" in start and start_type != "AT_TIMESTAMP":
            raise validation("StartingPosition Timestamp can only be given with Type AT_TIMESTAMP.")
        if start_type == "AT_TIMESTAMP" and "Timestamp" not in start:
            raise validation("StartingPosition Type AT_TIMESTAMP needs a Timestamp.")
        if len(tags) > MAX_TAGS:
            raise validation(f"A queue can have at most {MAX_TAGS} tags.")

        def job(conn: sqlite3.Connection) -> Queue:
            if store.streams.get(stream.name) is not stream:
                raise not_found(f"Stream {stream.name} not found.")
            if stream.mode != "ON_DEMAND":
                raise validation(f"Queues are supported only on data streams in on-demand capacity mode; stream {stream.name} is PROVISIONED.")
            if conn.execute("SELECT 1 FROM queues WHERE name=?", (name,)).fetchone():
                raise in_use(f"Queue {name} already exists.")
            if registered.registered_count(conn, stream.key) >= registered.MAX_CONSUMERS_PER_STREAM:
                raise limit_exceeded(f"Stream {stream.name} already has {registered.MAX_CONSUMERS_PER_STREAM} registered consumers and queues.")
            now = time.time()
            if store.limits.enabled:
                (creating,) = conn.execute("SELECT count(*) FROM queues WHERE created > ?", (now - self.activation_seconds,)).fetchone()
                if creating >= MAX_CREATING:
                    raise limit_exceeded(f"The account already has {MAX_CREATING} queues in CREATING or DELETING state; retry when one is ACTIVE.")
            start_ts, cursors = _start(conn, store, stream, start_type, start.get("Timestamp"), now)
            cursor = conn.execute(
                "INSERT INTO queues(name, resource_id, stream_key, created, updated, visibility_seconds, dead_letter, max_receive, start_type, start_ts, tags)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (name, secrets.token_hex(10), stream.key, now, now, visibility, dead_letter, max_receive, start_type, start_ts, json.dumps(tags)),
            )
            key = cursor.lastrowid
            conn.executemany("INSERT INTO queue_cursors(queue_key, shard_key, next_seq) VALUES (?,?,?)", [(key, s, seq) for s, seq in cursors.items()])
            row = conn.execute(f"SELECT {_COLUMNS} FROM queues WHERE key=?", (key,)).fetchone()
            return Queue(*row)

        queue: Queue = await store.run(job)
        self._put(queue)
        return queue

    async def update(self, queue: Queue, attributes: dict[str, Any]) -> Queue:
        visibility, dead_letter, max_receive = _attributes(attributes, queue)

        def job(conn: sqlite3.Connection) -> Queue:
            now = time.time()
            if conn.execute("UPDATE queues SET updated=?, visibility_seconds=?, dead_letter=?, max_receive=? WHERE key=?", (now, visibility, dead_letter, max_receive, queue.key)).rowcount != 1:
                raise not_found(f"Queue {queue.name} not found.")
            return replace(queue, updated=now, visibility_seconds=visibility, dead_letter=dead_letter, max_receive=max_receive)

        updated: Queue = await self.store.run(job)
        self._put(updated)
        self.touch(updated)
        return updated

    async def retag(self, queue: Queue, add: dict[str, str], remove: list[str]) -> None:
        """TagResource / UntagResource on a queue ARN."""

        def job(conn: sqlite3.Connection) -> Queue:
            row = conn.execute("SELECT tags FROM queues WHERE key=?", (queue.key,)).fetchone()
            if row is None:
                raise not_found(f"Queue {queue.name} not found.")
            tags = registered.retagged(row[0], add, remove, "queue")
            conn.execute("UPDATE queues SET tags=? WHERE key=?", (tags, queue.key))
            return replace(queue, tags=tags)

        self._put(await self.store.run(job))

    async def delete(self, queue: Queue) -> None:
        def job(conn: sqlite3.Connection) -> None:
            forget(conn, queue.key)

        await self.store.run(job)
        self._by_id = {k: q for k, q in self._by_id.items() if q.key != queue.key}
        self.touch(queue)


def forget(conn: sqlite3.Connection, queue_key: int) -> None:
    for table, column in (("queue_records", "queue_key"), ("queue_cursors", "queue_key"), ("queues", "key")):
        conn.execute(f"DELETE FROM {table} WHERE {column}=?", (queue_key,))


def _attributes(attributes: dict[str, Any], current: Queue | None) -> tuple[int, str, int | None]:
    """(visibility, dead-letter target, max receive count) from QueueAttributes over the current ones."""
    visibility = attributes.get("VisibilityTimeoutSeconds", current.visibility_seconds if current else DEFAULT_VISIBILITY_SECONDS)
    config = attributes.get("DeadLetterConfiguration")
    if config is None:
        if current is not None:
            return visibility, current.dead_letter, current.max_receive
        return visibility, "BUILT_IN", DEFAULT_MAX_RECEIVE_COUNT
    target = config["TargetType"]
    max_receive = config.get("MaxReceiveCount")
    if target == "BUILT_IN" and max_receive is None:
        raise validation("DeadLetterConfiguration with TargetType BUILT_IN needs a MaxReceiveCount.")
    if target == "NONE" and max_receive is not None:
        raise validation("DeadLetterConfiguration with TargetType NONE takes no MaxReceiveCount.")
    return visibility, target, max_receive


def _start(conn: sqlite3.Connection, store: Store, stream: Stream, kind: str, timestamp: float | None, now: float) -> tuple[float | None, dict[int, int]]:
    """(effective start time, first seq to deliver per shard) for a new queue (inside its job)."""
    cursors: dict[int, int] = {}
    earliest: float | None = None
    for shard in stream.shards:
        if kind == "LATEST":
            cursors[shard.key] = store.next_seq if shard.end_seq is None else shard.end_seq + 1
            continue
        row = conn.execute("SELECT first_seq, arrival FROM segments WHERE shard_key=? ORDER BY last_seq LIMIT 1", (shard.key,)).fetchone()
        if row is not None:
            earliest = row[1] if earliest is None else min(earliest, row[1])
        if kind == "TRIM_HORIZON" or timestamp is None:
            cursors[shard.key] = shard.start_seq
        else:
            found = conn.execute("SELECT first_seq FROM segments WHERE shard_key=? AND arrival>=? ORDER BY last_seq LIMIT 1", (shard.key, timestamp)).fetchone()
            cursors[shard.key] = (store.next_seq if shard.end_seq is None else shard.end_seq + 1) if found is None else found[0]
    if kind == "LATEST":
        return now, cursors
    if kind == "TRIM_HORIZON":
        return (now if earliest is None else earliest), cursors
    return (timestamp if earliest is None or timestamp is None else max(timestamp, earliest)), cursors


QUEUES = web.AppKey("kds_queues", Queues)


def queue_arn(call: Call, queue: Queue) -> str:
    return f"arn:aws:kinesis:{call.region}:{call.store.account_id}:queue/{queue.resource_id}"


def _stream_of(call: Call, queue: Queue) -> Stream | None:
    return call.store.streams_by_key.get(queue.stream_key)


def _description(call: Call, queue: Queue) -> dict[str, Any]:
    registry = call.request.app[QUEUES]
    status = registry.status(queue)
    stream = _stream_of(call, queue)
    position: dict[str, Any] = {"Type": queue.start_type}
    if queue.start_ts is not None and (status != "CREATING" or queue.start_type == "AT_TIMESTAMP"):
        position["Timestamp"] = call.codec.ts(queue.start_ts)
    dead_letter: dict[str, Any] = {"TargetType": queue.dead_letter}
    if queue.max_receive is not None:
        dead_letter["MaxReceiveCount"] = queue.max_receive
    return {
        "QueueName": queue.name,
        "QueueARN": queue_arn(call, queue),
        "QueueStatus": status,
        "QueueCreationTimestamp": call.codec.ts(queue.created),
        "StreamConfigurationList": [{"StreamARN": call.arn(stream.name if stream else "deleted"), "StartingPosition": position}],
        "QueueAttributes": {"VisibilityTimeoutSeconds": queue.visibility_seconds, "DeadLetterConfiguration": dead_letter},
    }


def _authorize(call: Call, stream_name: str) -> None:
    """``[auth] allowed_streams`` for the stream behind a queue (the request names only the queue)."""
    verifier = call.request.app.get(VERIFIER)
    if verifier is not None and call.access_key is not None:
        verifier.check_stream(call.request, call.access_key, "kinesis", stream_name)


def queue_for(call: Call, arn: str) -> Queue:
    """The queue an ARN names, if the caller may use its stream."""
    queue = call.request.app[QUEUES].by_arn(arn)
    stream = _stream_of(call, queue)
    _authorize(call, stream.name if stream is not None else "")
    return queue


async def create_queue(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    configs = p["StreamConfigurationList"]
    if len(configs) != 1:
        raise validation("StreamConfigurationList must contain exactly one entry: a queue delivers records from a single data stream.")
    stream = call.stream({"StreamARN": configs[0]["StreamARN"]})
    _authorize(call, stream.name)
    queue = await call.request.app[QUEUES].create(stream, p["QueueName"], configs[0].get("StartingPosition", {}), p.get("QueueAttributes", {}), p.get("Tags", {}))
    return {"QueueDescription": _description(call, queue)}


async def describe_queue(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    return {"QueueDescription": _description(call, queue_for(call, p["QueueARN"]))}


async def list_queues(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    queues = call.request.app[QUEUES].all()
    filters = p.get("StreamFilter")
    if filters:
        wanted: set[int] = set()
        for entry in filters:
            stream = call.store.streams.get(_stream_name(entry["StreamARN"]))
            if stream is not None and ("StreamCreationTimestamp" not in entry or int(entry["StreamCreationTimestamp"]) == int(stream.created)):
                wanted.add(stream.key)
        queues = [q for q in queues if q.stream_key in wanted]
    if "NextToken" in p:
        try:
            after = decode_token(p["NextToken"]).get("after")
        except ValueError as exc:
            raise invalid_argument("Invalid NextToken.") from exc
        if not isinstance(after, str):
            raise invalid_argument("Invalid NextToken.")
        queues = [q for q in queues if q.name > after]
    limit = p.get("MaxResults", DEFAULT_LIST_LIMIT)
    page = queues[:limit]
    summaries = []
    for queue in page:
        stream = _stream_of(call, queue)
        summaries.append({
            "QueueName": queue.name,
            "QueueARN": queue_arn(call, queue),
            "QueueStatus": call.request.app[QUEUES].status(queue),
            "QueueCreationTimestamp": call.codec.ts(queue.created),
            "Streams": [{"StreamARN": call.arn(stream.name if stream else "deleted"), "StreamCreationTimestamp": call.codec.ts(stream.created if stream else 0.0)}],
        })
    out: dict[str, Any] = {"QueueSummaries": summaries}
    if len(queues) > limit:
        out["NextToken"] = encode_token({"after": page[-1].name})
    return out


def _stream_name(arn: str) -> str:
    return arn.partition(":stream/")[2].split("/", 1)[0]


async def update_queue(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    queue = await call.request.app[QUEUES].update(queue_for(call, p["QueueARN"]), p["QueueAttributes"])
    return {"QueueDescription": _description(call, queue)}


async def delete_queue(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await call.request.app[QUEUES].delete(queue_for(call, p["QueueARN"]))
    return {}


def is_queue_arn(arn: str) -> bool:
    return ":queue/" in arn


async def tag_queue(call: Call, arn: str, add: dict[str, str], remove: list[str]) -> None:
    await call.request.app[QUEUES].retag(queue_for(call, arn), add, remove)


def queue_tags(call: Call, arn: str) -> dict[str, str]:
    tags: dict[str, str] = json.loads(queue_for(call, arn).tags)
    return tags


def active(call: Call, arn: str) -> Queue:
    """The queue an ARN names, for the data-plane calls."""
    queue = queue_for(call, arn)
    if _stream_of(call, queue) is None:
        raise AwsError("ResourceNotFoundException", f"The stream of queue {arn} no longer exists.")
    return queue


HANDLERS = {
    "CreateQueue": create_queue,
    "DeleteQueue": delete_queue,
    "DescribeQueue": describe_queue,
    "ListQueues": list_queues,
    "UpdateQueue": update_queue,
}
