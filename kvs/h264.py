"""H.264 bitstream helpers: Annex-B <-> length-prefixed NAL units, and the avcC record.

Encoders and cameras produce Annex-B (NAL units separated by ``00 00 01`` start codes);
Matroska's ``V_MPEG4/ISO/AVC`` and MP4 want each NAL unit prefixed by its 4-byte length, with
the SPS/PPS parameter sets in an ``AVCDecoderConfigurationRecord`` (avcC) as CodecPrivate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B buffer (start codes removed, empty units dropped)."""
    nals: list[bytes] = []
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        return [data] if data else []
    start = i + 3
    while True:
        j = data.find(b"\x00\x00\x01", start)
        if j < 0:
            nal = data[start:n]
            nals.append(nal.rstrip(b"\x00") if nal.endswith(b"\x00") else nal)
            break
        end = j - 1 if j > 0 and data[j - 1] == 0 else j
        if end > start:
            nals.append(data[start:end])
        start = j + 3
    return [nal for nal in nals if nal]


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def length_prefixed(nals: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(nal)) + nal for nal in nals)


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of a length-prefixed (AVCC) sample; raises ValueError if the lengths don't add up."""
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise ValueError("truncated NAL length")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise ValueError("NAL length runs past the sample")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else -1


@dataclass(frozen=True)
class AvcConfig:
    """The parameter sets of an H.264 stream (what avcC carries)."""

    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    length_size: int = 4

    @property
    def profile(self) -> int:
        return self.sps[0][1]

    @property
    def compatibility(self) -> int:
        return self.sps[0][2]

    @property
    def level(self) -> int:
        return self.sps[0][3]

    @property
    def codec_string(self) -> str:
        """RFC 6381 codec string for MP4/MSE, e.g. ``avc1.42c01e``."""
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"

    def to_avcc(self) -> bytes:
        """Serialize as an AVCDecoderConfigurationRecord (ISO/IEC 14496-15)."""
        out = bytearray([1, self.profile, self.compatibility, self.level, 0xFC | (self.length_size - 1)])
        out.append(0xE0 | len(self.sps))
        for sps in self.sps:
            out += struct.pack(">H", len(sps)) + sps
        out.append(len(self.pps))
        for pps in self.pps:
            out += struct.pack(">H", len(pps)) + pps
        return bytes(out)

    @classmethod
    def from_avcc(cls, record: bytes) -> "AvcConfig":
        if len(record) < 7 or record[0] != 1:
            raise ValueError("not an avcC record")
        length_size = (record[4] & 0x03) + 1
        pos = 6
        sps: list[bytes] = []
        for _ in range(record[5] & 0x1F):
            size = struct.unpack(">H", record[pos : pos + 2])[0]
            sps.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
        pps: list[bytes] = []
        count = record[pos]
        pos += 1
        for _ in range(count):
            size = struct.unpack(">H", record[pos : pos + 2])[0]
            pps.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
        if not sps or not pps or pos > len(record):
            raise ValueError("avcC record without SPS/PPS")
        return cls(tuple(sps), tuple(pps), length_size)
