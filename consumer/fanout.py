"""Reading a shard by enhanced fan-out: SubscribeToShard with a registered stream consumer.

The worker registers the consumer once (``RegisterStreamConsumer``, or finds it) and waits for
ACTIVE. Each shard reader subscribes from its start position and then resubscribes
``AFTER_SEQUENCE_NUMBER`` the last ``ContinuationSequenceNumber`` whenever a subscription ends
(every 5 minutes, or on a dropped connection). An event with ``ChildShards`` and no
continuation number is the shard's end. A thread per subscription pumps events into a queue,
so ``next_batch`` returns within ``POLL_SECONDS`` even on an idle shard and a stop never waits
for the next event. ``ResourceInUseException`` (the previous owner's subscription is less
than 5 s old, after a lease hand-off) and throttling back off and retry.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import StreamError
from consumer.polling import FATAL_CODES, Batch, Position, error_code
from edge_agent.backoff import Backoff

log = logging.getLogger("consumer.fanout")

#: Longest ``next_batch`` waits for an event before returning None (the consumer checks its lease).
POLL_SECONDS = 0.5
REGISTER_TIMEOUT_SECONDS = 60.0
_END = object()


def register_consumer(client: Any, stream: str, name: str, sleep: Callable[[float], None] = time.sleep) -> str:
    """The ARN of stream consumer ``name`` (registered if missing), once it is ACTIVE."""
    try:
        stream_arn = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
        try:
            consumer = client.register_stream_consumer(StreamARN=stream_arn, ConsumerName=name)["Consumer"]
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            consumer = client.describe_stream_consumer(StreamARN=stream_arn, ConsumerName=name)["ConsumerDescription"]
        deadline = time.monotonic() + REGISTER_TIMEOUT_SECONDS
        while consumer["ConsumerStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise StreamError(f"stream consumer {name} not ACTIVE after {REGISTER_TIMEOUT_SECONDS:.0f}s")
            sleep(0.2)
            consumer = client.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
    except (ClientError, BotoCoreError) as exc:
        raise StreamError(f"cannot register stream consumer {name} on {stream}: {exc}") from exc
    return str(consumer["ConsumerARN"])


class FanOutReader:
    def __init__(self, client: Any, consumer_arn: str, shard_id: str, start: Position, stop: threading.Event,
                 backoff: Backoff | None = None) -> None:
        self.client = client
        self.consumer_arn = consumer_arn
        self.shard_id = shard_id
        self._start = start
        self._stop = stop
        self._backoff = backoff or Backoff(base=0.2, cap=5.0)
        self._continuation: str | None = None
        self._events: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._pump: threading.Thread | None = None
        self._stream: Any = None
        self._closed = False
        #: Subscriptions made so far (one per 5 minutes, more after dropped connections).
        self.subscriptions = 0

    def _position(self) -> dict[str, Any]:
        if self._continuation:
            return {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self._continuation}
        position: dict[str, Any] = {"Type": self._start.iterator_type}
        if self._start.sequence_number is not None:
            position["SequenceNumber"] = self._start.sequence_number
        if self._start.timestamp is not None:
            position["Timestamp"] = self._start.timestamp
        return position

    def _subscribe(self) -> bool:
        try:
            resp = self.client.subscribe_to_shard(ConsumerARN=self.consumer_arn, ShardId=self.shard_id, StartingPosition=self._position())
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            if code in FATAL_CODES:
                raise StreamError(f"{self.shard_id}: SubscribeToShard: {code}: {exc}") from exc
            log.info("%s: SubscribeToShard: %s (retrying)", self.shard_id, code)
            self._stop.wait(self._backoff.next())
            return False
        self._stream = resp["EventStream"]
        self.subscriptions += 1
        self._pump = threading.Thread(target=self._run_pump, args=(self._stream,), name=f"efo-{self.shard_id}", daemon=True)
        self._pump.start()
        return True

    def _run_pump(self, stream: Any) -> None:
        """Move events from the HTTP response into the queue; end with _END or the exception."""
        try:
            for event in stream:
                if not self._put(event):
                    return
            self._put(_END)
        except Exception as exc:  # a dropped connection or an exception frame: next_batch resubscribes
            self._put(exc)

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless the reader is closed meanwhile (then False: the pump ends)."""
        while not self._closed:
            try:
                self._events.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def next_batch(self) -> Batch | None:
        if self._pump is None and not self._subscribe():
            return None
        try:
            item = self._events.get(timeout=POLL_SECONDS)
        except queue.Empty:
            return None
        if item is _END or isinstance(item, Exception):
            if isinstance(item, Exception):
                code = error_code(item)
                if code in FATAL_CODES:
                    raise StreamError(f"{self.shard_id}: subscription failed: {code}: {item}") from item
                log.info("%s: subscription ended: %s (resubscribing)", self.shard_id, code)
                self._stop.wait(self._backoff.next())
            self._pump = None
            return None
        event = item.get("SubscribeToShardEvent")
        if event is None:
            return None
        self._backoff.reset()
        continuation = event.get("ContinuationSequenceNumber")
        batch = Batch(event.get("Records", []), event.get("MillisBehindLatest"))
        if continuation:
            self._continuation = continuation
        elif "ChildShards" in event:
            batch.child_shards = event["ChildShards"]
        return batch

    def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # closing a half-read response from another thread; nothing to recover
                pass


def fanout_reader_factory(client: Any, stream: str, consumer_name: str) -> Callable[[str, Position, threading.Event], FanOutReader]:
    """Registers the consumer now (ConfigError-like StreamError if that fails) and returns the reader factory."""
    arn = register_consumer(client, stream, consumer_name)
    log.info("enhanced fan-out as %s", arn)

    def open_reader(shard_id: str, position: Position, stop: threading.Event) -> FanOutReader:
        return FanOutReader(client, arn, shard_id, position, stop)

    return open_reader
