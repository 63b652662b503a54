"""FragmentWriter: fragments are standalone MKV documents, one keyframe-led cluster each.

Checked with two independent readers: ebmlite (matroska schema) for the structure and PyAV
(FFmpeg) for decoding.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction

import av
import cv2
import ebmlite
import numpy as np
import pytest

from kvs import Fragment, FragmentWriter

T0 = 1_700_000_000_000
SCHEMA = ebmlite.loadSchema("matroska.xml")


def frames(n: int, width: int = 160, height: int = 120) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.zeros((height, width, 3), np.uint8)
        cv2.rectangle(img, (i * 3 % width, 10), (i * 3 % width + 20, 40), (0, 255, 255), -1)
        cv2.putText(img, str(i), (5, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        out.append(img)
    return out


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def structure(data: bytes) -> dict:
    """Segment children names, cluster count, cluster timecode and track info, via ebmlite."""
    doc = SCHEMA.loads(data)
    segments = [el for el in doc if el.name == "Segment"]
    assert len(segments) == 1
    children = list(segments[0])
    clusters = [c for c in children if c.name == "Cluster"]
    tracks = next(c for c in children if c.name == "Tracks").dump()
    blocks = [b for b in clusters[0] if b.name == "SimpleBlock"]
    return {
        "names": [c.name for c in children],
        "clusters": len(clusters),
        "timecode": next(b.value for b in clusters[0] if b.name == "Timecode"),
        "track": tracks["TrackEntry"][0],
        "first_block_flags": bytes(blocks[0].value)[3],
        "blocks": len(blocks),
    }


def test_encoded_fragments_are_standalone_and_keyframe_led() -> None:
    fps = 10
    writer = FragmentWriter(160, 120, fps, fragment_seconds=1.0)
    timestamps = [T0 + i * 100 for i in range(35)]
    out: list[Fragment] = []
    for img, ts in zip(frames(35), timestamps):
        out += writer.add_frame(img, ts)
    assert len(out) == 3  # 1-second fragments complete as the next keyframe arrives
    out += writer.flush()
    assert [f.frame_count for f in out] == [10, 10, 10, 5]
    assert [f.start_ms for f in out] == [T0, T0 + 1000, T0 + 2000, T0 + 3000]
    assert [f.duration_ms for f in out] == [1000, 1000, 1000, 500]
    decoded_pts: list[int] = []
    for fragment in out:
        assert fragment.codec_id == "V_MPEG4/ISO/AVC" and (fragment.width, fragment.height) == (160, 120)
        info = structure(fragment.data)
        assert info["names"] == ["Info", "Tracks", "Cluster"] and info["clusters"] == 1
        assert info["timecode"] == fragment.start_ms
        assert info["track"]["CodecID"] == "V_MPEG4/ISO/AVC" and info["track"]["CodecPrivate"][0] == 1
        assert info["first_block_flags"] & 0x80  # keyframe flag on the first SimpleBlock
        decoded = decode(fragment.data)
        assert len(decoded) == fragment.frame_count
        assert decoded[0].key_frame
        assert (decoded[0].width, decoded[0].height) == (160, 120)
        decoded_pts += [int(f.pts * f.time_base * 1000) for f in decoded]
    assert decoded_pts == timestamps


def test_encoder_survives_flush_and_drops_non_increasing_timestamps() -> None:
    writer = FragmentWriter(64, 48, 5, fragment_seconds=1.0)
    imgs = frames(8, 64, 48)
    out = writer.add_frame(imgs[0], T0) + writer.add_frame(imgs[1], T0 + 200)
    assert writer.add_frame(imgs[2], T0 + 200) == [] and writer.dropped_frames == 1
    out += writer.flush()
    assert [f.frame_count for f in out] == [2]
    for i in range(3, 8):  # the writer keeps going after a flush
        out += writer.add_frame(imgs[i], T0 + 1000 + i * 200)
    out += writer.flush()
    assert sum(f.frame_count for f in out) == 7
    assert all(decode(f.data)[0].key_frame for f in out)


def annexb_packets(n: int, gop: int) -> list[tuple[bytes, int, bool]]:
    """H.264 Annex-B access units from an independent PyAV encoder (a camera's hardware encoder stand-in)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 160, 120, "yuv420p"
    ctx.time_base = Fraction(1, 1000)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
    ctx.open()
    packets = []
    for i, img in enumerate(frames(n)):
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = T0 + i * 40
        packets += [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    packets += [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in ctx.encode(None)]
    return packets


def test_h264_passthrough_cuts_at_keyframes() -> None:
    packets = annexb_packets(60, gop=25)  # 25 fps, keyframe every second
    assert packets[0][0].startswith(b"\x00\x00\x00\x01")
    writer = FragmentWriter(160, 120, 25, fragment_seconds=1.0, codec="h264-passthrough")
    out: list[Fragment] = []
    for data, ts, key in packets:
        out += writer.add_packet(data, ts, key)
    out += writer.flush()
    assert [f.frame_count for f in out] == [25, 25, 10]
    for fragment in out:
        decoded = decode(fragment.data)
        assert len(decoded) == fragment.frame_count and decoded[0].key_frame
    with pytest.raises(RuntimeError):
        writer.add_frame(frames(1)[0], T0 + 99_999)


def test_h264_passthrough_waits_for_first_keyframe() -> None:
    packets = annexb_packets(30, gop=25)
    writer = FragmentWriter(160, 120, 25, fragment_seconds=1.0, codec="h264-passthrough")
    out: list[Fragment] = []
    for data, ts, key in packets[5:]:  # joined mid-GOP: frames before the next keyframe are undecodable
        out += writer.add_packet(data, ts, key)
    out += writer.flush()
    assert writer.dropped_frames == 20
    assert [f.frame_count for f in out] == [5] and out[0].start_ms == T0 + 25 * 40


def test_mjpeg_passthrough() -> None:
    writer = FragmentWriter(160, 120, 5, fragment_seconds=1.0, codec="mjpeg-passthrough")
    out: list[Fragment] = []
    for i, img in enumerate(frames(12)):
        ok, jpeg = cv2.imencode(".jpg", img)
        assert ok
        out += writer.add_packet(jpeg.tobytes(), T0 + i * 200, keyframe=True)
    out += writer.flush()
    assert [f.frame_count for f in out] == [5, 5, 2]
    assert out[0].codec_id == "V_MJPEG"
    assert structure(out[0].data)["track"]["CodecID"] == "V_MJPEG"
    decoded = decode(out[1].data)
    assert len(decoded) == 5 and decoded[0].width == 160


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FragmentWriter(160, 120, 10, codec="vp9")
    with pytest.raises(ValueError):
        FragmentWriter(0, 120, 10)


def test_unusable_packets_are_counted_not_raised() -> None:
    writer = FragmentWriter(160, 120, 25, codec="h264-passthrough")
    assert writer.add_packet(b"", T0, True) == []
    assert writer.add_packet(b"\x00\x00\x10\x00garbage", T0 + 40, True) == []  # a length running past the end
    assert writer.dropped_frames == 2
    mjpeg = FragmentWriter(160, 120, 5, codec="mjpeg-passthrough")
    assert mjpeg.add_packet(b"", T0, True) == [] and mjpeg.dropped_frames == 1


class BrokenHardwareEncoder:
    """Stand-in for a hardware encoder that opened but fails on the first frame (no such device here)."""

    def encode(self, frame: object) -> list:
        raise av.error.ExternalError(-22, "v4l2 encode failed")


def test_encoder_falls_back_to_software(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="kvs.writer")
    assert FragmentWriter(64, 48, 10).encoder_name == "libx264"  # no /dev/video* here: not even tried
    assert "no hardware H.264 encoder (h264_v4l2m2m needs a /dev/video* device): encoding with libx264" in caplog.text
    # a box with V4L2 devices (a webcam) but no memory-to-memory encoder among them: tried, fallback logged
    caplog.clear()
    monkeypatch.setattr("kvs.writer.glob.glob", lambda pattern: ["/dev/video0"])
    assert FragmentWriter(64, 48, 10).encoder_name == "libx264"
    fallback = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().startswith("encoder h264_v4l2m2m unavailable (") for r in fallback] == [True]
    assert fallback[0].getMessage().endswith("): falling back to libx264")
    asked = FragmentWriter(64, 48, 10, encoder="h264_v4l2m2m")  # no device here: libx264 takes over
    assert asked.encoder_name == "libx264"
    writer = FragmentWriter(64, 48, 10, fragment_seconds=1.0)
    writer._encoder, writer.encoder_name = BrokenHardwareEncoder(), "h264_v4l2m2m"
    out: list[Fragment] = []
    for i, img in enumerate(frames(15, 64, 48)):
        out += writer.add_frame(img, T0 + i * 100)
    out += writer.flush()
    assert writer.encoder_name == "libx264"
    assert [f.frame_count for f in out] == [10, 5]  # not a frame lost
    assert decode(out[0].data)[0].key_frame


def test_small_pictures_encode_on_the_calling_thread() -> None:
    """libx264's sliced threads cost more than they save at 640x480@15; 720p30 keeps them."""
    assert FragmentWriter(640, 480, 15)._encoder.thread_count == 1
    assert FragmentWriter(1280, 720, 30)._encoder.thread_count == 0  # FFmpeg's choice: one per core
