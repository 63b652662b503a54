"""Kinesis's per-record limits, and the one rule the agent uses to fit a partition key to them.

Records bound for a Firehose delivery stream (a source's ``delivery_stream = "NAME"``) are
spooled with stream ``firehose:NAME`` (data stream names cannot hold a colon) and sent with
PutRecordBatch, whose limits are below."""

from __future__ import annotations

#: Kinesis caps a record's data plus its partition key at 1 MiB.
MAX_RECORD_BYTES = 1024 * 1024
#: Kinesis caps a partition key at 256 Unicode characters.
MAX_PARTITION_KEY_CHARS = 256


def partition_key(text: str) -> str:
    """``text`` as a Kinesis partition key: non-empty, at most 256 characters (the tail is kept,
    since the end of a path or topic is the specific part)."""
    return text[-MAX_PARTITION_KEY_CHARS:] or "-"


#: Spool stream of a source with ``delivery_stream = "NAME"``: ``firehose:NAME``.
DELIVERY_STREAM_PREFIX = "firehose:"
#: Firehose caps a record at 1,000 KiB and a PutRecordBatch call at 500 records and 4 MiB.
FIREHOSE_MAX_RECORD_BYTES = 1_024_000
FIREHOSE_MAX_BATCH_BYTES = 4 * 1024 * 1024


def delivery_stream_of(stream: str) -> str | None:
    """The delivery stream a spooled record goes to, or None for a data stream."""
    return stream[len(DELIVERY_STREAM_PREFIX):] if stream.startswith(DELIVERY_STREAM_PREFIX) else None
