"""The media forwarder: spool lane "media" (MKV fragments) → PutMedia, acked only on PERSISTED.

Like a KVS producer: GetDataEndpoint (``PUT_MEDIA``) once per stream, then ``POST
{endpoint}/putMedia`` with a chunked body of fragments (each spooled fragment is a standalone
MKV document, sent oldest first) and ABSOLUTE timecodes, SigV4-signed for ``kinesisvideo``
with an unsigned payload. The response is a stream of JSON acks (BUFFERING, RECEIVED,
PERSISTED, ERROR, IDLE); a fragment leaves the spool only when its PERSISTED ack arrives.
Requests carry ``X-Edge-Fragment-Seqs`` (the spool seqs of the body's fragments, in order),
so a fragment resent after a lost ack is recognised by the gateway, not stored twice.

Batches are bounded (``media_fragments_per_request``): the body goes out through
``edge_agent.transport`` (the agent's one HTTP stack, chunked encoding), which writes it whole
before acks are read; an outage or a 5xx is retried with backoff, per stream. The run loop,
last-success checkpoint, log throttle and long-wait errors are ``edge_agent.forwarder_core``'s.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


from edge_agent import metrics
from edge_agent.backoff import Backoff
from edge_agent.config import ForwarderSection, GatewaySection
from edge_agent.errors import CONNECTION, SendError
from edge_agent.forwarder_core import ForwarderCore
from edge_agent.http_client import Response
from edge_agent.spool import SpooledRecord
from edge_agent.transport import FRAGMENT_SEQS_HEADER, PRODUCER_HEADER, Transport

log = logging.getLogger("edge_agent.media")

#: KVS error ids meaning "this fragment itself is bad": sending it again cannot succeed.
FRAGMENT_ERRORS = {4000, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 4009, 4010, 4011, 4012}
#: Most bytes of fragments read from the spool per request.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: Pages of the media lane looked through for a stream that is not in backoff.
MAX_SCAN_PAGES = 8


@dataclass
class Ack:
    event: str
    timecode: int | None
    fragment_number: str | None
    error_id: int | None


def parse_acks(chunks: Iterator[bytes]) -> Iterator[Ack]:
    """JSON ack objects from the response body, however they are split or separated."""
    decoder = json.JSONDecoder()
    buf = ""
    for chunk in chunks:
        buf += chunk.decode("utf-8", errors="replace")
        while True:
            buf = buf.lstrip(" \r\n\t,")
            if not buf:
                break
            try:
                obj, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                break  # incomplete: wait for more
            buf = buf[end:]
            if isinstance(obj, dict):
                tc = obj.get("FragmentTimecode")
                err = obj.get("ErrorId")
                yield Ack(str(obj.get("EventType", "")), int(tc) if isinstance(tc, (int, float)) else None,
                          obj.get("FragmentNumber"), int(err) if isinstance(err, (int, float, str)) and str(err).isdigit() else None)


def fragment_start_ms(record: SpooledRecord) -> int:
    return int(record.attrs.get("start_ms", record.timestamp_ms))


class MediaForwarder(ForwarderCore):
    """Sends spooled video fragments with PutMedia; ``run`` until ``stop`` is set."""

    lane = "media"

    def __init__(self, spool: Any, session: Any, gateway: GatewaySection, config: ForwarderSection, agent_id: str) -> None:
        super().__init__(spool, config)
        self.gateway = gateway
        self.agent_id = agent_id
        self.transport = Transport(session, gateway)
        self._endpoints: dict[str, str] = {}
        self._not_before: dict[str, float] = {}
        self._backoff: dict[str, Backoff] = {}
        self._seen = 0  # highest spool seq looked at (for spool.wait)

    def close(self) -> None:
        self.transport.close()

    def hold(self, stream: str, seconds: float) -> None:
        """Send nothing of ``stream`` for ``seconds`` (an edge configuration's upload window is shut)."""
        self._not_before[stream] = max(self._not_before.get(stream, 0.0), time.monotonic() + seconds)

    def _idle(self, stop: threading.Event) -> None:
        """Sleep until a new fragment is spooled or a stream's retry time comes."""
        now = time.monotonic()
        waits = [t - now for t in self._not_before.values() if t > now]
        self.spool.wait("media", self._seen, max(0.01, min([1.0, *waits])))

    # -- one request ---------------------------------------------------------------------------

    def step(self, stop: threading.Event | None = None) -> bool:
        """Send one batch of one stream's oldest fragments; False when none is ready."""
        batch = self._next_batch()
        if not batch:
            return False
        self._send(batch[0].stream, batch)
        return True

    def _next_batch(self) -> list[SpooledRecord]:
        """The oldest fragments of the first stream not waiting out a retry.

        Pages through the lane (a few pages at most) so a stream in backoff, e.g. one whose
        video stream does not exist yet, does not hold back the other cameras."""
        now = time.monotonic()
        page = self.config.media_fragments_per_request
        stream: str | None = None
        batch: list[SpooledRecord] = []
        after = 0
        for _ in range(MAX_SCAN_PAGES):
            records = self.spool.read("media", after, limit=page, max_bytes=MAX_REQUEST_BYTES)
            if not records:
                break
            after = records[-1].seq
            self._seen = max(self._seen, after)
            for record in records:
                if stream is None:
                    if self._not_before.get(record.stream, 0) > now:
                        continue
                    stream = record.stream
                if record.stream == stream:
                    batch.append(record)
                    if len(batch) >= page:
                        return batch
            if batch:
                break  # one stream's fragments go together; what follows waits for the next request
        return batch

    def _endpoint(self, stream: str) -> str:
        """GetDataEndpoint(PUT_MEDIA), cached per stream: a signed rest-json call made by hand,
        which spares the agent a botocore ``kinesisvideo`` client (~11 MB of RSS on a Pi)."""
        url = self._endpoints.get(stream)
        if url is None:
            response = self.transport.post_json(f"{self.gateway.video_url}/getDataEndpoint", "kinesisvideo",
                                                 {"StreamName": stream, "APIName": "PUT_MEDIA"}, {"Content-Type": "application/json"})
            endpoint = response.get("DataEndpoint")
            if not isinstance(endpoint, str):
                raise SendError("InvalidResponse", "GetDataEndpoint answered without a DataEndpoint", 200)
            url = self._endpoints[stream] = endpoint.rstrip("/")
        return url

    def _send(self, stream: str, batch: list[SpooledRecord]) -> None:
        try:
            endpoint = self._endpoint(stream)
            persisted, rejected = self._put_media(endpoint, stream, batch)
        except SendError as exc:
            if exc.code == CONNECTION:
                self._endpoints.pop(stream, None)
            return self._failed(stream, batch, exc.code if 0 < exc.status < 500 else "server_error" if exc.status else CONNECTION,
                                str(exc), long=self._long_wait(exc.code) > 0)
        done = persisted + [r for r, _ in rejected]
        if done:
            self.spool.ack([r.seq for r in done])
        for record, error_id in rejected:
            metrics.RECORDS_REJECTED.labels(record.source, f"putmedia_{error_id}").inc()
            log.error("video fragment %d of %s refused by the gateway (ErrorId %d): dropped", record.seq, stream, error_id)
        if persisted:
            metrics.RECORDS_SENT.labels(stream).inc(len(persisted))
            for record in persisted:
                metrics.RECORDS_OUT.labels(record.source).inc()
            self._succeeded()
        done_seqs = {r.seq for r in done}
        missing = [r for r in batch if r.seq not in done_seqs]
        if missing:
            self._failed(stream, missing, "incomplete", f"{len(missing)} fragment(s) not persisted")
        else:
            self._backoff_for(stream).reset()
            self._not_before.pop(stream, None)

    def _put_media(self, endpoint: str, stream: str, batch: list[SpooledRecord]) -> tuple[list[SpooledRecord], list[tuple[SpooledRecord, int]]]:
        """POST the fragments; returns (persisted, rejected with their ErrorId), in order."""
        headers = {
            "x-amzn-stream-name": stream,
            "x-amzn-fragment-timecode-type": "ABSOLUTE",
            "x-amzn-producer-start-timestamp": f"{fragment_start_ms(batch[0]) / 1000:.3f}",
            PRODUCER_HEADER: self.agent_id,
            FRAGMENT_SEQS_HEADER: ",".join(str(r.seq) for r in batch),
            "Content-Type": "application/octet-stream",
        }
        url = urlsplit(endpoint)
        response = self.transport.post_stream(f"{url.scheme}://{url.netloc}{url.path.rstrip('/')}/putMedia", "kinesisvideo",
                                              (record.data for record in batch), headers)
        try:
            return self._read_acks(response, batch)
        except OSError as exc:  # the socket's, TLS's, or http_client.ProtocolError
            raise SendError(CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        finally:
            response.close()  # acks may still be coming (we stop at the last final one): never reuse it

    def _read_acks(self, response: Response, batch: list[SpooledRecord]) -> tuple[list[SpooledRecord], list[tuple[SpooledRecord, int]]]:
        """Match the ack stream to the fragments sent; returns (persisted, rejected with ErrorId).

        The gateway reads fragments in order (RECEIVED, or an ERROR for one it refuses while
        reading) and persists them in order (PERSISTED, or a server-side ERROR). An ack's
        FragmentTimecode names its fragment; an ERROR without one is about the fragment being
        read, i.e. the first not yet RECEIVED. Anything without a final ack is sent again.
        """
        starts = [fragment_start_ms(r) for r in batch]
        final: dict[int, tuple[str, int]] = {}
        received: set[int] = set()

        def by_timecode(timecode: int | None, candidates: list[int]) -> int | None:
            for i in candidates:
                if timecode is not None and starts[i] == timecode:
                    return i
            return None

        for ack in parse_acks(response.stream(65536)):
            open_ = [i for i in range(len(batch)) if i not in final]
            if ack.event == "RECEIVED":
                i = by_timecode(ack.timecode, [i for i in open_ if i not in received])
                received.add(i if i is not None else min(set(range(len(batch))) - received, default=0))
            elif ack.event == "PERSISTED":
                i = by_timecode(ack.timecode, open_)
                if i is None:  # no timecode: persisted in order, the oldest received one
                    i = min((j for j in open_ if j in received), default=None)
                if i is not None:
                    final[i] = ("PERSISTED", 0)
            elif ack.event == "ERROR":
                i = by_timecode(ack.timecode, open_)
                if i is None:
                    i = min((j for j in open_ if j not in received), default=None)
                if i is not None:
                    final[i] = ("ERROR", ack.error_id or 0)
                    received.add(i)
            if len(final) == len(batch):
                break
        persisted = [batch[i] for i, (event, _) in sorted(final.items()) if event == "PERSISTED"]
        rejected = [(batch[i], error_id) for i, (event, error_id) in sorted(final.items()) if event == "ERROR" and error_id in FRAGMENT_ERRORS]
        return persisted, rejected

    # -- failures ------------------------------------------------------------------------------

    def _backoff_for(self, stream: str) -> Backoff:
        if stream not in self._backoff:
            self._backoff[stream] = Backoff(self.config.retry_base_seconds, self.config.retry_max_seconds)
        return self._backoff[stream]

    def _failed(self, stream: str, batch: list[SpooledRecord], reason: str, message: str, long: bool = False) -> None:
        metrics.SEND_ERRORS.labels("media", reason).inc()
        metrics.SEND_RETRIES.labels(stream).inc(len(batch))
        delay = self._backoff_for(stream).next()
        if long:
            delay = max(delay, self.config.retry_max_seconds / 4)
        self._not_before[stream] = time.monotonic() + delay
        self._warn(stream + reason, f"PutMedia to {stream} failed ({reason}: {message}); retrying in {delay:.1f}s")
