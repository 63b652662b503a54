"""MkvStreamParser: PutMedia bodies in any chunking, producer-SDK style streams, and bad input."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvs import FragmentWriter, MkvError, MkvStreamParser, ParsedFragment, PartialFragment, parse_fragment
from kvs import ebml, mkv
from kvs.reader import read_fragment

T0 = 1_700_000_000_000


def _fragments(n_frames: int = 25, fps: int = 10) -> list:
    writer = FragmentWriter(96, 64, fps, fragment_seconds=1.0)
    out = []
    for i in range(n_frames):
        img = np.full((64, 96, 3), (i * 9) % 255, np.uint8)
        out += writer.add_frame(img, T0 + i * 100)
    return out + writer.flush()


FRAGMENTS = _fragments()
BODY = b"".join(f.data for f in FRAGMENTS)


def feed_all(parser: MkvStreamParser, data: bytes, cuts: list[int]) -> list[ParsedFragment]:
    out: list[ParsedFragment] = []
    last = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += parser.feed(data[last:cut])
        last = cut
    return out


def test_writer_documents_back_to_back() -> None:
    parser = MkvStreamParser()
    out = parser.feed(BODY)
    # the last document's cluster has a known size, so it is complete without waiting for more
    assert [f.frame_count for f in out] == [f.frame_count for f in FRAGMENTS] == [10, 10, 5]
    assert [f.timecode_ms for f in out] == [f.start_ms for f in FRAGMENTS]
    assert [f.duration_ms for f in out] == [f.duration_ms for f in FRAGMENTS]
    assert all(f.keyframe and f.codec_id == "V_MPEG4/ISO/AVC" and f.size == len(f.mkv) for f in out)
    assert parser.finish() is None
    for parsed in out:
        with av.open(io.BytesIO(parsed.mkv)) as container:
            assert len(list(container.decode(video=0))) == parsed.frame_count


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_chunks_split_anywhere(cuts: list[int]) -> None:
    out = feed_all(MkvStreamParser(), BODY, cuts)
    assert [(f.timecode_ms, f.frame_count, f.mkv) for f in out] == [
        (g.timecode_ms, g.frame_count, g.mkv) for g in MkvStreamParser().feed(BODY)
    ]


def test_byte_by_byte() -> None:
    parser = MkvStreamParser()
    out: list[ParsedFragment] = []
    for i in range(len(FRAGMENTS[0].data)):
        out += parser.feed(FRAGMENTS[0].data[i : i + 1])
    assert len(out) == 1 and out[0].frame_count == 10


def _track_and_frames() -> tuple[bytes, list[list[mkv.Frame]]]:
    """The Tracks element and per-fragment frames of FRAGMENTS, re-read from the writer's output."""
    groups = []
    tracks = b""
    for fragment in FRAGMENTS:
        segment = ebml.iter_children(fragment.data[len(mkv.ebml_header()) :])[0][1]
        frames = []
        for element_id, payload in ebml.iter_children(segment):
            if element_id == ebml.TRACKS:
                tracks = ebml.master(ebml.TRACKS, bytes(payload))
            if element_id == ebml.CLUSTER:
                children = ebml.iter_children(payload)
                base = ebml.read_uint(children[0][1])
                for cid, block in children[1:]:
                    rel, flags = struct.unpack(">hB", bytes(block[1:4]))
                    frames.append(mkv.Frame(bytes(block[4:]), base + rel, bool(flags & 0x80)))
        groups.append(frames)
    return tracks, groups


def tags_element(tags: dict[str, str]) -> bytes:
    simple = [
        ebml.master(ebml.SIMPLE_TAG, ebml.string_element(ebml.TAG_NAME, k), ebml.string_element(ebml.TAG_STRING, v))
        for k, v in tags.items()
    ]
    return ebml.master(ebml.TAGS, ebml.master(ebml.TAG, ebml.master(ebml.TARGETS), *simple))


def producer_sdk_stream() -> bytes:
    """Like the KVS producer SDK: one unknown-size Segment, unknown-size Clusters, Tags in between."""
    tracks, groups = _track_and_frames()
    out = mkv.ebml_header() + ebml.encode_id(ebml.SEGMENT) + ebml.UNKNOWN_SIZE_VINT + mkv.info() + tracks
    for i, frames in enumerate(groups):
        out += tags_element({"FRAGMENT_INDEX": str(i), "SOURCE": "test"})
        cluster = mkv.cluster(frames)
        header = ebml.read_header(cluster, 0)
        assert header is not None
        out += ebml.encode_id(ebml.CLUSTER) + ebml.UNKNOWN_SIZE_VINT + cluster[header[2] :]
    return out


def test_producer_sdk_style_unknown_sizes_and_tags() -> None:
    stream = producer_sdk_stream()
    parser = MkvStreamParser()
    out = feed_all(parser, stream, list(range(0, len(stream), 1000)))
    # an unknown-size cluster is complete only when the next element starts
    assert [f.frame_count for f in out] == [10, 10]
    assert [f.tags for f in out] == [{"FRAGMENT_INDEX": "0", "SOURCE": "test"}, {"FRAGMENT_INDEX": "1", "SOURCE": "test"}]
    last = parser.finish()
    assert isinstance(last, PartialFragment) and last.complete and last.frame_count == 5
    assert last.tags == {"FRAGMENT_INDEX": "2", "SOURCE": "test"}
    for parsed in [*out, last]:
        again = parse_fragment(parsed.mkv)  # each output is a standalone document
        assert again.frame_count == parsed.frame_count and again.timecode_ms == parsed.timecode_ms
        with av.open(io.BytesIO(parsed.mkv)) as container:
            assert len(list(container.decode(video=0))) == parsed.frame_count


def test_stream_cut_inside_a_cluster_is_partial() -> None:
    stream = producer_sdk_stream()
    parser = MkvStreamParser()
    out = parser.feed(stream[:-50])
    last = parser.finish()
    assert len(out) == 2 and last is not None
    assert not last.complete and last.frame_count == 4  # the fifth frame was cut off


def test_known_size_segment_end_closes_unknown_size_cluster() -> None:
    tracks, groups = _track_and_frames()
    cluster = mkv.cluster(groups[0])
    body = cluster[ebml.read_header(cluster, 0)[2] :]  # type: ignore[index]
    segment_payload = mkv.info() + tracks + ebml.encode_id(ebml.CLUSTER) + ebml.UNKNOWN_SIZE_VINT + body
    doc = mkv.ebml_header() + ebml.master(ebml.SEGMENT, segment_payload)
    parser = MkvStreamParser()
    out = parser.feed(doc + FRAGMENTS[1].data)
    assert [f.frame_count for f in out] == [10, 10]


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n" * 4,
        b"\x00" * 64,
        mkv.ebml_header() + b"\x99\x99\x99\x99" * 8,
        # a Cluster before any Tracks
        mkv.ebml_header() + ebml.master(ebml.SEGMENT, mkv.info(), ebml.master(ebml.CLUSTER, ebml.uint_element(ebml.CLUSTER_TIMECODE, 1))),
    ],
)
def test_garbage_is_4006(data: bytes) -> None:
    with pytest.raises(MkvError) as info:
        MkvStreamParser().feed(data)
    assert info.value.error_id == 4006


def test_huge_declared_size_is_refused_without_buffering() -> None:
    tracks, _ = _track_and_frames()
    head = mkv.ebml_header() + ebml.encode_id(ebml.SEGMENT) + ebml.UNKNOWN_SIZE_VINT + mkv.info() + tracks
    huge_cluster = ebml.encode_id(ebml.CLUSTER) + ebml.encode_size(200 * 1024 * 1024 * 1024)
    with pytest.raises(MkvError) as info:
        MkvStreamParser().feed(head + huge_cluster)
    assert info.value.error_id == 4006
    huge_block = ebml.encode_id(ebml.CLUSTER) + ebml.UNKNOWN_SIZE_VINT + ebml.encode_id(ebml.SIMPLE_BLOCK) + ebml.encode_size(2**40)
    with pytest.raises(MkvError):
        MkvStreamParser(max_cluster_bytes=1024 * 1024).feed(head + huge_block)


def test_block_for_unknown_track_is_4010() -> None:
    tracks, groups = _track_and_frames()
    bad = ebml.master(
        ebml.CLUSTER, ebml.uint_element(ebml.CLUSTER_TIMECODE, T0), mkv.simple_block(2, 0, True, groups[0][0].data)
    )
    with pytest.raises(MkvError) as info:
        MkvStreamParser().feed(mkv.document(mkv.info(), tracks, bad))
    assert info.value.error_id == 4010


def test_cluster_without_frames_is_4011() -> None:
    tracks, _ = _track_and_frames()
    empty = ebml.master(ebml.CLUSTER, ebml.uint_element(ebml.CLUSTER_TIMECODE, T0))
    with pytest.raises(MkvError) as info:
        MkvStreamParser().feed(mkv.document(mkv.info(), tracks, empty))
    assert info.value.error_id == 4011


def test_vint_round_trip() -> None:
    for value in [0, 1, 126, 127, 128, 16382, 16383, 2**20, 2**35, 2**56 - 2]:
        encoded = ebml.encode_size(value)
        assert ebml.read_size(encoded, 0) == (value, len(encoded))
    assert ebml.read_size(ebml.UNKNOWN_SIZE_VINT, 0) == (ebml.UNKNOWN_SIZE, 8)
    assert ebml.read_size(b"\xff", 0) == (ebml.UNKNOWN_SIZE, 1)
    assert ebml.read_size(b"\x40", 0) is None  # needs its second byte
    with pytest.raises(ebml.EbmlError):
        ebml.read_size(b"\x00\x01", 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=len(BODY) - 1), st.integers(min_value=0, max_value=255)), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=len(BODY)),
)
def test_corrupted_bodies_only_raise_mkv_error(flips: list[tuple[int, int]], cut: int) -> None:
    """Any corruption is either still parseable or an MkvError - never another exception."""
    data = bytearray(BODY[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    parser = MkvStreamParser(max_cluster_bytes=1024 * 1024, max_element_bytes=64 * 1024)
    try:
        for i in range(0, len(data), 500):
            for fragment in parser.feed(bytes(data[i : i + 500])):
                assert fragment.frame_count >= 1 and fragment.size == len(fragment.mkv)
        parser.finish()
    except MkvError as exc:
        assert exc.error_id in (4006, 4010, 4011)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000))
def test_random_bytes_are_rejected_cleanly(data: bytes) -> None:
    parser = MkvStreamParser()
    try:
        parser.feed(data)
        parser.finish()
    except MkvError:
        pass


def test_read_tags_walks_unknown_size_segments_and_clusters() -> None:
    from kvs.tags import read_tags

    stream = producer_sdk_stream()
    assert read_tags(stream) == [{"FRAGMENT_INDEX": "2", "SOURCE": "test"}]  # one document, later tags win
    assert read_tags(stream + FRAGMENTS[0].data) == [{"FRAGMENT_INDEX": "2", "SOURCE": "test"}, {}]


def test_good_clusters_before_garbage_in_one_chunk_are_kept() -> None:
    parser = MkvStreamParser()
    out = parser.feed(FRAGMENTS[0].data + FRAGMENTS[1].data + b"\x00garbage")
    assert [f.frame_count for f in out] == [10, 10]  # returned before the error
    with pytest.raises(MkvError) as info:
        parser.feed(b"")
    assert info.value.error_id == 4006
    with pytest.raises(MkvError):
        parser.finish()


def test_current_timecode_while_inside_a_cluster() -> None:
    parser = MkvStreamParser()
    assert parser.current_timecode_ms is None
    parser.feed(FRAGMENTS[1].data[:-100])
    assert parser.in_cluster and parser.current_timecode_ms == FRAGMENTS[1].start_ms


def _laced(block: bytes) -> bytes:
    """``block`` (a SimpleBlock element) with Xiph lacing flagged and a lace header of one frame."""
    header = ebml.read_header(block, 0)
    assert header is not None
    payload = block[header[2] :]
    return ebml.element(ebml.SIMPLE_BLOCK, payload[:3] + bytes([payload[3] | 0x02, 0]) + payload[4:])


def test_laced_video_block_is_4006_at_ingest_and_unreadable_alike() -> None:
    """Issue 15: the parser used to accept laced video blocks that the fragment reader refuses,
    so a fragment could be PERSISTED and then fail in GetClip/HLS. Both now apply kvs.blocks."""
    tracks, groups = _track_and_frames()
    frames = groups[0]
    blocks = [mkv.simple_block(1, f.timestamp_ms - frames[0].timestamp_ms, f.keyframe, f.data) for f in frames]
    cluster = ebml.master(ebml.CLUSTER, ebml.uint_element(ebml.CLUSTER_TIMECODE, frames[0].timestamp_ms), blocks[0], _laced(blocks[1]), *blocks[2:])
    doc = mkv.document(mkv.info(), tracks, cluster)
    with pytest.raises(MkvError) as info:
        MkvStreamParser().feed(doc)
    assert info.value.error_id == 4006
    with pytest.raises(MkvError) as info:
        read_fragment(doc)
    assert info.value.error_id == 4006


def test_laced_audio_blocks_pass_ingest_and_playback_reads_the_video() -> None:
    tracks, groups = _track_and_frames()
    header = ebml.read_header(tracks, 0)
    assert header is not None
    entries = [bytes(p) for _, p in ebml.iter_children(tracks[header[2] :])]
    audio = ebml.master(ebml.TRACK_ENTRY, ebml.uint_element(ebml.TRACK_NUMBER, 2), ebml.uint_element(ebml.TRACK_TYPE, 2),
                        ebml.string_element(ebml.CODEC_ID, "A_AAC"))
    both = ebml.master(ebml.TRACKS, *(ebml.element(ebml.TRACK_ENTRY, e) for e in entries), audio)
    frames = groups[0]
    blocks = [mkv.simple_block(1, f.timestamp_ms - frames[0].timestamp_ms, f.keyframe, f.data) for f in frames]
    laced_audio = _laced(mkv.simple_block(2, 0, True, b"\x21\x10\x04"))
    cluster = ebml.master(ebml.CLUSTER, ebml.uint_element(ebml.CLUSTER_TIMECODE, frames[0].timestamp_ms), laced_audio, *blocks)
    [parsed] = MkvStreamParser().feed(mkv.document(mkv.info(), both, cluster))
    content = read_fragment(parsed.mkv)
    assert [f.data for f in content.frames] == [f.data for f in frames]
    assert content.duration_ms == parsed.duration_ms
