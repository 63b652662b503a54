"""What a record processor receives: one ``Record`` per user record, KPL aggregates unpacked.

A Kinesis record written by the KPL (or the edge agent with ``aggregate = true``) carries many
user records: magic ``F3 89 9A C2``, a protobuf ``AggregatedRecord``, then the MD5 of the
protobuf. Each user record inside keeps the Kinesis sequence number of its carrier and gets a
sub-sequence number (its index in the aggregate), so a checkpoint can point inside an
aggregate. A record that only looks aggregated (bad MD5, bad protobuf) is delivered as is, the
way the KCL does it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("consumer.records")

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


@dataclass(frozen=True)
class Record:
    data: bytes
    partition_key: str
    sequence_number: str
    #: Index inside a KPL aggregate (0 for a plain record).
    sub_sequence_number: int = 0
    approximate_arrival: datetime | None = None
    explicit_hash_key: str | None = None
    #: True when the record came out of a KPL aggregate.
    aggregated: bool = False

    @property
    def position(self) -> tuple[int, int]:
        """Sortable (sequence, sub-sequence): the order records have in their shard."""
        return int(self.sequence_number), self.sub_sequence_number


def _unpack(data: bytes) -> Any | None:
    """The parsed ``AggregatedRecord`` if ``data`` is a valid KPL aggregate, else None."""
    if len(data) <= len(KPL_MAGIC) + _DIGEST or not data.startswith(KPL_MAGIC):
        return None
    body, digest = data[len(KPL_MAGIC):-_DIGEST], data[-_DIGEST:]
    if hashlib.md5(body).digest() != digest:
        return None
    # Imported here: protobuf costs memory, paid only when an aggregate shows up.
    from aws_kinesis_agg.messages_pb2 import AggregatedRecord
    from google.protobuf.message import DecodeError

    message = AggregatedRecord()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return None
    return message


def from_kinesis(raw: Iterable[dict[str, Any]]) -> Iterator[Record]:
    """User records from GetRecords / SubscribeToShard records (botocore's shape), aggregates unpacked."""
    for r in raw:
        data = bytes(r["Data"])
        seq = r["SequenceNumber"]
        arrival = r.get("ApproximateArrivalTimestamp")
        aggregate = _unpack(data)
        if aggregate is None:
            yield Record(data, r["PartitionKey"], seq, 0, arrival, None)
            continue
        keys, hash_keys = list(aggregate.partition_key_table), list(aggregate.explicit_hash_key_table)
        try:
            users = [
                Record(bytes(u.data), keys[u.partition_key_index], seq, index, arrival,
                       hash_keys[u.explicit_hash_key_index] if u.HasField("explicit_hash_key_index") else None, aggregated=True)
                for index, u in enumerate(aggregate.records)
            ]
        except IndexError:
            log.warning("aggregate %s has a bad key index: delivered as one record", seq)
            users = [Record(data, r["PartitionKey"], seq, 0, arrival, None)]
        yield from users
