"""Wire helpers the data-stream (``gateway/kds``) and video (``gateway/kvs``) APIs share.

One place for what both speak: the edge agent's exactly-once headers, the region a SigV4
request was signed for, the stream name inside an ARN, and the opaque ``NextToken`` codec.
Each helper raises ``ValueError`` with a message; the caller wraps it in its API's error shape
(``ValidationException`` on the data-stream API, ``InvalidArgumentException`` on the video API).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

#: Who is sending (the edge agent's device id): with one of the seqs headers, replays are recognised.
PRODUCER_HEADER = "X-Edge-Producer-Id"
#: One producer number per record of a PutRecord(s) call.
RECORD_SEQS_HEADER = "X-Edge-Record-Seqs"
#: One producer number per fragment of a PutMedia body.
FRAGMENT_SEQS_HEADER = "X-Edge-Fragment-Seqs"
#: Producer numbers are SQLite integers.
MAX_PRODUCER_SEQ = 2**63 - 1

DEFAULT_REGION = "us-east-1"
#: The region of a SigV4 ``Authorization`` header's credential scope.
REGION_IN_AUTH = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value without surrounding blanks; None when absent or blank."""
    value = headers.get(name)
    return value.strip() if value is not None and value.strip() else None


def producer_seqs(headers: Mapping[str, str], seqs_header: str) -> tuple[str | None, list[int]]:
    """``(producer id, numbers)`` from the exactly-once headers; ``(None, [])`` when not sent.

    ``ValueError`` when the numbers are not comma-separated integers in ``[0, 2^63 - 1]``, or when
    only one of the two headers is given.
    """
    producer = header(headers, PRODUCER_HEADER)
    raw = header(headers, seqs_header)
    try:
        seqs = [int(s) for s in raw.split(",")] if raw else []
    except ValueError as exc:
        raise ValueError(f"{seqs_header} must be comma-separated integers.") from exc
    if any(not 0 <= s <= MAX_PRODUCER_SEQ for s in seqs):
        raise ValueError(f"{seqs_header} numbers must be between 0 and 2^63 - 1.")
    if bool(producer) != bool(seqs):
        raise ValueError(f"{PRODUCER_HEADER} and {seqs_header} go together.")
    return producer, seqs


def region_of(headers: Mapping[str, str]) -> str:
    """The region the request was signed for (``us-east-1`` when unsigned)."""
    match = REGION_IN_AUTH.search(headers.get("Authorization", ""))
    return match.group(1) if match else DEFAULT_REGION


def stream_name_from_arn(arn: Any) -> str:
    """``arn:aws:kinesis[video]:region:account:stream/NAME[/...]`` -> NAME; "" when not a stream ARN."""
    if not isinstance(arn, str):
        return ""
    _, sep, rest = arn.partition(":stream/")
    return rest.split("/", 1)[0] if sep else ""


def encode_token(state: Mapping[str, Any]) -> str:
    """An opaque ``NextToken``: the paging state as compact JSON in URL-safe base64."""
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def decode_token(token: Any) -> dict[str, Any]:
    """The paging state of a ``NextToken`` we issued; ``ValueError`` if it is not one.

    Tokens are not signed: callers check the fields they read (types and ranges) as input.
    """
    if not isinstance(token, str):
        raise ValueError("NextToken is not valid")
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, RecursionError) as exc:  # binascii.Error, UnicodeError and JSON errors are ValueErrors
        raise ValueError("NextToken is not valid") from exc
    if not isinstance(value, dict):
        raise ValueError("NextToken is not valid")
    return value
