"""KPL aggregation: many user records of one partition key packed into one Kinesis record.

A shard takes 1000 records/s; aggregated, those records carry many user records each, so a
chatty source gets past the limit. The format is the Kinesis Producer Library's (magic
bytes, protobuf ``AggregatedRecord``, MD5), written by the ``aws-kinesis-agg`` package, so
KCL consumers and ``aws_kinesis_agg.deaggregator`` unpack it transparently.

Only records of one partition key go into one aggregate: the aggregate is routed by that key,
so per-key order is kept exactly as without aggregation.
"""

from __future__ import annotations

from typing import Any

#: Bytes of framing around the user records (magic + MD5) plus slack for protobuf varints.
OVERHEAD_BYTES = 4 + 16 + 64


class Aggregate:
    """A growing aggregated record for one partition key; ``add`` says whether it fit."""

    def __init__(self, partition_key: str, max_bytes: int) -> None:
        self.partition_key = partition_key
        self.max_bytes = max_bytes
        # Imported here: protobuf costs ~10 MB of RSS, paid only when aggregation is on.
        from aws_kinesis_agg.aggregator import AggRecord

        self._record: Any = AggRecord(max_bytes)
        self._data: bytes | None = None

    @staticmethod
    def fits_alone(partition_key: str, data: bytes, max_bytes: int) -> bool:
        return len(data) + len(partition_key.encode()) + OVERHEAD_BYTES <= max_bytes

    def add(self, data: bytes) -> bool:
        if self._data is not None:
            raise RuntimeError("aggregate already sealed")
        try:
            return bool(self._record.add_user_record(self.partition_key, data))
        except ValueError:  # this one record alone is too big for an aggregate
            return False

    @property
    def count(self) -> int:
        return int(self._record.get_num_user_records())

    @property
    def size(self) -> int:
        return int(self._record.get_size_bytes())

    def seal(self) -> bytes:
        """The serialized aggregate (computed once; nothing can be added afterwards)."""
        if self._data is None:
            self._data = bytes(self._record.get_contents()[2])
        return self._data
