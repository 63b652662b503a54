"""HLS and DASH streaming sessions: GetHLS/DASHStreamingSessionURL and the URLs they return.

A session is a signed token (HMAC with a key kept in the data dir), not server state: every
playlist and segment request carries it, so sessions survive a gateway restart and cost no
memory. The URLs mirror KVS's (``/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=...``).

Segments are fMP4: one init segment (from a fragment's SPS/PPS) and one ``moof+mdat`` per
fragment, remuxed on request. Media time is the producer timestamp in epoch milliseconds, so a
player can map ``currentTime`` (seconds) to wall-clock time without any extra lookup.

Playback modes: LIVE (the newest ``MaxMediaPlaylistFragmentResults`` fragments, default 5, a
sliding window), LIVE_REPLAY (from StartTimestamp on, growing until EndTimestamp) and ON_DEMAND
(a closed range, VOD). Deviations: ContainerFormat MPEG_TS is refused; DiscontinuityMode defaults
to ON_DISCONTINUITY (a tag only where fragments are not contiguous).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.keys import CONFIG
from gateway.kvs.clips import media_error
from gateway.kvs.control import invalid, optional_str, read_json, resolve_stream, store_of
from gateway.kvs.media import parse_timestamp
from gateway.kvs.store import (
    BY_PRODUCER,
    BY_SERVER,
    FragmentInfo,
    FragmentNotFoundError,
    StreamNotFoundError,
    VideoStore,
    fragment_number,
    parse_fragment_number,
)
from kvs import MkvError, playlist, remux
from kvs.reader import read_fragment

MODES = ("LIVE", "LIVE_REPLAY", "ON_DEMAND")
DEFAULT_EXPIRES_S = 300
DEFAULT_LIVE_RESULTS = 5
DEFAULT_RESULTS = 1000
MAX_RESULTS = 5000
HLS_TYPE = "application/vnd.apple.mpegurl"
DASH_TYPE = "application/dash+xml"
_KEYS: dict[Path, bytes] = {}


@dataclass(frozen=True)
class Session:
    """Everything a playlist or segment request needs, carried in the signed token."""

    stream: str
    stream_id: int
    mode: str
    by: str
    start_ms: int | None
    end_ms: int | None
    expires_ms: int
    max_results: int
    discontinuity: str
    timestamps: str
    init_fragment: str


# -- tokens -----------------------------------------------------------------------------------------


def _key(data_path: Path) -> bytes:
    """The token-signing key, created once per data dir (0600) so tokens outlive restarts."""
    key = _KEYS.get(data_path)
    if key is None:
        path = data_path / "playback-session.key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            data_path.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic; if another thread won the race, use its key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            key = path.read_bytes()
        _KEYS[data_path] = key
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(session: Session, key: bytes) -> str:
    # positional JSON keeps the token (repeated in every segment URI) short
    body = _b64(json.dumps(astuple(session), separators=(",", ":")).encode())
    return body + "." + _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18])


def decode_token(token: str, key: bytes, now_ms: int) -> Session:
    body, _, signature = token.partition(".")
    try:
        expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18])
        if not hmac.compare_digest(expected, signature):
            raise ValueError("bad signature")
        session = Session(*json.loads(_unb64(body)))
    except (ValueError, TypeError) as exc:
        raise AwsError("NotAuthorizedException", "The SessionToken is not valid", 401) from exc
    if session.expires_ms < now_ms:
        raise AwsError("NotAuthorizedException", "The streaming session has expired", 401)
    return session


# -- creating sessions ------------------------------------------------------------------------------


def _choice(body: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if value not in allowed:
        raise invalid(f"{key} must be one of {', '.join(allowed)}")
    return str(value)


def _first_fragment(store: VideoStore, stream_id: int, mode: str, start: int | None, end: int | None, by: str) -> FragmentInfo | None:
    if mode == "LIVE":
        last = store.last_fragment_number(stream_id)
        if last is None:
            return None
        _, seq = parse_fragment_number(last)
        found = store.list_fragments_by_id(stream_id, None, None, by, 1, fragment_number(stream_id, seq - 1))
    else:
        found = store.list_fragments_by_id(stream_id, start, end, by, 1)
    return found[0] if found else None


async def _create_session(request: web.Request, selector_key: str, results_key: str, dash: bool) -> Session:
    body = await read_json(request)
    stream = await resolve_stream(request, optional_str(body, "StreamName"), optional_str(body, "StreamARN"))
    mode = _choice(body, "PlaybackMode", MODES, "LIVE")
    if not dash and _choice(body, "ContainerFormat", ("FRAGMENTED_MP4", "MPEG_TS"), "FRAGMENTED_MP4") != "FRAGMENTED_MP4":
        raise invalid("ContainerFormat MPEG_TS is not supported by this gateway; use FRAGMENTED_MP4")
    selector = body.get(selector_key) or {}
    if not isinstance(selector, dict):
        raise invalid(f"{selector_key} must be an object")
    by = _choice(selector, "FragmentSelectorType", (BY_PRODUCER, BY_SERVER), BY_SERVER)
    time_range = selector.get("TimestampRange")
    start = end = None
    if mode == "LIVE":
        if time_range:
            raise invalid("TimestampRange must not be given with PlaybackMode LIVE")
    else:
        if not isinstance(time_range, dict) or time_range.get("StartTimestamp") is None:
            raise invalid(f"{selector_key}.TimestampRange.StartTimestamp is required with PlaybackMode {mode}")
        start = parse_timestamp(time_range.get("StartTimestamp"), "StartTimestamp")
        if mode == "ON_DEMAND" or time_range.get("EndTimestamp") is not None:
            end = parse_timestamp(time_range.get("EndTimestamp"), "EndTimestamp")
            if end <= start:
                raise invalid("EndTimestamp must be after StartTimestamp")
            if end - start > 24 * 3600 * 1000:
                raise invalid("The timestamp range must not exceed 24 hours")
    expires = body.get("Expires", DEFAULT_EXPIRES_S)
    if not isinstance(expires, int) or isinstance(expires, bool) or not 300 <= expires <= 43200:
        raise invalid("Expires must be between 300 and 43200 seconds")
    results = body.get(results_key, DEFAULT_LIVE_RESULTS if mode == "LIVE" else DEFAULT_RESULTS)
    if not isinstance(results, int) or isinstance(results, bool) or not 1 <= results <= MAX_RESULTS:
        raise invalid(f"{results_key} must be between 1 and {MAX_RESULTS}")
    discontinuity = _choice(body, "DiscontinuityMode", ("ALWAYS", "NEVER", "ON_DISCONTINUITY"), "ON_DISCONTINUITY")
    timestamps = _choice(body, "DisplayFragmentTimestamp", ("ALWAYS", "NEVER"), "NEVER")
    first = await asyncio.to_thread(_first_fragment, store_of(request), stream.id, mode, start, end, by)
    if first is None:
        raise AwsError("ResourceNotFoundException", "No fragments found for the requested playback", 404)
    await asyncio.to_thread(_check_codec, store_of(request), stream.id, first.fragment_number)
    return Session(stream.name, stream.id, mode, by, start, end, int(time.time() * 1000) + expires * 1000,
                   results, discontinuity, timestamps, first.fragment_number)


def _check_codec(store: VideoStore, stream_id: int, number: str) -> None:
    """Refuse at session creation (as KVS does) what cannot be streamed as fMP4 (only H.264 can)."""
    try:
        remux.codec_string(read_fragment(store.read_fragment_by_id(stream_id, number)))
    except FragmentNotFoundError:
        return  # removed by retention meanwhile; the playlist will show what is left
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc


async def get_hls_session_url(request: web.Request) -> web.Response:
    session = await _create_session(request, "HLSFragmentSelector", "MaxMediaPlaylistFragmentResults", dash=False)
    config = request.app[CONFIG]
    token = encode_token(session, await asyncio.to_thread(_key, config.data_path))
    url = f"{config.base_url}/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken={token}"
    return web.json_response({"HLSStreamingSessionURL": url})


async def get_dash_session_url(request: web.Request) -> web.Response:
    session = await _create_session(request, "DASHFragmentSelector", "MaxManifestFragmentResults", dash=True)
    config = request.app[CONFIG]
    token = encode_token(session, await asyncio.to_thread(_key, config.data_path))
    url = f"{config.base_url}/dash/v1/getDASHManifest.mpd?SessionToken={token}"
    return web.json_response({"DASHStreamingSessionURL": url})


# -- serving a session ------------------------------------------------------------------------------


async def _session(request: web.Request) -> tuple[Session, str]:
    token = request.query.get("SessionToken", "")
    if not token:
        raise invalid("SessionToken is required")
    key = await asyncio.to_thread(_key, request.app[CONFIG].data_path)
    return decode_token(token, key, int(time.time() * 1000)), token


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


def _media_uri(token: str, number: str) -> str:
    return f"getMP4MediaFragment.mp4?SessionToken={token}&FragmentNumber={number}"


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
    session, token = await _session(request)
    text = await asyncio.to_thread(_master, store_of(request), session, token)
    return web.Response(text=text, content_type=HLS_TYPE)


def _media_playlist(store: VideoStore, session: Session, token: str) -> str:
    infos = _window(store, session)
    segments = [playlist.Segment(_media_uri(token, i.fragment_number), i.producer_ts_ms, i.duration_ms, i.fragment_number)
                for i in infos]
    sequence = parse_fragment_number(infos[0].fragment_number)[1] if infos else 0
    kind = {"LIVE": "LIVE", "LIVE_REPLAY": "EVENT", "ON_DEMAND": "VOD"}[session.mode]
    longest = max((s.duration_ms for s in segments), default=1000)
    return playlist.media_playlist(
        segments, f"getMP4InitFragment.mp4?SessionToken={token}", kind, media_sequence=sequence,
        program_date_time="always" if session.timestamps == "ALWAYS" else "never",
        ended=_ended(session), gap_ms=_gap_ms(session), target_duration_s=max(1, math.ceil(longest / 1000)),
    )


async def hls_media(request: web.Request) -> web.Response:
    session, token = await _session(request)
    text = await asyncio.to_thread(_media_playlist, store_of(request), session, token)
    return web.Response(text=text, content_type=HLS_TYPE, headers={"Cache-Control": "no-cache"})


def _init_segment(store: VideoStore, session: Session) -> bytes:
    try:
        return remux.init_segment(_init_content(store, session))
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc


async def init_fragment(request: web.Request) -> web.Response:
    session, _ = await _session(request)
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
    session, _ = await _session(request)
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
    )


async def dash_manifest(request: web.Request) -> web.Response:
    session, token = await _session(request)
    text = await asyncio.to_thread(_manifest, store_of(request), session, token)
    return web.Response(text=text, content_type=DASH_TYPE, headers={"Cache-Control": "no-cache"})


ROUTES: list[web.RouteDef] = [
    web.post("/getHLSStreamingSessionURL", get_hls_session_url),
    web.post("/getDASHStreamingSessionURL", get_dash_session_url),
    web.get("/hls/v1/getHLSMasterPlaylist.m3u8", hls_master),
    web.get("/hls/v1/getHLSMediaPlaylist.m3u8", hls_media),
    web.get("/hls/v1/getMP4InitFragment.mp4", init_fragment),
    web.get("/hls/v1/getMP4MediaFragment.mp4", media_fragment),
    web.get("/dash/v1/getDASHManifest.mpd", dash_manifest),
    web.get("/dash/v1/getMP4InitFragment.mp4", init_fragment),
    web.get("/dash/v1/getMP4MediaFragment.mp4", media_fragment),
]
