"""HLS playlists (master + media, fMP4 segments) and a DASH MPD, as text.

One segment per fragment. Playlist types follow HLS: ``VOD`` (complete, EXT-X-ENDLIST),
``EVENT`` (grows, never drops old segments) and ``LIVE`` (a sliding window, no type tag).
A gap between fragments longer than ``gap_ms`` gets EXT-X-DISCONTINUITY so players do not
stretch time across it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.sax.saxutils import quoteattr

DEFAULT_GAP_MS = 200


@dataclass(frozen=True)
class Segment:
    uri: str
    start_ms: int  # producer or server time of the first frame (epoch ms)
    duration_ms: int
    fragment_number: str = ""


def iso_time(ms: int) -> str:
    """``2026-11-23T16:40:00.123Z`` (EXT-X-PROGRAM-DATE-TIME, MPD availabilityStartTime)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def master_playlist(media_uri: str, codecs: str, width: int, height: int, bandwidth: int) -> str:
    return (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f'#EXT-X-STREAM-INF:BANDWIDTH={max(1, bandwidth)},CODECS="{codecs}",RESOLUTION={width}x{height}\n'
        f"{media_uri}\n"
    )


def media_playlist(
    segments: list[Segment],
    init_uri: str | None,
    playlist_type: str = "VOD",
    media_sequence: int = 0,
    discontinuity_sequence: int = 0,
    program_date_time: str = "gaps",
    ended: bool | None = None,
    gap_ms: int = DEFAULT_GAP_MS,
    target_duration_s: int | None = None,
) -> str:
    """An HLS media playlist of fMP4 segments.

    ``init_uri`` is the fMP4 init segment (EXT-X-MAP); None for MPEG-TS segments.
    ``ended`` defaults to True for VOD only; a LIVE or EVENT playlist ends when the caller says so.
    ``program_date_time``: ``"always"`` (every segment), ``"gaps"`` (first segment and after each
    discontinuity) or ``"never"``. ``gap_ms < 0`` marks every segment as a discontinuity.
    """
    if program_date_time not in ("always", "gaps", "never"):
        raise ValueError(f"program_date_time must be always, gaps or never, not {program_date_time!r}")
    if playlist_type not in ("VOD", "EVENT", "LIVE"):
        raise ValueError(f"playlist type must be VOD, EVENT or LIVE, not {playlist_type!r}")
    longest = max((s.duration_ms for s in segments), default=1000)
    target = target_duration_s or max(1, math.ceil(longest / 1000))
    version = 7 if init_uri else 3
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}"]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    if playlist_type != "LIVE":
        lines.append(f"#EXT-X-PLAYLIST-TYPE:{playlist_type}")
    if init_uri:
        lines.append(f'#EXT-X-MAP:URI="{init_uri}"')
    previous_end: int | None = None
    for segment in segments:
        gap = previous_end is not None and (gap_ms < 0 or abs(segment.start_ms - previous_end) > gap_ms)
        if gap:
            lines.append("#EXT-X-DISCONTINUITY")
        if program_date_time == "always" or (program_date_time == "gaps" and (previous_end is None or gap)):
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso_time(segment.start_ms)}")
        lines.append(f"#EXTINF:{segment.duration_ms / 1000:.3f},")
        lines.append(segment.uri)
        previous_end = segment.start_ms + segment.duration_ms
    if ended if ended is not None else playlist_type == "VOD":
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def count_discontinuities(segments: list[Segment], gap_ms: int = DEFAULT_GAP_MS) -> int:
    """How many EXT-X-DISCONTINUITY tags ``segments`` produce (to carry a sliding window's count)."""
    return sum(1 for a, b in zip(segments, segments[1:]) if abs(b.start_ms - (a.start_ms + a.duration_ms)) > gap_ms)


def dash_mpd(
    segments: list[Segment],
    init_uri: str,
    media_template: str,
    codecs: str,
    width: int,
    height: int,
    bandwidth: int,
    base_ms: int,
    start_number: int = 1,
    dynamic: bool = False,
    min_update_s: float = 2.0,
    fragment_numbers: bool = False,
    fragment_timestamps: bool = False,
) -> str:
    """A single-period MPD: SegmentTemplate (``$Number$`` or ``$Time$`` in ``media_template``) + SegmentTimeline.

    Times are relative to ``base_ms`` in milliseconds; segment ``start_number + i`` is ``segments[i]``.
    ``fragment_numbers`` / ``fragment_timestamps`` add KVS's ``kvs:fn`` / ``kvs:ts`` (epoch ms) to each S.
    """

    def entry(s: Segment) -> str:
        extra = f' kvs:fn="{s.fragment_number}"' if fragment_numbers and s.fragment_number else ""
        extra += f' kvs:ts="{s.start_ms}"' if fragment_timestamps else ""
        return f'<S t="{max(0, s.start_ms - base_ms)}" d="{s.duration_ms}"{extra}/>'

    timeline = "".join(entry(s) for s in segments)
    total_ms = sum(s.duration_ms for s in segments)
    kind = (
        f'type="dynamic" availabilityStartTime="{iso_time(base_ms)}" minimumUpdatePeriod="PT{min_update_s:.1f}S" '
        if dynamic
        else f'type="static" mediaPresentationDuration="PT{total_ms / 1000:.3f}S" '
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:kvs="urn:edge-ingest:kvs" '
        'profiles="urn:mpeg:dash:profile:isoff-live:2011" '
        f'{kind}minBufferTime="PT2S">\n'
        ' <Period id="0" start="PT0S">\n'
        '  <AdaptationSet contentType="video" mimeType="video/mp4" segmentAlignment="true">\n'
        f'   <Representation id="v" codecs="{codecs}" width="{width}" height="{height}" bandwidth="{max(1, bandwidth)}">\n'
        f'    <SegmentTemplate timescale="1000" startNumber="{start_number}" '
        f"initialization={quoteattr(init_uri)} media={quoteattr(media_template)}>"
        f"<SegmentTimeline>{timeline}</SegmentTimeline></SegmentTemplate>\n"
        "   </Representation>\n  </AdaptationSet>\n </Period>\n</MPD>\n"
    )
