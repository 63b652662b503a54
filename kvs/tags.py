"""Kinesis Video fragment tags: the MKV Tags GetMedia adds around each fragment, and a reader.

GetMedia sends each fragment as an MKV document with a Tags element *before* its Cluster
carrying the fragment number and timestamps, and one *after* it carrying what is only known
once the fragment has been sent (how far behind live the reader is, and the token to resume
from). Timestamps are seconds since the epoch with millisecond decimals (``1700000000.123``).
"""

from __future__ import annotations

from kvs import ebml
from kvs.parser import parse_simple_tags

FRAGMENT_NUMBER = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
SERVER_TIMESTAMP = "AWS_KINESISVIDEO_SERVER_TIMESTAMP"
PRODUCER_TIMESTAMP = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"
MILLIS_BEHIND_NOW = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"
CONTINUATION_TOKEN = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
ERROR_CODE = "AWS_KINESISVIDEO_ERROR_CODE"
ERROR_ID = "AWS_KINESISVIDEO_ERROR_ID"
#: Tags that follow the cluster (GetMedia writes them after the fragment's data).
TRAILING_TAGS = frozenset({MILLIS_BEHIND_NOW, CONTINUATION_TOKEN})


def format_tag_timestamp(ms: int) -> str:
    """Epoch milliseconds as KVS writes them in tags: seconds with three decimals."""
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    return f"{sign}{ms // 1000}.{ms % 1000:03d}"


def parse_tag_timestamp(value: str) -> int:
    """Inverse of :func:`format_tag_timestamp` (epoch milliseconds)."""
    seconds, _, frac = value.strip().partition(".")
    negative = seconds.startswith("-")
    ms = abs(int(seconds or "0")) * 1000 + int((frac + "000")[:3])
    return -ms if negative else ms


def fragment_tags(fragment_number: str, server_ms: int, producer_ms: int) -> dict[str, str]:
    return {
        FRAGMENT_NUMBER: fragment_number,
        SERVER_TIMESTAMP: format_tag_timestamp(server_ms),
        PRODUCER_TIMESTAMP: format_tag_timestamp(producer_ms),
    }


def tags_element(tags: dict[str, str]) -> bytes:
    """A Tags element with one Tag (no target: applies to the whole segment) of SimpleTags."""
    simple = [
        ebml.master(ebml.SIMPLE_TAG, ebml.string_element(ebml.TAG_NAME, name), ebml.string_element(ebml.TAG_STRING, value))
        for name, value in tags.items()
    ]
    return ebml.master(ebml.TAGS, ebml.master(ebml.TAG, ebml.master(ebml.TARGETS), *simple))


def with_kvs_tags(mkv: bytes, tags: dict[str, str]) -> bytes:
    """``mkv`` (one standalone document with a sized Segment) with ``tags`` added as GetMedia does.

    Fragment number and timestamps go in a Tags element before the Cluster; millis-behind-now
    and the continuation token in one after it.
    """
    header = ebml.read_header(mkv, 0)
    if header is None or header[0] != ebml.EBML:
        raise ValueError("not an MKV document")
    segment_at = header[2] + header[1]
    seg = ebml.read_header(mkv, segment_at)
    if seg is None or seg[0] != ebml.SEGMENT or seg[1] == ebml.UNKNOWN_SIZE:
        raise ValueError("expected a sized Segment after the EBML header")
    before = {k: v for k, v in tags.items() if k not in TRAILING_TAGS}
    after = {k: v for k, v in tags.items() if k in TRAILING_TAGS}
    children: list[bytes] = []
    payload_at = segment_at + seg[2]
    inserted = False
    for element_id, payload in ebml.iter_children(memoryview(mkv)[payload_at : payload_at + seg[1]]):
        raw = ebml.element(element_id, bytes(payload))
        if element_id == ebml.CLUSTER and not inserted:
            if before:
                children.append(tags_element(before))
            children.append(raw)
            if after:
                children.append(tags_element(after))
            inserted = True
        else:
            children.append(raw)
    if not inserted:
        raise ValueError("the document has no Cluster")
    return mkv[:segment_at] + ebml.master(ebml.SEGMENT, *children) + mkv[payload_at + seg[1] :]


def read_tags(data: bytes) -> list[dict[str, str]]:
    """The SimpleTags of each MKV document in ``data`` (one dict per document, in order).

    Handles documents back to back and unknown-size Segments/Clusters (a GetMedia response).
    """
    out: list[dict[str, str]] = []
    view = memoryview(data)
    pos = 0
    current: dict[str, str] | None = None
    while pos < len(view):
        header = ebml.read_header(view, pos)
        if header is None:
            break
        element_id, size, header_len = header
        if element_id == ebml.EBML:
            current = {}
            out.append(current)
        if element_id in (ebml.SEGMENT, ebml.CLUSTER):
            pos += header_len  # descend: walk the children at this level
            continue
        if size == ebml.UNKNOWN_SIZE:
            raise ValueError(f"unknown-size element 0x{element_id:X} where a sized one is needed")
        if element_id == ebml.TAGS and current is not None:
            current.update(parse_simple_tags(view[pos + header_len : pos + header_len + size]))
        pos += header_len + size
    return out
