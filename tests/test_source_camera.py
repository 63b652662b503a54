"""Camera source: synthetic frames and a real H.264 file (passthrough) → MKV fragments PyAV decodes."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from edge_agent.errors import ConfigError
from edge_agent.metrics import REGISTRY
from edge_agent.sources import SOURCE_TYPES
from edge_agent.sources.camera import CameraConfig
from edge_agent.spool import Spool
from helpers import committed, free_port, wait_until


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), format="matroska") as container:
        return list(container.decode(video=0))


@pytest.fixture
def camera(tmp_path: Path, run_source: Callable[[Any, Any], threading.Event]) -> Callable[..., tuple[Spool, str, threading.Event]]:
    count = iter(range(1000))

    def start(**settings: object) -> tuple[Spool, str, threading.Event]:
        n = next(count)
        name = f"camera-{n}-{time.monotonic_ns()}"
        config = CameraConfig.from_dict({"stream": "cam", "name": name, **settings}, "sources.camera[0]")
        spool = Spool(tmp_path / f"spool-{n}.db")
        return spool, name, run_source(config, spool)

    return start


def test_synthetic_camera_fragments_decode_with_their_frame_count(camera) -> None:
    spool, name, _ = camera(width=320, height=240, fps=10, fragment_seconds=1.0)
    wait_until(lambda: committed(spool, "media") >= 2)
    fragments = spool.read("media", limit=2)
    assert spool.read("records") == []  # video goes to its own lane
    previous_end = None
    for fragment in fragments:
        assert fragment.kind == "video" and fragment.stream == "cam" and fragment.partition_key == name
        attrs = fragment.attrs
        assert attrs["codec_id"] == "V_MPEG4/ISO/AVC" and (attrs["width"], attrs["height"]) == (320, 240)
        # 1 s at 10 fps; a busy box may skip frames (the camera keeps real time) but never shortens a fragment
        assert 4 <= attrs["frame_count"] <= 11
        assert 950 <= attrs["duration_ms"] <= 2000
        assert attrs["start_ms"] == fragment.timestamp_ms
        assert abs(attrs["start_ms"] / 1000 - time.time()) < 30
        frames = decode(fragment.data)
        assert len(frames) == attrs["frame_count"]
        assert (frames[0].width, frames[0].height) == (320, 240)
        picture = frames[0].to_ndarray(format="bgr24")
        assert picture.std() > 20  # a scene, not a blank frame
        if previous_end is not None:
            assert attrs["start_ms"] >= previous_end - 1
        previous_end = attrs["start_ms"] + attrs["duration_ms"]
    # consecutive frames differ (the scene moves)
    frames = decode(fragments[0].data)
    a, b = (f.to_ndarray(format="bgr24").astype(int) for f in frames[:2])
    assert np.abs(a - b).mean() > 1


def make_h264_file(path: Path, seconds: int = 3, fps: int = 10, container: str = "mp4") -> int:
    """A small H.264 file with a keyframe every second; returns its frame count."""
    count = seconds * fps
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.options = {"g": str(fps), "bf": "0", "preset": "ultrafast"}
        for i in range(count):
            img = np.zeros((120, 160, 3), dtype=np.uint8)
            img[:, (i * 5) % 160:(i * 5) % 160 + 20] = (0, 200, 255)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return count


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_h264_file_in_passthrough_keeps_every_frame(camera, tmp_path: Path, container: str) -> None:
    video = tmp_path / f"clip.{'mkv' if container == 'matroska' else 'mp4'}"
    count = make_h264_file(video, container=container)
    spool, name, stop = camera(device=str(video), codec="passthrough", fragment_seconds=1.0, realtime=False)
    wait_until(lambda: committed(spool, "media") >= 3)
    stop.set()
    fragments = spool.read("media", limit=3)
    assert [f.attrs["frame_count"] for f in fragments] == [10, 10, 10]
    assert sum(len(decode(f.data)) for f in fragments) == count
    first = fragments[0]
    assert (first.attrs["width"], first.attrs["height"]) == (160, 120)
    assert [f.attrs["duration_ms"] for f in fragments] == [1000, 1000, 1000]
    starts = [f.attrs["start_ms"] for f in fragments]
    assert starts == sorted(starts) and starts[1] - starts[0] == 1000


def make_mjpeg_file(path: Path) -> None:
    """2 s of MJPEG at 10 fps, 160x120 (what a USB webcam sends over V4L2), frame i all grey i * 10."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuvj422p"
        for i in range(20):
            img = np.full((120, 160, 3), i * 10, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuvj422p")
            frame.pts = i
            frame.time_base = Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_mjpeg_file_in_passthrough(camera, tmp_path: Path) -> None:
    """MJPEG kept as JPEG frames, every one a keyframe."""
    video = tmp_path / "webcam.mkv"
    make_mjpeg_file(video)
    spool, _, stop = camera(device=str(video), codec="passthrough", fragment_seconds=1.0, realtime=False)
    wait_until(lambda: committed(spool, "media") >= 2)
    stop.set()
    fragments = spool.read("media", limit=2)
    assert [f.attrs["codec_id"] for f in fragments] == ["V_MJPEG", "V_MJPEG"]
    assert [f.attrs["frame_count"] for f in fragments] == [10, 10]
    frames = decode(fragments[1].data)
    assert len(frames) == 10 and abs(int(frames[0].to_ndarray(format="bgr24").mean()) - 100) <= 3


def test_mjpeg_transcoded_to_h264(camera, tmp_path: Path) -> None:
    """A webcam's MJPEG (full-range 4:2:2 JPEGs) decoded, scaled and encoded as H.264; the
    pictures keep their brightness through the range conversion."""
    video = tmp_path / "webcam.mkv"
    make_mjpeg_file(video)
    spool, _, stop = camera(device=str(video), codec="h264", width=320, height=240, fps=10, fragment_seconds=1.0, realtime=False)
    wait_until(lambda: committed(spool, "media") >= 2)
    stop.set()
    fragments = spool.read("media", limit=2)
    assert [f.attrs["codec_id"] for f in fragments] == ["V_MPEG4/ISO/AVC"] * 2
    assert [f.attrs["frame_count"] for f in fragments] == [10, 10]
    frames = decode(fragments[1].data)
    assert len(frames) == 10 and (frames[0].width, frames[0].height) == (320, 240)
    assert abs(frames[0].to_ndarray(format="bgr24").mean() - 100) <= 4


def test_v4l2_camera_asked_for_h264_then_mjpeg(camera, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A V4L2 camera (none can exist here: FFmpeg's video4linux2 input is stood in for by an MJPEG
    file) is asked for H.264 first in passthrough, MJPEG first when decoding, then its default."""
    video = tmp_path / "webcam.mkv"
    make_mjpeg_file(video)
    real_open = av.open
    asked: list[tuple[str, str | None]] = []
    offers: set[str | None] = {"mjpeg", None}  # the device's formats (None: its default)

    def v4l2_open(path: str, format: str | None = None, options: dict | None = None, **kwargs: Any) -> Any:
        assert (path, format) == ("/dev/video7", "video4linux2") and options and options["video_size"] == "160x120"
        asked.append((path, options.get("input_format")))
        if options.get("input_format") not in offers:
            raise av.FFmpegError(22, "The V4L2 driver changed the pixel format")
        return real_open(str(video))

    monkeypatch.setattr(av, "open", v4l2_open)
    spool, _, stop = camera(device="/dev/video7", codec="passthrough", width=160, height=120, fps=10, fragment_seconds=1.0)
    wait_until(lambda: committed(spool, "media") >= 1)
    stop.set()
    assert spool.read("media", limit=1)[0].attrs["codec_id"] == "V_MJPEG"
    assert asked[:2] == [("/dev/video7", "h264"), ("/dev/video7", "mjpeg")]
    asked.clear()
    offers.discard("mjpeg")  # a webcam with raw YUYV only
    spool, _, stop = camera(device=7, codec="h264", width=160, height=120, fps=10, fragment_seconds=1.0)
    wait_until(lambda: committed(spool, "media") >= 1)
    stop.set()
    assert spool.read("media", limit=1)[0].attrs["codec_id"] == "V_MPEG4/ISO/AVC"
    assert asked[:2] == [("/dev/video7", "mjpeg"), ("/dev/video7", None)]


def test_missing_camera_is_retried_and_counted_not_fatal(camera, tmp_path: Path) -> None:
    video = tmp_path / "later.mp4"
    spool, name, _ = camera(device=str(video), codec="passthrough", fragment_seconds=1.0, realtime=False, reopen_max=0.3)
    time.sleep(0.5)
    assert committed(spool, "media") == 0
    make_h264_file(tmp_path / "tmp.mp4", seconds=1)
    (tmp_path / "tmp.mp4").rename(video)  # the camera comes back
    wait_until(lambda: committed(spool, "media") >= 1)
    # a file ends like a camera going away: counted and reopened (the clip plays again)
    wait_until(lambda: (REGISTRY.get_sample_value("edge_agent_records_rejected_total", {"source": name, "reason": "camera_lost"}) or 0) >= 1)
    wait_until(lambda: committed(spool, "media") >= 2)
    first, second = spool.read("media", limit=2)
    assert second.attrs["start_ms"] > first.attrs["start_ms"]


def test_config_rules() -> None:
    assert SOURCE_TYPES["camera"] is CameraConfig
    config = CameraConfig.from_dict({"stream": "cam", "device": 0}, "sources.camera[1]")
    assert (config.name, config.device, config.codec, config.fps) == ("camera-1", 0, "h264", 15.0)
    with pytest.raises(ConfigError) as err:
        CameraConfig.from_dict({"stream": "cam", "codec": "h265", "width": 641}, "sources.camera[0]")
    assert "sources.camera[0].codec: expected 'h264' or 'passthrough'" in str(err.value)
    with pytest.raises(ConfigError, match="width and height must be even"):
        CameraConfig.from_dict({"stream": "cam", "width": 641}, "sources.camera[0]")
    with pytest.raises(ConfigError, match="passthrough.*needs a real input"):
        CameraConfig.from_dict({"stream": "cam", "codec": "passthrough"}, "sources.camera[0]")


def test_file_decoded_and_reencoded(camera, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    count = make_h264_file(video, seconds=2)
    spool, _, stop = camera(device=str(video), codec="h264", width=320, height=240, fps=10, fragment_seconds=1.0, realtime=False)
    wait_until(lambda: committed(spool, "media") >= 2)
    stop.set()
    fragments = spool.read("media", limit=2)
    assert sum(f.attrs["frame_count"] for f in fragments) == count
    frames = [frame for f in fragments for frame in decode(f.data)]
    assert len(frames) == count and (frames[0].width, frames[0].height) == (320, 240)  # resized to the config


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")
def test_http_mpegts_stream_in_passthrough(camera, tmp_path: Path) -> None:
    """A live H.264 feed over HTTP (Annex-B, parameter sets in band), served by a real ffmpeg."""
    video = tmp_path / "clip.mp4"
    count = make_h264_file(video, seconds=2)
    port = free_port()
    server = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(video), "-c", "copy", "-f", "mpegts",
         "-listen", "1", f"http://127.0.0.1:{port}/cam.ts"],
        stdin=subprocess.DEVNULL,
    )
    try:
        # (no probe connection: ffmpeg serves exactly one client; the source retries until it listens)
        spool, name, stop = camera(device=f"http://127.0.0.1:{port}/cam.ts", codec="passthrough", fragment_seconds=1.0,
                                   reopen_max=0.5)
        wait_until(lambda: server.poll() is not None, timeout=15)  # the feed played to its end
        wait_until(lambda: sum(f.attrs["frame_count"] for f in spool.read("media", limit=10)) >= count)
        stop.set()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(10)
    fragments = spool.read("media", limit=10)
    assert [f.attrs["frame_count"] for f in fragments] == [10, 10]
    assert [len(decode(f.data)) for f in fragments] == [10, 10]
    assert fragments[1].attrs["start_ms"] - fragments[0].attrs["start_ms"] == 1000  # the stream's clock, no jitter


@pytest.mark.parametrize("codec", ["passthrough", "h264"])
def test_rtsp_ip_camera(camera, tmp_path: Path, codec: str) -> None:
    """An IP camera: RTSP (DESCRIBE/SETUP/PLAY, RTP over TCP), H.264 kept as sent (passthrough)
    or decoded and re-encoded at the configured size; when the camera hangs up the source
    reconnects and gets the next session."""
    from rtsp_support import RtspCamera

    video = tmp_path / "clip.mp4"
    count = make_h264_file(video, seconds=2)
    server = RtspCamera(video).start()
    try:
        spool, name, stop = camera(device=server.url, codec=codec, fragment_seconds=1.0, reopen_max=0.5, width=320, height=240, fps=10)
        wait_until(lambda: server.sessions >= 2, timeout=20)  # played once, hung up, asked for again
        fragments = spool.read("media", limit=10)
        stop.set()
    finally:
        server.stop()
    size = (160, 120) if codec == "passthrough" else (320, 240)
    assert all(f.attrs["codec_id"] == "V_MPEG4/ISO/AVC" and (f.attrs["width"], f.attrs["height"]) == size for f in fragments)
    if codec == "passthrough":
        assert [f.attrs["frame_count"] for f in fragments[:2]] == [10, 10], [f.attrs for f in fragments]
    for fragment in fragments[:2]:
        decoded = decode(fragment.data)
        assert len(decoded) == fragment.attrs["frame_count"] and (decoded[0].width, decoded[0].height) == size
    assert sum(f.attrs["frame_count"] for f in fragments) >= count


def test_decoding_inputs_import_neither_opencv_nor_numpy(tmp_path: Path) -> None:
    """A camera re-encoding a file, URL or webcam decodes with PyAV: OpenCV and NumPy (~40 MiB of
    RSS together) stay unloaded."""
    video = tmp_path / "clip.mp4"
    make_h264_file(video, seconds=1)
    code = (
        "import sys, threading; from edge_agent.sources.video_inputs import Clock, FrameReader;"
        f"reader = FrameReader({str(video)!r}, 320, 240, 10, False, Clock());"
        "frames = list(reader.frames(threading.Event())); reader.close();"
        "print(len(frames), frames[0].image.format.name, frames[0].image.width, frames[0].image.height,"
        " 'cv2' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.split() == ["10", "yuv420p", "320", "240", "False", "False"]


def test_synthetic_camera_draws_yuv_without_opencv_or_numpy() -> None:
    """The synthetic scene is drawn straight into yuv420p planes with a built-in digit font:
    neither OpenCV (~30 MiB of RSS) nor NumPy (~12 MiB) is imported, and the clock's pixels
    change with the time."""
    code = (
        "import sys; from edge_agent.sources.video_inputs import SyntheticCamera;"
        "cam = SyntheticCamera(640, 480, 15, None);"
        "a, b = cam.render(7, 1764530000123), cam.render(7, 1764530001456);"
        "top = lambda f: [i % 640 for i, v in enumerate(bytes(f.planes[0])[10 * 640:30 * 640]) if v == 235 and 10 <= i % 640 < 400];"
        "print(a.format.name, 'cv2' in sys.modules, 'numpy' in sys.modules, len(top(a)) > 100, top(a) != top(b))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.split() == ["yuv420p", "False", "False", "True", "True"]


def test_synthetic_camera_odd_sizes_fill_padded_planes() -> None:
    """Widths whose rows FFmpeg pads (line_size > width) and a box or clock reaching the edge."""
    from edge_agent.sources.video_inputs import SyntheticCamera

    cam = SyntheticCamera(98, 26, 10, None)  # rows padded to 112 bytes, the clock cut at the right edge
    frames = [cam.render(n, 1764530000123 + n * 100) for n in range(40)]
    assert frames[0].planes[0].line_size > 98
    pictures = [f.to_ndarray(format="bgr24").astype(int) for f in frames]
    assert all(p.shape == (26, 98, 3) for p in pictures)
    assert np.abs(pictures[0] - pictures[1]).mean() > 1
