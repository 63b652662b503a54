"""A worker: keeps the lease table in step with the stream's shards, holds leases, runs consumers.

One loop (the caller's thread) renews leases every ``failover/3``, takes or steals leases every
``take_interval``, and lists the stream's shards every ``shard_sync_interval`` to create leases
for new shards (children get TRIM_HORIZON, so nothing written after a split is skipped). Each
held lease gets a ``ShardConsumer`` thread. ``stop`` (SIGTERM in the CLI) makes every consumer
finish its batch and call ``shutdown_requested`` (which checkpoints), then releases the leases,
so another worker continues at once instead of after the failover time.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer import metrics
from consumer.coordinator import ACTIVE, LeaseCoordinator, LeaseEvent
from consumer.errors import ConsumerError, StreamError
from consumer.leases import LATEST, SHARD_END, TRIM_HORIZON, Lease, LeaseStore
from consumer.polling import DEFAULT_MAX_RECORDS, DEFAULT_MIN_INTERVAL, PollingReader, Position
from consumer.processor import ProcessorFactory
from consumer.shard_consumer import HANDOFF, LOST, SHUTDOWN, ShardConsumer, ShardReader

log = logging.getLogger("consumer.worker")

DEFAULT_FAILOVER_SECONDS = 10.0
DEFAULT_SHARD_SYNC_SECONDS = 60.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class WorkerSettings:
    stream: str
    #: Unique per running worker; appears as leaseOwner in the lease table.
    worker_id: str = ""
    #: A lease not renewed for this long is taken by another worker (KCL: failoverTimeMillis).
    failover_seconds: float = DEFAULT_FAILOVER_SECONDS
    #: How often to look for leases to take or steal. Default: failover_seconds / 2.
    take_interval_seconds: float = 0.0
    #: How often to list the stream's shards for new leases.
    shard_sync_seconds: float = DEFAULT_SHARD_SYNC_SECONDS
    #: Where a shard with no checkpoint starts: TRIM_HORIZON, LATEST or AT_TIMESTAMP.
    initial_position: str = TRIM_HORIZON
    initial_timestamp: datetime | None = None
    #: Most leases this worker holds (0 = no cap).
    max_leases: int = 0
    #: Polling: seconds between GetRecords calls on one shard (5/s is the AWS limit).
    poll_interval_seconds: float = DEFAULT_MIN_INTERVAL
    max_records: int = DEFAULT_MAX_RECORDS

    @property
    def renew_interval(self) -> float:
        return self.failover_seconds / 3

    @property
    def take_interval(self) -> float:
        return self.take_interval_seconds or self.failover_seconds / 2


def list_all_shards(client: Any, stream: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    args: dict[str, Any] = {"StreamName": stream}
    while True:
        try:
            resp = client.list_shards(**args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise StreamError(f"stream {stream!r} not found") from exc
            raise
        shards += resp.get("Shards", [])
        if not resp.get("NextToken"):
            return shards
        args = {"NextToken": resp["NextToken"]}


class Worker:
    def __init__(self, settings: WorkerSettings, store: LeaseStore, client: Any, processor_factory: ProcessorFactory,
                 reader_factory: Callable[[str, Position, threading.Event], ShardReader] | None = None) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or default_worker_id()
        self.store = store
        self.client = client
        self.processor_factory = processor_factory
        self.coordinator = LeaseCoordinator(store, self.worker_id, settings.failover_seconds, settings.max_leases,
                                            on_take=lambda how: metrics.LEASE_TAKES.labels(settings.stream, how).inc())
        self.consumers: dict[str, ShardConsumer] = {}
        #: Leases ready to process whose consumer is not started yet.
        self._ready: dict[str, Lease] = {}
        self.known_shards: set[str] = set()
        self._open_reader = reader_factory or self._polling_reader
        self.stop_event = threading.Event()

    def _polling_reader(self, shard_id: str, position: Position, stop: threading.Event) -> ShardReader:
        return PollingReader(self.client, self.settings.stream, shard_id, position, stop,
                             self.settings.poll_interval_seconds, self.settings.max_records,
                             on_throttle=metrics.THROTTLED.labels(self.settings.stream).inc)

    # -- shards -> leases ---------------------------------------------------------------------
    def sync_shards(self) -> None:
        """Create a lease for every shard that has none; delete finished leases of shards gone from the stream."""
        shards = list_all_shards(self.client, self.settings.stream)
        self.known_shards = {s["ShardId"] for s in shards}
        existing = {lease.key: lease for lease in self.store.list_leases()}
        for shard in sorted(shards, key=lambda s: s["ShardId"]):
            if shard["ShardId"] in existing:
                continue
            parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
            closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
            if any(p in self.known_shards or p in existing for p in parents):
                checkpoint = TRIM_HORIZON
            elif closed and self.settings.initial_position == LATEST:
                checkpoint = SHARD_END  # nothing at LATEST in a closed shard
            else:
                checkpoint = self.settings.initial_position
            hash_range = shard.get("HashKeyRange", {})
            self.store.create(Lease(shard["ShardId"], checkpoint=checkpoint, parents=parents,
                                    starting_hash_key=hash_range.get("StartingHashKey"), ending_hash_key=hash_range.get("EndingHashKey")))
        for key, lease in existing.items():
            if lease.finished and key not in self.known_shards:
                self.store.delete(key)

    def _create_children(self, shard_id: str, children: list[dict[str, Any]]) -> None:
        for child in children:
            hash_range = child.get("HashKeyRange", {})
            self.store.create(Lease(child["ShardId"], checkpoint=TRIM_HORIZON, parents=tuple(child.get("ParentShards", [shard_id])),
                                    starting_hash_key=hash_range.get("StartingHashKey"), ending_hash_key=hash_range.get("EndingHashKey")))
            self.known_shards.add(child["ShardId"])

    # -- leases -> consumers ------------------------------------------------------------------
    def _handle(self, events: list[LeaseEvent]) -> None:
        for event in events:
            running = self.consumers.get(event.key)
            if event.kind == "ready":
                self._ready[event.key] = event.lease
            else:
                self._ready.pop(event.key, None)
                if running is not None and running.is_alive():
                    running.request_stop(HANDOFF if event.kind == "handoff" else LOST)
                elif event.kind == "handoff":  # nothing started on it yet: hand it over at once
                    self.coordinator.let_go(event.key)
        for key in [k for k, c in self.consumers.items() if not c.is_alive()]:
            del self.consumers[key]
        for key, lease in list(self._ready.items()):
            if key in self.consumers:  # the previous consumer of this shard is still finishing: start after it
                continue
            del self._ready[key]
            if self.coordinator.state(key) != ACTIVE:
                continue  # lost or stolen meanwhile
            current = self.coordinator.lease(key) or lease
            consumer = ShardConsumer(current, self.settings.stream, self.processor_factory, self.coordinator,
                                     self._open_reader, self._create_children, self.settings.initial_timestamp)
            self.consumers[key] = consumer
            consumer.start()
        metrics.LEASES_HELD.labels(self.settings.stream).set(len(self.coordinator.held_keys()))

    def run(self) -> None:
        """Run until ``stop()``; then stop every consumer cleanly and release the leases."""
        self.store.ensure_table()
        log.info("worker %s consuming %s (failover %.1fs)", self.worker_id, self.settings.stream, self.settings.failover_seconds)
        next_renew = next_take = next_sync = time.monotonic()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                try:
                    if now >= next_renew:
                        next_renew = now + self.settings.renew_interval
                        self._handle(self.coordinator.renew_all())
                    if now >= next_sync:
                        next_sync = now + self.settings.shard_sync_seconds
                        self.sync_shards()
                    if now >= next_take:
                        next_take = now + self.settings.take_interval
                        self._handle(self.coordinator.take_leases(self.known_shards))
                    if self._ready:
                        self._handle([])
                except StreamError:
                    raise
                except (ConsumerError, ClientError, BotoCoreError) as exc:
                    log.warning("lease or shard bookkeeping failed (will retry): %s", exc)
                self.stop_event.wait(max(0.0, min(next_renew, next_take) - time.monotonic()))
        finally:
            self._shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def _shutdown(self) -> None:
        for consumer in self.consumers.values():
            consumer.request_stop(SHUTDOWN)
        deadline = time.monotonic() + self.settings.failover_seconds
        for consumer in self.consumers.values():
            consumer.join(max(0.0, deadline - time.monotonic()))
        for key in self.coordinator.held_keys():
            running = self.consumers.get(key)
            if running is not None and running.is_alive():  # stuck in the processor: its lease expires by itself
                log.warning("%s: processor did not stop within %.1fs; leaving the lease to expire", key, self.settings.failover_seconds)
                continue
            self.coordinator.let_go(key)  # e.g. taken, hand-off pending, consumer never started
        metrics.LEASES_HELD.labels(self.settings.stream).set(0)
        log.info("worker %s stopped", self.worker_id)
