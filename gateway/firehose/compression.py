"""``CompressionFormat``: how an object's bytes are packed, and the extension its key gets.

    UNCOMPRESSED    as is
    GZIP            one gzip member (``.gz``), level ``[firehose] gzip_level``
    ZIP             a zip archive holding one entry named like the object (``.zip``)
    Snappy          the snappy *framing* format (``.snappy``), what ``snzip`` and most readers take
    HADOOP_SNAPPY   Hadoop's block format (``.snappy``): per 256 KiB block a 4-byte big-endian
                    raw length, then 4-byte length + raw snappy chunks (Hadoop's SnappyCodec)
    ZSTD            one zstd frame (``.zst``): not a Firehose format, used by data-stream channels

zlib and cramjam release the GIL while they work, so compression in the delivery threads runs
beside the event loop.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import cramjam

EXTENSIONS = {"UNCOMPRESSED": "", "GZIP": ".gz", "ZIP": ".zip", "Snappy": ".snappy", "HADOOP_SNAPPY": ".snappy", "ZSTD": ".zst"}
HADOOP_BLOCK = 256 * 1024


def compress(data: bytes, fmt: str, level: int = 6, entry_name: str = "data") -> bytes:
    if fmt == "GZIP":
        packer = zlib.compressobj(level, zlib.DEFLATED, 31)
        return packer.compress(data) + packer.flush()
    if fmt == "ZIP":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
            archive.writestr(entry_name, data)
        return out.getvalue()
    if fmt == "Snappy":
        return bytes(cramjam.snappy.compress(data))
    if fmt == "ZSTD":
        return bytes(cramjam.zstd.compress(data))
    if fmt == "HADOOP_SNAPPY":
        parts: list[bytes] = []
        for start in range(0, len(data), HADOOP_BLOCK):
            block = data[start : start + HADOOP_BLOCK]
            chunk = bytes(cramjam.snappy.compress_raw(block))
            parts.append(struct.pack(">II", len(block), len(chunk)) + chunk)
        return b"".join(parts)
    return data


def decompress(data: bytes, fmt: str) -> bytes:
    """The inverse (tests, the HTTP receiver side of GZIP bodies)."""
    if fmt == "GZIP":
        return zlib.decompress(data, 47)
    if fmt == "ZIP":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return b"".join(archive.read(name) for name in archive.namelist())
    if fmt == "Snappy":
        return bytes(cramjam.snappy.decompress(data))
    if fmt == "ZSTD":
        return bytes(cramjam.zstd.decompress(data))
    if fmt == "HADOOP_SNAPPY":
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            raw_len, chunk_len = struct.unpack_from(">II", data, pos)
            pos += 8
            out.append(bytes(cramjam.snappy.decompress_raw(data[pos : pos + chunk_len])))
            pos += chunk_len
        return b"".join(out)
    return data
