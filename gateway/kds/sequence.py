"""Sequence numbers on the wire: AWS-like 56-digit decimal strings over the store's counter.

The store counts 1, 2, 3, ...; clients see ``SEQUENCE_BASE + n``, which has the length and
look of real Kinesis numbers and still compares correctly as an integer.
"""

from __future__ import annotations

from gateway.errors import invalid_argument

SEQUENCE_BASE = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000


def external(n: int) -> str:
    return str(SEQUENCE_BASE + n)


def internal(text: str) -> int:
    try:
        n = int(text) - SEQUENCE_BASE
    except ValueError:
        n = -1
    if n < 0 or n >= 2**62:
        raise invalid_argument(f"StartingSequenceNumber {text} used in GetShardIterator on shard is not a sequence number this stream issued.")
    return n
