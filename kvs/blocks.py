"""One definition of a fragment's frames, for every MKV reader in ``kvs``.

A fragment is read twice: by ``MkvStreamParser`` when PutMedia takes it in (it decides whether the
fragment is PERSISTED) and by ``kvs.reader`` when GetClip, GetImages, HLS or DASH play it back. Both
read blocks and measure durations here, so whatever ingest accepts, playback can read:

- A block is ``track (vint) | relative timecode (int16) | flags | frame``. A laced block (several
  frames in one block, flags bits 1-2) on a *video* track is refused with ErrorId 4006 (invalid
  MKV data): KVS producers never lace video, and such a fragment could not be remuxed or played.
  Other tracks (laced audio is common) are not played back and pass.
- A fragment lasts from its first frame (or its timecode, if a frame starts before it) to its
  last frame plus one frame: the track's DefaultDuration, else the last BlockDuration, else the
  median gap between frames.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from kvs import ebml
from kvs.errors import INVALID_MKV_DATA, MkvError

KEYFRAME = 0x80
LACING = 0x06


@dataclass(frozen=True)
class Block:
    track: int
    #: Timecode relative to the cluster's, in TimecodeScale ticks.
    relative: int
    #: A Block (in a BlockGroup) says nothing about keyframes: True here, the group decides.
    keyframe: bool
    #: Where the frame data starts in the payload.
    offset: int
    #: Frames in the block (more than one only when laced).
    frames: int
    #: The block uses lacing: its payload starts with a lace header, not a frame.
    laced: bool

    def video_frame(self, payload: bytes | memoryview) -> bytes:
        """The frame of a block on a video track; ``MkvError`` (4006) if the block is laced."""
        if self.laced:
            raise MkvError(INVALID_MKV_DATA, "laced video blocks are not supported")
        return bytes(payload[self.offset :])


def read_block(payload: bytes | memoryview, simple: bool) -> Block:
    """The header of a Block or SimpleBlock payload; ``MkvError`` (4006) if it is truncated."""
    got = ebml.read_size(payload, 0)
    if got is None or len(payload) < got[1] + 3:
        raise MkvError(INVALID_MKV_DATA, "truncated block header")
    track, n = got
    flags = payload[n + 2]
    frames = payload[n + 3] + 1 if flags & LACING and len(payload) > n + 3 else 1
    relative = int.from_bytes(payload[n : n + 2], "big", signed=True)
    return Block(track, relative, bool(flags & KEYFRAME) if simple else True, n + 3, frames, bool(flags & LACING))


def duration_ms(relative: list[int], scale_ms: float, default_duration_ns: int = 0, last_block_duration: int = 0) -> int:
    """How long a cluster lasts, from its frames' timecodes relative to the cluster's (in ticks
    of ``scale_ms`` milliseconds): to the last frame, plus one frame."""
    times = sorted(set(relative))
    if default_duration_ns:
        frame_ms = default_duration_ns / 1_000_000
    elif last_block_duration:
        frame_ms = last_block_duration * scale_ms
    elif len(times) > 1:
        frame_ms = statistics.median(b - a for a, b in zip(times, times[1:])) * scale_ms
    else:
        frame_ms = 0
    return max(0, int(round((times[-1] - min(0, times[0])) * scale_ms + frame_ms)))
