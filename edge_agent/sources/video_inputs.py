"""Where the camera source gets its pictures: a synthetic scene, or PyAV (FFmpeg) pictures or packets.

Each input yields ``VideoFrame``s until its stream ends or fails (then the camera source reopens
it with backoff). Timestamps are epoch milliseconds and strictly increasing, as MKV fragments need.

- ``SyntheticCamera``: a realistic stand-in for a physical camera (moving pattern, a running clock,
  sensor noise) at the configured size and rate, in real time.
- ``FrameReader``: PyAV decoding a device index, ``/dev/videoN`` (MJPEG asked for, raw accepted),
  an RTSP/HTTP URL or a file; yuv420p pictures at the configured size, to be encoded.
- ``PacketReader``: PyAV demuxing without decoding (passthrough): H.264 from RTSP or files, H.264
  or else MJPEG from a V4L2 device. Length-prefixed (MP4/MKV) H.264 is rewritten to Annex-B with the SPS/PPS
  in front of every keyframe, so each fragment can be decoded on its own. Streams with B-frames
  are timestamped by decode time (the order MKV blocks are stored in).

Files are read at their own frame rate (``realtime``), as a camera would deliver them. Live
streams are timestamped by their own clock anchored to the wall clock (no network jitter in the
fragment timeline), re-anchored if the two drift more than ``MAX_DRIFT_S`` apart.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kvs import h264

log = logging.getLogger("edge_agent.sources.camera")

START_CODE = b"\x00\x00\x00\x01"
#: A live stream's own clock may wander this far from the wall clock before timestamps re-anchor.
MAX_DRIFT_S = 2.0
#: How long opening or reading a network stream may stall before it counts as lost.
NETWORK_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class VideoFrame:
    """A picture to encode (``image``, an ``av.VideoFrame``) or an already-encoded one (``packet``)."""

    timestamp_ms: int
    image: Any = None
    packet: bytes | None = None
    keyframe: bool = False


class Clock:
    """Epoch-ms timestamps that never repeat or go back, optionally paced to real time."""

    def __init__(self, not_before_ms: int = 0) -> None:
        self.last_ms = not_before_ms
        self.base_wall: float | None = None
        self.base_media = 0.0

    def now(self) -> int:
        self.last_ms = max(int(time.time() * 1000), self.last_ms + 1)
        return self.last_ms

    def media(self, media_seconds: float, stop: threading.Event, realtime: bool) -> int | None:
        """The timestamp of a frame at ``media_seconds`` into a file; waits for it when ``realtime``.
        None if ``stop`` was set while waiting."""
        if self.base_wall is None:
            self.base_wall = max(time.time(), (self.last_ms + 1) / 1000)
            self.base_media = media_seconds
        due = self.base_wall + (media_seconds - self.base_media)
        if realtime:
            delay = due - time.time()
            if delay > 0 and stop.wait(delay):
                return None
        self.last_ms = max(int(due * 1000), self.last_ms + 1)
        return self.last_ms


    def live(self, media_seconds: float) -> int:
        """The timestamp of a live stream's frame: its own clock (smooth, no network jitter),
        anchored to the wall clock and re-anchored when the two drift apart by ``MAX_DRIFT_S``."""
        now = time.time()
        if self.base_wall is None or abs(self.base_wall + (media_seconds - self.base_media) - now) > MAX_DRIFT_S:
            self.base_wall = max(now, (self.last_ms + 1) / 1000)
            self.base_media = media_seconds
        due = self.base_wall + (media_seconds - self.base_media)
        self.last_ms = max(int(due * 1000), self.last_ms + 1)
        return self.last_ms


#: A 3x5 pixel font for the synthetic camera's clock (rows of 3 bits): drawing text with OpenCV
#: would import it (~30 MiB of RSS with its bundled libraries) for two lines of digits.
GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", "-": "000000111000000", ":": "000010000010000",
    ".": "000000000000010", "#": "101111101111101", " ": "000000000000000",
}
#: Noisy copies of each scene row the synthetic camera picks from (per row and frame).
NOISE_VARIANTS = 16
#: Sensor noise amplitude, in luma steps.
NOISE = 10
BOX_BGR = (30, 30, 230)
#: The clock is white on a black label, as camera overlays are.
TEXT_BGR = (255, 255, 255)
LABEL_BGR = (0, 0, 0)


def yuv(b: float, g: float, r: float) -> tuple[int, int, int]:
    """BT.601 limited-range Y'CbCr of a BGR colour (what FFmpeg assumes for yuv420p)."""
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


def glyph_rows(scale: int, lit: int, unlit: int) -> dict[str, list[bytes]]:
    """Each glyph as ``5 * scale`` rows of luma bytes, ``4 * scale`` wide (3 columns and a gap),
    each font pixel ``scale`` pixels: a line of text is then one join per row."""
    out = {}
    for ch, bits in GLYPHS.items():
        rows = []
        for row in range(5):
            line = b"".join(bytes([lit if bit == "1" else unlit]) * scale for bit in bits[3 * row:3 * row + 3] + "0")
            rows += [line] * scale
        out[ch] = rows
    return out


class Plane:
    """Drawing into one plane of an ``av.VideoFrame``: rows of ``width`` bytes ``line_size`` apart."""

    def __init__(self, plane: Any, width: int, rows: list[bytes]) -> None:
        self.data = memoryview(plane)  # the frame's own memory: no copy on the way to the encoder
        self.width = width
        self.height = len(rows)
        self.stride = plane.line_size
        pad = bytes(self.stride - width)
        self.data[:] = pad.join(rows) + pad

    def fill(self, x: int, y: int, w: int, h: int, value: int) -> None:
        """Paint a rectangle (clipped to the plane)."""
        x0, x1 = max(0, x), min(self.width, x + w)
        if x1 <= x0:
            return
        run = bytes([value]) * (x1 - x0)
        for row in range(max(0, y), min(self.height, y + h)):
            offset = row * self.stride
            self.data[offset + x0:offset + x1] = run

    def paste(self, x: int, y: int, rows: list[bytes]) -> None:
        """Copy rows of bytes with their top left corner at (x, y) (clipped to the plane)."""
        x0 = max(0, x)
        for i, line in enumerate(rows):
            row = y + i
            if 0 <= row < self.height:
                line = line[x0 - x:self.width - x]
                offset = row * self.stride + x0
                self.data[offset:offset + len(line)] = line


class SyntheticCamera:
    """Frames of a plausible scene: drifting colour bands, a moving box, a clock, sensor noise.

    Drawn straight into YUV 4:2:0 planes with byte operations: no NumPy (~12 MiB of RSS) and no
    colour conversion before the encoder. The bands are one periodic row shifted per picture row
    and per frame, so each row is a slice of a precomputed noisy copy of that row."""

    def __init__(self, width: int, height: int, fps: float, clock: Clock) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.clock = clock
        rng = random.Random(1234)
        # one period of the bands (a sine across the width), as Y, U, V per column
        colours = []
        for x in range(width):
            band = math.sin(2 * math.pi * x / width) * 0.5 + 0.5
            colours.append(yuv(band * 200, (1 - band) * 160 + 40, 90))
        luma = [c[0] for c in colours]
        # the row twice over (any rotation is one slice), in noisy copies (noise reaches luma only,
        # as equal noise on B, G and R would)
        self._luma = [
            bytes(min(255, max(0, value + rng.randint(-NOISE, NOISE))) for value in luma * 2)
            for _ in range(NOISE_VARIANTS)
        ]
        self._u = bytes(c[1] for c in colours[::2] * 2)
        self._v = bytes(c[2] for c in colours[::2] * 2)
        self.box = max(8, min(width, height) // 6)
        box_y, self._box_u, self._box_v = yuv(*BOX_BGR)
        self._box_luma = [
            bytes(min(255, max(0, box_y + rng.randint(-NOISE, NOISE))) for _ in range(self.box))
            for _ in range(NOISE_VARIANTS)
        ]
        self.scale = max(1, width // 160)
        self._glyphs = glyph_rows(self.scale, yuv(*TEXT_BGR)[0], yuv(*LABEL_BGR)[0])
        self._rng = rng

    def frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        interval = 1.0 / self.fps
        next_at = time.monotonic()
        n = 0
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            next_at = max(next_at + interval, time.monotonic() - interval)  # don't burst after a stall
            ts = self.clock.now()
            yield VideoFrame(ts, image=self.render(n, ts))
            n += 1

    def render(self, n: int, timestamp_ms: int) -> Any:
        """Frame ``n`` (taken at ``timestamp_ms``) as a yuv420p ``av.VideoFrame``."""
        import av

        w, h = self.width, self.height
        picture = av.VideoFrame(w, h, "yuv420p")
        y_plane, u_plane, v_plane = picture.planes
        shift = n * 4  # the bands drift right 4 pixels a frame and slant by half a period down the picture
        starts = [(y * w // (2 * h) - shift) % w for y in range(h)]
        noisy = self._rng.choices(self._luma, k=h)
        luma = Plane(y_plane, w, [row[s:s + w] for row, s in zip(noisy, starts)])
        cw = w // 2
        u = Plane(u_plane, cw, [self._u[s // 2:s // 2 + cw] for s in starts[::2]])
        v = Plane(v_plane, cw, [self._v[s // 2:s // 2 + cw] for s in starts[::2]])
        box = self.box
        bx = int((w - box) * (0.5 + 0.45 * math.sin(n / 20)))
        by = int((h - box) * (0.5 + 0.45 * math.cos(n / 27)))
        luma.paste(bx, by, self._rng.choices(self._box_luma, k=box))
        u.fill(bx // 2, by // 2, box // 2, box // 2, self._box_u)
        v.fill(bx // 2, by // 2, box // 2, box // 2, self._box_v)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp_ms / 1000)) + f".{timestamp_ms % 1000:03d}"
        scale = self.scale
        for text, x, y in ((stamp, 10, 10), (f"#{n}", 10, h - 10 - 5 * scale)):
            luma.paste(x, y, [b"".join(self._glyphs.get(ch, self._glyphs[" "])[row] for ch in text) for row in range(5 * scale)])
            u.fill(x // 2, y // 2, 2 * scale * len(text), (5 * scale + 1) // 2, 128)  # grey: no colour under the label
            v.fill(x // 2, y // 2, 2 * scale * len(text), (5 * scale + 1) // 2, 128)
        return picture

    def close(self) -> None:
        pass


def _is_device(device: int | str) -> bool:
    return isinstance(device, int) or str(device).startswith("/dev/video")


def _is_file(device: int | str) -> bool:
    return not _is_device(device) and "://" not in str(device)


#: What a V4L2 camera is asked for, in order. Passthrough keeps H.264 from a camera that encodes
#: on board (a Pi camera through bcm2835-v4l2, some webcams), else MJPEG; decoding asks for MJPEG
#: (a webcam's full frame rate at larger sizes), else takes the device's default (raw YUYV).
PASSTHROUGH_V4L2_FORMATS: tuple[str | None, ...] = ("h264", "mjpeg")
DECODE_V4L2_FORMATS: tuple[str | None, ...] = ("mjpeg", None)


def open_v4l2(path: str, width: int, height: int, fps: float, formats: tuple[str | None, ...]) -> Any:
    """The first of ``formats`` the device delivers (``None``: its default), as a PyAV container."""
    import av

    for i, fmt in enumerate(formats):
        options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
        if fmt:
            options["input_format"] = fmt
        try:
            return av.open(path, format="video4linux2", options=options)
        except (FileNotFoundError, PermissionError):
            raise  # no such camera (yet): no other format will help
        except av.FFmpegError as exc:
            if i + 1 == len(formats):
                raise
            log.info("%s: no %s (%s); asking for %s", path, fmt or "default format", exc, formats[i + 1] or "its default format")
    raise ValueError("no V4L2 format to ask for")


class FFmpegInput:
    """A device, URL or file opened with PyAV, and the timeline of its first video stream."""

    def __init__(self, device: int | str, width: int, height: int, fps: float, realtime: bool, clock: Clock,
                 v4l2_formats: tuple[str | None, ...]) -> None:
        import av

        self.clock = clock
        self.is_file = _is_file(device)
        self.realtime = realtime and self.is_file
        if _is_device(device):
            self.container: Any = open_v4l2(f"/dev/video{device}" if isinstance(device, int) else str(device), width, height, fps, v4l2_formats)
        else:
            options = {"rtsp_transport": "tcp"} if str(device).startswith("rtsp://") else {}
            self.container = av.open(str(device), options=options, timeout=NETWORK_TIMEOUT_MS / 1000)
        try:
            self.stream = self.container.streams.video[0]
        except IndexError:
            self.container.close()
            raise OSError(f"{device!r} has no video stream") from None
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else fps
        self._first: float | None = None
        self._last: float | None = None

    def _timestamp(self, stamp: int | None, stop: threading.Event) -> int | None:
        """Epoch ms of a packet or frame stamped ``stamp`` (stream time base); None if ``stop``
        was set while a file waited for its time."""
        time_base = self.stream.time_base
        if stamp is not None and time_base is not None:
            seconds = float(stamp * time_base)
        else:  # RTSP's first packet carries no time yet (FFmpeg waits for RTCP): one frame on
            seconds = (self._last + 1 / self.fps) if self._last is not None else 0.0
        self._last = seconds
        if self._first is None:
            self._first = seconds
        if self.is_file:
            return self.clock.media(seconds - self._first, stop, self.realtime)
        return self.clock.live(seconds - self._first)

    def close(self) -> None:
        self.container.close()


class FrameReader(FFmpegInput):
    """Decoded pictures (FFmpeg decodes MJPEG, raw V4L2, H.264...), converted to yuv420p at the
    configured size for the encoder: no OpenCV or NumPy, whose ~40 MiB of RSS a Pi can't spare."""

    def __init__(self, device: int | str, width: int, height: int, fps: float, realtime: bool, clock: Clock) -> None:
        super().__init__(device, width, height, fps, realtime, clock, DECODE_V4L2_FORMATS)
        self.width = width
        self.height = height

    def frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        for packet in self.container.demux(self.stream):  # the last (empty) packet flushes the decoder
            for picture in packet.decode():
                if stop.is_set():
                    return
                ts = self._timestamp(picture.pts, stop)
                if ts is None:
                    return
                picture = picture.reformat(self.width, self.height, "yuv420p", interpolation="AREA")
                yield VideoFrame(ts, image=picture)


class PacketReader(FFmpegInput):
    """Encoded packets straight from the container or device (no decoding)."""

    def __init__(self, device: int | str, width: int, height: int, fps: float, realtime: bool, clock: Clock) -> None:
        super().__init__(device, width, height, fps, realtime, clock, PASSTHROUGH_V4L2_FORMATS)
        ctx = self.stream.codec_context
        name = ctx.name
        if name == "h264":
            self.codec = "h264-passthrough"
        elif name == "mjpeg":
            self.codec = "mjpeg-passthrough"
        else:
            self.container.close()
            raise ValueError(f"{device!r} delivers {name}; passthrough takes H.264 or MJPEG (use codec = \"h264\" to re-encode)")
        self.width = ctx.width or width
        self.height = ctx.height or height
        self.avc: h264.AvcConfig | None = None
        extradata = bytes(ctx.extradata or b"")
        if name == "h264" and extradata[:1] == b"\x01":
            self.avc = h264.AvcConfig.from_avcc(extradata)  # MP4/MKV style: length-prefixed samples

    def _annexb(self, data: bytes, keyframe: bool) -> bytes:
        if self.avc is None:
            return data
        nals = h264.split_length_prefixed(data, self.avc.length_size)
        if keyframe:
            nals = [*self.avc.sps, *self.avc.pps, *nals]
        return b"".join(START_CODE + nal for nal in nals)

    def frames(self, stop: threading.Event) -> Iterator[VideoFrame]:
        for packet in self.container.demux(self.stream):
            if stop.is_set():
                return
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            data = bytes(packet)
            keyframe = bool(packet.is_keyframe)
            if self.codec == "h264-passthrough":
                try:
                    data = self._annexb(data, keyframe)
                except ValueError as exc:
                    log.warning("skipping a malformed H.264 packet: %s", exc)
                    continue
            ts = self._timestamp(packet.dts if packet.dts is not None else packet.pts, stop)
            if ts is None:
                return
            yield VideoFrame(ts, packet=data, keyframe=keyframe)
