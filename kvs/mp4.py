"""ISO BMFF (MP4) boxes for one H.264 video track: progressive MP4 and fragmented MP4.

Written by hand (no re-encoding, no muxer) so that timestamps are exactly the fragment's and
segment boundaries are exactly the fragments': an fMP4 init segment (ftyp+moov with mvex)
plus one ``moof+mdat`` media segment per fragment serves HLS (EXT-X-MAP) and the browser's
Media Source Extensions; a progressive ``ftyp+moov+mdat`` file serves GetClip.
Timescale is 1000 (milliseconds), like the MKV fragments.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TIMESCALE = 1000
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
#: trun sample flags: a sync sample depends on nothing; others depend on earlier samples.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000


@dataclass(frozen=True)
class Sample:
    data: bytes
    duration: int  # in TIMESCALE units
    keyframe: bool


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def ftyp(fragmented: bool) -> bytes:
    brands = [b"isom", b"iso6", b"avc1", b"mp41"] if fragmented else [b"isom", b"iso2", b"avc1", b"mp41"]
    return box(b"ftyp", b"isom", struct.pack(">I", 0x200), *brands)


def _avc1(width: int, height: int, avcc: bytes) -> bytes:
    entry = (
        b"\x00" * 6
        + struct.pack(">H", 1)  # data_reference_index
        + b"\x00" * 16
        + struct.pack(">HHIIIH", width, height, 0x00480000, 0x00480000, 0, 1)
        + b"\x00" * 32  # compressorname
        + struct.pack(">Hh", 0x0018, -1)
    )
    return box(b"avc1", entry, box(b"avcC", avcc))


def _stbl(width: int, height: int, avcc: bytes, tables: list[bytes]) -> bytes:
    stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1), _avc1(width, height, avcc))
    return box(b"stbl", stsd, *tables)


def _trak(width: int, height: int, duration: int, stbl: bytes) -> bytes:
    tkhd = full_box(
        b"tkhd", 0, 0x3,
        struct.pack(">IIIII", 0, 0, 1, 0, duration),
        b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, duration, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, b"vide"), b"\x00" * 12, b"VideoHandler\x00")
    vmhd = full_box(b"vmhd", 0, 1, b"\x00" * 8)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    minf = box(b"minf", vmhd, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def _mvhd(duration: int) -> bytes:
    return full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, TIMESCALE, duration),
        struct.pack(">IH", 0x00010000, 0x0100),
        b"\x00" * 10,
        _MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),
    )


def init_segment(width: int, height: int, avcc: bytes) -> bytes:
    """ftyp + moov for fragmented MP4: empty sample tables, a ``trex`` announcing movie fragments."""
    empty = [
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    ]
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    moov = box(b"moov", _mvhd(0), _trak(width, height, 0, _stbl(width, height, avcc, empty)), mvex)
    return ftyp(fragmented=True) + moov


def media_segment(samples: list[Sample], sequence: int, base_decode_time: int) -> bytes:
    """moof + mdat for one fragment; ``base_decode_time`` places it on the presentation timeline."""
    if not samples:
        raise ValueError("a media segment needs at least one sample")
    entries = b"".join(
        struct.pack(">III", s.duration, len(s.data), SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS)
        for s in samples
    )
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1))  # default-base-is-moof
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", base_decode_time))

    def moof(data_offset: int) -> bytes:
        trun = full_box(b"trun", 0, 0x000701, struct.pack(">Ii", len(samples), data_offset), entries)
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), box(b"traf", tfhd, tfdt, trun))

    size = len(moof(0))
    mdat = box(b"mdat", *(s.data for s in samples))
    return moof(size + 8) + mdat


def progressive_header(width: int, height: int, avcc: bytes, table: list[tuple[int, int, bool]]) -> bytes:
    """ftyp + moov + mdat header of a plain MP4 whose samples are ``(size, duration, keyframe)``.

    The sample data follows the header in order, so a clip can be streamed fragment by fragment
    once its sample table is known.
    """
    if not table:
        raise ValueError("an MP4 needs at least one sample")
    duration = sum(d for _, d, _ in table)
    stts_runs: list[list[int]] = []
    for _, d, _ in table:
        if stts_runs and stts_runs[-1][1] == d:
            stts_runs[-1][0] += 1
        else:
            stts_runs.append([1, d])
    stts = full_box(b"stts", 0, 0, struct.pack(">I", len(stts_runs)), *(struct.pack(">II", n, d) for n, d in stts_runs))
    keys = [i + 1 for i, (_, _, key) in enumerate(table) if key]
    stss = full_box(b"stss", 0, 0, struct.pack(">I", len(keys)), *(struct.pack(">I", k) for k in keys))
    stsc = full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(table), 1))
    stsz = full_box(b"stsz", 0, 0, struct.pack(">II", 0, len(table)), *(struct.pack(">I", size) for size, _, _ in table))
    mdat_payload = sum(size for size, _, _ in table)
    large = mdat_payload + 16 > 0xFFFFFFFF

    def moov(offset: int) -> bytes:
        chunk = full_box(b"co64", 0, 0, struct.pack(">IQ", 1, offset)) if large else full_box(b"stco", 0, 0, struct.pack(">II", 1, offset))
        stbl = _stbl(width, height, avcc, [stts, stss, stsc, stsz, chunk])
        return box(b"moov", _mvhd(duration), _trak(width, height, duration, stbl))

    head = ftyp(fragmented=False)
    mdat_header = struct.pack(">I4sQ", 1, b"mdat", mdat_payload + 16) if large else struct.pack(">I4s", mdat_payload + 8, b"mdat")
    offset = len(head) + len(moov(0)) + len(mdat_header)
    return head + moov(offset) + mdat_header


def progressive(width: int, height: int, avcc: bytes, samples: list[Sample]) -> bytes:
    """A plain MP4 file (ftyp + moov + mdat): what GetClip returns."""
    table = [(len(s.data), s.duration, s.keyframe) for s in samples]
    return progressive_header(width, height, avcc, table) + b"".join(s.data for s in samples)
