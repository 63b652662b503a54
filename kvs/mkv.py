"""Build standalone MKV documents: EBML header + Segment(Info, Tracks, one Cluster).

This is the unit everything here passes around (a *fragment*): the agent's writer produces one
per keyframe group, the gateway stores one per PutMedia cluster, and GetMedia, remux and images
read them back. Timecodes are absolute milliseconds (TimecodeScale 1,000,000 ns).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kvs import ebml

TIMECODE_SCALE_NS = 1_000_000
MUXING_APP = "edge-ingest kvs"
CODEC_H264 = "V_MPEG4/ISO/AVC"
CODEC_MJPEG = "V_MJPEG"


def ebml_header() -> bytes:
    return ebml.master(
        ebml.EBML,
        ebml.uint_element(ebml.EBML_VERSION, 1),
        ebml.uint_element(ebml.EBML_READ_VERSION, 1),
        ebml.uint_element(ebml.EBML_MAX_ID_LENGTH, 4),
        ebml.uint_element(ebml.EBML_MAX_SIZE_LENGTH, 8),
        ebml.string_element(ebml.DOC_TYPE, "matroska"),
        ebml.uint_element(ebml.DOC_TYPE_VERSION, 4),
        ebml.uint_element(ebml.DOC_TYPE_READ_VERSION, 2),
    )


def info(duration_ms: float | None = None, segment_uid: bytes | None = None) -> bytes:
    children = [ebml.uint_element(ebml.TIMECODE_SCALE, TIMECODE_SCALE_NS)]
    if segment_uid:
        children.append(ebml.binary_element(ebml.SEGMENT_UID, segment_uid))
    if duration_ms is not None:
        children.append(ebml.float_element(ebml.DURATION, float(duration_ms)))
    children += [ebml.string_element(ebml.MUXING_APP, MUXING_APP), ebml.string_element(ebml.WRITING_APP, MUXING_APP)]
    return ebml.master(ebml.INFO, *children)


@dataclass(frozen=True)
class VideoTrack:
    codec_id: str
    width: int
    height: int
    codec_private: bytes = b""
    name: str = "camera"
    number: int = 1
    default_duration_ns: int = 0

    def to_element(self) -> bytes:
        children = [
            ebml.uint_element(ebml.TRACK_NUMBER, self.number),
            ebml.uint_element(ebml.TRACK_UID, self.number),
            ebml.uint_element(ebml.TRACK_TYPE, 1),
            ebml.string_element(ebml.TRACK_NAME, self.name),
            ebml.string_element(ebml.CODEC_ID, self.codec_id),
        ]
        if self.codec_private:
            children.append(ebml.binary_element(ebml.CODEC_PRIVATE, self.codec_private))
        if self.default_duration_ns:
            children.append(ebml.uint_element(ebml.DEFAULT_DURATION, self.default_duration_ns))
        children.append(
            ebml.master(
                ebml.VIDEO,
                ebml.uint_element(ebml.PIXEL_WIDTH, self.width),
                ebml.uint_element(ebml.PIXEL_HEIGHT, self.height),
            )
        )
        return ebml.master(ebml.TRACKS, ebml.master(ebml.TRACK_ENTRY, *children))


@dataclass(frozen=True)
class Frame:
    """One encoded video frame (one SimpleBlock)."""

    data: bytes
    timestamp_ms: int
    keyframe: bool


def simple_block(track: int, relative_ms: int, keyframe: bool, data: bytes) -> bytes:
    if not -32768 <= relative_ms <= 32767:
        raise ValueError(f"block timecode {relative_ms} ms from its cluster does not fit in 16 bits")
    flags = 0x80 if keyframe else 0x00
    return ebml.element(ebml.SIMPLE_BLOCK, ebml.encode_size(track) + struct.pack(">hB", relative_ms, flags) + data)


def cluster(frames: list[Frame], track: int = 1) -> bytes:
    start = frames[0].timestamp_ms
    blocks = [simple_block(track, f.timestamp_ms - start, f.keyframe, f.data) for f in frames]
    return ebml.master(ebml.CLUSTER, ebml.uint_element(ebml.CLUSTER_TIMECODE, start), *blocks)


def document(*level1: bytes) -> bytes:
    """EBML header + a sized Segment holding the given level-1 elements (already serialized)."""
    return ebml_header() + ebml.master(ebml.SEGMENT, *level1)
