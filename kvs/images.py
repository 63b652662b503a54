"""Still images from fragments: decode with PyAV, pick frames at a sampling interval, encode JPEG/PNG.

GetImages asks for one image every ``SamplingInterval`` ms between two times; each image is
the first decoded frame at or after its sample time (frames before it in the GOP are decoded
but not kept, since a P-frame is not decodable alone).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PyAV and OpenCV load in ~0.5 s: a gateway imports them on its first image, not at start
    import av
    import numpy as np

FORMATS = ("JPEG", "PNG")
DEFAULT_JPEG_QUALITY = 80


@dataclass(frozen=True)
class Image:
    timestamp_ms: int
    data: bytes
    width: int
    height: int


def _encode(bgr: np.ndarray, image_format: str, quality: int) -> bytes:
    import cv2

    if image_format == "JPEG":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    elif image_format == "PNG":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"image format must be JPEG or PNG, not {image_format!r}")
    if not ok:
        raise RuntimeError(f"{image_format} encoding failed")
    return bytes(buf.tobytes())


def _resize(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def target_size(src_w: int, src_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Output size: both given -> as asked; one given -> keep the aspect ratio; none -> the source's."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(src_h * width / src_w))
    if height:
        return max(1, round(src_w * height / src_h)), height
    return src_w, src_h


def iter_frames(mkv: bytes) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decoded frames of a fragment as ``(timestamp_ms, frame)``, lazily (stop early to save work)."""
    import av

    with av.open(io.BytesIO(mkv), mode="r") as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            yield int(round(frame.pts * frame.time_base * 1000)), frame


def decode_frames(mkv: bytes) -> list[tuple[int, np.ndarray]]:
    """Every frame of a fragment as ``(timestamp_ms, BGR array)``."""
    return [(ts, frame.to_ndarray(format="bgr24")) for ts, frame in iter_frames(mkv)]


def images_from_fragment(
    mkv: bytes,
    sample_times_ms: list[int],
    image_format: str = "JPEG",
    width: int | None = None,
    height: int | None = None,
    quality: int = DEFAULT_JPEG_QUALITY,
    offsets: bool = False,
) -> dict[int, Image]:
    """For each sample time, the first frame at or after it in this fragment (keyed by sample time).

    With ``offsets`` the sample times are milliseconds after the fragment's first frame instead
    of timestamps: a fragment sent with RELATIVE timecodes has its own clock, not wall time.
    Sample times that fall after the fragment's last frame get nothing here. Decoding stops after
    the last frame needed, and only chosen frames are converted and encoded.
    """
    if image_format not in FORMATS:
        raise ValueError(f"image format must be JPEG or PNG, not {image_format!r}")
    wanted = sorted(sample_times_ms)
    if not wanted:
        return {}
    out: dict[int, Image] = {}
    i = 0
    base: int | None = None
    for ts, frame in iter_frames(mkv):
        if offsets:
            base = ts if base is None else base
            ts -= base
        if wanted[i] > ts:
            continue
        bgr = frame.to_ndarray(format="bgr24")
        w, h = target_size(bgr.shape[1], bgr.shape[0], width, height)
        img = bgr if (w, h) == (bgr.shape[1], bgr.shape[0]) else _resize(bgr, w, h)
        encoded = Image(ts, _encode(img, image_format, quality), w, h)
        while i < len(wanted) and wanted[i] <= ts:
            out[wanted[i]] = encoded
            i += 1
        if i >= len(wanted):
            break
    return out


def sample_times(start_ms: int, end_ms: int, interval_ms: int) -> list[int]:
    """``start, start+interval, ...`` up to and including ``end``."""
    if interval_ms <= 0:
        raise ValueError("sampling interval must be positive")
    return list(range(start_ms, end_ms + 1, interval_ms))
