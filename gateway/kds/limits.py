"""Per-shard throughput limits as token buckets with a one-second window.

Writes (records and bytes per second) are charged in the store's writer thread, reads (calls
and bytes per second) on the event loop; each bucket is only touched from one thread. A read
may overdraw its byte bucket (a GetRecords call can return more than a second's worth, as on
AWS); the shard then stays throttled until the debt is repaid.
"""

from __future__ import annotations

import time

from gateway.config import LimitsConfig


class TokenBucket:
    __slots__ = ("rate", "tokens", "stamp")

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.tokens = float(rate)
        self.stamp = time.monotonic()

    def refill(self, now: float) -> float:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.rate, self.tokens + elapsed * self.rate)
            self.stamp = now
        return self.tokens

    def take(self, amount: float, now: float) -> bool:
        if self.refill(now) >= amount:
            self.tokens -= amount
            return True
        return False


class ShardWriteLimit:
    __slots__ = ("records", "bytes")

    def __init__(self, config: LimitsConfig) -> None:
        self.records = TokenBucket(config.shard_write_records_per_sec)
        self.bytes = TokenBucket(config.shard_write_bytes_per_sec)

    def admit(self, size: int, now: float) -> bool:
        """Charge one record of ``size`` bytes, or refuse it without charging anything."""
        return bool(self.admit_many([size], now)[0])

    def admit_all(self, count: int, nbytes: int, now: float) -> bool:
        """Charge ``count`` records of ``nbytes`` in total if they all fit (the common case)."""
        if self.records.refill(now) >= count and self.bytes.refill(now) >= nbytes:
            self.records.tokens -= count
            self.bytes.tokens -= nbytes
            return True
        return False

    def admit_many(self, sizes: list[int], now: float) -> list[bool]:
        """Charge records in order; each one that does not fit is refused (and not charged)."""
        records = self.records.refill(now)
        nbytes = self.bytes.refill(now)
        verdicts = []
        full = self.bytes.rate
        for size in sizes:
            # a record larger than a second's worth (UpdateMaxRecordSize) goes through on a full
            # bucket and leaves it in debt, so the shard still averages its rate
            if records >= 1 and (nbytes >= size or nbytes >= full):
                records -= 1
                nbytes -= size
                verdicts.append(True)
            else:
                verdicts.append(False)
        self.records.tokens = records
        self.bytes.tokens = nbytes
        return verdicts


class ShardReadLimit:
    __slots__ = ("calls", "bytes")

    def __init__(self, config: LimitsConfig) -> None:
        self.calls = TokenBucket(config.shard_read_calls_per_sec)
        self.bytes = TokenBucket(config.shard_read_bytes_per_sec)

    def admit_call(self, now: float) -> bool:
        return self.bytes.refill(now) > 0 and self.calls.take(1, now)

    def charge_bytes(self, size: int) -> None:
        self.bytes.tokens -= size


class Limits:
    """The buckets of every shard, created on first use; a no-op when limits are off."""

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        self._write: dict[int, ShardWriteLimit] = {}
        self._read: dict[int, ShardReadLimit] = {}

    def write(self, shard_key: int) -> ShardWriteLimit:
        bucket = self._write.get(shard_key)
        if bucket is None:
            bucket = self._write[shard_key] = ShardWriteLimit(self.config)
        return bucket

    def read(self, shard_key: int) -> ShardReadLimit:
        bucket = self._read.get(shard_key)
        if bucket is None:
            bucket = self._read[shard_key] = ShardReadLimit(self.config)
        return bucket
