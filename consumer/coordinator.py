"""Lease bookkeeping for one worker: renew what it holds, take expired leases, steal to balance.

How "exactly one worker processes a shard at a time" holds, given a failover time F:

- A worker renews its leases every F/3 and may process a shard only while its last successful
  renew was *sent* less than F ago (``may_process``; shard consumers ask before every batch).
- Another worker takes a lease only after seeing its ``counter`` unchanged for F, measured from
  when it first read that value; the owner's last renew was sent before that write, so its right
  to process ended before the take. (No clocks are compared between hosts, as in the KCL.)
- Balancing steals one live lease at a time as a graceful hand-off: the thief becomes ``owner``
  and the victim is written as ``checkpoint_owner``. The victim sees it at its next renew, finishes
  its batch, may checkpoint, and clears ``checkpoint_owner``; only then does the thief start. If
  the victim dies meanwhile, the thief clears it itself 2F after the steal (the victim's right to
  process ended F after its last renew; the second F is slack for a slow last batch).
- A lease is eligible only when each parent shard is finished (checkpoint SHARD_END) or gone
  from both the stream and the table, so children start after their parents.

The assumption, as in the KCL: one batch of the record processor takes less than F.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consumer.errors import LeaseLost, LeaseStoreError
from consumer.leases import Lease, LeaseStore

log = logging.getLogger("consumer.coordinator")

#: Held lease states.
WAITING = "waiting"       # stolen; the previous owner is finishing its batch
ACTIVE = "active"         # ours to process
HANDING_OFF = "handing-off"  # stolen from us; finish the batch, checkpoint, then let go
#: A thief waits this many failover times for the previous owner to finish its hand-off.
HANDOFF_TIMEOUT_FAILOVERS = 2


@dataclass
class Held:
    lease: Lease
    renewed_at: float
    taken_at: float
    state: str


@dataclass(frozen=True)
class LeaseEvent:
    """What changed for a held lease: ``ready`` (start processing), ``handoff`` (stop gracefully,
    may checkpoint), ``lost`` (stop now, may not checkpoint)."""

    key: str
    kind: str
    lease: Lease


class LeaseCoordinator:
    def __init__(self, store: LeaseStore, worker_id: str, failover_seconds: float, max_leases: int = 0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 on_take: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.worker_id = worker_id
        self.failover = failover_seconds
        self.max_leases = max_leases
        self._clock = clock
        self._rng = rng or random.Random()
        self._held: dict[str, Held] = {}
        self._seen: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        #: Called with "expired" or "stolen" after each successful take (metrics).
        self._on_take = on_take

    # -- what shard consumers ask -------------------------------------------------------------
    def may_process(self, key: str) -> bool:
        with self._lock:
            held = self._held.get(key)
            return held is not None and held.state == ACTIVE and self._clock() < held.renewed_at + self.failover

    def state(self, key: str) -> str | None:
        with self._lock:
            held = self._held.get(key)
            return held.state if held else None

    def held_keys(self) -> list[str]:
        with self._lock:
            return sorted(k for k, h in self._held.items() if h.state != HANDING_OFF)

    def lease(self, key: str) -> Lease | None:
        with self._lock:
            held = self._held.get(key)
            return held.lease if held else None

    def checkpoint(self, key: str, checkpoint: str, sub: int = 0, children: tuple[str, ...] | None = None) -> None:
        """Write a checkpoint; LeaseLost if this worker may no longer checkpoint the shard."""
        if not self.store.checkpoint(key, self.worker_id, checkpoint, sub, children):
            raise LeaseLost(f"{key}: lease no longer held by {self.worker_id}")
        with self._lock:
            held = self._held.get(key)
            if held:
                held.lease = held.lease.with_(checkpoint=checkpoint, checkpoint_sub=sub)

    def let_go(self, key: str) -> None:
        """The shard consumer is done (hand-off finished, shard ended, shutdown): give the lease up."""
        with self._lock:
            held = self._held.pop(key, None)
        if held is None:
            return
        try:
            if held.state == HANDING_OFF:
                self.store.finish_handoff(key, self.worker_id)
            else:
                self.store.release(held.lease)
        except LeaseStoreError as exc:  # it expires by itself after the failover time
            log.warning("%s: could not give up the lease: %s", key, exc)

    def drop(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    # -- the coordinator loop's steps ---------------------------------------------------------
    def renew_all(self) -> list[LeaseEvent]:
        events: list[LeaseEvent] = []
        with self._lock:
            held = [(k, h) for k, h in self._held.items() if h.state != HANDING_OFF]
        for key, h in held:
            sent = self._clock()
            try:
                renewed = self.store.renew(h.lease)
                current = None if renewed else self.store.get(key)
            except LeaseStoreError as exc:
                log.warning("%s: renew failed: %s", key, exc)
                if self._clock() >= h.renewed_at + self.failover:
                    self.drop(key)
                    events.append(LeaseEvent(key, "lost", h.lease))
                continue
            if renewed is not None:
                events += self._renewed(key, h, renewed, sent)
            elif current is not None and current.checkpoint_owner == self.worker_id and h.state == ACTIVE:
                log.info("%s: stolen by %s for balance, handing off", key, current.owner)
                with self._lock:
                    h.state, h.lease = HANDING_OFF, current
                events.append(LeaseEvent(key, "handoff", current))
            else:
                log.info("%s: lease lost (now %s)", key, current.owner if current else "deleted")
                self.drop(key)
                events.append(LeaseEvent(key, "lost", current or h.lease))
        return events

    def _renewed(self, key: str, h: Held, renewed: Lease, sent: float) -> list[LeaseEvent]:
        with self._lock:
            h.lease, h.renewed_at = renewed, sent
        if h.state != WAITING:
            return []
        previous = renewed.checkpoint_owner
        if previous is not None:
            if self._clock() < h.taken_at + HANDOFF_TIMEOUT_FAILOVERS * self.failover:
                return []
            log.info("%s: %s did not finish its hand-off in time; taking over", key, previous)
            self.store.finish_handoff(key, previous)
        current = self.store.get(key)
        if current is None or current.owner != self.worker_id:
            self.drop(key)
            return [LeaseEvent(key, "lost", current or renewed)]
        with self._lock:
            h.state, h.lease = ACTIVE, current
        return [LeaseEvent(key, "ready", current)]

    def take_leases(self, known_shards: Iterable[str] = ()) -> list[LeaseEvent]:
        """One round of the KCL's lease taker: expired leases first, else steal one from the busiest."""
        leases = self.store.list_leases()
        now = self._clock()
        by_key = {lease.key: lease for lease in leases}
        for lease in leases:
            seen = self._seen.get(lease.key)
            if seen is None or seen[0] != lease.counter:
                self._seen[lease.key] = (lease.counter, now)
        for key in set(self._seen) - set(by_key):
            del self._seen[key]
        known = set(known_shards)

        def parent_done(parent: str) -> bool:
            p = by_key.get(parent)
            return p.finished if p is not None else parent not in known

        with self._lock:
            mine = set(self._held)
        active = [lease for lease in leases if not lease.finished and all(parent_done(p) for p in lease.parents)]
        expired = [lease for lease in active if lease.key not in mine and
                   (lease.owner is None or now - self._seen[lease.key][1] >= self.failover)]
        expired_keys = {lease.key for lease in expired}
        counts: Counter[str] = Counter(lease.owner for lease in active
                                       if lease.owner and lease.key not in expired_keys and lease.key not in mine)
        counts[self.worker_id] = len(mine)
        target = math.ceil(len(active) / len(counts)) if active else 0
        if self.max_leases:
            target = min(target, self.max_leases)
        need = target - len(mine)
        if need <= 0:
            return []
        if expired:
            self._rng.shuffle(expired)
            return [e for lease in expired[:need] if (e := self._take(lease, None)) is not None]
        others = [(n, w) for w, n in counts.items() if w != self.worker_id]
        if not others:
            return []
        busiest_count, busiest = max(others)
        if busiest_count > target or (need > 1 and busiest_count == target):
            theirs = [lease for lease in active if lease.owner == busiest and lease.checkpoint_owner is None]
            if theirs:
                return [e for e in [self._take(self._rng.choice(theirs), busiest)] if e is not None]
        return []

    def _take(self, lease: Lease, handoff_from: str | None) -> LeaseEvent | None:
        sent = self._clock()
        try:
            taken = self.store.take(lease, self.worker_id, handoff_from)
        except LeaseStoreError as exc:
            log.warning("%s: take failed: %s", lease.key, exc)
            return None
        if taken is None:
            return None
        now = self._clock()
        state = WAITING if handoff_from else ACTIVE
        with self._lock:
            self._held[lease.key] = Held(taken, sent, now, state)
        log.info("%s: %s lease (previous owner %s)", lease.key, "stole" if handoff_from else "took", lease.owner)
        if self._on_take:
            self._on_take("stolen" if handoff_from else "expired")
        return LeaseEvent(lease.key, "ready", taken) if state == ACTIVE else None
