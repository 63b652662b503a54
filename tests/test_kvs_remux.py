"""Remux without re-encoding: MP4 clips, fMP4 + HLS playlists read by FFmpeg, tags, images."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from kvs import FragmentWriter, ebml, images, mkv, playlist, remux, tags
from kvs.parser import MkvStreamParser
from kvs.reader import read_fragment

T0 = 1_700_000_000_000


def make_fragments(n: int = 35, fps: int = 10, start: int = T0, codec: str = "h264") -> list:
    writer = FragmentWriter(160, 120, fps, fragment_seconds=1.0, codec=codec)
    out = []
    for i in range(n):
        img = np.zeros((120, 160, 3), np.uint8)
        img[:, :, 2] = (i * 7) % 256  # red ramps with the frame index
        ts = start + i * (1000 // fps)
        if codec == "h264":
            out += writer.add_frame(img, ts)
        else:
            out += writer.add_packet(cv2.imencode(".jpg", img)[1].tobytes(), ts, True)
    return out + writer.flush()


FRAGMENTS = make_fragments()


def decode_all(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def test_reader_round_trip() -> None:
    content = read_fragment(FRAGMENTS[1].data)
    assert content.track.codec_id == mkv.CODEC_H264 and (content.track.width, content.track.height) == (160, 120)
    assert [f.timestamp_ms for f in content.frames] == [T0 + 1000 + i * 100 for i in range(10)]
    assert content.frames[0].keyframe and not content.frames[1].keyframe
    assert content.frame_durations() == [100] * 10


def test_mp4_clip_decodes_with_all_frames_and_duration() -> None:
    clip = remux.fragments_to_mp4([f.data for f in FRAGMENTS])
    assert clip[4:8] == b"ftyp" and b"moov" in clip[:4096]
    with av.open(io.BytesIO(clip)) as container:
        stream = container.streams.video[0]
        assert container.format.name.startswith("mov,mp4")
        frames = list(container.decode(stream))
        assert len(frames) == 35
        assert container.duration == pytest.approx(3_500_000, abs=1000)
        assert [round(f.pts * f.time_base * 1000) for f in frames] == [i * 100 for i in range(35)]
        assert frames[0].key_frame and frames[10].key_frame
        assert (frames[0].width, frames[0].height) == (160, 120)


def test_mp4_clip_closes_a_gap() -> None:
    later = make_fragments(10, start=T0 + 60_000)
    clip = remux.mp4_clip([read_fragment(FRAGMENTS[0].data), read_fragment(later[0].data)])
    frames = decode_all(clip)
    assert len(frames) == 20
    # the first fragment keeps its own 1 s and the second follows at once: a minute-long gap is
    # neither a frozen frame nor dead time in the clip
    assert round(frames[10].pts * frames[10].time_base * 1000) == 1000


def test_mjpeg_cannot_become_mp4() -> None:
    mjpeg = make_fragments(5, codec="mjpeg-passthrough")
    with pytest.raises(remux.UnsupportedCodecError):
        remux.fragments_to_mp4([mjpeg[0].data])


def test_hls_vod_from_files_plays_in_ffmpeg(tmp_path: Path) -> None:
    contents = [read_fragment(f.data) for f in FRAGMENTS]
    (tmp_path / "init.mp4").write_bytes(remux.init_segment(contents[0]))
    segments = []
    for i, content in enumerate(contents):
        name = f"seg{i}.m4s"
        (tmp_path / name).write_bytes(remux.media_segment(content, i + 1, base_ms=T0))
        segments.append(playlist.Segment(name, content.timecode_ms, content.duration_ms))
    text = playlist.media_playlist(segments, "init.mp4", "VOD")
    assert "#EXT-X-ENDLIST" in text and "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z" in text
    assert "#EXT-X-DISCONTINUITY\n" not in text
    (tmp_path / "media.m3u8").write_text(text)
    codecs = remux.codec_string(contents[0])
    assert codecs.startswith("avc1.42")  # constrained baseline from ultrafast
    (tmp_path / "master.m3u8").write_text(playlist.master_playlist("media.m3u8", codecs, 160, 120, 200_000))
    with av.open(str(tmp_path / "master.m3u8")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 35
    assert [round(f.pts * f.time_base * 1000) for f in frames][:3] == [0, 100, 200]


def test_playlist_live_window_and_discontinuity() -> None:
    segs = [playlist.Segment(f"s{i}", T0 + i * 1000, 1000) for i in range(3)] + [playlist.Segment("late", T0 + 9000, 1000)]
    text = playlist.media_playlist(segs[1:], "init", "LIVE", media_sequence=1)
    assert "#EXT-X-PLAYLIST-TYPE" not in text and "#EXT-X-ENDLIST" not in text
    assert "#EXT-X-MEDIA-SEQUENCE:1" in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1 == playlist.count_discontinuities(segs)
    assert text.count("#EXT-X-PROGRAM-DATE-TIME") == 2  # at the start and after the gap
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist.media_playlist(segs, "init", "EVENT")
    with pytest.raises(ValueError):
        playlist.media_playlist(segs, "init", "LOOP")


def test_dash_mpd_plays_in_ffmpeg(tmp_path: Path) -> None:
    contents = [read_fragment(f.data) for f in FRAGMENTS]
    (tmp_path / "init.mp4").write_bytes(remux.init_segment(contents[0]))
    segments = []
    for i, content in enumerate(contents):
        (tmp_path / f"seg{i + 1}.m4s").write_bytes(remux.media_segment(content, i + 1, base_ms=T0))
        segments.append(playlist.Segment(f"seg{i + 1}.m4s", content.timecode_ms, content.duration_ms))
    mpd = playlist.dash_mpd(
        segments, "init.mp4", "seg$Number$.m4s", remux.codec_string(contents[0]), 160, 120, 200_000, base_ms=T0
    )
    (tmp_path / "stream.mpd").write_text(mpd)
    # PyAV's bundled FFmpeg cannot open MPDs; the system FFmpeg (ffprobe) can
    probe = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"]
    out = subprocess.run([*probe, str(tmp_path / "stream.mpd")], capture_output=True, text=True, timeout=60)
    assert set(out.stdout.split()) == {"35"}, out.stderr  # listed per program and per stream


def test_kvs_tags_layout_and_round_trip() -> None:
    values = tags.fragment_tags("91343852333181432392682062607743920146", T0 + 50, T0)
    values[tags.MILLIS_BEHIND_NOW] = "1234"
    values[tags.CONTINUATION_TOKEN] = "91343852333181432392682062607743920146"
    tagged = tags.with_kvs_tags(FRAGMENTS[0].data, values)
    segment = ebml.iter_children(tagged[len(mkv.ebml_header()) :])[0][1]
    assert [eid for eid, _ in ebml.iter_children(segment)] == [ebml.INFO, ebml.TRACKS, ebml.TAGS, ebml.CLUSTER, ebml.TAGS]
    assert tags.read_tags(tagged + tagged) == [values, values]
    assert tags.parse_tag_timestamp(values[tags.PRODUCER_TIMESTAMP]) == T0
    assert values[tags.SERVER_TIMESTAMP] == "1700000000.050"
    # still a playable, parseable fragment; the leading tags belong to its cluster
    parsed = MkvStreamParser().feed(tagged)
    assert parsed[0].tags[tags.FRAGMENT_NUMBER] == values[tags.FRAGMENT_NUMBER]
    assert len(decode_all(tagged)) == 10
    assert read_fragment(tagged).tags[tags.MILLIS_BEHIND_NOW] == "1234"


def test_images_at_sampling_interval() -> None:
    fragment = FRAGMENTS[0]
    wanted = images.sample_times(T0, T0 + 950, 250)
    got = images.images_from_fragment(fragment.data, wanted, "JPEG", width=80)
    assert sorted(got) == [T0, T0 + 250, T0 + 500, T0 + 750]
    assert [img.timestamp_ms for img in (got[t] for t in sorted(got))] == [T0, T0 + 300, T0 + 500, T0 + 800]
    decoded = cv2.imdecode(np.frombuffer(got[T0 + 500].data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (60, 80, 3)  # aspect ratio kept
    assert abs(int(decoded[30, 40, 2]) - 35) < 12  # frame 5's red level survived the round trip
    png = images.images_from_fragment(fragment.data, [T0], "PNG", width=32, height=32)[T0]
    assert png.data.startswith(b"\x89PNG") and (png.width, png.height) == (32, 32)
    assert images.images_from_fragment(fragment.data, [T0 + 5000]) == {}


def test_annexb_samples_and_codec_private_are_converted() -> None:
    """Some producers put Annex-B in MKV (start codes in blocks and CodecPrivate); MP4 gets lengths."""
    from kvs import h264

    content = read_fragment(FRAGMENTS[0].data)
    config = h264.AvcConfig.from_avcc(content.track.codec_private)
    annexb_frames = [
        mkv.Frame(b"".join(b"\x00\x00\x00\x01" + n for n in h264.split_length_prefixed(f.data)), f.timestamp_ms, f.keyframe)
        for f in content.frames
    ]
    private = b"".join(b"\x00\x00\x00\x01" + n for n in config.sps + config.pps)
    track = mkv.VideoTrack(mkv.CODEC_H264, 160, 120, private)
    doc = mkv.document(mkv.info(), track.to_element(), mkv.cluster(annexb_frames))
    clip = remux.fragments_to_mp4([doc])
    assert len(decode_all(clip)) == 10
    assert remux.codec_string(read_fragment(doc)) == config.codec_string


def test_kvs_is_plain_python_without_aiohttp() -> None:
    import kvs

    assert kvs.__all__ == sorted(kvs.__all__)
    code = "import sys, kvs, kvs.remux, kvs.images, kvs.playlist, kvs.tags, kvs.reader; assert 'aiohttp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_reader_agrees_with_the_parser() -> None:
    """The reader's fast path (sized documents) measures fragments exactly as the stream parser does."""
    from kvs.parser import parse_fragment

    mjpeg = make_fragments(7, fps=5, codec="mjpeg-passthrough")
    tagged = tags.with_kvs_tags(FRAGMENTS[2].data, tags.fragment_tags("1", T0, T0))
    for doc in [f.data for f in FRAGMENTS + mjpeg] + [tagged]:
        content, parsed = read_fragment(doc), parse_fragment(doc)
        assert (content.timecode_ms, content.duration_ms, len(content.frames)) == (
            parsed.timecode_ms, parsed.duration_ms, parsed.frame_count)
    assert read_fragment(tagged).tags[tags.FRAGMENT_NUMBER] == "1"
    with pytest.raises(ValueError):
        read_fragment(b"\x1aE\xdf\xa3garbage")


def test_command_line_info_and_mp4(tmp_path: Path) -> None:
    body = tmp_path / "body.mkv"
    body.write_bytes(b"".join(f.data for f in FRAGMENTS))
    info = subprocess.run([sys.executable, "-m", "kvs", "info", str(body)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and len(info.stdout.splitlines()) == 4
    assert "2023-11-14T22:13:20.000Z" in info.stdout and "10 frames" in info.stdout
    clip = tmp_path / "clip.mp4"
    made = subprocess.run([sys.executable, "-m", "kvs", "mp4", "-", "-o", str(clip)], input=body.read_bytes(),
                          capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert len(decode_all(clip.read_bytes())) == 35
    bad = subprocess.run([sys.executable, "-m", "kvs", "info", "-"], input=b"not mkv at all", capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"4006" in bad.stderr
