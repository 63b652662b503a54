"""``ProcessingConfiguration`` processors as pipeline steps, in the order Firehose applies them:

    RecordDeAggregation      split a record holding several JSON documents (SubRecordType JSON) or
                             delimited lines (DELIMITED, ``Delimiter`` base64) into records
    Lambda                   the transform named by ``LambdaArn`` (``gateway.firehose.transforms``)
    MetadataExtraction       dynamic partitioning keys from a JQ query (``MetadataExtractionQuery``,
                             the ``jq`` library, as AWS's JQ-1.6 engine) over each JSON record
    AppendDelimiterToRecord  a newline after every record

A record whose query fails, is not JSON, or yields a missing/null key goes to the error output
(``!{firehose:error-output-type}`` = ``partitioning-failed``, errorCode
``DynamicPartitioning.MetadataExtractionFailed``); a record the transform marks ``ProcessingFailed``
(or that it does not return) goes to ``processing-failed``.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Any

import jq

from gateway.firehose.naming import EXPRESSION, invalid
from gateway.firehose.pipeline import Failure, Record, Step, error_doc
from gateway.firehose.streams import DeliveryStream

PARTITIONING_FAILED = "partitioning-failed"
ORDER = ("RecordDeAggregation", "Lambda", "MetadataExtraction", "AppendDelimiterToRecord")


def processors(dest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Enabled processors of a destination: type -> {parameter name: value}."""
    config = dest.get("ProcessingConfiguration") or {}
    if not config.get("Enabled", True):
        return {}
    return {p["Type"]: {q["ParameterName"]: q["ParameterValue"] for q in p.get("Parameters", [])} for p in config.get("Processors", [])}


@functools.lru_cache(maxsize=64)
def compiled(query: str) -> Any:
    try:
        return jq.compile(query)
    except ValueError as exc:
        raise invalid(f"MetadataExtractionQuery {query!r} is not a valid JQ expression: {exc}") from exc


def check_processors(dest: dict[str, Any], partitioned: bool, transforms: dict[str, str]) -> None:
    """CreateDeliveryStream/UpdateDestination checks (AWS's, plus: the Lambda must be registered)."""
    found = processors(dest)
    for kind in found:
        if kind not in ORDER:
            raise invalid(f"Processor type {kind} is not supported by this gateway ({', '.join(ORDER)}).")
    if "MetadataExtraction" in found:
        params = found["MetadataExtraction"]
        if not partitioned:
            raise invalid("MetadataExtraction processors require dynamic partitioning (or an Iceberg destination).")
        if "MetadataExtractionQuery" not in params:
            raise invalid("MetadataExtraction requires the MetadataExtractionQuery parameter.")
        compiled(params["MetadataExtractionQuery"])
    if "Lambda" in found:
        arn = found["Lambda"].get("LambdaArn", "")
        if arn not in transforms:
            raise invalid(f"Lambda function {arn!r} is not registered in the gateway's [firehose.transforms].")


def _metadata_step(query: str) -> Step:
    program = compiled(query)

    def extract(stream: DeliveryStream, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        ok: list[Record] = []
        failed: list[Failure] = []
        for record in records:
            try:
                keys = program.input_text(record.data.decode("utf-8")).first()
                if not isinstance(keys, dict) or not keys or any(v is None for v in keys.values()):
                    raise ValueError(f"the query yielded {json.dumps(keys)[:200]}, not an object of non-null keys")
                record.keys.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in keys.items()})
                ok.append(record)
            except (ValueError, UnicodeDecodeError, StopIteration) as exc:
                doc = error_doc(record, "DynamicPartitioning.MetadataExtractionFailed", f"Non JSON record provided or the query failed: {exc}"[:1000])
                failed.append(Failure(record, PARTITIONING_FAILED, doc))
        return ok, failed

    return extract


def lanes_of(stream: DeliveryStream, records: list[bytes]) -> list[str] | None:
    """The buffer (``store`` lane) of each put record, for a stream partitioned by its JQ query
    alone: its partition keys as JSON, so each partition is buffered and flushed on its own, as on
    AWS. None (one buffer for the stream) when a transform or de-aggregation runs first: the keys
    are known only at delivery then. A record the query fails on goes to lane "" (and to the error
    output at delivery)."""
    found = processors(stream.destination)
    if not stream.partitioned or "MetadataExtraction" not in found or "Lambda" in found or "RecordDeAggregation" in found:
        return None
    program = compiled(found["MetadataExtraction"]["MetadataExtractionQuery"])
    lanes: list[str] = []
    for data in records:
        try:
            lanes.append(json.dumps(program.input_text(data.decode("utf-8")).first(), sort_keys=True, separators=(",", ":")))
        except (ValueError, UnicodeDecodeError, StopIteration):
            lanes.append("")
    return lanes


def _append_delimiter(stream: DeliveryStream, records: list[Record]) -> tuple[list[Record], list[Failure]]:
    for record in records:
        record.data += b"\n"
    return records, []


def _deaggregation_step(params: dict[str, str]) -> Step:
    kind = params.get("SubRecordType", "JSON")
    delimiter = base64.b64decode(params["Delimiter"]) if "Delimiter" in params else b"\n"

    def split(stream: DeliveryStream, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        out: list[Record] = []
        for record in records:
            parts = _json_documents(record.data) if kind == "JSON" else [p for p in record.data.split(delimiter) if p]
            out += [Record(record.seq, record.arrival, part, record.raw, dict(record.keys)) for part in parts]
        return out, []

    return split


def _json_documents(data: bytes) -> list[bytes]:
    decoder = json.JSONDecoder()
    text = data.decode("utf-8", errors="replace")
    out: list[bytes] = []
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            _, end = decoder.raw_decode(text, pos)
        except ValueError:
            out.append(text[pos:].encode())
            break
        out.append(text[pos:end].encode())
        pos = end
    return out


def _require_keys(prefix: str) -> Step:
    """Dynamic partitioning: a record lacking a key the Prefix names goes to the error output."""
    needed = [value for namespace, value in EXPRESSION.findall(prefix) if namespace.startswith("partitionKey")]

    def check(stream: DeliveryStream, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        ok: list[Record] = []
        failed: list[Failure] = []
        for record in records:
            missing = [k for k in needed if k not in record.keys]
            if missing:
                doc = error_doc(record, "DynamicPartitioning.MetadataExtractionFailed", f"The record has no partition key {', '.join(missing)}.")
                failed.append(Failure(record, PARTITIONING_FAILED, doc))
            else:
                ok.append(record)
        return ok, failed

    return check


def steps(stream: DeliveryStream, lambda_step: Callable[[dict[str, str]], Step]) -> list[Step]:
    found = processors(stream.destination)
    out: list[Step] = []
    if "RecordDeAggregation" in found:
        out.append(_deaggregation_step(found["RecordDeAggregation"]))
    if "Lambda" in found:
        out.append(lambda_step(found["Lambda"]))
    if "MetadataExtraction" in found and (stream.partitioned or stream.kind == "Iceberg"):
        out.append(_metadata_step(found["MetadataExtraction"]["MetadataExtractionQuery"]))
    if stream.partitioned:
        out.append(_require_keys(stream.s3.get("Prefix", "")))
    if "AppendDelimiterToRecord" in found:
        out.append(_append_delimiter)
    return out
