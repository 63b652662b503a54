"""``POST /putMedia``: a long chunked MKV body in, one JSON acknowledgement per event out, as KVS does.

Per fragment (one MKV Cluster) the producer reads, newline-separated on the response:

    {"EventType":"BUFFERING","FragmentTimecode":T}              first bytes of the fragment arrived
    {"EventType":"RECEIVED","FragmentTimecode":T}               the whole fragment arrived and is valid
    {"EventType":"PERSISTED","FragmentTimecode":T,"FragmentNumber":"..."}   fsynced file + committed row
    {"EventType":"ERROR","FragmentTimecode":T,"ErrorId":4004}   rejected (nothing stored)
    {"EventType":"IDLE"}                                        keep-alive while nothing else is said

Producer metadata (MKV SimpleTags before a cluster, at most 10) is stored with the fragment and comes
back from GetMedia. Fragment-level rejections (4001 too large, 4002 too long, 4004 timecode going
backwards, 4009 more than 10 metadata tags) skip that fragment and the session goes on; stream-level
ones (4006 invalid MKV, 4010 track mismatch, 4011 track without frames, a fragment cut off by the end
of the body) end the session after the ERROR ack, since the rest of the body can no longer be framed.
A fragment still arriving when it passes the size limit also ends the session with 4001 (skipping it
would mean buffering it). 4008: the stream was deleted meanwhile; 5000/5001 are server-side failures.

The body is read incrementally and paced to ``config.video.ingest_bytes_per_sec`` per stream (TCP
backpressure, not an error). Persisting runs in a thread pool, one fragment at a time per session, so
reading the next fragment overlaps the fsync of the previous one.

Exactly-once (our agent): ``X-Edge-Producer-Id`` + ``X-Edge-Fragment-Seqs: 7,8,9`` (one integer per
fragment of the body, in order). A (producer, seq) already stored is acked PERSISTED with its original
FragmentNumber and not stored again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.keys import CONFIG
from gateway.kvs.keys import SHUTTING_DOWN, VIDEO_EVENTS, VIDEO_STORE
from gateway.kvs.request import invalid, parse_timestamp, resolve_stream
from gateway.kvs.retention import enforce_budget
from gateway.kvs.store import NewFragment, StreamRecord, VideoStore
from gateway.wire import FRAGMENT_SEQS_HEADER, header, producer_seqs
from kvs import MkvError, MkvStreamParser, ParsedFragment
from kvs.tags import fragment_tags, with_kvs_tags

log = logging.getLogger("gateway.kvs.putmedia")

FRAGMENT_TOO_LARGE = 4001
FRAGMENT_TOO_LONG = 4002
TIMECODE_BACKWARDS = 4004
INVALID_MKV = 4006
STREAM_NOT_ACTIVE = 4008
METADATA_LIMIT = 4009
INTERNAL_ERROR = 5000
ARCHIVAL_ERROR = 5001
#: Producer metadata tags kept per fragment (KVS's limit); tags named AWS_KINESISVIDEO_* are KVS's own.
MAX_METADATA_TAGS = 10
RESERVED_TAG_PREFIX = "AWS_KINESISVIDEO_"
#: An IDLE ack goes out when nothing was acked for this long.
IDLE_ACK_SECONDS = 3.0
#: A session whose producer sends nothing for this long is ended (a vanished client).
READ_IDLE_TIMEOUT_SECONDS = 60.0
#: Fragments parsed but not yet persisted, per session, before reading pauses.
PERSIST_QUEUE = 2
#: Threads writing fragments (fsync-bound, so more than the cores).
WRITER_THREADS = 16

WRITERS = web.AppKey("video_writers", ThreadPoolExecutor)
RATES = web.AppKey("video_ingest_rates", dict)


class PutMediaSessions:
    """The PutMedia sessions in progress (so shutdown can wind them up), one per stream."""

    def __init__(self) -> None:
        self.active: set[PutMediaSession] = set()
        #: stream id -> the session that holds the stream's one PutMedia connection
        self.by_stream: dict[int, PutMediaSession] = {}

    def claim(self, session: PutMediaSession) -> None:
        """Make ``session`` the stream's producer, as KVS allows one PutMedia per stream at a time:
        a second one is refused with ConnectionLimitExceededException, except that the same edge
        agent (same ``X-Edge-Producer-Id``) reconnecting takes over from its own stale session."""
        current = self.by_stream.get(session.stream.id)
        if current is not None:
            if session.producer_id is None or current.producer_id != session.producer_id:
                raise AwsError("ConnectionLimitExceededException", "Kinesis Video Streams has throttled the request because you have exceeded "
                               "the limit of allowed client connections. Try making the call later.", 400)
            log.info("putMedia %s: producer %s reconnected, ending its previous session", session.stream.name, session.producer_id)
            current.stop()
        self.by_stream[session.stream.id] = session

    def release(self, session: PutMediaSession) -> None:
        if self.by_stream.get(session.stream.id) is session:
            del self.by_stream[session.stream.id]


SESSIONS = web.AppKey("video_putmedia_sessions", PutMediaSessions)


class IngestPacer:
    """Paces one stream's ingest to a byte rate, shared by its sessions: ``take`` sleeps, never refuses
    (unlike ``gateway.kds.limits.TokenBucket``, which refuses what is over the rate)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


@dataclass(eq=False)  # hashed by identity: sessions live in a set
class PutMediaSession:
    """One PutMedia request: parse, validate, persist and acknowledge its fragments."""

    request: web.Request
    response: web.StreamResponse
    stream: StreamRecord
    relative: bool
    start_ms: int
    producer_id: str | None
    seqs: list[int]
    acks: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    #: Persist jobs, and ERROR acks that must follow the PERSISTED acks of earlier fragments.
    to_persist: asyncio.Queue[tuple[ParsedFragment, int, int | None] | dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(PERSIST_QUEUE))
    index: int = 0
    last_timecode: int | None = None
    buffering_sent: bool = False
    fragment_server_ms: int = 0
    client_gone: bool = False
    #: stop() was called (shutdown, or the same producer reconnected)
    stopped: bool = False
    reader: asyncio.Task[None] = field(init=False)

    @property
    def store(self) -> VideoStore:
        return self.request.app[VIDEO_STORE]

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_acks())
        persister = asyncio.create_task(self._persist_loop())
        self.reader = asyncio.create_task(self._read_body())
        sessions = self.request.app[SESSIONS].active
        sessions.add(self)
        try:
            await self.reader
        except asyncio.CancelledError:
            if not self.request.app[SHUTTING_DOWN].is_set() and not self.stopped:
                raise
            log.info("putMedia %s: %s, ending the session", self.stream.name, "gateway shutting down" if not self.stopped else "superseded")
        finally:
            sessions.discard(self)
            await self.to_persist.put(None)
            await persister
            await self.acks.put(None)
            await writer

    def stop(self) -> None:
        """Shutdown or takeover: stop reading; fragments already complete are still persisted and acked."""
        self.stopped = True
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.cancel()

    # -- reading -----------------------------------------------------------------------------------

    async def _read_body(self) -> None:
        config = self.request.app[CONFIG].video
        parser = MkvStreamParser(max_cluster_bytes=config.max_fragment_bytes * 2 + 1024)
        rates = self.request.app[RATES]
        bucket = rates.setdefault(self.stream.id, IngestPacer(config.ingest_bytes_per_sec))
        fed = consumed_at_fragment_end = 0
        while True:
            try:
                chunk = await asyncio.wait_for(self.request.content.readany(), READ_IDLE_TIMEOUT_SECONDS)
            except asyncio.TimeoutError:
                log.info("putMedia %s: no data for %.0fs, ending the session", self.stream.name, READ_IDLE_TIMEOUT_SECONDS)
                break
            except Exception as exc:  # noqa: BLE001 - a reset, a watchdog close: the producer is gone
                log.info("putMedia %s: body ended early: %s", self.stream.name, exc)
                self.client_gone = True
                break
            if not chunk:
                break
            await bucket.take(len(chunk))
            fed += len(chunk)
            try:
                fragments = parser.feed(chunk)
            except MkvError as exc:
                await self._error(exc.error_id, parser.current_timecode_ms)
                log.info("putMedia %s: rejected stream: %s", self.stream.name, exc)
                return
            except Exception:  # a parser bug must cost this session, never the gateway
                log.exception("putMedia %s: unexpected error parsing the body", self.stream.name)
                await self._error(INTERNAL_ERROR, parser.current_timecode_ms)
                return
            for fragment in fragments:  # good clusters before a bad element are kept
                await self._complete(fragment)
            if parser.error is not None:
                await self._error(parser.error.error_id, parser.current_timecode_ms)
                log.info("putMedia %s: rejected stream: %s", self.stream.name, parser.error)
                return
            if fragments:  # bytes after the last complete cluster belong to the next fragment
                consumed_at_fragment_end = parser.bytes_consumed
            if parser.in_cluster and not self.buffering_sent:
                await self._buffering(parser.current_timecode_ms)
            if fed - consumed_at_fragment_end > config.max_fragment_bytes:
                await self._error(FRAGMENT_TOO_LARGE, parser.current_timecode_ms)
                log.info("putMedia %s: fragment over %d bytes, ending the session", self.stream.name, config.max_fragment_bytes)
                return
        try:
            last = parser.finish()
        except MkvError as exc:
            await self._error(exc.error_id, parser.current_timecode_ms)
            return
        except Exception:
            log.exception("putMedia %s: unexpected error parsing the body", self.stream.name)
            await self._error(INTERNAL_ERROR, None)
            return
        if last is not None and last.complete:
            await self._complete(last)
        elif last is not None or parser.bytes_consumed < fed:
            log.info("putMedia %s: body ended inside a fragment; not stored", self.stream.name)
            await self._error(INVALID_MKV, last.timecode_ms if last is not None else None)

    async def _buffering(self, timecode: int | None) -> None:
        self.buffering_sent = True
        self.fragment_server_ms = int(time.time() * 1000)
        await self._ack("BUFFERING", timecode)

    async def _complete(self, fragment: ParsedFragment) -> None:
        if not self.buffering_sent:
            await self._buffering(fragment.timecode_ms)
        self.buffering_sent = False
        index, self.index = self.index, self.index + 1
        config = self.request.app[CONFIG].video
        if fragment.size > config.max_fragment_bytes:
            return await self._error(FRAGMENT_TOO_LARGE, fragment.timecode_ms)
        if fragment.duration_ms > config.max_fragment_seconds * 1000:
            return await self._error(FRAGMENT_TOO_LONG, fragment.timecode_ms)
        if self.last_timecode is not None and fragment.timecode_ms < self.last_timecode:
            return await self._error(TIMECODE_BACKWARDS, fragment.timecode_ms)
        if len(producer_metadata(fragment.tags)) > MAX_METADATA_TAGS:
            return await self._error(METADATA_LIMIT, fragment.timecode_ms)
        self.last_timecode = fragment.timecode_ms
        await self._ack("RECEIVED", fragment.timecode_ms)
        producer_seq = self.seqs[index] if self.producer_id and index < len(self.seqs) else None
        await self.to_persist.put((fragment, self.fragment_server_ms, producer_seq))

    # -- persisting --------------------------------------------------------------------------------

    async def _persist_loop(self) -> None:
        app = self.request.app
        loop = asyncio.get_running_loop()
        budget = app[CONFIG].video.stream_disk_budget_bytes
        while (item := await self.to_persist.get()) is not None:
            if isinstance(item, dict):
                await self.acks.put(item)
                continue
            fragment, server_ms, producer_seq = item
            producer_ts = self.start_ms + fragment.timecode_ms if self.relative else fragment.timecode_ms
            new = NewFragment(fragment.mkv, producer_ts, server_ms, fragment.duration_ms, fragment.frame_count)
            producer = (self.producer_id, producer_seq) if self.producer_id and producer_seq is not None else None
            try:
                number, stored = await loop.run_in_executor(
                    app[WRITERS], _persist, self.store, self.stream.id, new, producer, budget, producer_metadata(fragment.tags))
            except Exception as exc:  # noqa: BLE001 - every failure becomes an ERROR ack
                deleted = getattr(exc, "code", "") == "ResourceNotFoundException"
                if not deleted:
                    log.exception("putMedia %s: could not persist fragment %d", self.stream.name, fragment.timecode_ms)
                await self._error(STREAM_NOT_ACTIVE if deleted else ARCHIVAL_ERROR, fragment.timecode_ms, in_order=False)
                continue
            await self._ack("PERSISTED", fragment.timecode_ms, number)
            if stored:
                app[VIDEO_EVENTS].notify(self.stream.name)

    # -- acks --------------------------------------------------------------------------------------

    async def _ack(self, event: str, timecode: int | None, number: str | None = None) -> None:
        await self.acks.put(make_ack(event, timecode, number))

    async def _error(self, error_id: int, timecode: int | None, in_order: bool = True) -> None:
        """ERROR ack; ``in_order`` ones wait for the PERSISTED acks of the fragments before."""
        await (self.to_persist if in_order else self.acks).put(make_ack("ERROR", timecode, error_id=error_id))

    async def _write_acks(self) -> None:
        while True:
            try:
                ack = await asyncio.wait_for(self.acks.get(), IDLE_ACK_SECONDS)
            except asyncio.TimeoutError:
                ack = {"EventType": "IDLE"}
            if ack is None:
                return
            if self.client_gone:
                continue
            try:
                await self.response.write(json.dumps(ack, separators=(",", ":")).encode() + b"\n")
            except (ConnectionError, RuntimeError, OSError):
                self.client_gone = True


def make_ack(event: str, timecode: int | None, number: str | None = None, error_id: int | None = None) -> dict[str, Any]:
    """An acknowledgement in KVS's shape and key order."""
    ack: dict[str, Any] = {"EventType": event}
    if timecode is not None:
        ack["FragmentTimecode"] = timecode
    if number is not None:
        ack["FragmentNumber"] = number
    if error_id is not None:
        ack["ErrorId"] = error_id
    return ack


def _persist(store: VideoStore, stream_id: int, new: NewFragment, producer: tuple[str, int] | None,
             budget: int, metadata: dict[str, str]) -> tuple[str, bool]:
    number, stored = store.persist(stream_id, new, _tag(new, metadata), producer)
    if stored:
        enforce_budget(store, stream_id, budget)
    return number, stored


def _tag(new: NewFragment, metadata: dict[str, str]) -> Callable[[bytes, str], bytes]:
    """Stored fragments carry their KVS tags (and the producer's metadata tags), so GetMedia can
    send them as they are."""

    def tagger(mkv: bytes, number: str) -> bytes:
        return with_kvs_tags(mkv, {**metadata, **fragment_tags(number, new.server_ts_ms, new.producer_ts_ms)})

    return tagger


def producer_metadata(tags: dict[str, str]) -> dict[str, str]:
    """The producer's fragment metadata: its MKV tags minus the names KVS reserves for itself."""
    return {k: v for k, v in tags.items() if not k.startswith(RESERVED_TAG_PREFIX)}


async def put_media(request: web.Request) -> web.StreamResponse:
    headers = request.headers
    stream = await resolve_stream(request, header(headers, "x-amzn-stream-name"), header(headers, "x-amzn-stream-arn"))
    timecode_type = (header(headers, "x-amzn-fragment-timecode-type") or "").upper()
    if timecode_type not in ("ABSOLUTE", "RELATIVE"):
        raise invalid("x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE")
    start = header(headers, "x-amzn-producer-start-timestamp")
    if start is None and timecode_type == "RELATIVE":
        raise invalid("x-amzn-producer-start-timestamp is required with RELATIVE timecodes")
    start_ms = parse_timestamp(start, "x-amzn-producer-start-timestamp") if start is not None else 0
    try:
        producer_id, seqs = producer_seqs(headers, FRAGMENT_SEQS_HEADER)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    session = PutMediaSession(request, response, stream, timecode_type == "RELATIVE", start_ms, producer_id, seqs)
    sessions = request.app[SESSIONS]
    sessions.claim(session)  # before any await: two requests can never both pass
    try:
        try:
            await response.prepare(request)
        except ConnectionError:  # the client left before the first byte of the answer
            return response
        try:
            await session.run()
        except Exception:  # the 200 is already out: log it and end the ack stream cleanly
            log.exception("putMedia %s: session failed", stream.name)
    finally:
        sessions.release(session)
    with contextlib.suppress(ConnectionError, RuntimeError, OSError):
        await response.write_eof()
    return response


async def drain(app: web.Application) -> None:
    """Stop the writer threads (after sessions ended) at shutdown."""
    executor = app.get(WRITERS)
    if executor is not None:
        await asyncio.to_thread(executor.shutdown, wait=True)


async def setup(app: web.Application) -> None:
    app[WRITERS] = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="video-writer")
    app[RATES] = {}
    app[SESSIONS] = PutMediaSessions()


def stop_sessions(app: web.Application) -> None:
    """Shutdown: every PutMedia session stops reading and acks what it already has."""
    for session in list(app[SESSIONS].active):
        session.stop()


ROUTES: list[web.RouteDef] = [web.post("/putMedia", put_media)]
