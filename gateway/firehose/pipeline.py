"""One buffered batch -> the S3 objects that hold it (data objects and error objects).

The steps, in AWS's order: Lambda transform (``transforms``) -> dynamic partitioning (JQ
``MetadataExtraction`` or the transform's ``partitionKeys``) -> record format conversion
(JSON -> Parquet/ORC, ``conversion``) or plain concatenation -> compression. Each step may send
records to the error output instead, as JSON lines in the documented shape, under
``ErrorOutputPrefix`` with ``!{firehose:error-output-type}`` set to the step's type.

Pure functions of (stream, rows): they run in a worker thread and write nothing themselves, so a
crash between building and writing just builds the same objects again.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.firehose import compression
from gateway.firehose.naming import Namer, time_zone
from gateway.firehose.store import Row
from gateway.firehose.streams import DeliveryStream, bucket_name

MiB = 1024 * 1024


@dataclass
class Record:
    """A record on its way through the steps (``data`` may be transformed)."""

    seq: int
    arrival: float
    data: bytes
    raw: bytes
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Failure:
    """A record bound for the error output."""

    record: Record
    output_type: str
    doc: dict[str, Any]


@dataclass
class S3Object:
    bucket: str
    key: str
    body: bytes
    records: int


@dataclass
class Batch:
    objects: list[S3Object] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def error_doc(record: Record, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON line AWS writes for a failed record (processing-failed shape; callers add fields)."""
    doc: dict[str, Any] = {
        "attemptsMade": 1,
        "arrivalTimestamp": ms(record.arrival),
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": ms(time.time()),
        "rawData": base64.b64encode(record.raw).decode(),
    }
    doc.update(extra)
    return doc


#: A step: records in -> (records that go on, failures)
Step = Callable[[DeliveryStream, list[Record]], tuple[list[Record], list[Failure]]]
#: Turns records into one object body (concatenation, Parquet...) -> (body, extension, failures)
Encoder = Callable[[DeliveryStream, list[Record]], tuple[bytes, str, list[Failure]]]


def concatenate(stream: DeliveryStream, records: list[Record]) -> tuple[bytes, str, list[Failure]]:
    return b"".join(r.data for r in records), "", []


def run_steps(stream: DeliveryStream, rows: list[Row], steps: list[Step]) -> tuple[list[Record], list[Failure]]:
    """The records of ``rows`` after every step, and the ones the steps failed."""
    records = [Record(row.seq + i, row.arrival, data, data) for row in rows for i, data in enumerate(row.records())]
    failures: list[Failure] = []
    for step in steps:
        records, failed = step(stream, records)
        failures += failed
    return records, failures


def build(
    stream: DeliveryStream,
    rows: list[Row],
    steps: list[Step],
    encoder: Encoder,
    gzip_level: int,
    s3: dict[str, Any] | None = None,
) -> Batch:
    """The objects for ``rows``: data objects by partition, then the error objects."""
    s3 = s3 if s3 is not None else stream.s3
    namer = Namer(stream.name, stream.version, f"{stream.name}/{stream.version}/{rows[0].seq}", time_zone(s3.get("CustomTimeZone")))
    batch = Batch()
    if not steps and encoder is concatenate and not stream.partitioned:  # the common case: no record is touched
        return _plain(stream, rows, s3, namer, gzip_level, batch)
    records, failures = run_steps(stream, rows, steps)
    partitions: dict[tuple[tuple[str, str], ...], list[Record]] = {}
    for record in records:
        partitions.setdefault(tuple(sorted(record.keys.items())), []).append(record)
    bucket = bucket_name(s3["BucketARN"])
    fmt = s3.get("CompressionFormat", "UNCOMPRESSED")
    for keys, members in partitions.items():
        body, extension, failed = encoder(stream, members)
        failures += failed
        if not body:
            continue
        oldest = min(r.arrival for r in members)
        extension = s3.get("FileExtension") or extension + compression.EXTENSIONS[fmt]
        prefix = namer.prefix(s3.get("Prefix", ""), oldest, partitioned=stream.partitioned, keys=dict(keys))
        name = namer.object_name(oldest, extension)
        body = compression.compress(body, fmt, gzip_level, entry_name=name.rsplit(".", 1)[0])
        batch.objects.append(S3Object(bucket, prefix + name, body, len(members) - len(failed)))
        batch.count("objects_delivered")
        batch.count("bytes_delivered", len(body))
    batch.count("records_delivered", sum(o.records for o in batch.objects))
    batch.count("records_failed", len(failures))
    batch.objects += error_objects(stream, namer, failures, s3, fmt, gzip_level, bucket)
    return batch


def _plain(stream: DeliveryStream, rows: list[Row], s3: dict[str, Any], namer: Namer, gzip_level: int, batch: Batch) -> Batch:
    """One object of the rows' records concatenated as sent (they are stored that way)."""
    fmt = s3.get("CompressionFormat", "UNCOMPRESSED")
    oldest = min(r.arrival for r in rows)
    extension = s3.get("FileExtension") or compression.EXTENSIONS[fmt]
    name = namer.object_name(oldest, extension)
    body = compression.compress(b"".join(r.data for r in rows), fmt, gzip_level, entry_name=name.rsplit(".", 1)[0])
    prefix = namer.prefix(s3.get("Prefix", ""), oldest)
    count = sum(r.count for r in rows)
    batch.objects.append(S3Object(bucket_name(s3["BucketARN"]), prefix + name, body, count))
    batch.counts.update(objects_delivered=1, bytes_delivered=len(body), records_delivered=count)
    return batch


def error_objects(stream: DeliveryStream, namer: Namer, failures: list[Failure], s3: dict[str, Any], fmt: str, gzip_level: int, bucket: str) -> list[S3Object]:
    by_type: dict[str, list[Failure]] = {}
    for failure in failures:
        by_type.setdefault(failure.output_type, []).append(failure)
    out: list[S3Object] = []
    for output_type, members in sorted(by_type.items()):
        oldest = min(f.record.arrival for f in members)
        template = s3.get("ErrorOutputPrefix") or "!{firehose:error-output-type}/"
        prefix = namer.prefix(template, oldest, error_type=output_type)
        body = b"".join(json.dumps(f.doc, separators=(",", ":")).encode() + b"\n" for f in members)
        name = namer.object_name(oldest, compression.EXTENSIONS[fmt])
        out.append(S3Object(bucket, prefix + name, compression.compress(body, fmt, gzip_level, entry_name=name.rsplit(".", 1)[0]), len(members)))
    return out
