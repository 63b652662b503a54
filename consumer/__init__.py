"""A Kinesis consumer library (the KCL's job, in Python): leases, checkpoints, handlers.

Workers share a stream's shards through a lease table (SQLite on one host, DynamoDB across
hosts), run a record processor per shard they hold, and checkpoint progress; the same code
reads our gateway or AWS Kinesis. ``edge-consumer`` (``consumer.cli``) runs one from a TOML file.
"""

from consumer.errors import ConfigError, ConsumerError, LeaseLost, LeaseStoreError, StreamError
from consumer.leases import Lease, LeaseStore
from consumer.processor import BaseProcessor, Checkpointer, RecordProcessor
from consumer.records import Record
from consumer.store_sqlite import SqliteLeaseStore
from consumer.worker import Worker, WorkerSettings

__all__ = [
    "BaseProcessor",
    "Checkpointer",
    "ConfigError",
    "ConsumerError",
    "Lease",
    "LeaseLost",
    "LeaseStore",
    "LeaseStoreError",
    "Record",
    "RecordProcessor",
    "SqliteLeaseStore",
    "StreamError",
    "Worker",
    "WorkerSettings",
]
