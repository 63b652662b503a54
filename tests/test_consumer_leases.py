"""Lease stores and the lease coordinator: conditional writes decide every race, expired leases
are taken after the failover time, balance is restored by graceful hand-offs.

The store contract runs against each store (SQLite files here, DynamoDB via dynalite where
available); each store instance is its own connection, as separate workers would have."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from consumer_support import DynaliteProcess
from helpers import aws_client

from consumer import Lease, LeaseStore, SqliteLeaseStore
from consumer.cli import main
from consumer.config import load_config
from consumer.service import lease_store
from consumer.store_dynamodb import DynamoDBLeaseStore
from consumer.coordinator import LeaseCoordinator

StoreFactory = Callable[[], LeaseStore]


@pytest.fixture(scope="module")
def dynalite() -> Iterator[DynaliteProcess]:
    server = DynaliteProcess().start()
    yield server
    server.stop()


_tables = itertools.count()


@pytest.fixture(params=["sqlite", "dynamodb"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens connections to one fresh lease table; each call is another worker's connection."""
    opened: list[LeaseStore] = []
    table = f"app-{next(_tables)}"

    def open_store() -> LeaseStore:
        store: LeaseStore
        if request.param == "sqlite":
            store = SqliteLeaseStore(tmp_path / "leases.db", table)
        else:
            client = aws_client("dynamodb", request.getfixturevalue("dynalite").url)
            store = DynamoDBLeaseStore(client, table)
        store.ensure_table()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def test_conditional_writes(stores: StoreFactory) -> None:
    a, b = stores(), stores()
    assert a.create(Lease("shardId-000000000000", parents=("p1", "p2")))
    assert not b.create(Lease("shardId-000000000000"))
    seen = b.get("shardId-000000000000")
    assert seen is not None and seen.parents == ("p1", "p2") and seen.owner is None
    # Two workers take the lease they both read: exactly one wins.
    won_a = a.take(seen, "A")
    won_b = b.take(seen, "B")
    assert (won_a is None) != (won_b is None)
    winner, loser = ("A", b) if won_a else ("B", a)
    held = won_a or won_b
    assert held is not None and held.owner == winner and held.counter == seen.counter + 1 and held.owner_switches == 1
    # Renew only with the current counter and owner.
    renewed = a.renew(held)
    assert renewed is not None and renewed.counter == held.counter + 1
    assert a.renew(held) is None
    # Only the owner checkpoints; a checkpoint resets owner_switches.
    other = "B" if winner == "A" else "A"
    assert not loser.checkpoint(held.key, other, "100")
    assert a.checkpoint(held.key, winner, "100", 3)
    after = a.get(held.key)
    assert after is not None and (after.checkpoint, after.checkpoint_sub, after.owner_switches) == ("100", 3, 0)


def test_graceful_handoff(stores: StoreFactory) -> None:
    a, b = stores(), stores()
    a.create(Lease("s"))
    lease = a.take(a.get("s"), "A")  # type: ignore[arg-type]
    assert lease is not None
    stolen = b.take(lease, "B", handoff_from="A")
    assert stolen is not None and stolen.owner == "B" and stolen.checkpoint_owner == "A"
    assert a.renew(lease) is None                      # A sees the steal at its next renew
    assert not b.checkpoint("s", "B", "5")             # B may not checkpoint before A is done
    assert a.checkpoint("s", "A", "7")                 # A checkpoints its last batch
    assert not b.finish_handoff("s", "B")
    assert a.finish_handoff("s", "A")
    assert not a.checkpoint("s", "A", "8")
    assert b.checkpoint("s", "B", "9")
    final = b.get("s")
    assert final is not None and final.checkpoint == "9" and final.checkpoint_owner is None
    assert b.release(final) and not b.release(final.with_(owner="A"))
    released = b.get("s")
    assert released is not None and released.owner is None and not b.checkpoint("s", "B", "10")


def rounds(coordinators: list[LeaseCoordinator], until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Run renew and take rounds on every coordinator (finishing hand-offs at once) until ``until()``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "coordinators did not settle"
        for c in coordinators:
            for event in c.renew_all():
                if event.kind == "handoff":
                    c.let_go(event.key)
            c.take_leases()
        time.sleep(0.02)


def owners(store: LeaseStore) -> Counter[str | None]:
    return Counter(lease.owner for lease in store.list_leases())


def test_balance_failover_and_steal(stores: StoreFactory) -> None:
    admin = stores()
    for i in range(6):
        admin.create(Lease(f"shardId-{i:012d}"))
    failover = 0.6
    workers = [LeaseCoordinator(stores(), f"w{i}", failover) for i in range(3)]
    rounds(workers, lambda: owners(admin) == Counter({"w0": 2, "w1": 2, "w2": 2}))
    # w0 dies (stops renewing): the others take its leases and start on them, never while w0 would still process them.
    dead = workers.pop(0)
    violations: list[str] = []

    def taken_safely() -> bool:
        current = {lease.key: lease.owner for lease in admin.list_leases()}
        violations.extend(k for k in dead.held_keys() if dead.may_process(k) and any(w.may_process(k) for w in workers))
        return "w0" not in current.values()

    rounds(workers, lambda: taken_safely() and sorted(owners(admin).values()) == [3, 3]
           and all(w.may_process(k) for w in workers for k in w.held_keys()))
    assert not violations and dead.held_keys()
    # A new worker steals one lease at a time from the busiest, by hand-off, until 2/2/2.
    workers.append(LeaseCoordinator(stores(), "w3", failover))
    rounds(workers, lambda: owners(admin) == Counter({"w1": 2, "w2": 2, "w3": 2})
           and all(lease.checkpoint_owner is None for lease in admin.list_leases()))
    assert sorted(workers[2].held_keys()) == sorted(lease.key for lease in admin.list_leases() if lease.owner == "w3")


def test_children_wait_for_parents(stores: StoreFactory) -> None:
    admin = stores()
    admin.create(Lease("parent"))
    admin.create(Lease("child", parents=("parent", "gone")))
    worker = LeaseCoordinator(stores(), "w", 0.3)
    worker.take_leases(known_shards={"parent", "child"})
    assert worker.held_keys() == ["parent"]
    worker.checkpoint("parent", "SHARD_END")
    worker.let_go("parent")
    # "gone" is neither a lease nor a shard any more (trimmed): it does not block the child.
    worker.take_leases(known_shards={"parent", "child"})
    assert worker.held_keys() == ["child"]


def test_dynamodb_table_has_the_kcl_layout(dynalite: DynaliteProcess) -> None:
    client = aws_client("dynamodb", dynalite.url)
    store = DynamoDBLeaseStore(client, "kcl-layout")
    store.ensure_table()
    store.ensure_table()  # idempotent
    table = client.describe_table(TableName="kcl-layout")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    store.create(Lease("shardId-000000000002", parents=("shardId-000000000000",)))
    held = store.take(store.get("shardId-000000000002"), "worker-a")  # type: ignore[arg-type]
    assert held is not None and store.checkpoint(held.key, "worker-a", "49590338271490256608559692538361571095921575989136588898", 4)
    item = client.get_item(TableName="kcl-layout", Key={"leaseKey": {"S": "shardId-000000000002"}})["Item"]
    assert item["leaseOwner"] == {"S": "worker-a"} and item["leaseCounter"] == {"N": "1"}
    assert item["checkpoint"] == {"S": "49590338271490256608559692538361571095921575989136588898"}
    assert item["checkpointSubSequenceNumber"] == {"N": "4"} and item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
    assert item["parentShardId"] == {"SS": ["shardId-000000000000"]} and "checkpointOwner" not in item
    assert store.release(store.get("shardId-000000000002"))  # type: ignore[arg-type]
    assert "leaseOwner" not in client.get_item(TableName="kcl-layout", Key={"leaseKey": {"S": "shardId-000000000002"}})["Item"]


def test_leases_command_reads_a_dynamodb_table(dynalite: DynaliteProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "consumer.toml"
    cfg.write_text(f'[consumer]\nstream = "s"\nhandler = "m:f"\napplication = "cli-app"\n'
                   f'[leases]\nstore = "dynamodb"\ndynamodb_endpoint_url = "{dynalite.url}"\n'
                   '[gateway]\naccess_key_id = "AKIDEXAMPLE"\nsecret_access_key = "secret"\n')
    store = lease_store(load_config(cfg))
    store.ensure_table()
    store.create(Lease("shardId-000000000001", owner="w1", checkpoint="123", checkpoint_sub=2))
    assert main(["leases", "--config", str(cfg), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"shard": "shardId-000000000001", "owner": "w1", "counter": 0, "checkpoint": "123", "checkpoint_sub": 2,
                     "parents": [], "checkpoint_owner": None}]
