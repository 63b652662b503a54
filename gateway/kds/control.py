"""Control-plane writes: streams, resharding, retention and tags (each one writer job).

Every function checks its preconditions against the in-memory model *inside* the writer
thread, so two concurrent reshards of one stream can never both see the same open shard.
Dicts the event loop iterates (streams, tags) are replaced, never mutated in place.
"""

from __future__ import annotations

import bisect
import sqlite3

from gateway.errors import in_use, invalid_argument, limit_exceeded, not_found
from gateway.kds import consumers, queues, replays, settings
from gateway.kds.shards import Router, Shard, split_points, uniform_boundaries, uniform_ranges
from gateway.kds.store import Store, Stream
from gateway.wire import DEFAULT_REGION

#: Open shards per account (DescribeLimits.ShardLimit).
SHARD_LIMIT = 500
ON_DEMAND_STREAM_LIMIT = 50
#: Shards an ON_DEMAND stream starts with (as AWS).
ON_DEMAND_SHARDS = 4
MIN_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 8760
MAX_TAGS = 50


def open_shard_count(store: Store) -> int:
    return sum(len(s.open_shards) for s in store.streams.values())


def _live(store: Store, stream: Stream) -> Stream:
    """``stream`` if it still exists (it may have been deleted while this job was queued)."""
    if store.streams.get(stream.name) is not stream:
        raise not_found(f"Stream {stream.name} under account {store.account_id} not found.")
    return stream


def _active(store: Store, stream: Stream) -> Stream:
    """``stream``, live and ACTIVE: resharding and retention changes wait out an UPDATING stream, as on AWS."""
    settings.require_active(store, _live(store, stream))
    return stream


def _check_shard_budget(store: Store, extra: int, region: str) -> None:
    if open_shard_count(store) + extra > SHARD_LIMIT:
        raise limit_exceeded(
            f"This request would exceed the shard limit for the account {store.account_id} in {region}. Current shard count for the account: {open_shard_count(store)}. "
            f"Limit: {SHARD_LIMIT}. Number of additional shards that would have resulted from this request: {extra}.")


async def create_stream(store: Store, name: str, shard_count: int, mode: str, tags: dict[str, str], region: str = DEFAULT_REGION) -> None:
    def job(conn: sqlite3.Connection) -> None:
        if name in store.streams:
            raise in_use(f"Stream {name} under account {store.account_id} already exists.")
        _check_shard_budget(store, shard_count, region)
        if mode == "ON_DEMAND" and sum(s.mode == "ON_DEMAND" for s in store.streams.values()) >= ON_DEMAND_STREAM_LIMIT:
            raise limit_exceeded(f"The account already has {ON_DEMAND_STREAM_LIMIT} on-demand streams.")
        now = store.now()
        stream = Stream(store.next_stream_key, name, mode, MIN_RETENTION_HOURS, now, 0)
        store.next_stream_key += 1
        conn.execute("INSERT INTO streams(key, name, mode, retention_hours, created, next_shard_index) VALUES (?,?,?,?,?,0)", (stream.key, name, mode, stream.retention_hours, now))
        for start, end in uniform_ranges(shard_count):
            store.open_shard(conn, stream, start, end, now)
        conn.executemany("INSERT INTO tags VALUES (?,?,?)", [(stream.key, k, v) for k, v in tags.items()])
        stream.tags = dict(tags)
        stream.router = Router.of(stream.shards)
        store.streams = {**store.streams, name: stream}  # copy-on-write: the event loop iterates these
        store.streams_by_key = {**store.streams_by_key, stream.key: stream}

    await store.run(job)


async def delete_stream(store: Store, stream: Stream, enforce_consumer_deletion: bool = False) -> None:
    def job(conn: sqlite3.Connection) -> None:
        live = _live(store, stream)
        if queues.count_on_stream(conn, live.key):
            raise in_use(f"Stream {live.name} under account {store.account_id} has queues: delete them first.")
        if consumers.registered_count(conn, live.key):
            if not enforce_consumer_deletion:
                raise in_use(f"Stream {live.name} under account {store.account_id} has registered consumers: deregister them or set EnforceConsumerDeletion.")
            consumers.forget_stream(conn, live.key)
        for shard in live.shards:
            conn.execute("DELETE FROM segments WHERE shard_key=?", (shard.key,))
            store.shards.pop(shard.key, None)
        for table in ("shards", "tags"):
            conn.execute(f"DELETE FROM {table} WHERE stream_key=?", (live.key,))
        replays.forget_stream(conn, live.key)
        settings.forget_stream(conn, live.key)
        conn.execute("DELETE FROM streams WHERE key=?", (live.key,))
        store.streams = {n: s for n, s in store.streams.items() if s is not live}
        store.streams_by_key = {k: s for k, s in store.streams_by_key.items() if s is not live}

    await store.run(job)


def _split(store: Store, conn: sqlite3.Connection, stream: Stream, shard: Shard, at: int, now: float) -> tuple[Shard, Shard]:
    store.close_shard(conn, shard, now)
    left = store.open_shard(conn, stream, shard.start_hash, at - 1, now, parent=shard.shard_id)
    right = store.open_shard(conn, stream, at, shard.end_hash, now, parent=shard.shard_id)
    return left, right


def _merge(store: Store, conn: sqlite3.Connection, stream: Stream, shard: Shard, adjacent: Shard, now: float) -> Shard:
    store.close_shard(conn, shard, now)
    store.close_shard(conn, adjacent, now)
    start = min(shard.start_hash, adjacent.start_hash)
    end = max(shard.end_hash, adjacent.end_hash)
    return store.open_shard(conn, stream, start, end, now, parent=shard.shard_id, adjacent=adjacent.shard_id)


def _open_or_fail(store: Store, stream: Stream, shard_id: str) -> Shard:
    shard = stream.shard(shard_id, store.account_id)
    if not shard.is_open:
        raise invalid_argument(f"Shard {shard.shard_id} in stream {stream.name} under account {store.account_id} has already been merged or split, and thus is not eligible for merging or splitting.")
    return shard


async def split_shard(store: Store, stream: Stream, shard_id: str, new_starting_hash_key: int, region: str = DEFAULT_REGION) -> None:
    def job(conn: sqlite3.Connection) -> None:
        live = _active(store, stream)
        shard = _open_or_fail(store, live, shard_id)
        if not shard.start_hash < new_starting_hash_key <= shard.end_hash:
            raise invalid_argument(f"NewStartingHashKey {new_starting_hash_key} used in SplitShard() on shard {shard.shard_id} in stream {live.name} under account {store.account_id} is not both greater than one plus the shard's StartingHashKey {shard.start_hash} and less than the shard's EndingHashKey {shard.end_hash}.")
        _check_shard_budget(store, 1, region)
        _split(store, conn, live, shard, new_starting_hash_key, store.now())
        live.router = Router.of(live.shards)

    await store.run(job)


async def merge_shards(store: Store, stream: Stream, shard_id: str, adjacent_id: str) -> None:
    def job(conn: sqlite3.Connection) -> None:
        live = _active(store, stream)
        shard = _open_or_fail(store, live, shard_id)
        adjacent = _open_or_fail(store, live, adjacent_id)
        if shard.end_hash + 1 != adjacent.start_hash and adjacent.end_hash + 1 != shard.start_hash:
            raise invalid_argument(f"Shards {shard.shard_id} and {adjacent.shard_id} in stream {live.name} under account {store.account_id} are not an adjacent pair of shards eligible for merging")
        _merge(store, conn, live, shard, adjacent, store.now())
        live.router = Router.of(live.shards)

    await store.run(job)


async def update_shard_count(store: Store, stream: Stream, target: int, region: str = DEFAULT_REGION) -> int:
    """UNIFORM_SCALING within AWS's bounds (half to double the open shards); returns the count before."""
    return await _scale(store, stream, target, region, bounded=True)


async def scale_to(store: Store, stream: Stream, target: int, region: str = DEFAULT_REGION) -> int:
    """Uniform scaling to ``target`` shards without the half/double bound (on-demand pre-scaling)."""
    return await _scale(store, stream, target, region, bounded=False)


async def _scale(store: Store, stream: Stream, target: int, region: str, bounded: bool) -> int:
    """Split at the target boundaries, then merge within each target range."""

    def job(conn: sqlite3.Connection) -> int:
        live = _active(store, stream)
        current = len(live.open_shards)
        if bounded and target > 2 * current:
            raise limit_exceeded(f"UpdateShardCount cannot scale up over double your current open shard count. Current open shard count: {current} Target shard count: {target}")
        if bounded and 2 * target < current:
            raise limit_exceeded(f"UpdateShardCount cannot scale down below half your current open shard count. Current open shard count: {current} Target shard count: {target}")
        if target == current and all((s.start_hash, s.end_hash) == r for s, r in zip(sorted(live.open_shards, key=lambda s: s.start_hash), uniform_ranges(target))):
            return current
        _check_shard_budget(store, max(0, target - current), region)
        now = store.now()
        boundaries = uniform_boundaries(target)
        for shard in sorted(live.open_shards, key=lambda s: s.start_hash):
            for at in split_points(shard.start_hash, shard.end_hash, boundaries):
                _, shard = _split(store, conn, live, shard, at, now)
        groups: dict[int, list[Shard]] = {}
        for shard in sorted(live.open_shards, key=lambda s: s.start_hash):
            groups.setdefault(bisect.bisect_right(boundaries, shard.start_hash), []).append(shard)
        for members in groups.values():
            merged = members[0]
            for nxt in members[1:]:
                merged = _merge(store, conn, live, merged, nxt, now)
        live.router = Router.of(live.shards)
        return current

    return await store.run(job)  # type: ignore[no-any-return]


async def set_retention(store: Store, stream: Stream, hours: int, increase: bool) -> None:
    def job(conn: sqlite3.Connection) -> None:
        live = _active(store, stream)
        if hours < MIN_RETENTION_HOURS:
            raise invalid_argument(f"Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too short.")
        if hours > MAX_RETENTION_HOURS:
            raise invalid_argument(f"Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too long.")
        if increase and hours < live.retention_hours:
            raise invalid_argument(f"Requested retention period ({hours} hours) for stream {live.name} can not be shorter than existing retention period ({live.retention_hours} hours). Use DecreaseRetentionPeriod API.")
        if not increase and hours > live.retention_hours:
            raise invalid_argument(f"Requested retention period ({hours} hours) for stream {live.name} can not be longer than existing retention period ({live.retention_hours} hours). Use IncreaseRetentionPeriod API.")
        conn.execute("UPDATE streams SET retention_hours=? WHERE key=?", (hours, live.key))
        live.retention_hours = hours

    await store.run(job)


async def add_tags(store: Store, stream: Stream, tags: dict[str, str]) -> None:
    def job(conn: sqlite3.Connection) -> None:
        live = _live(store, stream)
        if len(set(live.tags) | set(tags)) > MAX_TAGS:
            raise limit_exceeded(f"Failed to add tags to stream {live.name} under account {store.account_id} because a given stream cannot have more than {MAX_TAGS} tags associated with it.")
        conn.executemany("INSERT OR REPLACE INTO tags VALUES (?,?,?)", [(live.key, k, v) for k, v in tags.items()])
        live.tags = {**live.tags, **tags}

    await store.run(job)


async def remove_tags(store: Store, stream: Stream, keys: list[str]) -> None:
    def job(conn: sqlite3.Connection) -> None:
        live = _live(store, stream)
        conn.executemany("DELETE FROM tags WHERE stream_key=? AND key=?", [(live.key, k) for k in keys])
        live.tags = {k: v for k, v in live.tags.items() if k not in keys}

    await store.run(job)
