"""Camera source: pictures → MKV fragments (``kvs.FragmentWriter``) → one spool record each.

Each fragment is a standalone MKV document starting at a keyframe, about ``fragment_seconds``
long, spooled as a ``kind = "video"`` record for ``stream`` (a Kinesis video stream) with attrs
``start_ms``, ``duration_ms``, ``frame_count``, ``codec_id``, ``width``, ``height``. Partition key:
the source name.

``device`` picks the input: ``"synthetic"`` (a generated scene, for tests and demos), a device
index (``0``) or ``/dev/videoN``, an ``rtsp://``/``http://`` URL, or a file path. ``codec = "h264"``
decodes with FFmpeg (PyAV; a V4L2 webcam is asked for MJPEG) and encodes H.264;
``codec = "passthrough"`` keeps what the input already carries (H.264 from RTSP/files; from a V4L2
camera its own H.264 if it encodes, else its MJPEG) without decoding.

The camera disappearing (device unplugged, stream ended, file finished) is logged and counted
(``RECORDS_REJECTED{source, reason="camera_lost"}``); the fragment in progress is flushed and
the input is reopened with backoff (a file therefore plays again, like a looping demo feed).
Frames the writer cannot use (a non-increasing timestamp, no keyframe yet) are counted as
``frame_dropped``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.edge_config import SCHEDULES
from edge_agent.sources.base import Backoff, Rejects, Source, SourceConfig, SpoolWriter, partition_key, positive, run_forever
from edge_agent.spool import NewRecord, Spool, SpoolClosed
from kvs import Fragment, FragmentWriter

log = logging.getLogger("edge_agent.sources.camera")

DEFAULT_DEVICE = "synthetic"
DEFAULT_WIDTH = 640
DEFAULT_HEIGHT = 480
DEFAULT_FPS = 15.0
DEFAULT_FRAGMENT_SECONDS = 2.0
DEFAULT_BITRATE = 1_000_000
DEFAULT_REOPEN_MAX = 10.0
MAX_FPS = 120.0
#: ``kvs`` cuts a fragment before its 16-bit block timecodes overflow (~32 s).
MAX_FRAGMENT_SECONDS = 30.0


@dataclass(frozen=True)
class CameraConfig(SourceConfig):
    """``[[sources.camera]]``: capture video and spool it as MKV fragments."""

    KIND = "camera"

    #: Kinesis video stream the fragments go to.
    stream: str
    #: Unique source name (metrics, logs); default ``camera-<index>``.
    name: str = ""
    #: ``"synthetic"``, a device index (``0``), ``"/dev/videoN"``, an RTSP/HTTP URL, or a file path.
    device: int | str = DEFAULT_DEVICE
    #: Picture size and rate requested from the camera (and encoded); even sizes only.
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fps: float = DEFAULT_FPS
    #: Fragment length; every fragment starts with a keyframe.
    fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS
    #: ``"h264"``: encode (hardware encoder when present, else libx264); ``"passthrough"``: keep
    #: the input's H.264 or MJPEG as is (not with ``"synthetic"``).
    codec: Literal["h264", "passthrough"] = "h264"
    #: Target bits per second when encoding.
    bitrate: int = DEFAULT_BITRATE
    #: Force an FFmpeg encoder by name (``"libx264"``, ``"h264_v4l2m2m"``); default: pick one.
    encoder: str | None = None
    #: Files only: deliver frames at the file's own rate, like a live camera.
    realtime: bool = True
    #: Longest pause (seconds) between attempts to reopen a lost camera.
    reopen_max: float = DEFAULT_REOPEN_MAX

    def check(self) -> list[str]:
        problems = super().check()
        problems += positive(self, "width", "height", "fps", "fragment_seconds", "bitrate", "reopen_max")
        if self.width % 2 or self.height % 2:
            problems.append("width: width and height must be even (H.264 4:2:0)")
        if self.fps > MAX_FPS:
            problems.append(f"fps: at most {MAX_FPS:g}")
        if self.fragment_seconds > MAX_FRAGMENT_SECONDS:
            problems.append(f"fragment_seconds: at most {MAX_FRAGMENT_SECONDS:g}")
        if self.device == "" or (isinstance(self.device, int) and self.device < 0):
            problems.append('device: expected "synthetic", a device index, /dev/videoN, a URL or a file path')
        if self.device == DEFAULT_DEVICE and self.codec == "passthrough":
            problems.append('codec: "passthrough" needs a real input (the synthetic camera produces raw frames)')
        return problems

    def build(self, spool: Spool, agent_id: str) -> CameraSource:
        return CameraSource(self, spool)


class CameraSource(Source):
    def __init__(self, config: CameraConfig, spool: Spool) -> None:
        self.config = config
        self.name = config.name
        self.rejects = Rejects(self.name, log)
        self.writer = SpoolWriter(spool, self.name, self.rejects)
        self.key = partition_key(config.name)
        self.last_ms = 0  # timestamps keep increasing across reopenings
        self._fail_logged = False

    def run(self, stop: threading.Event) -> None:
        run_forever(self.name, stop, lambda: self._session(stop), log, Backoff(0.5, self.config.reopen_max))

    def _open(self, clock: Any) -> Any:
        from edge_agent.sources.video_inputs import FrameReader, PacketReader, SyntheticCamera  # PyAV loads slowly

        cfg = self.config
        if cfg.device == DEFAULT_DEVICE:
            return SyntheticCamera(cfg.width, cfg.height, cfg.fps, clock)
        device = int(cfg.device) if isinstance(cfg.device, str) and cfg.device.isdigit() else cfg.device  # "0" is index 0
        if cfg.codec == "passthrough":
            return PacketReader(device, cfg.width, cfg.height, cfg.fps, cfg.realtime, clock)
        return FrameReader(device, cfg.width, cfg.height, cfg.fps, cfg.realtime, clock)

    def _session(self, stop: threading.Event) -> bool:
        from edge_agent.sources.video_inputs import Clock, PacketReader

        cfg = self.config
        clock = Clock(self.last_ms)
        try:
            source = self._open(clock)
        except Exception as exc:  # PyAV raises assorted errors for a missing device or URL
            if not self._fail_logged:
                log.warning("%s: cannot open %r: %s; retrying", self.name, cfg.device, exc)
                self._fail_logged = True
            return False
        self._fail_logged = False
        try:
            if isinstance(source, PacketReader):
                writer = FragmentWriter(source.width, source.height, source.fps, cfg.fragment_seconds, codec=source.codec)
            else:
                writer = FragmentWriter(cfg.width, cfg.height, cfg.fps, cfg.fragment_seconds, codec="h264",
                                        encoder=cfg.encoder, bitrate=cfg.bitrate)
        except (RuntimeError, ValueError) as exc:  # no usable encoder, or sizes the writer refuses
            source.close()
            log.error("%s: cannot encode %r: %s; retrying", self.name, cfg.device, exc)
            return False
        log.info("%s: capturing %r as %s (%dx%d)", self.name, cfg.device, writer.codec, writer.width, writer.height)
        frames = 0
        try:
            for frame in source.frames(stop):
                frames += 1
                if frame.image is not None:
                    fragments = writer.add_frame(frame.image, frame.timestamp_ms)
                else:
                    fragments = writer.add_packet(frame.packet or b"", frame.timestamp_ms, frame.keyframe)
                if fragments:
                    self._spool(fragments, stop)
                self._count_dropped(writer)
            if not stop.is_set():
                self.rejects("camera_lost", f"{cfg.device!r} stopped delivering after {frames} frame(s); reopening")
        except SpoolClosed:
            raise
        except Exception as exc:  # the device or stream failed mid-read (PyAV errors vary)
            if not stop.is_set():
                self.rejects("camera_lost", f"{cfg.device!r} failed after {frames} frame(s): {exc}; reopening")
        finally:
            self.last_ms = clock.last_ms
            source.close()
        self._spool(writer.flush(), stop)
        self._count_dropped(writer)
        return frames > 0

    def _count_dropped(self, writer: FragmentWriter) -> None:
        if writer.dropped_frames:
            self.rejects("frame_dropped", f"{writer.dropped_frames} frame(s) the fragment writer could not use", writer.dropped_frames)
            writer.dropped_frames = 0

    def _spool(self, fragments: list[Fragment], stop: threading.Event) -> None:
        if not fragments:
            return
        if not SCHEDULES.may_record(self.config.stream):  # outside the edge configuration's recording window
            self.rejects("edge_schedule", f"{len(fragments)} fragment(s) outside the recording schedule (or the local size limit is reached)", len(fragments))
            return
        records = [
            NewRecord(
                "video", self.config.stream, self.key, f.data, self.name, f.start_ms,
                {"start_ms": f.start_ms, "duration_ms": f.duration_ms, "frame_count": f.frame_count,
                 "codec_id": f.codec_id, "width": f.width, "height": f.height},
            )
            for f in fragments
        ]
        self.writer.append(records, stop)
