"""Segments: the records one PutRecords call puts into one shard, stored as one SQLite row.

Storing a row per record made SQLite the bottleneck of ingest (a B-tree insert per record);
a segment costs one insert per shard per call. A segment holds ``count`` records with the
consecutive sequence numbers ``first_seq .. first_seq + count - 1`` and one arrival time.

Payload layout (little-endian)::

    count: u32 | key_len: u32[count] | data_len: u32[count] | keys (UTF-8) ... | data ...
"""

from __future__ import annotations

import struct
import sys
from array import array

_COUNT = struct.Struct("<I")


def _lengths(values: list[int]) -> bytes:
    lengths = array("I", values)
    if sys.byteorder != "little":  # pragma: no cover - the format is little-endian everywhere
        lengths.byteswap()
    return lengths.tobytes()


def pack(keys: list[str], datas: list[bytes]) -> bytes:
    encoded = [k.encode("utf-8") for k in keys]
    return b"".join((_COUNT.pack(len(keys)), _lengths([len(k) for k in encoded]), _lengths([len(d) for d in datas]), *encoded, *datas))


def unpack(payload: bytes, skip: int = 0) -> list[tuple[str, bytes]]:
    """The (partition key, data) pairs of a segment, leaving out the first ``skip``."""
    (count,) = _COUNT.unpack_from(payload)
    lengths = array("I")
    lengths.frombytes(payload[4 : 4 + 8 * count])
    if sys.byteorder != "little":  # pragma: no cover
        lengths.byteswap()
    key_lens, data_lens = lengths[:count], lengths[count:]
    pos = 4 + 8 * count
    keys: list[str] = []
    for n in key_lens:
        keys.append(payload[pos : pos + n].decode("utf-8"))
        pos += n
    out: list[tuple[str, bytes]] = []
    for i, n in enumerate(data_lens):
        if i >= skip:
            out.append((keys[i], payload[pos : pos + n]))
        pos += n
    return out


def layout(payload: bytes) -> tuple[array, array, int]:
    """(key lengths, data lengths, offset of the first key): the keys, then the data, lie back to
    back from that offset, so a columnar reader slices them without a loop per record."""
    (count,) = _COUNT.unpack_from(payload)
    lengths = array("I")
    lengths.frombytes(payload[4 : 4 + 8 * count])
    if sys.byteorder != "little":  # pragma: no cover
        lengths.byteswap()
    return lengths[:count], lengths[count:], 4 + 8 * count
