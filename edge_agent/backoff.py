"""Retry delays (forwarders and sources) and send-rate control (the records forwarder).

``Backoff`` is exponential backoff with full jitter (a random delay in [0, min(cap, base·2^n)]):
many agents coming back after an outage do not retry in lockstep. ``RateController`` paces
PutRecords by the gateway's push-back: on a throttle the rate drops to what the gateway accepted
over the last second (at most 0.7 of the current rate); while sends go through it grows by 15 %
of itself per second, and doubles every second after 5 s without push-back, so the agent settles
just under what the gateway accepts and recovers fast from a transient throttle.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable

DEFAULT_BASE_SECONDS = 0.1
DEFAULT_CAP_SECONDS = 20.0
#: Lowest rate the controller backs off to, records/s: progress never stops entirely.
MIN_RATE = 5.0
#: Rate the controller starts from after the first push-back when no ceiling is configured.
UNCAPPED_START_RATE = 10_000.0


class Backoff:
    """Full-jitter exponential backoff; ``next()`` grows the delay, ``reset()`` after a success."""

    def __init__(self, base: float = DEFAULT_BASE_SECONDS, cap: float = DEFAULT_CAP_SECONDS, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int | None = None) -> float:
        n = self.attempt if attempt is None else attempt
        return min(self.cap, self.base * (2 ** min(n, 32)))

    def delay(self, attempt: int) -> float:
        """A jittered delay for the given attempt number (0 = first retry)."""
        return self._rng.uniform(0.0, self.ceiling(attempt))

    def next(self) -> float:
        d = self.delay(self.attempt)
        self.attempt += 1
        return d

    def reset(self) -> None:
        self.attempt = 0

    def wait(self, stop: threading.Event) -> bool:
        """Wait the next delay (a source reconnecting); True if ``stop`` was set meanwhile."""
        return stop.wait(self.next())


class RateController:
    """Send-rate limiter: a token bucket whose rate follows the gateway's push-back.

    ``ceiling`` 0 means no limit until the first push-back. On a throttle the rate drops to
    what the gateway actually accepted over the last second (or ``decrease_factor`` of the
    current rate, whichever is lower), at most once per second since shard limits are
    per-second buckets. While sends go through it grows back by ``growth`` of itself per second
    (gentle probing near the limit); after ``calm_seconds`` without push-back it doubles every
    second, so a transient throttle (a burst after an outage) does not slow the agent for long.
    ``wait_time(n)`` says how long to wait before sending ``n`` records.
    """

    def __init__(self, ceiling: float = 0.0, growth: float = 0.15, decrease_factor: float = 0.7, calm_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = ceiling
        self.calm_seconds = calm_seconds
        self._clock = clock
        self.rate: float | None = ceiling or None  # None: unlimited
        self.growth = growth
        self.decrease_factor = decrease_factor
        self._tokens = 0.0
        self._last = self._clock()
        self._last_decrease = -1e9
        self._last_growth = self._clock()
        self._accepted: deque[tuple[float, int]] = deque()
        self.throttled_events = 0

    def _refill(self, now: float) -> None:
        if self.rate is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def wait_time(self, n: int) -> float:
        """Seconds to wait until ``n`` records may go (0 when they may go now)."""
        now = self._clock()
        self._refill(now)
        if self.rate is None or self._tokens >= n:
            return 0.0
        # A batch larger than one second's worth may go once the bucket is full.
        need = min(float(n), self.rate) - self._tokens
        return max(0.0, need / self.rate)

    def spend(self, n: int) -> None:
        if self.rate is not None:
            self._tokens -= n

    def accepted(self, n: int) -> None:
        """``n`` records went through just now (the gateway's observed capacity)."""
        now = self._clock()
        self._accepted.append((now, n))
        while self._accepted and self._accepted[0][0] < now - 1.0:
            self._accepted.popleft()

    def accepted_last_second(self) -> int:
        now = self._clock()
        return sum(n for t, n in self._accepted if t >= now - 1.0)

    def on_throttle(self) -> None:
        """The gateway pushed back: cut the rate (once per second: one burst is one event)."""
        now = self._clock()
        if now - self._last_decrease < 1.0:
            return
        self._last_decrease = now
        self.throttled_events += 1
        accepted = float(self.accepted_last_second())
        current = self.rate if self.rate is not None else max(accepted, UNCAPPED_START_RATE)
        target = current * self.decrease_factor
        if accepted > 0:
            target = min(target, accepted)
        self.rate = max(MIN_RATE, target)
        self._tokens = min(self._tokens, 0.0)
        self._last = now
        self._last_growth = now

    def on_success(self) -> None:
        """Sends went through: grow the rate back (unlimited again past the ceiling)."""
        now = self._clock()
        elapsed = min(now - self._last_growth, 1.0)
        self._last_growth = now
        if self.rate is None:
            return
        growth = 1.0 if now - self._last_decrease >= self.calm_seconds else self.growth
        self.rate += max(1.0, growth * self.rate) * elapsed
        limit = self.ceiling or UNCAPPED_START_RATE * 10
        if self.rate >= limit:
            self.rate = self.ceiling or None
