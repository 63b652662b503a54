"""What a streaming session serves: HLS playlists, the DASH manifest, fMP4 init and media segments.

Segments are fMP4 (one init segment from a fragment's SPS/PPS, one ``moof+mdat`` per fragment)
or, for ContainerFormat MPEG_TS, one TS file per fragment; both remuxed on request. Media time is the producer timestamp in epoch milliseconds, so a
player can map ``currentTime`` (seconds) to wall-clock time without any extra lookup. Every
request carries the session token ``gateway.kvs.sessions`` issued.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.kvs.clips import media_error
from gateway.kvs.request import invalid, store_of
from gateway.kvs.sessions import Session, from_request
from gateway.kvs.store import (
    BY_PRODUCER,
    FragmentInfo,
    FragmentNotFoundError,
    StreamNotFoundError,
    VideoStore,
    fragment_number,
    parse_fragment_number,
)
from kvs import MkvError, playlist, remux
from kvs.reader import read_fragment

HLS_TYPE = "application/vnd.apple.mpegurl"
DASH_TYPE = "application/dash+xml"


def _check_stream(store: VideoStore, session: Session) -> None:
    if store.describe(session.stream).id != session.stream_id:
        raise StreamNotFoundError(session.stream)  # deleted and re-created: not the session's stream


def _window(store: VideoStore, session: Session) -> list[FragmentInfo]:
    """The fragments a playlist lists right now, in time order."""
    _check_stream(store, session)
    if session.mode == "LIVE":
        last = store.last_fragment_number(session.stream_id)
        if last is None:
            return []
        _, seq = parse_fragment_number(last)
        after = fragment_number(session.stream_id, max(0, seq - session.max_results))
        infos = store.list_fragments_by_id(session.stream_id, None, None, session.by, session.max_results, after)
    else:
        infos = store.list_fragments_by_id(session.stream_id, session.start_ms, session.end_ms, session.by, session.max_results)
    return sorted(infos, key=lambda i: (i.producer_ts_ms, i.fragment_number))


def _ended(session: Session) -> bool:
    if session.mode == "ON_DEMAND":
        return True
    return session.mode == "LIVE_REPLAY" and session.end_ms is not None and session.end_ms <= time.time() * 1000


def _gap_ms(session: Session) -> int:
    return {"ALWAYS": -1, "NEVER": 2**62}.get(session.discontinuity, playlist.DEFAULT_GAP_MS)


def _media_uri(session: Session, token: str, number: str) -> str:
    name = "getTSFragment.ts" if session.container == "MPEG_TS" else "getMP4MediaFragment.mp4"
    return f"{name}?SessionToken={token}&FragmentNumber={number}"


def _init_content(store: VideoStore, session: Session) -> Any:
    """The content of the session's init fragment (or, if retention removed it, of the oldest one)."""
    try:
        data = store.read_fragment_by_id(session.stream_id, session.init_fragment)
    except FragmentNotFoundError:
        oldest = store.list_fragments_by_id(session.stream_id, None, None, BY_PRODUCER, 1)
        if not oldest:
            raise
        data = store.read_fragment_by_id(session.stream_id, oldest[0].fragment_number)
    return read_fragment(data)


def _master(store: VideoStore, session: Session, token: str) -> str:
    _check_stream(store, session)
    content = _init_content(store, session)
    try:
        codecs = remux.codec_string(content)
    except ValueError as exc:
        raise media_error(exc) from exc
    seconds = max(content.duration_ms, 1) / 1000
    size = sum(len(f.data) for f in content.frames)
    bandwidth = int(size * 8 / seconds * 1.2)
    return playlist.master_playlist(f"getHLSMediaPlaylist.m3u8?SessionToken={token}", codecs,
                                    content.track.width, content.track.height, bandwidth)


async def hls_master(request: web.Request) -> web.Response:
    session, token = await from_request(request)
    text = await asyncio.to_thread(_master, store_of(request), session, token)
    return web.Response(text=text, content_type=HLS_TYPE)


#: (stream id, session's first fragment) -> (last seq counted, its end ms, discontinuities so far):
#: a LIVE window slides, so the tags that left it are counted once, incrementally.
_LIVE_DISCONTINUITIES: dict[tuple[int, str], tuple[int, int | None, int]] = {}
_MAX_TRACKED_SESSIONS = 1000


def _discontinuity_sequence(store: VideoStore, session: Session, infos: list[FragmentInfo], gap_ms: int) -> int:
    """EXT-X-DISCONTINUITY-SEQUENCE of a LIVE window: the gaps between fragments of this session
    up to the window's first one (whose tag is no longer shown)."""
    if session.mode != "LIVE" or not infos or gap_ms >= 2**62:
        return 0
    first_seq = parse_fragment_number(infos[0].fragment_number)[1]
    key = (session.stream_id, session.init_fragment)
    start_seq = parse_fragment_number(session.init_fragment)[1] - 1
    last_seq, last_end, count = _LIVE_DISCONTINUITIES.get(key, (start_seq, None, 0))
    while last_seq < first_seq:
        batch = store.list_fragments_by_id(session.stream_id, None, None, session.by, min(1000, first_seq - last_seq),
                                           fragment_number(session.stream_id, max(0, last_seq)))
        if not batch:
            break
        for info in batch:
            seq = parse_fragment_number(info.fragment_number)[1]
            if seq > first_seq:
                break
            if last_end is not None and (gap_ms < 0 or abs(info.producer_ts_ms - last_end) > gap_ms):
                count += 1
            last_seq, last_end = seq, info.producer_ts_ms + info.duration_ms
        else:
            continue
        break
    if len(_LIVE_DISCONTINUITIES) >= _MAX_TRACKED_SESSIONS:
        _LIVE_DISCONTINUITIES.clear()
    _LIVE_DISCONTINUITIES[key] = (last_seq, last_end, count)
    return count


def _media_playlist(store: VideoStore, session: Session, token: str) -> str:
    infos = _window(store, session)
    segments = [playlist.Segment(_media_uri(session, token, i.fragment_number), i.producer_ts_ms, i.duration_ms,
                                 i.fragment_number) for i in infos]
    sequence = parse_fragment_number(infos[0].fragment_number)[1] if infos else 0
    kind = {"LIVE": "LIVE", "LIVE_REPLAY": "EVENT", "ON_DEMAND": "VOD"}[session.mode]
    longest = max((s.duration_ms for s in segments), default=1000)
    return playlist.media_playlist(
        segments, None if session.container == "MPEG_TS" else f"getMP4InitFragment.mp4?SessionToken={token}", kind,
        media_sequence=sequence, discontinuity_sequence=_discontinuity_sequence(store, session, infos, _gap_ms(session)),
        program_date_time="always" if session.timestamps == "ALWAYS" else "never",
        ended=_ended(session), gap_ms=_gap_ms(session), target_duration_s=max(1, math.ceil(longest / 1000)),
    )


async def hls_media(request: web.Request) -> web.Response:
    session, token = await from_request(request)
    text = await asyncio.to_thread(_media_playlist, store_of(request), session, token)
    return web.Response(text=text, content_type=HLS_TYPE, headers={"Cache-Control": "no-cache"})


def _init_segment(store: VideoStore, session: Session) -> bytes:
    try:
        return remux.init_segment(_init_content(store, session))
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc


async def init_fragment(request: web.Request) -> web.Response:
    session, _ = await from_request(request)
    data = await asyncio.to_thread(_init_segment, store_of(request), session)
    return web.Response(body=data, content_type="video/mp4", headers={"Cache-Control": "max-age=3600"})


def _fragment_by_time(store: VideoStore, session: Session, media_ms: int) -> str:
    infos = store.list_fragments_by_id(session.stream_id, media_ms, media_ms, BY_PRODUCER, 50)
    for info in infos:
        if info.producer_ts_ms == media_ms:
            return info.fragment_number
    raise FragmentNotFoundError(str(media_ms))


def _media_segment(store: VideoStore, session: Session, number: str | None, media_ms: int | None) -> bytes:
    if number is None:
        assert media_ms is not None
        number = _fragment_by_time(store, session, media_ms)
    data = store.read_fragment_by_id(session.stream_id, number)
    _, seq = parse_fragment_number(number)
    try:
        return remux.media_segment(read_fragment(data), seq % 2**32, base_ms=0)
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc


async def media_fragment(request: web.Request) -> web.Response:
    session, _ = await from_request(request)
    number = request.query.get("FragmentNumber")
    time_param = request.query.get("T")
    if number is None and time_param is None:
        raise invalid("FragmentNumber is required")
    try:
        media_ms = int(time_param) if time_param is not None else None
    except ValueError as exc:
        raise invalid("T must be an integer") from exc
    data = await asyncio.to_thread(_media_segment, store_of(request), session, number, media_ms)
    return web.Response(body=data, content_type="video/mp4", headers={"Cache-Control": "max-age=3600"})


def _ts_segment(store: VideoStore, session: Session, number: str) -> bytes:
    data = store.read_fragment_by_id(session.stream_id, number)
    try:
        return remux.ts_segment(data)
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc


async def ts_fragment(request: web.Request) -> web.Response:
    session, _ = await from_request(request)
    number = request.query.get("FragmentNumber")
    if not number:
        raise invalid("FragmentNumber is required")
    data = await asyncio.to_thread(_ts_segment, store_of(request), session, number)
    return web.Response(body=data, content_type="video/MP2T", headers={"Cache-Control": "max-age=3600"})


def _manifest(store: VideoStore, session: Session, token: str) -> str:
    infos = _window(store, session)
    if not infos:
        raise AwsError("ResourceNotFoundException", "No fragments found for the requested playback", 404)
    content = _init_content(store, session)
    try:
        codecs = remux.codec_string(content)
    except ValueError as exc:
        raise media_error(exc) from exc
    segments = [playlist.Segment("", i.producer_ts_ms, i.duration_ms, i.fragment_number) for i in infos]
    return playlist.dash_mpd(
        segments, f"getMP4InitFragment.mp4?SessionToken={token}", f"getMP4MediaFragment.mp4?SessionToken={token}&T=$Time$",
        codecs, content.track.width, content.track.height, 1_000_000, base_ms=0, dynamic=not _ended(session),
        start_number=0,  # segments are addressed by $Time$; FFmpeg skips the first one with startNumber=1
        fragment_numbers=session.fragment_numbers == "ALWAYS", fragment_timestamps=session.timestamps == "ALWAYS",
    )


async def dash_manifest(request: web.Request) -> web.Response:
    session, token = await from_request(request)
    text = await asyncio.to_thread(_manifest, store_of(request), session, token)
    return web.Response(text=text, content_type=DASH_TYPE, headers={"Cache-Control": "no-cache"})


ROUTES: list[web.RouteDef] = [
    web.get("/hls/v1/getHLSMasterPlaylist.m3u8", hls_master),
    web.get("/hls/v1/getHLSMediaPlaylist.m3u8", hls_media),
    web.get("/hls/v1/getMP4InitFragment.mp4", init_fragment),
    web.get("/hls/v1/getMP4MediaFragment.mp4", media_fragment),
    web.get("/hls/v1/getTSFragment.ts", ts_fragment),
    web.get("/dash/v1/getDASHManifest.mpd", dash_manifest),
    web.get("/dash/v1/getMP4InitFragment.mp4", init_fragment),
    web.get("/dash/v1/getMP4MediaFragment.mp4", media_fragment),
]
