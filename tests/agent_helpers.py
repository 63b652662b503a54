"""Helpers for the agent's tests: a forwarder on a thread, reading a stream back with boto3."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edge_agent import aws
from edge_agent.config import ForwarderSection, GatewaySection
from edge_agent.forwarder import RecordForwarder
from edge_agent.metrics import REGISTRY


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def kinesis_client(url: str) -> Any:
    gw = GatewaySection(endpoint_url=url, read_timeout_seconds=10, connect_timeout_seconds=2)
    return aws.make_client(aws.make_session(gw), "kinesis", url, gw)


@contextmanager
def running_forwarder(spool: Any, url: str, agent_id: str = "agent-test", **forwarder: Any) -> Iterator[RecordForwarder]:
    options = {"retry_base_seconds": 0.05, "retry_max_seconds": 1.0, "linger_ms": 5, **forwarder}
    fw = RecordForwarder(spool, kinesis_client(url), ForwarderSection(**options), agent_id)
    stop = threading.Event()
    thread = threading.Thread(target=fw.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield fw
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_stream(client: Any, stream: str) -> dict[str, list[dict[str, Any]]]:
    """Every record of every shard (TRIM_HORIZON to the tip), by shard id, in shard order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        records: list[dict[str, Any]] = []
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            for attempt in range(50):
                try:
                    response = client.get_records(ShardIterator=iterator, Limit=10000)
                    break
                except client.exceptions.ProvisionedThroughputExceededException:
                    time.sleep(0.25)
            records.extend(response["Records"])
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
        out[shard["ShardId"]] = records
    return out


def all_data(client: Any, stream: str) -> list[bytes]:
    return [r["Data"] for records in read_stream(client, stream).values() for r in records]
