"""Streaming sessions: GetHLSStreamingSessionURL / GetDASHStreamingSessionURL and their tokens.

A session is a signed token (HMAC with a key kept in the data dir), not server state: every
playlist and segment request carries it, so sessions survive a gateway restart and cost no
memory. The URLs mirror KVS's (``/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=...``); what
they serve is in ``gateway.kvs.hls``.

Playback modes: LIVE (the newest ``MaxMediaPlaylistFragmentResults`` fragments, default 5, a
sliding window), LIVE_REPLAY (from StartTimestamp on, growing until EndTimestamp) and ON_DEMAND
(a closed range, VOD). ContainerFormat FRAGMENTED_MP4 (default) or MPEG_TS. Deviation: DiscontinuityMode defaults
to ON_DISCONTINUITY (a tag only where fragments are not contiguous), LIVE included; a LIVE window
carries the count of tags that slid out of it in EXT-X-DISCONTINUITY-SEQUENCE.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
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
from gateway.kvs.request import invalid, optional_str, parse_timestamp, read_json, store_of, stream_of
from gateway.kvs.store import (
    BY_PRODUCER,
    BY_SERVER,
    FragmentInfo,
    FragmentNotFoundError,
    VideoStore,
    fragment_number,
    parse_fragment_number,
)
from kvs import MkvError, remux
from kvs.reader import read_fragment

MODES = ("LIVE", "LIVE_REPLAY", "ON_DEMAND")
DEFAULT_EXPIRES_S = 300
DEFAULT_LIVE_RESULTS = 5
DEFAULT_RESULTS = 1000
MAX_RESULTS = 5000
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
    container: str = "FRAGMENTED_MP4"
    fragment_numbers: str = "NEVER"


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
    stream = await stream_of(request, body)
    mode = _choice(body, "PlaybackMode", MODES, "LIVE")
    container = "FRAGMENTED_MP4" if dash else _choice(body, "ContainerFormat", ("FRAGMENTED_MP4", "MPEG_TS"), "FRAGMENTED_MP4")
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
    # LIVE too: a gap (the camera restarted, the uplink dropped) is signalled, and the sliding window
    # carries EXT-X-DISCONTINUITY-SEQUENCE (see hls._discontinuity_sequence)
    discontinuity = _choice(body, "DiscontinuityMode", ("ALWAYS", "NEVER", "ON_DISCONTINUITY"), "ON_DISCONTINUITY")
    timestamps = _choice(body, "DisplayFragmentTimestamp", ("ALWAYS", "NEVER"), "NEVER")
    numbers = _choice(body, "DisplayFragmentNumber", ("ALWAYS", "NEVER"), "NEVER") if dash else "NEVER"
    first = await asyncio.to_thread(_first_fragment, store_of(request), stream.id, mode, start, end, by)
    if first is None:
        raise AwsError("ResourceNotFoundException", "No fragments found for the requested playback", 404)
    await asyncio.to_thread(_check_codec, store_of(request), stream.id, first.fragment_number)
    return Session(stream.name, stream.id, mode, by, start, end, int(time.time() * 1000) + expires * 1000,
                   results, discontinuity, timestamps, first.fragment_number, container, numbers)


def _check_codec(store: VideoStore, stream_id: int, number: str) -> None:
    """Refuse at session creation (as KVS does) what cannot be streamed as fMP4 (only H.264 can)."""
    try:
        remux.codec_string(read_fragment(store.read_fragment_by_id(stream_id, number)))
    except FragmentNotFoundError:
        return  # removed by retention meanwhile; the playlist will show what is left
    except (ValueError, MkvError) as exc:
        raise media_error(exc) from exc


async def _session_url(request: web.Request, session: Session, path: str) -> str:
    config = request.app[CONFIG]
    token = encode_token(session, await asyncio.to_thread(_key, config.data_path))
    return f"{config.base_url}{path}?SessionToken={token}"


async def get_hls_session_url(request: web.Request) -> web.Response:
    session = await _create_session(request, "HLSFragmentSelector", "MaxMediaPlaylistFragmentResults", dash=False)
    return web.json_response({"HLSStreamingSessionURL": await _session_url(request, session, "/hls/v1/getHLSMasterPlaylist.m3u8")})


async def get_dash_session_url(request: web.Request) -> web.Response:
    session = await _create_session(request, "DASHFragmentSelector", "MaxManifestFragmentResults", dash=True)
    return web.json_response({"DASHStreamingSessionURL": await _session_url(request, session, "/dash/v1/getDASHManifest.mpd")})


async def from_request(request: web.Request) -> tuple[Session, str]:
    """The session (and its token) a playlist or segment request carries; 401 if expired or forged."""
    token = request.query.get("SessionToken", "")
    if not token:
        raise invalid("SessionToken is required")
    key = await asyncio.to_thread(_key, request.app[CONFIG].data_path)
    return decode_token(token, key, int(time.time() * 1000)), token


ROUTES: list[web.RouteDef] = [
    web.post("/getHLSStreamingSessionURL", get_hls_session_url),
    web.post("/getDASHStreamingSessionURL", get_dash_session_url),
]
