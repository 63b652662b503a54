"""MkvStreamParser: split a PutMedia body into fragments (one per Cluster), incrementally.

The body is any number of MKV documents back to back (EBML header + Segment of known or unknown
size + Info + Tracks + Clusters + Tags), arriving in chunks split anywhere. A Cluster is
complete when its known size is consumed, or - for an unknown-size cluster - when the next
level-1 element or EBML header starts, or the Segment's known size ends. Each complete cluster
is returned as a standalone MKV document (the stream's EBML header, Info and Tracks + that
cluster) so it can be stored and served on its own.

Element sizes are capped so garbage can never make the parser buffer gigabytes. Blocks and
durations follow ``kvs.blocks``, the rules the fragment reader (``kvs.reader``) plays back by, so a
fragment this parser accepts can always be read (a laced block is refused with ErrorId 4006).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvs import blocks, ebml
from kvs.blocks import read_block
from kvs.errors import FRAGMENT_WITHOUT_FRAMES, INVALID_MKV_DATA, TRACK_NUMBER_MISMATCH, MkvError

#: Largest Cluster accepted (KVS caps fragments at 50 MiB).
DEFAULT_MAX_CLUSTER_BYTES = 64 * 1024 * 1024
#: Largest non-cluster element (EBML header, Info, Tracks, Tags, Cues, Void...).
DEFAULT_MAX_ELEMENT_BYTES = 8 * 1024 * 1024
_TOP, _SEGMENT, _CLUSTER = "top", "segment", "cluster"
#: TrackType of a video track.
VIDEO_TRACK = 1


@dataclass
class ParsedFragment:
    """One complete cluster as a standalone MKV document, with what the store needs to index it."""

    mkv: bytes
    timecode_ms: int
    duration_ms: int
    frame_count: int
    keyframe: bool
    size: int
    codec_id: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class PartialFragment(ParsedFragment):
    """The last cluster of a stream; ``complete`` is False if the stream stopped inside it."""

    complete: bool = True


@dataclass
class _Track:
    number: int
    codec_id: str = ""
    track_type: int = VIDEO_TRACK  # as kvs.reader: a TrackEntry without TrackType is read as video
    default_duration_ns: int = 0


def _invalid(message: str) -> MkvError:
    return MkvError(INVALID_MKV_DATA, message)


def parse_simple_tags(payload: bytes | memoryview) -> dict[str, str]:
    """Name -> value of every SimpleTag (nested ones too) in a Tags element's payload."""
    out: dict[str, str] = {}

    def walk(data: bytes | memoryview) -> None:
        for element_id, child in ebml.iter_children(data):
            if element_id in (ebml.TAG, ebml.SIMPLE_TAG):
                if element_id == ebml.SIMPLE_TAG:
                    name, value = "", ""
                    for cid, cval in ebml.iter_children(child):
                        if cid == ebml.TAG_NAME:
                            name = ebml.read_string(cval)
                        elif cid == ebml.TAG_STRING:
                            value = ebml.read_string(cval)
                    if name:
                        out[name] = value
                walk(child)

    try:
        walk(payload)
    except ebml.EbmlError as exc:
        raise _invalid(f"bad Tags element: {exc}") from exc
    return out


class MkvStreamParser:
    """Feed chunks of a PutMedia body; get back each cluster as soon as it is complete."""

    def __init__(
        self,
        max_cluster_bytes: int = DEFAULT_MAX_CLUSTER_BYTES,
        max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES,
    ) -> None:
        self.max_cluster_bytes = max_cluster_bytes
        self.max_element_bytes = max_element_bytes
        self._buf = bytearray()
        self._pos = 0
        self._state = _TOP
        self._segment_left: int | None = None
        self._cluster_left: int | None = None
        self._ebml_header = b""
        self._info = b""
        self._tracks_raw = b""
        self._tracks: dict[int, _Track] = {}
        self._timecode_scale = 1_000_000
        self._pending_tags: dict[str, str] = {}
        self._error: MkvError | None = None
        self._reset_cluster()
        self.bytes_consumed = 0

    def _reset_cluster(self) -> None:
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._cluster_timecode: int | None = None
        self._blocks: list[tuple[int, bool, int, int]] = []  # (relative tc, keyframe, frames, duration ticks)

    # -- public -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[ParsedFragment]:
        """Parse more of the body; return the clusters it completed.

        If the chunk completes good clusters and then turns bad, those clusters are returned
        first and the ``MkvError`` is raised by the next ``feed``/``finish``: no good data is lost.
        """
        if self._error is not None:
            raise self._error
        self._buf += chunk
        out: list[ParsedFragment] = []
        try:
            while self._step(out):
                pass
        except (ebml.EbmlError, MkvError) as exc:
            error = exc if isinstance(exc, MkvError) else _invalid(str(exc))
            if not out:
                raise error from exc
            self._error = error
            return out
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        return out

    def finish(self) -> PartialFragment | None:
        """End of stream: the cluster in progress (``complete`` if nothing of it is missing)."""
        if self._error is not None:
            raise self._error
        if self._state != _CLUSTER or not self._blocks:
            return None
        complete = self._pos >= len(self._buf) and not self._cluster_left and not self._segment_left
        fragment = self._build()
        self._reset_cluster()
        self._state = _SEGMENT
        return PartialFragment(**vars(fragment), complete=complete)

    @property
    def in_cluster(self) -> bool:
        return self._state == _CLUSTER

    @property
    def error(self) -> MkvError | None:
        """The error the next ``feed``/``finish`` will raise: the stream turned bad after the
        clusters the last ``feed`` returned. A caller can act on it now instead of waiting."""
        return self._error

    @property
    def current_timecode_ms(self) -> int | None:
        """Timecode (ms) of the cluster being read, once its Timecode element has arrived (for acks)."""
        if self._state != _CLUSTER or self._cluster_timecode is None:
            return None
        return int(round(self._cluster_timecode * self._timecode_scale / 1_000_000))

    # -- state machine ------------------------------------------------------------------

    def _consume(self, n: int) -> None:
        self._pos += n
        self.bytes_consumed += n
        if self._segment_left is not None and self._state != _TOP:
            self._segment_left -= n
        if self._cluster_left is not None and self._state == _CLUSTER:
            self._cluster_left -= n

    def _end_cluster(self, out: list[ParsedFragment]) -> None:
        out.append(self._build())
        self._reset_cluster()
        self._cluster_left = None
        self._state = _SEGMENT

    def _step(self, out: list[ParsedFragment]) -> bool:
        if self._state == _CLUSTER and self._cluster_left == 0:
            self._end_cluster(out)
            return True
        if self._state != _TOP and self._segment_left == 0:
            if self._state == _CLUSTER:
                self._end_cluster(out)
            self._state = _TOP
            self._segment_left = None
            return True
        header = ebml.read_header(self._buf, self._pos)
        if header is None:
            return False
        element_id, size, header_len = header
        if self._state == _TOP:
            return self._step_top(element_id, size, header_len)
        if self._state == _SEGMENT:
            return self._step_segment(element_id, size, header_len)
        return self._step_cluster(element_id, size, header_len, out)

    def _whole(self, element_id: int, size: int, header_len: int, limit: int) -> memoryview | None:
        """The payload of a sized element once fully buffered, else None; enforces limits."""
        if size == ebml.UNKNOWN_SIZE:
            raise _invalid(f"element 0x{element_id:X} has an unknown size where one is required")
        if size > limit:
            raise _invalid(f"element 0x{element_id:X} of {size} bytes exceeds the {limit}-byte limit")
        for left, what in ((self._segment_left, "segment"), (self._cluster_left if self._state == _CLUSTER else None, "cluster")):
            if left is not None and header_len + size > left:
                raise _invalid(f"element 0x{element_id:X} runs past the end of its {what}")
        end = self._pos + header_len + size
        if end > len(self._buf):
            return None
        return memoryview(self._buf)[self._pos + header_len : end]

    def _step_top(self, element_id: int, size: int, header_len: int) -> bool:
        if element_id == ebml.EBML:
            payload = self._whole(element_id, size, header_len, 4096)
            if payload is None:
                return False
            doc_type = "matroska"
            for cid, value in ebml.iter_children(payload):
                if cid == ebml.DOC_TYPE:
                    doc_type = ebml.read_string(value)
            if doc_type not in ("matroska", "webm"):
                raise _invalid(f"DocType {doc_type!r} is not matroska")
            self._ebml_header = bytes(self._buf[self._pos : self._pos + header_len + size])
            self._info = self._tracks_raw = b""
            self._tracks = {}
            self._timecode_scale = 1_000_000
            self._pending_tags = {}  # tags never outlive their document
            self._consume(header_len + size)
            return True
        if element_id == ebml.SEGMENT and self._ebml_header:
            self._consume(header_len)
            self._segment_left = None if size == ebml.UNKNOWN_SIZE else size
            self._state = _SEGMENT
            return True
        if element_id == ebml.VOID:
            if self._whole(element_id, size, header_len, self.max_element_bytes) is None:
                return False
            self._consume(header_len + size)
            return True
        raise _invalid(f"expected an EBML header, found element 0x{element_id:X}")

    def _step_segment(self, element_id: int, size: int, header_len: int) -> bool:
        if element_id == ebml.EBML:  # next document after an unknown-size segment
            self._state = _TOP
            self._segment_left = None
            return True
        if element_id not in ebml.SEGMENT_CHILDREN:
            raise _invalid(f"unexpected element 0x{element_id:X} in a Segment")
        if element_id == ebml.CLUSTER:
            if not self._tracks:
                raise _invalid("Cluster before any Tracks element")
            if size != ebml.UNKNOWN_SIZE and size > self.max_cluster_bytes:
                raise _invalid(f"Cluster of {size} bytes exceeds the {self.max_cluster_bytes}-byte limit")
            self._consume(header_len)
            self._state = _CLUSTER
            self._cluster_left = None if size == ebml.UNKNOWN_SIZE else size
            self._reset_cluster()
            return True
        payload = self._whole(element_id, size, header_len, self.max_element_bytes)
        if payload is None:
            return False
        raw = bytes(self._buf[self._pos : self._pos + header_len + size])
        if element_id == ebml.INFO:
            self._info = raw
            for cid, value in ebml.iter_children(payload):
                if cid == ebml.TIMECODE_SCALE:
                    self._timecode_scale = ebml.read_uint(value) or 1_000_000
        elif element_id == ebml.TRACKS:
            self._tracks_raw = raw
            self._tracks = self._parse_tracks(payload)
        elif element_id == ebml.TAGS:
            self._pending_tags.update(parse_simple_tags(payload))
        del payload
        self._consume(header_len + size)
        return True

    def _parse_tracks(self, payload: memoryview) -> dict[int, _Track]:
        tracks: dict[int, _Track] = {}
        for cid, entry in ebml.iter_children(payload):
            if cid != ebml.TRACK_ENTRY:
                continue
            track = _Track(0)
            for fid, value in ebml.iter_children(entry):
                if fid == ebml.TRACK_NUMBER:
                    track.number = ebml.read_uint(value)
                elif fid == ebml.CODEC_ID:
                    track.codec_id = ebml.read_string(value)
                elif fid == ebml.TRACK_TYPE:
                    track.track_type = ebml.read_uint(value)
                elif fid == ebml.DEFAULT_DURATION:
                    track.default_duration_ns = ebml.read_uint(value)
            if track.number:
                tracks[track.number] = track
        if not tracks:
            raise _invalid("Tracks element declares no track")
        return tracks

    def _step_cluster(self, element_id: int, size: int, header_len: int, out: list[ParsedFragment]) -> bool:
        if self._cluster_left is None and (
            element_id == ebml.EBML or (element_id in ebml.SEGMENT_CHILDREN and element_id not in (ebml.VOID, ebml.CRC32))
        ):
            self._end_cluster(out)  # an unknown-size cluster ends where the next level-1 element starts
            return True
        if element_id not in ebml.CLUSTER_CHILDREN:
            raise _invalid(f"unexpected element 0x{element_id:X} in a Cluster")
        payload = self._whole(element_id, size, header_len, self.max_cluster_bytes)
        if payload is None:
            return False
        if self._parts_size + header_len + size > self.max_cluster_bytes:
            raise _invalid(f"Cluster exceeds the {self.max_cluster_bytes}-byte limit")
        if element_id == ebml.CLUSTER_TIMECODE:
            self._cluster_timecode = ebml.read_uint(payload)
        elif element_id == ebml.SIMPLE_BLOCK:
            rel, key, frames = self._parse_block(payload, simple=True)
            self._blocks.append((rel, key, frames, 0))
        elif element_id == ebml.BLOCK_GROUP:
            block: tuple[int, bool, int] | None = None
            duration = 0
            referenced = False
            for cid, value in ebml.iter_children(payload):
                if cid == ebml.BLOCK:
                    block = self._parse_block(value, simple=False)
                elif cid == ebml.BLOCK_DURATION:
                    duration = ebml.read_uint(value)
                elif cid == ebml.REFERENCE_BLOCK:
                    referenced = True
            if block is None:
                raise _invalid("BlockGroup without a Block")
            self._blocks.append((block[0], not referenced, block[2], duration))
        del payload
        if element_id not in (ebml.VOID, ebml.CRC32):  # a CRC would not match the rebuilt cluster
            self._parts.append(bytes(self._buf[self._pos : self._pos + header_len + size]))
            self._parts_size += header_len + size
        self._consume(header_len + size)
        return True

    def _parse_block(self, payload: memoryview, simple: bool) -> tuple[int, bool, int]:
        """``(relative timecode, keyframe, frames)`` (``kvs.blocks``: a laced video block is refused)."""
        block = read_block(payload, simple)
        track = self._tracks.get(block.track)
        if track is None:
            raise MkvError(TRACK_NUMBER_MISMATCH, f"block for track {block.track}, which Tracks does not declare")
        if track.track_type == VIDEO_TRACK:
            block.video_frame(payload)
        return block.relative, block.keyframe, block.frames

    # -- output -------------------------------------------------------------------------

    def _build(self) -> ParsedFragment:
        if not self._blocks:
            raise MkvError(FRAGMENT_WITHOUT_FRAMES, "cluster has no frames")
        if self._cluster_timecode is None:
            raise _invalid("cluster without a Timecode")
        scale_ms = self._timecode_scale / 1_000_000
        track = next((t for t in self._tracks.values() if t.track_type == VIDEO_TRACK), next(iter(self._tracks.values())))
        timecode_ms = int(round(self._cluster_timecode * scale_ms))
        duration = blocks.duration_ms([rel for rel, _, _, _ in self._blocks], scale_ms, track.default_duration_ns, self._blocks[-1][3])
        cluster = ebml.master(ebml.CLUSTER, *self._parts)
        mkv = self._ebml_header + ebml.master(ebml.SEGMENT, self._info, self._tracks_raw, cluster)
        tags, self._pending_tags = self._pending_tags, {}
        return ParsedFragment(
            mkv=mkv,
            timecode_ms=timecode_ms,
            duration_ms=duration,
            frame_count=sum(frames for _, _, frames, _ in self._blocks),
            keyframe=self._blocks[0][1],
            size=len(mkv),
            codec_id=track.codec_id,
            tags=tags,
        )


def parse_fragment(data: bytes) -> ParsedFragment:
    """Parse one standalone MKV document holding exactly one cluster (a stored fragment)."""
    parser = MkvStreamParser()
    fragments = parser.feed(data)
    last = parser.finish()
    if last is not None:
        fragments.append(last)
    if len(fragments) != 1:
        raise _invalid(f"expected one cluster, found {len(fragments)}")
    return fragments[0]
