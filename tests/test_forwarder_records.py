"""The records forwarder against a real gateway process: complete, ordered per key, exactly once."""

from __future__ import annotations

import base64
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import all_data, metric, read_stream, running_forwarder, wait_until  # noqa: E402
from helpers import GatewayProcess, module_gateway  # noqa: E402

from edge_agent.spool import NewRecord, Spool  # noqa: E402

#: One gateway for the tests that never stop it (each uses its own stream).
shared_gateway = module_gateway("shared_gateway")


KEYS = ["plant/a/temp", "plant/b/temp", "serial-1", "/var/log/app.log"]


def make_records(stream: str, n: int, keys: list[str] = KEYS, source: str = "test-src") -> list[NewRecord]:
    return [NewRecord("telemetry", stream, keys[i % len(keys)], f"{keys[i % len(keys)]}|{i}".encode(), source) for i in range(n)]


def check_complete_and_ordered(client, stream: str, n: int, keys: list[str] = KEYS) -> None:
    """Every record exactly once; within each key, in the order it was spooled."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for records in read_stream(client, stream).values():
        for r in records:
            key, i = r["Data"].decode().split("|")
            assert r["PartitionKey"] == key
            by_key[key].append(int(i))
    seen = sorted(i for ids in by_key.values() for i in ids)
    assert seen == list(range(n)), f"{len(seen)} stored for {n} spooled (lost or duplicated)"
    for key, ids in by_key.items():
        assert ids == sorted(ids), f"{key} out of order"


def test_everything_arrives_in_order_exactly_once_even_when_replayed(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway = shared_gateway
    client = gateway.client("kinesis")
    client.create_stream(StreamName="telemetry", ShardCount=2)
    with Spool(tmp_path / "spool.db") as spool:
        spool.append(make_records("telemetry", 1200))
    # The same spool as if the agent crashed after sending, before deleting what was acknowledged.
    shutil.copy(tmp_path / "spool.db", tmp_path / "replay.db")
    sent_before = metric("edge_agent_records_sent_total", stream="telemetry")
    for path in ("spool.db", "replay.db"):
        with Spool(tmp_path / path) as spool, running_forwarder(spool, gateway.url, agent_id="agent-a"):
            wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the spool to drain")
    check_complete_and_ordered(client, "telemetry", 1200)
    assert metric("edge_agent_records_sent_total", stream="telemetry") - sent_before == 2400
    assert metric("edge_agent_records_out_total", source="test-src") >= 2400


def test_throttled_gateway_gets_everything_with_backoff(gateway_factory, tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text("[limits]\nshard_write_records_per_sec = 50\n")
    gw = gateway_factory("--config", str(config))
    client = gw.client("kinesis")
    client.create_stream(StreamName="slow", ShardCount=1)
    throttled_before = metric("edge_agent_throttled_total", stream="slow")
    retries_before = metric("edge_agent_send_retries_total", stream="slow")
    with Spool(tmp_path / "spool.db") as spool, running_forwarder(spool, gw.url) as fw:
        spool.append(make_records("slow", 150))
        wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the throttled spool to drain")
        assert fw.rate.throttled_events >= 1  # the send rate was cut (AIMD)
    assert metric("edge_agent_throttled_total", stream="slow") > throttled_before
    assert metric("edge_agent_send_retries_total", stream="slow") > retries_before
    check_complete_and_ordered(client, "slow", 150)


def test_gateway_down_spool_grows_then_drains(gateway, tmp_path: Path) -> None:
    client = gateway.client("kinesis")
    client.create_stream(StreamName="outage", ShardCount=2)
    errors_before = metric("edge_agent_send_errors_total", lane="records", reason="connection")
    with Spool(tmp_path / "spool.db") as spool, running_forwarder(spool, gateway.url):
        spool.append(make_records("outage", 100))
        wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the first records to go")
        gateway.kill()
        more = make_records("outage", 600)[100:]
        for start in range(0, len(more), 100):
            spool.append(more[start : start + 100])
        wait_until(lambda: metric("edge_agent_send_errors_total", lane="records", reason="connection") > errors_before, 60,
                   what="connection errors while the gateway is down")
        assert spool.stats().records["records"] == 500  # nothing lost, nothing acked while down
        gateway.start()
        wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the spool to drain after the outage")
    check_complete_and_ordered(gateway.client("kinesis"), "outage", 600)


def test_aggregated_records_deaggregate_to_the_originals(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway = shared_gateway
    client = gateway.client("kinesis")
    client.create_stream(StreamName="agg", ShardCount=2)
    records = make_records("agg", 3000)
    with Spool(tmp_path / "spool.db") as spool:
        spool.append(records)
    shutil.copy(tmp_path / "spool.db", tmp_path / "replay.db")
    for path in ("spool.db", "replay.db"):  # the replay is recognised: no duplicate aggregates
        with Spool(tmp_path / path) as spool, running_forwarder(spool, gateway.url, aggregate=True, aggregate_max_bytes=4096):
            wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the spool to drain")
    stored = read_stream(client, "agg")
    kinesis_records = [r for shard in stored.values() for r in shard]
    assert 4 <= len(kinesis_records) < 300  # packed: far fewer Kinesis records than user records
    by_key: dict[str, list[bytes]] = defaultdict(list)
    for shard_records in stored.values():
        for user in iter_deaggregate_records(shard_records, data_format="Boto3"):
            by_key[user["kinesis"]["partitionKey"]].append(base64.b64decode(user["kinesis"]["data"]))
    for key in KEYS:
        assert by_key[key] == [r.data for r in records if r.partition_key == key]


def test_record_over_the_kinesis_limit_is_rejected_not_blocking(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway = shared_gateway
    client = gateway.client("kinesis")
    client.create_stream(StreamName="big", ShardCount=1)
    rejected_before = metric("edge_agent_records_rejected_total", source="huge-src", reason="too_large")
    with Spool(tmp_path / "spool.db") as spool, running_forwarder(spool, gateway.url):
        spool.append([NewRecord("log", "big", "k", b"x" * (1024 * 1024 + 10), "huge-src"), *make_records("big", 20, ["k"])])
        wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the spool to drain")
    assert metric("edge_agent_records_rejected_total", source="huge-src", reason="too_large") == rejected_before + 1
    assert sorted(all_data(client, "big")) == sorted(r.data for r in make_records("big", 20, ["k"]))


def test_long_outage_over_the_spool_cap_drops_by_priority_then_drains_in_order(gateway, tmp_path: Path) -> None:
    """Offline longer than the spool holds: logs go before telemetry; what is left drains in order."""
    client = gateway.client("kinesis")
    client.create_stream(StreamName="cap", ShardCount=1)
    gateway.kill()
    payload = b"t" * 1000
    with Spool(tmp_path / "spool.db", max_bytes=1024 * 1024, sync="normal") as spool, running_forwarder(spool, gateway.url, batch_max_records=100):
        for start in range(0, 600, 50):  # ~0.6 MB of telemetry, kept
            spool.append([NewRecord("telemetry", "cap", "sensor", payload[:-8] + b"%08d" % i, "tele-src") for i in range(start, start + 50)])
        for start in range(0, 900, 100):  # ~0.9 MB of logs: the cap is passed, the oldest logs go
            spool.append([NewRecord("log", "cap", "app.log", b"l" * 992 + b"%08d" % i, "log-src") for i in range(start, start + 100)])
        stats = spool.stats()
        assert stats.dropped.get("log", 0) > 0 and not stats.dropped.get("telemetry")
        assert stats.bytes <= 1024 * 1024
        gateway.start()
        wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the spool to drain after the long outage")
    stored = all_data(client, "cap")
    telemetry = [int(d[-8:]) for d in stored if d.startswith(b"t")]
    logs = [int(d[-8:]) for d in stored if d.startswith(b"l")]
    assert telemetry == list(range(600))  # every telemetry record, in order, once
    assert logs == sorted(logs) and len(logs) == len(set(logs))  # surviving logs in order, once
    assert logs[-1] == 899  # the newest logs survived; the oldest were dropped


def test_aggregates_in_flight_at_a_crash_are_rebuilt_exactly(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    """Crash between PutRecords and the spool ack, then more records arrive: the restarted agent
    must resend the same aggregate (recognised as a replay), not a bigger one under the same id
    (which the gateway would answer as a replay, losing the newer records)."""
    from agent_helpers import kinesis_client

    from edge_agent.config import ForwarderSection
    from edge_agent.forwarder import RecordForwarder

    client = shared_gateway.client("kinesis")
    client.create_stream(StreamName="agg-crash", ShardCount=1)
    first = [NewRecord("telemetry", "agg-crash", "k", b"early-%d" % i, "src") for i in range(5)]
    later = [NewRecord("telemetry", "agg-crash", "k", b"later-%d" % i, "src") for i in range(5)]
    options = ForwarderSection(aggregate=True, linger_ms=0)
    with Spool(tmp_path / "spool.db", sync="normal") as spool:
        spool.append(first)
        before_crash = RecordForwarder(spool, kinesis_client(shared_gateway.url), options, "agent-crash")
        before_crash._refill()
        batch = before_crash._select(time.monotonic())  # seals the aggregate and saves its range durably
        assert len(batch) == 1 and len(batch[0].seqs) == 5
        for suffix in ("", "-wal"):  # the disk as a crash right after the send would leave it
            shutil.copy(f"{tmp_path / 'spool.db'}{suffix}", f"{tmp_path / 'crashed.db'}{suffix}")
        before_crash._send(batch)
        before_crash.close()
    with Spool(tmp_path / "crashed.db", sync="normal") as spool:
        assert spool.stats().records["records"] == 5  # not acked before the crash
        spool.append(later)
        with running_forwarder(spool, shared_gateway.url, agent_id="agent-crash", aggregate=True):
            wait_until(lambda: spool.stats().records["records"] == 0, 60, what="the restarted forwarder to drain")
    stored = read_stream(client, "agg-crash")["shardId-000000000000"]
    users = [base64.b64decode(u["kinesis"]["data"]) for u in iter_deaggregate_records(stored, data_format="Boto3")]
    assert users == [r.data for r in first + later]


def test_missing_stream_waits_and_then_delivers(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    """A stream that does not exist (yet) is an error the forwarder waits out: nothing is dropped."""
    client = shared_gateway.client("kinesis")
    before = metric("edge_agent_send_errors_total", lane="records", reason="ResourceNotFoundException")
    with Spool(tmp_path / "spool.db", sync="normal") as spool, running_forwarder(spool, shared_gateway.url):
        spool.append(make_records("late-stream", 40))
        wait_until(lambda: metric("edge_agent_send_errors_total", lane="records", reason="ResourceNotFoundException") > before, 60,
                   what="the missing stream to be noticed")
        assert spool.stats().records["records"] == 40
        client.create_stream(StreamName="late-stream", ShardCount=1)
        wait_until(lambda: spool.stats().records["records"] == 0, 60, what="delivery once the stream exists")
    check_complete_and_ordered(client, "late-stream", 40)


def test_read_ahead_is_bounded_in_bytes_with_aggregation(tmp_path: Path) -> None:
    """After a long outage the spool can hold far more than memory should: the forwarder reads
    only about two requests' worth ahead, even though aggregates grow without adding units."""
    from agent_helpers import kinesis_client

    from edge_agent.config import ForwarderSection
    from edge_agent.forwarder import RecordForwarder

    with Spool(tmp_path / "spool.db", sync="normal") as spool:
        for _ in range(8):
            spool.append([NewRecord("telemetry", "s", f"k{i % 20}", b"x" * 1000, "src") for i in range(5000)])
        options = ForwarderSection(aggregate=True, batch_max_bytes=1024 * 1024)
        fw = RecordForwarder(spool, kinesis_client("http://127.0.0.1:9"), options, "agent-mem")
        fw._refill()
        held = sum(u.size for u in fw.pending.values())
        assert 2 * 1024 * 1024 <= held < 3 * 1024 * 1024  # two requests' worth, not the 40 MB spooled
        assert fw.cursor < 40_000
