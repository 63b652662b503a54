"""What the video store holds and hands out: value types, errors, and the fragment-number codec.

Fragment numbers are decimal strings ``BASE + stream_id * 10**20 + seq``: 47 digits like AWS ones,
unique across streams, increasing within one. Errors are ``AwsError`` subclasses so handlers can let
them propagate to the AWS error middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import AwsError

FRAGMENT_NUMBER_BASE = 91343852333 * 10**36
STREAM_FACTOR = 10**20
BY_PRODUCER = "PRODUCER_TIMESTAMP"
BY_SERVER = "SERVER_TIMESTAMP"
#: Longest fragment the time-range queries allow for (KVS caps fragments at 10 s; this leaves room
#: for a gateway configured with a higher ``max_fragment_seconds``). It bounds index scans only.
MAX_FRAGMENT_MS = 60_000
DEFAULT_ACCOUNT = "000000000000"

#: ``(mkv, fragment_number) -> bytes to store``: adds the KVS tags once the number is known.
Tagger = Callable[[bytes, str], bytes]


class StreamNotFoundError(AwsError):
    def __init__(self, name: str) -> None:
        super().__init__("ResourceNotFoundException", f"Stream {name} not found", 404)


class StreamExistsError(AwsError):
    def __init__(self, name: str) -> None:
        super().__init__("ResourceInUseException", f"The stream {name} already exists", 400)


class FragmentNotFoundError(AwsError):
    def __init__(self, number: str) -> None:
        super().__init__("ResourceNotFoundException", f"Fragment {number} not found", 404)


class VersionMismatchError(AwsError):
    def __init__(self, version: str) -> None:
        super().__init__("VersionMismatchException", f"The stream version is {version}", 400)


@dataclass(frozen=True)
class FragmentInfo:
    fragment_number: str
    producer_ts_ms: int
    server_ts_ms: int
    duration_ms: int
    size: int
    frame_count: int


@dataclass(frozen=True)
class StreamRecord:
    id: int
    name: str
    arn: str
    device_name: str | None
    media_type: str | None
    kms_key_id: str | None
    retention_hours: int
    version: str
    created_ms: int


@dataclass(frozen=True)
class NewFragment:
    """What the ingest path hands to ``VideoStore.persist``."""

    mkv: bytes
    producer_ts_ms: int
    server_ts_ms: int
    duration_ms: int
    frame_count: int


def fragment_number(stream_id: int, seq: int) -> str:
    return str(FRAGMENT_NUMBER_BASE + stream_id * STREAM_FACTOR + seq)


def parse_fragment_number(number: str) -> tuple[int, int]:
    """(stream_id, seq) of a fragment number; ``FragmentNotFoundError`` if it is not one of ours."""
    if not number.isdigit() or len(number) > 64:
        raise FragmentNotFoundError(number)
    rest = int(number) - FRAGMENT_NUMBER_BASE
    stream_id, seq = divmod(rest, STREAM_FACTOR)
    if rest < 0 or stream_id >= 2**53 or seq >= 2**62:  # beyond anything we issue (or SQLite holds)
        raise FragmentNotFoundError(number)
    return stream_id, seq
