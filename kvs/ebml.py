"""EBML primitives: variable-length integers, element headers, and element builders.

EBML (the container syntax under Matroska) stores every element as ``ID | size | payload``.
Both ID and size are *vints*: the count of leading zero bits in the first byte gives the
total length (1..8 bytes). IDs keep their length-marker bit (``0x1A45DFA3`` is written as those
four bytes); sizes drop it. A size whose value bits are all ones means "unknown size" - used by
live producers for a Segment or Cluster that is still being written.

Only what the MKV writer and the streaming parser need; no schema, no DOM.
"""

from __future__ import annotations

import struct

#: Marker for an element whose size is not known when its header is written.
UNKNOWN_SIZE = -1
#: The 8-byte "unknown size" vint (all value bits set).
UNKNOWN_SIZE_VINT = b"\x01\xff\xff\xff\xff\xff\xff\xff"

# Matroska element IDs used here (https://www.matroska.org/technical/elements.html).
EBML = 0x1A45DFA3
EBML_VERSION = 0x4286
EBML_READ_VERSION = 0x42F7
EBML_MAX_ID_LENGTH = 0x42F2
EBML_MAX_SIZE_LENGTH = 0x42F3
DOC_TYPE = 0x4282
DOC_TYPE_VERSION = 0x4287
DOC_TYPE_READ_VERSION = 0x4285
VOID = 0xEC
CRC32 = 0xBF

SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
INFO = 0x1549A966
TIMECODE_SCALE = 0x2AD7B1
DURATION = 0x4489
SEGMENT_UID = 0x73A4
MUXING_APP = 0x4D80
WRITING_APP = 0x5741
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_UID = 0x73C5
TRACK_TYPE = 0x83
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
DEFAULT_DURATION = 0x23E383
TRACK_NAME = 0x536E
VIDEO = 0xE0
PIXEL_WIDTH = 0xB0
PIXEL_HEIGHT = 0xBA
CUES = 0x1C53BB6B
CHAPTERS = 0x1043A770
ATTACHMENTS = 0x1941A469
TAGS = 0x1254C367
TAG = 0x7373
TARGETS = 0x63C0
TARGET_TYPE_VALUE = 0x68CA
SIMPLE_TAG = 0x67C8
TAG_NAME = 0x45A3
TAG_STRING = 0x4487
TAG_BINARY = 0x4485

CLUSTER = 0x1F43B675
CLUSTER_TIMECODE = 0xE7
SILENT_TRACKS = 0x5854
POSITION = 0xA7
PREV_SIZE = 0xAB
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
BLOCK_DURATION = 0x9B
REFERENCE_BLOCK = 0xFB
ENCRYPTED_BLOCK = 0xAF

#: Children a Segment may hold (level 1); anything else there is garbage.
SEGMENT_CHILDREN = frozenset({SEEK_HEAD, INFO, TRACKS, CUES, CHAPTERS, ATTACHMENTS, TAGS, CLUSTER, VOID, CRC32})
#: Children a Cluster may hold.
CLUSTER_CHILDREN = frozenset(
    {CLUSTER_TIMECODE, SILENT_TRACKS, POSITION, PREV_SIZE, SIMPLE_BLOCK, BLOCK_GROUP, ENCRYPTED_BLOCK, VOID, CRC32}
)


class EbmlError(ValueError):
    """Bytes that are not valid EBML (bad vint, truncated element)."""


def encode_size(value: int, length: int | None = None) -> bytes:
    """The vint for ``value`` in the shortest form (or exactly ``length`` bytes)."""
    if value == UNKNOWN_SIZE:
        return UNKNOWN_SIZE_VINT
    if value < 0:
        raise ValueError(f"negative EBML size {value}")
    if length is None:
        length = 1
        # All-ones is reserved for "unknown", so a length-n vint holds up to 2**(7n) - 2.
        while value >= (1 << (7 * length)) - 1:
            length += 1
    if length > 8 or value >= (1 << (7 * length)) - 1:
        raise ValueError(f"EBML size {value} does not fit in {length} bytes")
    return ((1 << (7 * length)) | value).to_bytes(length, "big")


def encode_id(element_id: int) -> bytes:
    """An element ID as written (IDs keep their marker bit, so this is just its big-endian bytes)."""
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def vint_length(first_byte: int) -> int:
    """Total length of a vint from its first byte; 0 if the byte is not a valid vint start."""
    for length in range(1, 9):
        if first_byte & (0x80 >> (length - 1)):
            return length
    return 0


def read_id(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """``(element_id, length)`` at ``pos``, or None if more bytes are needed."""
    if pos >= len(buf):
        return None
    length = vint_length(buf[pos])
    if length == 0 or length > 4:
        raise EbmlError(f"invalid element ID byte 0x{buf[pos]:02x}")
    if pos + length > len(buf):
        return None
    return int.from_bytes(buf[pos : pos + length], "big"), length


def read_size(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """``(size, length)`` at ``pos`` (size is ``UNKNOWN_SIZE`` for all-ones), or None if more bytes are needed."""
    if pos >= len(buf):
        return None
    length = vint_length(buf[pos])
    if length == 0:
        raise EbmlError(f"invalid element size byte 0x{buf[pos]:02x}")
    if pos + length > len(buf):
        return None
    value = int.from_bytes(buf[pos : pos + length], "big") & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return UNKNOWN_SIZE, length
    return value, length


def read_header(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int] | None:
    """``(element_id, size, header_length)`` at ``pos``, or None if the header is not complete yet."""
    got_id = read_id(buf, pos)
    if got_id is None:
        return None
    element_id, id_len = got_id
    got_size = read_size(buf, pos + id_len)
    if got_size is None:
        return None
    size, size_len = got_size
    return element_id, size, id_len + size_len


def iter_children(payload: bytes | memoryview) -> list[tuple[int, memoryview]]:
    """The direct children of a fully buffered master element's payload."""
    view = memoryview(payload)
    out: list[tuple[int, memoryview]] = []
    pos = 0
    while pos < len(view):
        header = read_header(view, pos)
        if header is None:
            raise EbmlError("truncated element header")
        element_id, size, header_len = header
        if size == UNKNOWN_SIZE:
            raise EbmlError(f"unknown size inside a sized element (ID 0x{element_id:x})")
        start = pos + header_len
        if start + size > len(view):
            raise EbmlError(f"element 0x{element_id:x} runs past its parent")
        out.append((element_id, view[start : start + size]))
        pos = start + size
    return out


def read_uint(payload: bytes | memoryview) -> int:
    return int.from_bytes(payload, "big") if len(payload) else 0


def read_float(payload: bytes | memoryview) -> float:
    if len(payload) == 4:
        return float(struct.unpack(">f", payload)[0])
    if len(payload) == 8:
        return float(struct.unpack(">d", payload)[0])
    if len(payload) == 0:
        return 0.0
    raise EbmlError(f"float of {len(payload)} bytes")


def read_string(payload: bytes | memoryview) -> str:
    return bytes(payload).rstrip(b"\x00").decode("utf-8", errors="replace")


# -- builders ---------------------------------------------------------------------------


def element(element_id: int, payload: bytes, unknown_size: bool = False) -> bytes:
    size = UNKNOWN_SIZE_VINT if unknown_size else encode_size(len(payload))
    return encode_id(element_id) + size + payload


def master(element_id: int, *children: bytes) -> bytes:
    return element(element_id, b"".join(children))


def uint_element(element_id: int, value: int) -> bytes:
    if value < 0:
        raise ValueError(f"negative unsigned value {value}")
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def float_element(element_id: int, value: float) -> bytes:
    return element(element_id, struct.pack(">d", value))


def string_element(element_id: int, value: str) -> bytes:
    return element(element_id, value.encode("utf-8"))


def binary_element(element_id: int, value: bytes) -> bytes:
    return element(element_id, value)
