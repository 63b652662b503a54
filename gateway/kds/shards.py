"""Shards and hash-key ranges: MD5 routing and the split / merge / uniform-scaling math.

A stream's open shards partition the 128-bit hash-key space ``[0, 2**128 - 1]`` into
contiguous ranges. A record's hash key is the MD5 of its partition key read as a big-endian
integer (or its ExplicitHashKey); the open shard whose range holds it takes the record.
Resharding never edits a shard: it closes parents and opens children, so the lineage
(ParentShardId / AdjacentParentShardId) tells readers what to finish first.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

MAX_HASH_KEY = 2**128 - 1
#: Partition keys whose shard a Router remembers (the cache is simply dropped when full).
CACHED_PARTITION_KEYS = 65536


@dataclass
class Shard:
    """One shard. ``key`` is the store's global id; ``shard_id`` is the AWS-visible name."""

    key: int
    shard_id: str
    start_hash: int
    end_hash: int
    #: Internal sequence counters (see ``gateway.kds.sequence``): first and last possible.
    start_seq: int
    end_seq: int | None = None
    parent: str | None = None
    adjacent_parent: str | None = None
    created: float = 0.0
    closed: float | None = None

    @property
    def is_open(self) -> bool:
        return self.end_seq is None


def shard_name(index: int) -> str:
    return f"shardId-{index:012d}"


def canonical_shard_id(shard_id: str) -> str:
    """``shardId-000000000003`` for ``shardId-3``, ``anything-3`` or itself (AWS reads only the
    number after the last dash); a name without such a number is returned unchanged."""
    _, dash, number = shard_id.rpartition("-")
    if dash and number.isdigit() and number.isascii() and len(number) <= 20:
        return shard_name(int(number))
    return shard_id


def hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def uniform_ranges(count: int) -> list[tuple[int, int]]:
    """``count`` contiguous ranges covering the whole hash-key space, as AWS creates them."""
    size = (MAX_HASH_KEY + 1) // count
    ranges = []
    for i in range(count):
        start = i * size
        end = MAX_HASH_KEY if i == count - 1 else (i + 1) * size - 1
        ranges.append((start, end))
    return ranges


@dataclass
class Router:
    """Finds the open shard holding a hash key (bisect over the sorted range starts)."""

    shards: list[Shard] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    #: partition key -> shard. Devices reuse their keys and MD5 is the costly part of routing;
    #: a reshard builds a new Router, so the cache can never point at a closed shard.
    by_partition_key: dict[str, Shard] = field(default_factory=dict)

    @classmethod
    def of(cls, shards: list[Shard]) -> "Router":
        open_shards = sorted((s for s in shards if s.is_open), key=lambda s: s.start_hash)
        return cls(open_shards, [s.start_hash for s in open_shards])

    def route(self, key: int) -> Shard:
        return self.shards[bisect.bisect_right(self.starts, key) - 1]

    def route_partition_key(self, partition_key: str) -> Shard:
        shard = self.by_partition_key.get(partition_key)
        if shard is None:
            if len(self.by_partition_key) >= CACHED_PARTITION_KEYS:
                self.by_partition_key.clear()
            shard = self.by_partition_key[partition_key] = self.route(hash_key(partition_key))
        return shard


def split_points(start: int, end: int, boundaries: list[int]) -> list[int]:
    """Target boundaries strictly inside ``(start, end]`` where a shard must be split."""
    return [b for b in boundaries if start < b <= end]


def uniform_boundaries(count: int) -> list[int]:
    """Starting hash keys of the 2nd..nth shard of a uniform layout."""
    return [start for start, _ in uniform_ranges(count)[1:]]
