"""SubscribeToShard: a shard's records pushed to an enhanced fan-out consumer as an event stream.

The response is an ``application/vnd.amazon.eventstream`` body (see ``eventstream``) written
incrementally on a plain aiohttp ``StreamResponse`` (chunked on HTTP/1.1; an HTTP/2 layer carries
the same writes as DATA frames):

1. ``initial-response`` (``{}``) -- boto3 refuses a stream without it;
2. at once, a ``SubscribeToShardEvent`` with whatever the starting position already has;
3. one event per commit that adds records to the shard (the store's commit hook wakes the
   subscription through ``signals``: no polling), each with ``Records``, ``MillisBehindLatest``
   and ``ContinuationSequenceNumber`` -- the number to resubscribe AFTER_SEQUENCE_NUMBER of,
   present even when an event carries no records; an idle shard still gets an empty event every
   ``[consumers] heartbeat_seconds``;
4. when a closed shard is read to its end, a last event with ``ChildShards`` and no
   ``ContinuationSequenceNumber`` (what KCL takes as SHARD_END), then the stream ends.

The stream also ends after ``subscription_seconds`` (5 minutes, as AWS). Errors before the
stream starts are ordinary error responses; after it, exception messages (``ResourceInUseException``
when a later subscription of the same consumer to the same shard took over -- allowed once the
first is ``takeover_seconds`` old, refused before; ``ResourceNotFoundException`` when the
consumer or stream is gone). Each consumer reads each shard at up to the configured
``shard_read_bytes_per_sec`` (2 MiB/s) of its own, not shared with GetRecords. With limits on, a
consumer may call SubscribeToShard on a shard once per ``subscribe_interval_seconds`` (1 s, as
AWS); a valid call sooner gets ``LimitExceededException``, before the takeover rule is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.config import ConsumersConfig
from gateway.errors import AwsError, in_use, limit_exceeded, not_found
from gateway.kds import eventstream, render
from gateway.kds.consumers import CONSUMERS, Consumer
from gateway.kds.limits import TokenBucket
from gateway.kds.records import start_position
from gateway.kds.sequence import external
from gateway.kds.shards import Shard
from gateway.kds.signals import ShardSignals
from gateway.kds.store import ReadResult, Store, Stream

if TYPE_CHECKING:
    from gateway.kds.api import Call

log = logging.getLogger("gateway.kds.subscriptions")

#: Most records, and bytes of records, in one event (less when the consumer's read budget is lower).
EVENT_RECORDS = 10_000
EVENT_BYTES = 1024 * 1024
EVENT_TYPE = "SubscribeToShardEvent"

SubscriptionKey = tuple[int, str, float, int]  # stream key, consumer name, consumer created, shard key


@dataclass(eq=False)
class Subscription:
    key: SubscriptionKey
    started: float  # monotonic
    #: Why the subscription must end now (set by a takeover, a deregistration or shutdown).
    ended: AwsError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Subscriptions:
    """Live subscriptions, one per (consumer, shard), and each pair's read budget."""

    def __init__(self, store: Store, signals: ShardSignals, config: ConsumersConfig) -> None:
        self.store = store
        self.signals = signals
        self.config = config
        self._live: dict[SubscriptionKey, Subscription] = {}
        self._buckets: dict[SubscriptionKey, TokenBucket] = {}
        #: When each (consumer, shard) last got past the one-call-per-second check (monotonic).
        self._last_call: dict[SubscriptionKey, float] = {}
        self.closing = False

    @staticmethod
    def key(consumer: Consumer, shard: Shard) -> SubscriptionKey:
        return (consumer.stream_key, consumer.name, consumer.created, shard.key)

    def admit_call(self, consumer: Consumer, shard: Shard, arn: str) -> None:
        """AWS's one SubscribeToShard per second per consumer per shard (a refused call does not count)."""
        if not self.store.limits.enabled:
            return
        key = self.key(consumer, shard)
        now = time.monotonic()
        last = self._last_call.get(key)
        if last is not None and now - last < self.config.subscribe_interval_seconds:
            raise limit_exceeded(f"Rate exceeded for consumer {arn} and shard {shard.shard_id}")
        self._last_call[key] = now

    def begin(self, consumer: Consumer, shard: Shard, arn: str) -> Subscription:
        key = self.key(consumer, shard)
        now = time.monotonic()
        previous = self._live.get(key)
        if previous is not None:
            if now - previous.started < self.config.takeover_seconds:
                raise in_use(f"Another active subscription exists for consumer {arn} on shard {shard.shard_id}.")
            self._end(previous, in_use(f"Consumer {arn} subscribed to shard {shard.shard_id} again: this subscription was taken over."))
        subscription = self._live[key] = Subscription(key, now)
        return subscription

    def finish(self, subscription: Subscription) -> None:
        if self._live.get(subscription.key) is subscription:
            del self._live[subscription.key]
        subscription.done.set()

    def bucket(self, subscription: Subscription) -> TokenBucket | None:
        limits = self.store.limits
        if not limits.enabled:
            return None
        bucket = self._buckets.get(subscription.key)
        if bucket is None:
            bucket = self._buckets[subscription.key] = TokenBucket(limits.config.shard_read_bytes_per_sec)
        return bucket

    def _end(self, subscription: Subscription, reason: AwsError) -> None:
        if subscription.ended is None:
            subscription.ended = reason
        self.signals.fire([subscription.key[3]])

    def consumer_gone(self, consumer: Consumer) -> None:
        """Deregistered (or its stream deleted): its subscriptions end with ResourceNotFoundException."""
        for key, subscription in list(self._live.items()):
            if key[:3] == (consumer.stream_key, consumer.name, consumer.created):
                self._end(subscription, not_found(f"Consumer {consumer.name} was deregistered."))
        for table in (self._buckets, self._last_call):
            for key in [k for k in table if k[:3] == (consumer.stream_key, consumer.name, consumer.created)]:
                del table[key]

    async def close(self) -> None:
        """Gateway shutdown: end every subscription (their clients see the stream end) and wait."""
        self.closing = True
        live = list(self._live.values())
        for subscription in live:
            self.signals.fire([subscription.key[3]])
        if live:
            waiters = [asyncio.ensure_future(s.done.wait()) for s in live]
            await asyncio.wait(waiters, timeout=2)
            for waiter in waiters:
                waiter.cancel()


SUBSCRIPTIONS = web.AppKey("kds_subscriptions", Subscriptions)


def _event(call: Call, stream: Stream, shard: Shard, result: ReadResult, continuation: int | None) -> bytes:
    codec = call.codec
    blob, ts = codec.blob, codec.ts
    body: dict[str, Any] = {
        "Records": [
            {"SequenceNumber": external(seq), "ApproximateArrivalTimestamp": ts(arrival), "Data": blob(data), "PartitionKey": key}
            for seq, arrival, key, data in result.rows
        ],
        "MillisBehindLatest": 0 if result.at_tip or not result.rows else max(0, int((time.time() - result.rows[-1][1]) * 1000)),
    }
    if continuation is None:
        body["ChildShards"] = render.child_shards(stream, shard)
    else:
        body["ContinuationSequenceNumber"] = external(continuation)
    return eventstream.event(EVENT_TYPE, codec.encode(body), codec.content_type)


async def subscribe_to_shard(call: Call, p: dict[str, Any]) -> web.StreamResponse:
    app = call.request.app
    hub = app[SUBSCRIPTIONS]
    registry = app[CONSUMERS]
    arn = p["ConsumerARN"]
    stream, consumer = registry.by_arn(arn)
    if registry.status(consumer) != "ACTIVE":
        raise in_use(f"Consumer {arn} is not ACTIVE yet.")
    shard = stream.shard(p["ShardId"], call.store.account_id)
    start = p["StartingPosition"]
    position = await start_position(call.store, stream, shard, start["Type"], start.get("SequenceNumber"), start.get("Timestamp"))
    if p.get("DryRun"):
        raise AwsError("DryRunOperationException", "The request would have succeeded, but DryRun was set.")
    hub.admit_call(consumer, shard, arn)
    if hub.closing:
        raise AwsError("ServiceUnavailableException", "The gateway is shutting down.", 503)
    subscription = hub.begin(consumer, shard, arn)
    response = web.StreamResponse(headers={"Content-Type": eventstream.CONTENT_TYPE})
    try:
        await response.prepare(call.request)
        await response.write(eventstream.event("initial-response", call.codec.encode({}), call.codec.content_type))
        reason = await _push(call, hub, subscription, stream, shard, position, response)
        if reason is not None:
            await response.write(eventstream.exception(reason.code, call.codec.encode({"message": reason.message}), call.codec.content_type))
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.debug("subscriber of %s %s went away", arn, shard.shard_id)
    except Exception:  # once the response has started, the error goes out as the stream's last message
        if not response.prepared:
            raise
        log.exception("SubscribeToShard %s %s failed", arn, shard.shard_id)
        with contextlib.suppress(ConnectionError):
            payload = call.codec.encode({"message": "internal error, see the gateway log"})
            await response.write(eventstream.exception("InternalFailureException", payload, call.codec.content_type))
            await response.write_eof()
    finally:
        hub.finish(subscription)
    return response


async def _push(call: Call, hub: Subscriptions, subscription: Subscription, stream: Stream, shard: Shard, position: int, response: web.StreamResponse) -> AwsError | None:
    """Send events until the subscription ends; the error to end it with, or None for a clean end."""
    store = call.store
    config = hub.config
    clock = time.monotonic
    deadline = subscription.started + config.subscription_seconds
    bucket = hub.bucket(subscription)
    last_sent: float | None = None
    while True:
        if subscription.ended is not None:
            return subscription.ended
        if hub.closing or clock() >= deadline:
            return None
        live = store.streams.get(stream.name)
        if live is None or live.key != stream.key:  # by key: a reload after a failed commit makes new objects
            return not_found(f"Stream {stream.name} was deleted.")
        stream = live
        if bucket is not None and bucket.refill(clock()) < 0:  # over this consumer's 2 MiB/s: let it refill
            await _sleep_until(hub, subscription, shard, min(deadline, clock() + -bucket.tokens / bucket.rate))
            continue
        woken = hub.signals.current(shard.key)  # taken before the read: a commit during it sets this
        room = EVENT_BYTES if bucket is None else max(1, min(EVENT_BYTES, int(bucket.tokens)))
        result = await asyncio.to_thread(store.read, shard.key, position, EVENT_RECORDS, room)
        if bucket is not None:
            bucket.tokens -= result.nbytes
        at_end = result.end_seq is not None and result.at_tip
        due = last_sent is None or clock() - last_sent >= config.heartbeat_seconds
        if result.rows or due or at_end:
            if result.rows:
                position = result.rows[-1][0] + 1
            if result.rows or not at_end:
                await response.write(_event(call, stream, shard, result, position - 1))
            if at_end:
                await response.write(_event(call, stream, shard, ReadResult([], True, 0, result.end_seq), None))
                return None
            last_sent = clock()
        if not result.at_tip:
            continue
        assert last_sent is not None
        wake_at = min(deadline, last_sent + config.heartbeat_seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, wake_at - clock())):
                await woken.wait()


async def _sleep_until(hub: Subscriptions, subscription: Subscription, shard: Shard, until: float) -> None:
    """Wait out a throttle, but end at once if the subscription is ended meanwhile."""
    woken = hub.signals.current(shard.key)
    while subscription.ended is None and not hub.closing and time.monotonic() < until:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(until - time.monotonic()):
                await woken.wait()
        woken = hub.signals.current(shard.key)
