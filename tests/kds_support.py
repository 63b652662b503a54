"""Helpers shared by the tests/test_kds_*.py files: one shared gateway, read helpers."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import GatewayProcess

MAX_HASH = 2**128 - 1


def error_code(exc: pytest.ExceptionInfo[Any]) -> str:
    """The AWS error code of a raised botocore ClientError."""
    return str(exc.value.response["Error"]["Code"])


def md5_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


def shard_for(shards: list[dict[str, Any]], hash_key: int) -> str:
    for s in shards:
        r = s["HashKeyRange"]
        if int(r["StartingHashKey"]) <= hash_key <= int(r["EndingHashKey"]) and "EndingSequenceNumber" not in s["SequenceNumberRange"]:
            return str(s["ShardId"])
    raise AssertionError(f"no open shard holds {hash_key}")


def read_shard(kinesis: Any, stream: str, shard_id: str, iterator_type: str = "TRIM_HORIZON", **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every record of a shard until it is empty (open) or its end (closed); returns (records, last response)."""
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType=iterator_type, **kwargs)["ShardIterator"]
    records: list[dict[str, Any]] = []
    while True:
        resp = kinesis.get_records(ShardIterator=it, Limit=1000)
        records.extend(resp["Records"])
        it = resp.get("NextShardIterator")
        if it is None or (not resp["Records"] and resp["MillisBehindLatest"] == 0):
            return records, resp


def wait_until(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


_shared: list[GatewayProcess] = []


@pytest.fixture(scope="session")
def kds_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One ``--no-limits`` gateway for every kds test module that neither restarts it nor needs
    limits (each test uses its own stream names); starting a gateway costs seconds on a busy box.

    Each module imports this fixture, which pytest registers once per module: the process is
    kept here so they all get the same one. Session fixtures end with the session, so the
    first teardown (kill is idempotent) comes after the last test."""
    if not _shared:
        _shared.append(GatewayProcess(tmp_path_factory.mktemp("kds-shared") / "data", "--no-limits").start())
    yield _shared[0]
    _shared[0].kill()


def raw_call(gw: GatewayProcess, action: str, body: dict[str, Any] | bytes) -> tuple[int, bytes]:
    """POST one Kinesis action as plain JSON; (status, body) exactly as the gateway sent them."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(gw.url + "/", data=raw, method="POST", headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"Kinesis_20131202.{action}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
