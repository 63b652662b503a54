"""Kinesis's per-record limits, and the one rule the agent uses to fit a partition key to them."""

from __future__ import annotations

#: Kinesis caps a record's data plus its partition key at 1 MiB.
MAX_RECORD_BYTES = 1024 * 1024
#: Kinesis caps a partition key at 256 Unicode characters.
MAX_PARTITION_KEY_CHARS = 256


def partition_key(text: str) -> str:
    """``text`` as a Kinesis partition key: non-empty, at most 256 characters (the tail is kept,
    since the end of a path or topic is the specific part)."""
    return text[-MAX_PARTITION_KEY_CHARS:] or "-"
