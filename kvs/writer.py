"""FragmentWriter: camera frames (or already-encoded packets) in, standalone MKV fragments out.

Each fragment is one complete MKV document whose single Cluster starts with a keyframe and uses
absolute producer timecodes, so it can be stored, sent, or played on its own. We write the MKV
ourselves from encoded packets (FFmpeg's muxer does not cut a cluster at every keyframe), and
when encoding we force a keyframe every ``fragment_seconds`` so fragments have an even length.
"""

from __future__ import annotations

import contextlib
import glob
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kvs import h264, mkv

log = logging.getLogger(__name__)

DEFAULT_FRAGMENT_SECONDS = 2.0
DEFAULT_BITRATE = 1_000_000
HARDWARE_ENCODER = "h264_v4l2m2m"
SOFTWARE_ENCODER = "libx264"
CODECS = ("h264", "h264-passthrough", "mjpeg-passthrough")
#: Block timecodes are 16-bit offsets from the cluster's; cut a fragment before overflowing.
MAX_FRAGMENT_SPAN_MS = 32_000
#: Up to this many pixels a second libx264 encodes on the calling thread: its sliced threads cost
#: more in hand-offs than they save at 640x480@15 (~10 % of the camera's CPU, 4 threads, 0.5 MiB);
#: larger pictures keep them (a Pi core alone is too slow for 1080p30).
ONE_THREAD_PIXEL_RATE = 640 * 480 * 30


@dataclass(frozen=True)
class Fragment:
    """One standalone MKV document holding one keyframe-led cluster."""

    data: bytes
    start_ms: int
    duration_ms: int
    frame_count: int
    codec_id: str
    width: int
    height: int


class FragmentWriter:
    """Group frames into fragments of about ``fragment_seconds``, each starting at a keyframe.

    ``codec``: ``"h264"`` encodes pictures (hardware ``h264_v4l2m2m`` when it opens, else
    ``libx264`` ultrafast/zerolatency, no B-frames); ``"h264-passthrough"`` takes Annex-B (or
    length-prefixed) H.264 access units; ``"mjpeg-passthrough"`` takes JPEG images.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
        codec: str = "h264",
        encoder: str | None = None,
        bitrate: int = DEFAULT_BITRATE,
        track_name: str = "camera",
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
        if width <= 0 or height <= 0 or fps <= 0 or fragment_seconds <= 0:
            raise ValueError("width, height, fps and fragment_seconds must be positive")
        self.width = width
        self.height = height
        self.fps = fps
        self.fragment_ms = int(round(fragment_seconds * 1000))
        self.codec = codec
        self.bitrate = bitrate
        self.track_name = track_name
        self.codec_id = mkv.CODEC_MJPEG if codec == "mjpeg-passthrough" else mkv.CODEC_H264
        self.frame_ms = max(1, int(round(1000 / fps)))
        self.avc: h264.AvcConfig | None = None
        self.dropped_frames = 0
        self._frames: list[mkv.Frame] = []
        self._last_ts: int | None = None
        self._next_key_ms: int | None = None
        self._encoder: Any = None
        self.encoder_name = ""
        if codec == "h264":
            self._encoder = self._open_encoder(encoder)

    # -- encoding -----------------------------------------------------------------------

    def _open_encoder(self, name: str | None) -> Any:
        import av

        if name:  # asked for by name; libx264 still backs it up (with a warning) so a camera keeps recording
            candidates = [name] + ([SOFTWARE_ENCODER] if name != SOFTWARE_ENCODER else [])
        elif glob.glob("/dev/video*"):  # a V4L2 memory-to-memory encoder (a Pi 4's) shows up as one of these
            candidates = [HARDWARE_ENCODER, SOFTWARE_ENCODER]
        else:
            candidates = [SOFTWARE_ENCODER]
            log.info("no hardware H.264 encoder (%s needs a /dev/video* device): encoding with %s", HARDWARE_ENCODER, SOFTWARE_ENCODER)
        last_error: Exception | None = None
        for i, candidate in enumerate(candidates):
            try:
                ctx: Any = av.CodecContext.create(candidate, "w")
                ctx.width = self.width
                ctx.height = self.height
                ctx.pix_fmt = "yuv420p"
                ctx.time_base = Fraction(1, 1000)
                ctx.framerate = Fraction(self.fps).limit_denominator(1001)
                ctx.bit_rate = self.bitrate
                gop = max(1, int(round(self.fps * self.fragment_ms / 1000)))
                ctx.gop_size = gop
                ctx.max_b_frames = 0
                if candidate == SOFTWARE_ENCODER:
                    if self.width * self.height * self.fps <= ONE_THREAD_PIXEL_RATE:
                        ctx.thread_count = 1
                    ctx.options = {
                        "preset": "ultrafast",
                        "tune": "zerolatency",
                        # keyframes only when we ask (pict_type=I), SPS/PPS in every keyframe; qpmax=51
                        # (8-bit H.264's top QP): x264 would otherwise build motion cost tables for
                        # QPs up to 69 (~2 MiB at 640x480)
                        "x264-params": f"keyint={gop * 4}:min-keyint={gop * 4}:scenecut=0:bframes=0:repeat-headers=1:qpmax=51",
                    }
                ctx.open()
                if ctx.extradata:  # some encoders (v4l2m2m) announce SPS/PPS here, not in every keyframe
                    extradata = bytes(ctx.extradata)
                    if h264.is_annexb(extradata):
                        self._learn_parameter_sets(h264.split_annexb(extradata))
                    else:
                        with contextlib.suppress(ValueError, IndexError):
                            self.avc = h264.AvcConfig.from_avcc(extradata)
                self.encoder_name = candidate
                log.info("video encoder: %s %dx%d@%s", candidate, self.width, self.height, self.fps)
                return ctx
            except Exception as exc:  # av raises various FFmpegError subclasses
                last_error = exc
                if i + 1 < len(candidates):
                    log.warning("encoder %s unavailable (%s): falling back to %s", candidate, exc, candidates[i + 1])
        raise RuntimeError(f"no H.264 encoder could be opened: {last_error}")

    def add_frame(self, picture: Any, timestamp_ms: int) -> list["Fragment"]:
        """Encode one picture taken at ``timestamp_ms`` (epoch ms): a BGR ``numpy`` HxWx3 uint8
        array, or an ``av.VideoFrame`` (yuv420p at the writer's size goes to the encoder as is)."""
        if self._encoder is None:
            raise RuntimeError(f"add_frame needs codec='h264' (this writer is {self.codec!r}); use add_packet")
        import av
        from av.video.frame import PictureType

        if self._last_ts is not None and timestamp_ms <= self._last_ts:
            self.dropped_frames += 1  # the encoder and MKV need strictly increasing timestamps
            return []
        frame = picture if isinstance(picture, av.VideoFrame) else av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts = timestamp_ms
        frame.time_base = Fraction(1, 1000)
        if self._next_key_ms is None or timestamp_ms >= self._next_key_ms:
            frame.pict_type = PictureType.I
            self._next_key_ms = timestamp_ms + self.fragment_ms
        self._last_ts = timestamp_ms
        out: list[Fragment] = []
        try:
            packets = self._encoder.encode(frame)
        except av.FFmpegError as exc:
            if self.encoder_name == SOFTWARE_ENCODER:
                raise
            # a hardware encoder that opened but cannot encode (driver, size limits): go software for good
            log.warning("encoder %s failed (%s); falling back to %s", self.encoder_name, exc, SOFTWARE_ENCODER)
            self._encoder = self._open_encoder(SOFTWARE_ENCODER)
            frame.pict_type = PictureType.I
            self._next_key_ms = timestamp_ms + self.fragment_ms
            packets = self._encoder.encode(frame)
        for packet in packets:
            out += self._add_encoded(bytes(packet), int(packet.pts), bool(packet.is_keyframe))
        return out

    # -- packets ------------------------------------------------------------------------

    def add_packet(self, data: bytes, timestamp_ms: int, keyframe: bool) -> list["Fragment"]:
        """Add an already-encoded frame (``*-passthrough`` codecs)."""
        if self._encoder is not None:
            raise RuntimeError("add_packet is for the passthrough codecs; this writer encodes (use add_frame)")
        if self._frames and timestamp_ms <= self._frames[-1].timestamp_ms:
            self.dropped_frames += 1
            return []
        return self._add_encoded(data, timestamp_ms, keyframe)

    def _add_encoded(self, data: bytes, timestamp_ms: int, keyframe: bool) -> list["Fragment"]:
        if not data:
            self.dropped_frames += 1
            return []
        if self.codec_id == mkv.CODEC_H264:
            try:
                nals = h264.split_annexb(data) if h264.is_annexb(data) else h264.split_length_prefixed(data)
            except ValueError:
                nals = []
            if not nals:
                self.dropped_frames += 1  # neither Annex-B nor length-prefixed H.264: not a frame we can store
                return []
            self._learn_parameter_sets(nals)
            keyframe = keyframe or any(h264.nal_type(n) == h264.NAL_IDR for n in nals)
            data = h264.length_prefixed(nals)
        out: list[Fragment] = []
        if not self._frames:
            if not keyframe or (self.codec_id == mkv.CODEC_H264 and self.avc is None):
                self.dropped_frames += 1  # a fragment must start with a decodable keyframe
                return out
        else:
            span = timestamp_ms - self._frames[0].timestamp_ms
            if (keyframe and span >= self.fragment_ms - self.frame_ms // 2) or span > MAX_FRAGMENT_SPAN_MS:
                out.append(self._emit(end_ms=timestamp_ms))
                if not keyframe:
                    self.dropped_frames += 1
                    return out
        self._frames.append(mkv.Frame(data, timestamp_ms, keyframe))
        return out

    def _learn_parameter_sets(self, nals: list[bytes]) -> None:
        sps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_SPS)
        pps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_PPS)
        if sps and pps:
            config = h264.AvcConfig(sps, pps)
            if config != self.avc:
                self.avc = config

    def flush(self) -> list["Fragment"]:
        """Drain the encoder and emit the fragment in progress."""
        out: list[Fragment] = []
        if self._encoder is not None:
            for packet in self._encoder.encode(None):
                out += self._add_encoded(bytes(packet), int(packet.pts), bool(packet.is_keyframe))
            self._encoder = self._open_encoder(self.encoder_name)  # an encoder cannot resume after a flush
            self._next_key_ms = None
        if self._frames:
            out.append(self._emit(end_ms=None))
        return out

    def _emit(self, end_ms: int | None) -> "Fragment":
        frames, self._frames = self._frames, []
        start = frames[0].timestamp_ms
        last = frames[-1].timestamp_ms
        duration = (end_ms - start) if end_ms is not None else (last - start + self.frame_ms)
        private = self.avc.to_avcc() if (self.codec_id == mkv.CODEC_H264 and self.avc) else b""
        track = mkv.VideoTrack(
            codec_id=self.codec_id,
            width=self.width,
            height=self.height,
            codec_private=private,
            name=self.track_name,
            default_duration_ns=self.frame_ms * 1_000_000,
        )
        data = mkv.document(mkv.info(duration_ms=duration), track.to_element(), mkv.cluster(frames))
        return Fragment(data, start, duration, len(frames), self.codec_id, self.width, self.height)
