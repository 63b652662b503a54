"""The records forwarder: spool lane "records" → PutRecords, acknowledged record by record.

How a record travels:

1. ``_refill`` reads the spool after the last seq read into an in-memory window of *units*
   (one unit = one Kinesis record: a spooled record, or with aggregation on, an aggregate of
   consecutive records of one partition key).
2. ``_select`` builds a PutRecords batch (≤ 500 units, ≤ 5 MiB, one stream) in spool order.
   Per partition key order: once a unit of a key is held back (waiting for its retry), every
   later unit of that key is held back too, so a failed record is never overtaken.
3. ``_send`` calls PutRecords (``edge_agent.kinesis_client``; for a source's ``delivery_stream``,
   PutRecordBatch through ``edge_agent.firehose_client``, ≤ 4 MiB, no aggregation) with ``X-Edge-Producer-Id`` and
   ``X-Edge-Record-Seqs`` (one spool seq per unit: the gateway answers a replay with the
   original result instead of storing it twice). Records the gateway accepted are acked in
   the spool (deleted); the failed ones are retried with full-jitter backoff.
4. The send rate follows the gateway's push-back (``edge_agent.backoff.RateController``); after a throttle
   each key may have only one unit per request until requests go through cleanly again. (Within
   one request Kinesis may refuse record i of a key yet accept a later one of the same key; with
   one unit per key per request while throttled, and aggregation packing a key's records into
   one unit, that window is the first throttled request only.)

With aggregation on, the seq ranges of aggregates in flight are saved in the spool (a
checkpoint) *before* they are first sent, so after a crash the same aggregates are rebuilt and
the gateway recognises the replays: no loss, no duplicate.

The run loop, last-success checkpoint, log throttle and long-wait errors are the shared
``edge_agent.forwarder_core``.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from edge_agent import metrics
from edge_agent.aggregation import Aggregate
from edge_agent.backoff import Backoff, RateController
from edge_agent.config import ForwarderSection
from edge_agent.errors import CONNECTION, SendError
from edge_agent.forwarder_core import ForwarderCore, log
from edge_agent.kinesis_limits import FIREHOSE_MAX_BATCH_BYTES, FIREHOSE_MAX_RECORD_BYTES, MAX_RECORD_BYTES, delivery_stream_of, partition_key
from edge_agent.spool import SpoolClosed, SpooledRecord
from edge_agent.transport import PRODUCER_HEADER, RECORD_SEQS_HEADER
#: Units held in memory: two batches (one going out, one being assembled). A record the spool
#: drops (size cap) after it was read is still sent: at most this many, so drops never under-report.
WINDOW_BATCHES = 2
#: Retry delays after throttling stop doubling here (base * 2^4 = 1.6 s by default).
THROTTLE_MAX_EXPONENT = 4
AGG_CHECKPOINT = "forwarder.records.aggregates"
THROTTLE_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException", "LimitExceededException", "KMSThrottlingException",
                  "ServiceUnavailableException"}  # Firehose's "Slow down."
#: Request-level errors a single bad record causes: the batch is split to isolate it.
POISON_CODES = {"ValidationException", "InvalidArgumentException", "SerializationException"}


@functools.lru_cache(maxsize=256)
def is_data_stream(stream: str) -> bool:
    """A data stream (PutRecords, per-key order), not ``firehose:NAME``; asked per record, of a few names."""
    return delivery_stream_of(stream) is None


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (a partition key counts against the record limit by them)."""
    return len(text) if text.isascii() else len(text.encode())


class Unit:
    """One Kinesis record in flight: a spooled record or an aggregate of several of one key.

    A plain class with a hand-written ``__init__`` (one is made per record read: the dataclass
    form with ``__post_init__`` was the forwarder's most expensive line)."""

    __slots__ = ("seqs", "stream", "partition_key", "sources", "data", "aggregate", "sealed", "aggregated", "complete_at", "attempts",
                 "not_before", "solo", "throttled", "id", "key", "keyed", "key_bytes")

    def __init__(self, seqs: list[int], stream: str, partition_key: str, sources: dict[str, int] | None = None, data: bytes = b"",
                 aggregate: Aggregate | None = None, aggregated: bool = False, complete_at: int = 0, keyed: bool | None = None,
                 key_bytes: int = -1) -> None:
        self.seqs = seqs
        self.stream = stream
        self.partition_key = partition_key
        #: Records per source, counted when acknowledged or rejected.
        self.sources = {} if sources is None else sources
        self.data = data
        self.aggregate = aggregate
        self.sealed = False
        #: Sent as a KPL aggregate (its seq range is saved before the first send).
        self.aggregated = aggregated
        #: Rebuilt after a restart: not complete until the spool cursor reaches this seq.
        self.complete_at = complete_at
        self.attempts = 0
        self.not_before = 0.0
        self.solo = False
        #: Last failure was a throttle (not an outage): may be recalled early once the gateway has room.
        self.throttled = False
        #: The spool seq the gateway knows it by (its first record's).
        self.id = seqs[0]
        #: (stream, partition key): the order kept is per key.
        self.key = (stream, partition_key)
        #: Bound for a data stream (a key's order kept), not a Firehose delivery stream.
        self.keyed = is_data_stream(stream) if keyed is None else keyed
        self.key_bytes = key_bytes if key_bytes >= 0 else utf8_len(partition_key)

    def seal(self) -> None:
        if self.aggregate is not None and not self.sealed:
            self.data = self.aggregate.seal()
            self.aggregate = None
        self.sealed = True

    @property
    def size(self) -> int:
        return (self.aggregate.size if self.aggregate is not None else len(self.data)) + self.key_bytes


class RecordForwarder(ForwarderCore):
    """Drains the spool's records lane into PutRecords; ``run`` until ``stop`` is set."""

    lane = "records"

    def __init__(self, spool: Any, client: Any, config: ForwarderSection, agent_id: str) -> None:
        super().__init__(spool, config)
        self.client = client
        self.agent_id = agent_id
        self.pending: OrderedDict[int, Unit] = OrderedDict()
        self.cursor = 0
        self.rate = RateController(float(config.max_records_per_second))
        self.backoff = Backoff(config.retry_base_seconds, config.retry_max_seconds)
        self.key_window = config.batch_max_records
        self._open_aggregates: dict[tuple[str, str], Unit] = {}
        self._saved_ranges: list[tuple[int, int, str, str]] = self._load_ranges() if config.aggregate else []
        self._range_units: dict[int, Unit] = {}
        #: Bytes of the units in ``pending`` that are not aggregates (their size never changes).
        self._plain_bytes = 0
        self._sent_counters: dict[str, Any] = {}
        self._out_counters: dict[str, Any] = {}

    # -- the loop (``ForwarderCore.run``) ------------------------------------------------------

    def _started_note(self) -> str:
        return f" (aggregation {'on' if self.config.aggregate else 'off'})"

    def step(self, stop: threading.Event | None = None) -> bool:
        """Read, select and send one batch; False when there was nothing ready to send."""
        self._refill()
        batch = self._select(time.monotonic())
        if not batch:
            return False
        wait = self.rate.wait_time(len(batch))
        if wait > 0 and stop is not None and stop.wait(wait):
            return True
        self.rate.spend(len(batch))
        self._send(batch)
        return True

    def _idle(self, stop: threading.Event) -> None:
        now = time.monotonic()
        next_retry = min((u.not_before for u in self.pending.values()), default=now + 1.0)
        timeout = min(max(next_retry - now, 0.005), 1.0)
        if self._window_full():
            stop.wait(timeout)
        elif self.spool.wait("records", self.cursor, timeout) and self.config.linger_ms:
            stop.wait(self.config.linger_ms / 1000)

    # -- reading -------------------------------------------------------------------------------

    def _window_full(self) -> bool:
        """Enough read ahead: two batches' worth of units, or of bytes (aggregates grow in place,
        so after a long outage the unit count alone would let the whole spool into memory)."""
        if len(self.pending) >= WINDOW_BATCHES * self.config.batch_max_records:
            return True
        held = self._plain_bytes
        if self.config.aggregate:
            held += sum(u.size for u in self.pending.values() if u.aggregated)
        return held >= WINDOW_BATCHES * self.config.batch_max_bytes

    def _unpend(self, unit: Unit) -> None:
        """``unit`` leaves the window (acknowledged or dropped)."""
        if self.pending.pop(unit.id, None) is not None and not unit.aggregated:
            self._plain_bytes -= unit.size

    def _refill(self) -> None:
        while not self._window_full():
            room = WINDOW_BATCHES * self.config.batch_max_records - len(self.pending)
            # (wait with no timeout: whether anything newer is committed, without a query)
            fresh = self.spool.wait("records", self.cursor, 0)
            records = self.spool.read("records", after_seq=self.cursor, limit=min(room, 500), max_bytes=self.config.batch_max_bytes) if fresh else []
            if not records:
                for unit in self._range_units.values():
                    unit.complete_at = 0  # the end of the spool: whatever a saved range held is here
                return
            self.cursor = records[-1].seq
            if self.config.aggregate:
                for record in records:
                    self._take(record)
            else:
                self._take_plain(records)

    def _take_plain(self, records: list[SpooledRecord]) -> None:
        """``_take`` with aggregation off, in one loop: a unit per record, the partition key's
        work done once per distinct key of the batch."""
        keys: dict[tuple[str, str], tuple[str, bool, int]] = {}
        pending = self.pending
        added = 0
        for record in records:
            seq, _, stream, raw_key, data, source, _, _ = record
            known = keys.get((stream, raw_key or source))
            if known is None:
                key = partition_key(raw_key or source)
                known = keys[stream, raw_key or source] = (key, is_data_stream(stream), utf8_len(key))
            key, keyed, key_bytes = known
            size = len(data) + key_bytes
            if size > MAX_RECORD_BYTES or (not keyed and len(data) > FIREHOSE_MAX_RECORD_BYTES):
                self._take(record)  # (rejected there)
                continue
            pending[seq] = Unit([seq], stream, key, {source: 1}, data, None, False, 0, keyed, key_bytes)
            added += size
        self._plain_bytes += added

    def _take(self, record: SpooledRecord) -> None:
        key = partition_key(record.partition_key or record.source)
        keyed = is_data_stream(record.stream)
        key_bytes = utf8_len(key)
        size = len(record.data) + key_bytes
        if size > MAX_RECORD_BYTES or (not keyed and len(record.data) > FIREHOSE_MAX_RECORD_BYTES):
            self._reject([record.seq], {record.source: 1}, "too_large", f"{len(record.data)} bytes is over the {'Kinesis' if keyed else 'Firehose'} record limit")
            return
        if self.config.aggregate and keyed:
            if self._add_to_saved_range(record, key):
                return
            unit = self._open_aggregates.get((record.stream, key))
            if unit is not None and not unit.sealed and unit.aggregate is not None and unit.aggregate.add(record.data):
                unit.seqs.append(record.seq)
                unit.sources[record.source] = unit.sources.get(record.source, 0) + 1
                return
            self._open_aggregates.pop((record.stream, key), None)  # whatever comes next starts after this
            if Aggregate.fits_alone(key, record.data, self.config.aggregate_max_bytes):
                agg = Aggregate(key, self.config.aggregate_max_bytes)
                agg.add(record.data)
                unit = Unit([record.seq], record.stream, key, {record.source: 1}, aggregate=agg, aggregated=True)
                self.pending[unit.id] = unit
                self._open_aggregates[unit.key] = unit
                return
        self.pending[record.seq] = Unit([record.seq], record.stream, key, {record.source: 1}, record.data, keyed=keyed, key_bytes=key_bytes)
        self._plain_bytes += size

    def _add_to_saved_range(self, record: SpooledRecord, key: str) -> bool:
        """After a restart, rebuild the aggregates that were in flight exactly as they were sent."""
        if not self._saved_ranges:
            return False
        for first, last, stream, saved_key in self._saved_ranges:
            if not (first <= record.seq <= last and stream == record.stream and saved_key == key):
                continue
            unit = self._range_units.get(first)
            if unit is None:
                # The id stays the one the gateway saw, even if that first record was dropped since.
                unit = Unit([first], stream, key, aggregate=Aggregate(key, MAX_RECORD_BYTES), aggregated=True, complete_at=last)
                self._range_units[first] = unit
                self.pending[first] = unit
            assert unit.aggregate is not None
            unit.aggregate.add(record.data)
            unit.sources[record.source] = unit.sources.get(record.source, 0) + 1
            if record.seq != first:
                unit.seqs.append(record.seq)
            return True
        if record.seq > max(r[1] for r in self._saved_ranges):
            self._saved_ranges = []
            self._range_units = {}
        return False

    # -- choosing a batch ----------------------------------------------------------------------

    def _select(self, now: float) -> list[Unit]:
        batch: list[Unit] = []
        size = 0
        # While paced, a batch is at most one second's worth: a bigger one would only be throttled.
        max_units = self.config.batch_max_records if self.rate.rate is None else max(1, min(self.config.batch_max_records, int(self.rate.rate)))
        stream: str | None = None
        max_bytes = self.config.batch_max_bytes
        held: set[tuple[str, str]] = set()
        per_key: dict[tuple[str, str], int] = {}
        key_window = self.key_window
        windowed = key_window < max_units  # (else no key can reach its window in this batch)
        cursor = self.cursor
        for unit in self.pending.values():
            key = unit.key
            if key in held:
                continue
            # (Firehose has no per-key order to keep while throttled: no key window there.)
            if unit.not_before > now or unit.complete_at > cursor or (windowed and unit.keyed and per_key.get(key, 0) >= key_window):
                held.add(key)
                continue
            if stream is None:
                stream = unit.stream
                if not unit.keyed:
                    max_bytes = min(max_bytes, FIREHOSE_MAX_BATCH_BYTES)
            elif unit.stream != stream:
                continue
            if unit.solo and batch:
                held.add(key)
                continue
            unit_size = unit.size
            if batch and (len(batch) >= max_units or size + unit_size > max_bytes):
                break
            batch.append(unit)
            size += unit_size
            if windowed:
                per_key[key] = per_key.get(key, 0) + 1
            if unit.solo:
                break
        if batch and self._saved_ranges_needed(batch):
            self._save_ranges(batch)
        for unit in batch:
            unit.seal()
            if self._open_aggregates.get(unit.key) is unit:
                del self._open_aggregates[unit.key]
        return batch

    # -- aggregate ranges survive a crash ------------------------------------------------------

    def _saved_ranges_needed(self, batch: list[Unit]) -> bool:
        return any(u.aggregated and not u.sealed for u in batch)

    def _save_ranges(self, batch: list[Unit]) -> None:
        """Persist the composition of every aggregate in flight (before its first send)."""
        in_flight = [u for u in self.pending.values() if u.aggregated and (u.sealed or u in batch)]
        ranges = sorted((u.id, u.seqs[-1], u.stream, u.partition_key) for u in in_flight)
        self.spool.append([], checkpoint=(AGG_CHECKPOINT, json.dumps(ranges)))

    def _load_ranges(self) -> list[tuple[int, int, str, str]]:
        raw = self.spool.checkpoint(AGG_CHECKPOINT)
        try:
            return [(int(a), int(b), str(s), str(k)) for a, b, s, k in json.loads(raw)] if raw else []
        except (ValueError, TypeError):
            log.warning("ignoring an unreadable %s checkpoint", AGG_CHECKPOINT)
            return []

    # -- sending -------------------------------------------------------------------------------

    def _send(self, batch: list[Unit]) -> None:
        stream = batch[0].stream
        entries = [{"Data": u.data, "PartitionKey": u.partition_key} for u in batch]
        headers = {PRODUCER_HEADER: self.agent_id, RECORD_SEQS_HEADER: ",".join([str(u.id) for u in batch])}
        started = time.monotonic()
        try:
            response = self.client.put_records(StreamName=stream, Records=entries, headers=headers)
        except SendError as exc:
            self._request_failed(batch, exc.code, exc.status, str(exc))
            return
        results = response.get("Records", [])
        if len(results) != len(batch):
            self._request_failed(batch, "malformed_response", 0, f"{len(results)} results for {len(batch)} records")
            return
        self._settle(batch, results, time.monotonic() - started)

    def _settle(self, batch: list[Unit], results: list[dict[str, Any]], elapsed: float) -> None:
        done: list[Unit] = []
        throttled = 0
        now = time.monotonic()
        failed_keys: set[tuple[str, str]] = set()
        if not [True for result in results if result.get("ErrorCode")]:
            done = batch  # the usual answer, all accepted: no per-record loop
        else:
            for unit, result in zip(batch, results):
                code = result.get("ErrorCode")
                if not code:
                    if unit.key in failed_keys:
                        log.debug("key %s: a record went through after an earlier one failed in the same request", unit.key)
                    done.append(unit)
                    continue
                failed_keys.add(unit.key)
                if code in THROTTLE_CODES:
                    throttled += 1
                    unit.throttled = True
                self._retry_later(unit, now)
        if done:
            self._acknowledge(done)
        stream = batch[0].stream
        if done:
            self.rate.accepted(len(done))
        if throttled:
            metrics.THROTTLED.labels(stream).inc(throttled)
            self.rate.on_throttle()
            self.key_window = 1
        if len(done) < len(batch):
            metrics.SEND_RETRIES.labels(stream).inc(len(batch) - len(done))
            metrics.SEND_ERRORS.labels("records", "throttled" if throttled else "record_failed").inc()
        else:
            if self.backoff.attempt:
                log.info("PutRecords to %s goes through again; %d records waiting in memory", stream, len(self.pending))
            self.backoff.reset()
            self.rate.on_success()
            self.key_window = min(self.config.batch_max_records, self.key_window * 2)
            self._recall_throttled(now)

    def _acknowledge(self, units: list[Unit]) -> None:
        """Mark acknowledged records in the spool (``Spool.ack`` waits for no commit: the writer
        deletes them later, in batches) and count them."""
        seqs = [seq for unit in units for seq in unit.seqs]
        pop = self.pending.pop
        # (``_unpend``, per batch: a plain unit's size never changes)
        self._plain_bytes -= sum([len(unit.data) + unit.key_bytes for unit in units if pop(unit.id, None) is not None and not unit.aggregated])
        by_source: dict[str, int] = {}
        for unit in units:
            for source, n in unit.sources.items():
                by_source[source] = by_source.get(source, 0) + n
        try:
            self.spool.ack(seqs)
        except SpoolClosed:
            raise
        except Exception as exc:  # noqa: BLE001 - the records were delivered: never lose the count
            log.error("spool ack failed (the records will be sent again, and recognised): %s", exc)
        self._count(self._sent_counters, metrics.RECORDS_SENT, units[0].stream, sum(by_source.values()))
        for source, n in by_source.items():
            self._count(self._out_counters, metrics.RECORDS_OUT, source, n)
        # The last-success checkpoint goes with the next commit: no waiting for it here.
        self._succeeded(lambda key, value: self.spool.submit([], (key, value)))

    @staticmethod
    def _count(children: dict[str, Any], counter: Any, label: str, n: int) -> None:
        """``counter.labels(label).inc(n)``, its child looked up once (a labels() call costs a lock and a tuple)."""
        child = children.get(label)
        if child is None:
            child = children[label] = counter.labels(label)
        child.inc(n)

    def _recall_throttled(self, now: float) -> None:
        """A clean batch: the gateway has room again. Records parked far out by repeated throttles
        come back now (the rate limiter paces them), instead of idling out their long backoff."""
        soon = now + self.config.retry_base_seconds
        for unit in self.pending.values():
            if unit.throttled and unit.not_before > soon:
                unit.not_before = now + self.backoff.delay(0)
                unit.throttled = False

    def _retry_later(self, unit: Unit, now: float, minimum: float = 0.0) -> None:
        # Throttles are paced by the rate limiter too, so their exponent stops growing early.
        attempt = min(unit.attempts, THROTTLE_MAX_EXPONENT) if unit.throttled else unit.attempts
        unit.not_before = now + max(minimum, self.backoff.delay(attempt))
        unit.attempts += 1

    def _request_failed(self, batch: list[Unit], code: str, status: int, message: str) -> None:
        now = time.monotonic()
        stream = batch[0].stream
        # A refused stream name is the whole stream's problem (config), not one record's: wait, keep.
        if code in POISON_CODES and status < 500 and "streamname" not in message.lower():
            if len(batch) > 1:
                for unit in batch:
                    unit.solo = True  # send one by one to find the record the gateway refuses
                self._warn(code, f"PutRecords to {stream} refused ({code}: {message}); retrying record by record")
                return
            unit = batch[0]
            self._reject(unit.seqs, unit.sources, "gateway_rejected", f"{code}: {message}")
            self._unpend(unit)
            return
        reason = "throttled" if code in THROTTLE_CODES else CONNECTION if code == CONNECTION else "server_error" if status >= 500 else code
        metrics.SEND_ERRORS.labels("records", reason).inc()
        metrics.SEND_RETRIES.labels(stream).inc(len(batch))
        if code in THROTTLE_CODES:
            metrics.THROTTLED.labels(stream).inc(len(batch))
            self.rate.on_throttle()
            self.key_window = 1
        minimum = self._long_wait(code)
        delay = self.backoff.next()
        for unit in batch:
            self._retry_later(unit, now, max(minimum, delay))
        self._warn(reason, f"PutRecords to {stream} failed ({code}: {message}); {len(self.pending)} records waiting")

    def _reject(self, seqs: list[int], sources: dict[str, int], reason: str, why: str) -> None:
        """A record the gateway will never take: counted, logged and removed so it blocks nothing."""
        for source, n in sources.items():
            metrics.RECORDS_REJECTED.labels(source, reason).inc(n)
        log.error("dropping %d record(s) (spool seqs %s...): %s", len(seqs), seqs[:5], why)
        self.spool.ack(seqs)
