"""Read a stored fragment back into its track description and encoded frames.

Remux (MP4/fMP4) and image extraction start here: no decoding, just the blocks of the one
Cluster with absolute millisecond timestamps, plus the track's codec and parameter sets. Blocks
and the duration are read by ``kvs.blocks``, the same rules ``MkvStreamParser`` accepts
fragments by at ingest; a document with unknown sizes goes through that parser first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvs import blocks, ebml, mkv
from kvs.errors import INVALID_MKV_DATA, MkvError
from kvs.parser import parse_fragment, parse_simple_tags
from kvs.tags import read_tags


@dataclass
class FragmentContent:
    track: mkv.VideoTrack
    frames: list[mkv.Frame]
    timecode_ms: int
    duration_ms: int
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def end_ms(self) -> int:
        return self.timecode_ms + self.duration_ms

    def frame_durations(self, next_start_ms: int | None = None) -> list[int]:
        """Duration of each frame in ms; the last one lasts until the fragment's end (or ``next_start_ms``)."""
        out = [b.timestamp_ms - a.timestamp_ms for a, b in zip(self.frames, self.frames[1:])]
        end = next_start_ms if next_start_ms is not None and next_start_ms > self.frames[-1].timestamp_ms else self.end_ms
        last = end - self.frames[-1].timestamp_ms
        if last <= 0:
            last = out[-1] if out else max(1, self.track.default_duration_ns // 1_000_000) or 33
        return out + [last]


class _NotSized(ValueError):
    """The document uses unknown sizes (a live producer's layout): normalise it with the parser first."""


def read_fragment(data: bytes) -> FragmentContent:
    """Parse one standalone MKV document (as the writer, the parser or the store produce).

    Sized documents (everything stored here) are read directly; anything else goes through
    ``MkvStreamParser`` first, which normalises unknown sizes or raises ``MkvError``.
    """
    try:
        return _read_sized(data)
    except (ebml.EbmlError, MkvError, IndexError):
        pass
    parsed = parse_fragment(data)  # raises MkvError for what is not MKV
    content = _read_sized(parsed.mkv)
    for found in read_tags(data):  # the normalised copy has no Tags; take them from the original
        content.tags.update(found)
    return content


def _read_sized(doc: bytes) -> FragmentContent:
    header = ebml.read_header(doc, 0)
    if header is None or header[0] != ebml.EBML or header[1] == ebml.UNKNOWN_SIZE:
        raise _NotSized("no sized EBML header")
    segment_at = header[2] + header[1]
    seg = ebml.read_header(doc, segment_at)
    if seg is None or seg[0] != ebml.SEGMENT or seg[1] == ebml.UNKNOWN_SIZE:
        raise _NotSized("no sized Segment")
    payload = memoryview(doc)[segment_at + seg[2] : segment_at + seg[2] + seg[1]]
    track: mkv.VideoTrack | None = None
    cluster: memoryview | None = None
    frames: list[mkv.Frame] = []
    scale_ms = 1.0
    timecode_ms = 0
    tags: dict[str, str] = {}
    for element_id, value in ebml.iter_children(payload):  # EbmlError on an unknown-size child
        if element_id == ebml.INFO:
            for cid, cval in ebml.iter_children(value):
                if cid == ebml.TIMECODE_SCALE:
                    scale_ms = (ebml.read_uint(cval) or 1_000_000) / 1_000_000
        elif element_id == ebml.TRACKS:
            track = _read_track(value)
        elif element_id == ebml.TAGS:
            tags.update(parse_simple_tags(value))
        elif element_id == ebml.CLUSTER and not frames:
            cluster = value
    if track is None or cluster is None:
        raise MkvError(INVALID_MKV_DATA, "fragment without a track or frames")
    timecode_ms, frames, duration_ms = _read_cluster(cluster, scale_ms, track)
    if not frames:
        raise MkvError(INVALID_MKV_DATA, "fragment without a track or frames")
    return FragmentContent(track, frames, timecode_ms, duration_ms, tags)


def _read_track(tracks: memoryview) -> mkv.VideoTrack:
    for cid, entry in ebml.iter_children(tracks):
        if cid != ebml.TRACK_ENTRY:
            continue
        fields: dict = {"codec_id": "", "width": 0, "height": 0}
        track_type = 1
        for fid, value in ebml.iter_children(entry):
            if fid == ebml.TRACK_NUMBER:
                fields["number"] = ebml.read_uint(value)
            elif fid == ebml.CODEC_ID:
                fields["codec_id"] = ebml.read_string(value)
            elif fid == ebml.CODEC_PRIVATE:
                fields["codec_private"] = bytes(value)
            elif fid == ebml.TRACK_NAME:
                fields["name"] = ebml.read_string(value)
            elif fid == ebml.DEFAULT_DURATION:
                fields["default_duration_ns"] = ebml.read_uint(value)
            elif fid == ebml.TRACK_TYPE:
                track_type = ebml.read_uint(value)
            elif fid == ebml.VIDEO:
                for vid, vval in ebml.iter_children(value):
                    if vid == ebml.PIXEL_WIDTH:
                        fields["width"] = ebml.read_uint(vval)
                    elif vid == ebml.PIXEL_HEIGHT:
                        fields["height"] = ebml.read_uint(vval)
        if track_type == 1:
            return mkv.VideoTrack(**fields)
    raise MkvError(INVALID_MKV_DATA, "no video track")


def _read_cluster(cluster: memoryview, scale_ms: float, track: mkv.VideoTrack) -> tuple[int, list[mkv.Frame], int]:
    """``(timecode_ms, frames in time order, duration_ms)`` of a cluster's blocks of ``track``."""
    base = 0
    found: list[tuple[int, bytes, bool]] = []  # (relative timecode, frame, keyframe)
    last_duration = 0
    for cid, value in ebml.iter_children(cluster):
        if cid == ebml.CLUSTER_TIMECODE:
            base = ebml.read_uint(value)
        elif cid == ebml.SIMPLE_BLOCK:
            block = blocks.read_block(value, simple=True)
            if block.track == track.number:
                found.append((block.relative, block.video_frame(value), block.keyframe))
                last_duration = 0
        elif cid == ebml.BLOCK_GROUP:
            children = ebml.iter_children(value)
            key = not any(c == ebml.REFERENCE_BLOCK for c, _ in children)
            duration = next((ebml.read_uint(v) for c, v in children if c == ebml.BLOCK_DURATION), 0)
            for c, v in children:
                if c == ebml.BLOCK:
                    block = blocks.read_block(v, simple=False)
                    if block.track == track.number:
                        found.append((block.relative, block.video_frame(v), key))
                        last_duration = duration
    frames = sorted((mkv.Frame(data, int(round((base + rel) * scale_ms)), key) for rel, data, key in found), key=lambda f: f.timestamp_ms)
    duration_ms = blocks.duration_ms([rel for rel, _, _ in found], scale_ms, track.default_duration_ns, last_duration) if found else 0
    return int(round(base * scale_ms)), frames, duration_ms
