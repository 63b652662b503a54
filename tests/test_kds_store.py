"""The store below the API, on real SQLite files: retention, counter persistence, segments, iterators."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import GatewayConfig, LimitsConfig
from gateway.errors import AwsError
from gateway.kds import control, retention, segments
from gateway.kds.iterators import IteratorSigner
from gateway.kds.store import Store, put_entry
from gateway.sqlite import StoreInUseError


def all_records(store: Store, stream: str) -> list[tuple[int, str, bytes]]:
    out = []
    for shard in store.stream(stream).shards:
        out += [(seq, key, data) for seq, _, key, data in store.read(shard.key, 0, 10_000).rows]
    return sorted(out)


def test_retention_keeps_fresh_records_and_the_counter(tmp_path: Path) -> None:
    config = GatewayConfig(data_dir=str(tmp_path), limits=LimitsConfig(enabled=False))

    async def scenario() -> None:
        store = Store(config)
        await control.create_stream(store, "r", 2, "PROVISIONED", {})
        await store.put("r", [put_entry(f"k{i}", b"old", producer_seq=i) for i in range(40)], producer="agent")
        await control.split_shard(store, store.stream("r"), "shardId-000000000000", 2**126)
        time.sleep(0.05)
        between = time.time()
        time.sleep(0.05)
        new = await store.put("r", [put_entry(f"k{i}", b"new") for i in range(40)])
        assert (await retention.sweep(store, between + 1))[0] == 0  # nothing is a day old yet
        deleted, backlog = await retention.sweep(store, between + 24 * 3600)
        assert deleted > 0 and not backlog
        assert {data for _, _, data in all_records(store, "r")} == {b"new"}
        assert len(all_records(store, "r")) == 40
        assert "shardId-000000000000" not in [s.shard_id for s in store.stream("r").shards]  # closed, whole life expired
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT count(*) FROM producer_batches").fetchone()[0] == 0
        await retention.sweep(store, time.time() + 48 * 3600)
        assert all_records(store, "r") == []
        store.close()
        reopened = Store(config)  # the counter survives even when no record does
        [(_, seq)] = await reopened.put("r", [put_entry("k1", b"later")])
        assert seq > max(s for _, s in new)
        reopened.close()

    asyncio.run(scenario())


def test_iterators_expire_and_resist_tampering(tmp_path: Path) -> None:
    signer = IteratorSigner(tmp_path)
    now = time.time()
    token = signer.issue(7, 42, now=now)
    position = signer.parse(token, now=now + 10)
    assert (position.shard_key, position.seq) == (7, 42)
    assert IteratorSigner(tmp_path).parse(token, now=now + 10) == position  # same key after a restart
    with pytest.raises(AwsError) as exc:
        signer.parse(token, now=now + 301)
    assert exc.value.code == "ExpiredIteratorException"
    encoded, mac = token.split(".")
    (tmp_path / "other").mkdir()
    forged = IteratorSigner(tmp_path / "other").issue(7, 0, now=now)  # signed with another key
    with pytest.raises(AwsError) as exc:
        signer.parse(forged, now=now)
    assert exc.value.code == "InvalidArgumentException"
    with pytest.raises(AwsError):
        signer.parse(encoded + "." + mac[::-1], now=now)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=64)), min_size=1, max_size=30), st.integers(0, 40))
def test_segment_round_trip(records: list[tuple[str, bytes]], skip: int) -> None:
    payload = segments.pack([k for k, _ in records], [d for _, d in records])
    assert segments.unpack(payload) == records
    assert segments.unpack(payload, skip) == records[skip:]


def test_keys_are_never_reused_after_delete_and_restart(tmp_path: Path) -> None:
    config = GatewayConfig(data_dir=str(tmp_path), limits=LimitsConfig(enabled=False))

    async def scenario() -> None:
        store = Store(config)
        await control.create_stream(store, "a", 2, "PROVISIONED", {})
        old_keys = {s.key for s in store.stream("a").shards}
        await control.delete_stream(store, store.stream("a"))
        store.close()
        store = Store(config)
        await control.create_stream(store, "b", 2, "PROVISIONED", {})
        assert not old_keys & {s.key for s in store.stream("b").shards}
        store.close()

    asyncio.run(scenario())


def test_durability_setting_reaches_sqlite(tmp_path: Path) -> None:
    for durability, expected in (("normal", 1), ("full", 2)):
        store = Store(GatewayConfig(data_dir=str(tmp_path / durability), durability=durability))
        try:
            assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == expected
            assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            store.close()


def test_token_buckets() -> None:
    from gateway.kds.limits import ShardReadLimit, ShardWriteLimit

    config = LimitsConfig(shard_write_records_per_sec=10, shard_write_bytes_per_sec=1000, shard_read_calls_per_sec=100, shard_read_bytes_per_sec=2000)
    write = ShardWriteLimit(config)
    read = ShardReadLimit(config)
    now = time.monotonic()  # after the buckets were made (they start full, stamped at creation)
    assert write.admit_many([400, 400, 400, 100], now) == [True, True, False, True]  # a refused record costs nothing
    assert not write.admit_all(1, 200, now) and write.admit(100, now)
    assert write.admit(500, now + 0.5)  # half a second refills half the bytes
    assert read.admit_call(now)
    read.charge_bytes(5000)  # one big read may overdraw (as on AWS) ...
    assert not read.admit_call(now + 1)  # ... and the shard stays throttled until the debt is repaid
    assert read.admit_call(now + 2.6)


def test_a_second_store_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    config = GatewayConfig(data_dir=str(tmp_path))
    store = Store(config)
    try:
        with pytest.raises(StoreInUseError):
            Store(config)
    finally:
        store.close()
    Store(config).close()  # free again once closed
