"""Fragments (MKV) -> MP4 clip, or fMP4 init + one media segment per fragment. No re-encoding.

The samples are the fragments' H.264 access units as they are (length-prefixed NAL units, the
same layout in MKV and MP4); only the container changes. Times come from the fragments'
producer timestamps, placed on a timeline that starts at ``base_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvs import h264, mkv, mp4
from kvs.reader import FragmentContent, read_fragment


class UnsupportedCodecError(ValueError):
    """The fragments hold video this remuxer cannot put in MP4 (only H.264 is supported)."""


class MissingCodecPrivateDataError(ValueError):
    """H.264 without SPS/PPS in the track or in the first keyframe."""


def avc_config(content: FragmentContent) -> h264.AvcConfig:
    """The stream's parameter sets: from CodecPrivate, else from the in-band SPS/PPS of a keyframe."""
    if content.track.codec_id != mkv.CODEC_H264:
        raise UnsupportedCodecError(f"codec {content.track.codec_id} cannot be remuxed to MP4 (H.264 only)")
    private = content.track.codec_private
    if private and h264.is_annexb(private):  # some producers put raw SPS/PPS there instead of avcC
        nals = h264.split_annexb(private)
        sps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_SPS)
        pps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_PPS)
        if sps and pps:
            return h264.AvcConfig(sps, pps)
    elif private:
        try:
            return h264.AvcConfig.from_avcc(private)
        except (ValueError, IndexError) as exc:
            raise MissingCodecPrivateDataError(f"invalid H.264 CodecPrivate: {exc}") from exc
    for frame in content.frames:
        try:
            nals = _nals(frame.data)
        except ValueError:
            continue
        sps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_SPS)
        pps = tuple(n for n in nals if h264.nal_type(n) == h264.NAL_PPS)
        if sps and pps:
            return h264.AvcConfig(sps, pps)
    raise MissingCodecPrivateDataError("no SPS/PPS in the track or the frames")


def codec_string(content: FragmentContent) -> str:
    """RFC 6381 codec for HLS CODECS= and MSE ``isTypeSupported``, e.g. ``avc1.42c01e``."""
    return avc_config(content).codec_string


def _nals(sample: bytes) -> list[bytes]:
    """NAL units of a sample stored length-prefixed (the MKV norm) or, by some producers, as Annex-B."""
    try:
        return h264.split_length_prefixed(sample)
    except ValueError:
        if h264.is_annexb(sample):
            return h264.split_annexb(sample)
        raise


def _mp4_sample_data(sample: bytes) -> bytes:
    """The sample as MP4 wants it: 4-byte length-prefixed NAL units."""
    if h264.is_annexb(sample):
        try:
            h264.split_length_prefixed(sample)
            return sample  # valid as length-prefixed too (a 1-byte first NAL): keep as is
        except ValueError:
            return h264.length_prefixed(h264.split_annexb(sample))
    return sample


def _samples(content: FragmentContent, next_start_ms: int | None) -> list[mp4.Sample]:
    durations = content.frame_durations(next_start_ms)
    return [mp4.Sample(_mp4_sample_data(f.data), d, f.keyframe) for f, d in zip(content.frames, durations)]


def init_segment(content: FragmentContent) -> bytes:
    """The fMP4 init segment (ftyp+moov) for a stream whose fragments look like ``content``."""
    config = avc_config(content)
    return mp4.init_segment(content.track.width, content.track.height, config.to_avcc())


def media_segment(content: FragmentContent, sequence: int, base_ms: int, next_start_ms: int | None = None) -> bytes:
    """One fragment as ``moof+mdat``, decode time ``start - base_ms`` (never negative)."""
    avc_config(content)  # refuse codecs MP4 cannot carry here
    base = max(0, content.frames[0].timestamp_ms - base_ms)
    return mp4.media_segment(_samples(content, next_start_ms), sequence, base)


@dataclass(frozen=True)
class ClipPart:
    """One fragment's share of a clip: what the MP4 header needs, without the frame data."""

    timestamps: list[int]
    sizes: list[int]
    keyframes: list[bool]
    end_ms: int


def clip_part(content: FragmentContent) -> ClipPart:
    sizes = [len(_mp4_sample_data(f.data)) for f in content.frames]
    return ClipPart([f.timestamp_ms for f in content.frames], sizes, [f.keyframe for f in content.frames], content.end_ms)


def clip_part_data(content: FragmentContent) -> bytes:
    """The fragment's samples as they follow the clip header (same bytes ``clip_part`` measured)."""
    return b"".join(_mp4_sample_data(f.data) for f in content.frames)


def clip_header(first: FragmentContent, parts: list[ClipPart]) -> bytes:
    """ftyp + moov + mdat header for a clip of ``parts`` (in time order); the clip starts at time 0.

    Contiguous fragments join exactly (a fragment's last frame lasts until the next one starts);
    a real gap between fragments is left out, so the clip plays straight on.
    """
    if not parts:
        raise ValueError("no fragments")
    config = avc_config(first)
    table: list[tuple[int, int, bool]] = []
    for i, part in enumerate(parts):
        nxt = parts[i + 1].timestamps[0] if i + 1 < len(parts) else None
        end = nxt if nxt is not None and part.timestamps[-1] < nxt <= part.end_ms else part.end_ms
        durations = [b - a for a, b in zip(part.timestamps, part.timestamps[1:])]
        last = end - part.timestamps[-1]
        if last <= 0:
            last = durations[-1] if durations else max(1, first.track.default_duration_ns // 1_000_000) or 33
        table += list(zip(part.sizes, durations + [last], part.keyframes))
    return mp4.progressive_header(first.track.width, first.track.height, config.to_avcc(), table)


def mp4_clip(contents: list[FragmentContent]) -> bytes:
    """One progressive MP4 from fragments in time order (see :func:`clip_header`)."""
    if not contents:
        raise ValueError("no fragments")
    header = clip_header(contents[0], [clip_part(c) for c in contents])
    return header + b"".join(clip_part_data(c) for c in contents)


def fragments_to_mp4(documents: list[bytes]) -> bytes:
    """Convenience: stored MKV fragments -> one MP4 clip."""
    return mp4_clip([read_fragment(d) for d in documents])


def ts_segment(mkv_document: bytes) -> bytes:
    """One fragment as an MPEG-TS segment (HLS ``ContainerFormat=MPEG_TS``), by PyAV stream copy.

    FFmpeg's muxer turns the length-prefixed samples into Annex-B; timestamps stay the producer's
    (90 kHz, so they wrap every 26.5 hours like any TS clock, which HLS players expect).
    """
    import io

    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(mkv_document), mode="r") as source, av.open(out, mode="w", format="mpegts") as target:
        video = source.streams.video[0]
        if video.codec_context.name != "h264":
            raise UnsupportedCodecError(f"codec {video.codec_context.name} cannot go into MPEG-TS here (H.264 only)")
        stream = target.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            packet.stream = stream
            target.mux(packet)
    return out.getvalue()

