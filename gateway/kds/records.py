"""Data-plane handlers: PutRecord, PutRecords, GetShardIterator, GetRecords.

Writes are routed and charged against the shard limits inside the store's writer job, so a
throttled record is refused before anything is stored and the rest of the batch still lands.
The exactly-once hook: with ``X-Edge-Producer-Id`` and ``X-Edge-Record-Seqs`` a replayed
record gets its original ShardId/SequenceNumber back instead of a second copy.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from binascii import a2b_base64, b2a_base64
from typing import TYPE_CHECKING, Any

from gateway.errors import invalid_argument, throughput_exceeded, validation
from gateway.kds import policies, render
from gateway.kds.monitoring import MONITOR
from gateway.kds.protocol import Codec, RawJson
from gateway.kds.sequence import SEQUENCE_BASE, external, internal
from gateway.kds.shards import MAX_HASH_KEY, Shard
from gateway.kds.store import THROTTLED, PutEntry, Store, Stream
from gateway.kds.validate import validate_member, violation
from gateway.wire import RECORD_SEQS_HEADER, producer_seqs

if TYPE_CHECKING:
    from gateway.kds.api import Call

#: Largest record (data + partition key) any stream takes (UpdateMaxRecordSize; each stream's
#: own limit, 1 MiB by default, is checked once the stream is known), and largest PutRecords
#: request (or one record, if the stream takes larger ones), in bytes.
MAX_RECORD_BYTES = 10 * 1024 * 1024
MAX_REQUEST_BYTES = 5 * 1024 * 1024
#: The partition key of a record sent without one (only an AUTO-distribution stream takes it;
#: a real key is at least one character long).
NO_KEY = ""


def _entry(p: dict[str, Any], where: str) -> PutEntry:
    key = p.get("PartitionKey", NO_KEY)
    data = p["Data"]
    if len(data) + len(key.encode("utf-8")) > MAX_RECORD_BYTES:
        raise violation(f"{where}data", data, f"Member must have length less than or equal to {MAX_RECORD_BYTES}")
    explicit = p.get("ExplicitHashKey")
    hash_value = None
    if explicit is not None:
        hash_value = int(explicit)
        if hash_value > MAX_HASH_KEY:
            raise invalid_argument(f"Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {explicit}")
    return (key, data, hash_value, None)


def _plain_hash_key(value: Any) -> int | None:
    """An ExplicitHashKey that is plainly valid (KPL aggregates carry one), else None."""
    if type(value) is str and 0 < len(value) <= 39 and value.isdigit() and value.isascii() and (value[0] != "0" or value == "0"):
        number = int(value)
        if number <= MAX_HASH_KEY:
            return number
    return None


def _entries(records: list[Any], codec: Codec) -> tuple[list[PutEntry], int]:
    """PutEntry tuples and their total size, in one pass: the common entry (a partition key,
    a small blob and maybe a plain ExplicitHashKey) is checked inline; anything else goes
    through the model."""
    entries: list[PutEntry] = []
    total = 0
    fast_limit = MAX_RECORD_BYTES - 4 * 256  # below this, neither base64 nor UTF-8 lengths matter
    blob_type = bytes if codec.is_cbor else str
    append = entries.append
    for i, r in enumerate(records):
        if type(r) is dict and 2 <= len(r) <= 3:
            key = r.get("PartitionKey")
            data = r.get("Data")
            explicit = _plain_hash_key(r.get("ExplicitHashKey")) if len(r) == 3 else None
            if type(key) is str and type(data) is blob_type and 0 < len(key) <= 256 and len(data) < fast_limit and (len(r) == 2 or explicit is not None):
                blob = data if isinstance(data, bytes) else None
                if blob_type is str:
                    try:
                        blob = a2b_base64(data, strict_mode=True)
                    except ValueError:  # binascii.Error, or non-ASCII text
                        blob = None  # the careful path below reports it
                if blob is not None:
                    append((key, blob, explicit, None))
                    total += len(blob) + len(key)
                    continue
        where = f"records.{i + 1}.member"
        entry = _entry(validate_member("PutRecordsRequestEntry", r, where, codec), where + ".")
        append(entry)
        total += len(entry[1]) + len(entry[0])
    return entries, total


def _producer(call: Call, count: int) -> tuple[str | None, list[int]]:
    try:
        producer, seqs = producer_seqs(call.request.headers, RECORD_SEQS_HEADER)
    except ValueError as exc:
        raise validation(str(exc)) from exc
    if seqs and len(seqs) != count:
        raise validation(f"{RECORD_SEQS_HEADER} has {len(seqs)} numbers for {count} records.")
    return producer, seqs


def _throttled_message(shard_id: str, stream: str, account: str) -> str:
    return f"Rate exceeded for shard {shard_id} in stream {stream} under account {account}."


def _fit(stream: Stream, entries: list[PutEntry], total: int, where: str) -> list[PutEntry]:
    """Check ``entries`` against the stream's own rules (record size, partition keys) and route
    them as its distribution strategy says."""
    settings = stream.settings
    limit = settings.max_record_bytes
    if total > limit:
        for i, (key, data, _, _) in enumerate(entries):
            if len(data) + len(key.encode("utf-8")) > limit:
                raise violation(where.format(i + 1) + "data", data, f"Member must have length less than or equal to {limit}")
    if settings.distribution == "AUTO":  # evenly over the shards, whatever key the producer gave
        return [(key, data, random.getrandbits(128), pseq) for key, data, _, pseq in entries]
    for i, entry in enumerate(entries):
        if entry[0] == NO_KEY:
            raise violation(where.format(i + 1) + "partitionKey", None, "Member must not be null")
    return entries


async def put_record(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    entry = _entry(p, "")
    [entry] = _fit(stream, [entry], len(entry[1]) + len(entry[0]), "")
    producer, seqs = _producer(call, 1)
    if seqs:
        entry = (entry[0], entry[1], entry[2], seqs[0])
    results = await call.store.put(stream.name, [entry], producer)
    call.request.app[MONITOR].put(stream, [entry], results, THROTTLED)
    [(shard_id, seq)] = results
    if seq == THROTTLED:
        raise throughput_exceeded(_throttled_message(shard_id, stream.name, call.store.account_id))
    return {"ShardId": shard_id, "SequenceNumber": external(seq), "EncryptionType": stream.settings.encryption_type}


async def put_records(call: Call, p: dict[str, Any]) -> dict[str, Any] | RawJson:
    entries, total = _entries(p["Records"], call.codec)  # checked before the stream is looked up, as AWS
    stream = call.stream(p)
    if total > max(MAX_REQUEST_BYTES, stream.settings.max_record_bytes):
        raise invalid_argument(f"Records size exceeds {MAX_REQUEST_BYTES // (1024 * 1024)} MB limit")
    entries = _fit(stream, entries, total, "records.{}.member.")
    producer, seqs = _producer(call, len(entries))
    if seqs:
        entries = [(e[0], e[1], e[2], pseq) for e, pseq in zip(entries, seqs)]
    results = await call.store.put(stream.name, entries, producer)
    call.request.app[MONITOR].put(stream, entries, results, THROTTLED)
    encryption = stream.settings.encryption_type
    if not call.codec.is_cbor and all(seq != THROTTLED for _, seq in results):
        # The hot path: the AWS JSON shape spelled out directly (3x faster than json.dumps).
        body = ",".join([f'{{"SequenceNumber":"{SEQUENCE_BASE + seq}","ShardId":"{shard_id}"}}' for shard_id, seq in results])
        return RawJson(f'{{"FailedRecordCount":0,"Records":[{body}],"EncryptionType":"{encryption}"}}'.encode())
    out = []
    failed = 0
    for shard_id, seq in results:
        if seq == THROTTLED:
            failed += 1
            out.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": _throttled_message(shard_id, stream.name, call.store.account_id)})
        else:
            out.append({"SequenceNumber": external(seq), "ShardId": shard_id})
    return {"FailedRecordCount": failed, "Records": out, "EncryptionType": encryption}


async def get_shard_iterator(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    shard = stream.shard(p["ShardId"], call.store.account_id)
    position = await start_position(call.store, stream, shard, p["ShardIteratorType"], p.get("StartingSequenceNumber"), p.get("Timestamp"))
    return {"ShardIterator": call.signer.issue(shard.key, position)}


async def start_position(store: Store, stream: Stream, shard: Shard, kind: str, text: str | None, ts: float | None) -> int:
    """The first internal sequence number a reader starting at ``kind`` gets (GetShardIterator,
    SubscribeToShard). AFTER_SEQUENCE_NUMBER also takes the number just before the shard's first:
    it is the ContinuationSequenceNumber of a subscription that has delivered nothing yet."""
    if kind == "TRIM_HORIZON":
        position = shard.start_seq
    elif kind == "LATEST":
        # After the last committed record: a record being written right now is still read.
        position = store.committed_seq if shard.end_seq is None else shard.end_seq + 1
    elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        if text is None:
            raise invalid_argument(f"StartingSequenceNumber is required for {kind}.")
        n = internal(text)
        first = shard.start_seq if kind == "AT_SEQUENCE_NUMBER" else shard.start_seq - 1
        if n < first or (shard.end_seq is not None and n > shard.end_seq):
            raise invalid_argument(f"StartingSequenceNumber {text} used in GetShardIterator on shard {shard.shard_id} in stream {stream.name} under account {store.account_id} is invalid because it did not come from this stream.")
        position = n if kind == "AT_SEQUENCE_NUMBER" else n + 1
    else:  # AT_TIMESTAMP (the model already checked the enum)
        if ts is None:
            raise invalid_argument("Timestamp is required for AT_TIMESTAMP.")
        fallback = store.committed_seq if shard.end_seq is None else shard.end_seq + 1
        found = await asyncio.to_thread(store.first_seq_at, shard.key, ts)
        position = fallback if found is None else found
    return max(position, shard.start_seq)


def _sealed(seq: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= seq <= last for first, last in ranges)


def _json_records(rows: list[tuple[int, float, str, bytes]], sealed: list[tuple[int, int]]) -> str:
    """GetRecords' Records array spelled out directly (4x faster than building dicts); records
    stored encrypted say so (``"EncryptionType":"KMS"``), as AWS's do."""
    escaped: dict[str, str] = {}
    parts = []
    for seq, arrival, key, data in rows:
        text = escaped.get(key)
        if text is None:
            text = escaped[key] = json.dumps(key)
        kms = ',"EncryptionType":"KMS"' if sealed and _sealed(seq, sealed) else ""
        parts.append(
            f'{{"SequenceNumber":"{SEQUENCE_BASE + seq}","ApproximateArrivalTimestamp":{arrival:.3f},'
            f'"Data":"{b2a_base64(data, newline=False).decode()}","PartitionKey":{text}{kms}}}'
        )
    return "[" + ",".join(parts) + "]"


async def get_records(call: Call, p: dict[str, Any]) -> dict[str, Any] | RawJson:
    position = call.signer.parse(p["ShardIterator"])
    store = call.store
    stream, shard = store.shard_by_key(position.shard_key)
    policies.check(call, stream, call.action, call.access_key)
    limits = store.limits
    bucket = limits.read(shard.key) if limits.enabled else None
    monitor = call.request.app[MONITOR]
    if bucket is not None and not bucket.admit_call(time.monotonic()):
        monitor.read_throttled(stream, shard.shard_id)
        raise throughput_exceeded(_throttled_message(shard.shard_id, stream.name, store.account_id))
    result = await asyncio.to_thread(store.read, shard.key, position.seq, p.get("Limit", 10000))
    if bucket is not None:
        bucket.charge_bytes(result.nbytes)
    monitor.read(stream, shard.shard_id, result)
    out: dict[str, Any] = {}
    if result.end_seq is not None and result.at_tip:
        out["MillisBehindLatest"] = 0
        out["ChildShards"] = render.child_shards(stream, shard)
    else:
        next_seq = result.rows[-1][0] + 1 if result.rows else position.seq
        out["NextShardIterator"] = call.signer.issue(shard.key, next_seq)
        out["MillisBehindLatest"] = 0 if result.at_tip or not result.rows else max(0, int((time.time() - result.rows[-1][1]) * 1000))
    codec = call.codec
    if not codec.is_cbor:
        rest = json.dumps(out, separators=(",", ":"))
        return RawJson(f'{{"Records":{_json_records(result.rows, result.sealed)},{rest[1:]}'.encode())
    blob, ts = codec.blob, codec.ts
    out["Records"] = [
        {"SequenceNumber": external(seq), "ApproximateArrivalTimestamp": ts(arrival), "Data": blob(data), "PartitionKey": key}
        for seq, arrival, key, data in result.rows
    ]
    for record, (seq, *_) in zip(out["Records"], result.rows):
        if result.sealed and _sealed(seq, result.sealed):
            record["EncryptionType"] = "KMS"
    return out
