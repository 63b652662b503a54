"""The records forwarder's per-key hold-back, fast: a scripted PutRecords answer, a real spool.

A record that failed is retried later; until it went through, no later record of the same
partition key may be sent (it would overtake it), while other keys go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.config import ForwarderSection
from edge_agent.forwarder import RecordForwarder
from edge_agent.spool import NewRecord, Spool


class ScriptedClient:
    """Answers PutRecords like Kinesis: each record in ``fail`` gets a per-record error."""

    def __init__(self, fail: set[bytes]) -> None:
        self.fail = fail
        self.calls: list[list[bytes]] = []

    def put_records(self, StreamName: str, Records: Sequence[Mapping[str, Any]], headers: Mapping[str, str]) -> dict[str, Any]:  # noqa: N803
        sent = [bytes(r["Data"]) for r in Records]
        self.calls.append(sent)
        return {"FailedRecordCount": sum(d in self.fail for d in sent), "Records": [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "scripted"} if d in self.fail else {"SequenceNumber": "1", "ShardId": "shardId-0"}
            for d in sent]}


def record(key: str, data: bytes) -> NewRecord:
    return NewRecord("telemetry", "s", key, data, "test")


def test_a_failed_record_holds_back_its_key_and_only_its_key(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.append([record("a", b"a1"), record("b", b"b1")])
        client = ScriptedClient({b"a1"})
        fw = RecordForwarder(spool, client, ForwarderSection(linger_ms=0, retry_base_seconds=30, retry_max_seconds=60), "agent-t")
        assert fw.step()
        assert client.calls == [[b"a1", b"b1"]]
        client.fail.clear()
        spool.append([record("a", b"a2"), record("b", b"b2")])
        assert fw.step()
        assert client.calls[-1] == [b"b2"]  # a2 waits behind a1; b is not held up
        assert not fw.step()  # a1 is still in backoff: nothing is ready
        assert len(client.calls) == 2
        for unit in fw.pending.values():
            unit.not_before = 0.0  # a1's retry time has come
        assert fw.step()
        assert client.calls[-1] == [b"a1", b"a2"]  # in spool order, a1 first
        fw.close()
        assert spool.stats().records["records"] == 0
        assert not fw.pending


def test_a_throttled_key_sends_one_record_per_request_until_a_clean_request(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.append([record("a", b"a1"), record("a", b"a2"), record("b", b"b1")])
        client = ScriptedClient(set())
        fw = RecordForwarder(spool, client, ForwarderSection(linger_ms=0, retry_base_seconds=30, retry_max_seconds=60), "agent-t")
        fw.key_window = 1  # as after a throttle
        assert fw.step()
        assert client.calls[-1] == [b"a1", b"b1"]  # one unit of key a; a2 waits for the next request
        assert fw.step()
        assert client.calls[-1] == [b"a2"]
        assert fw.key_window == 4  # clean requests widen the window again (1 -> 2 -> 4)
        fw.close()
