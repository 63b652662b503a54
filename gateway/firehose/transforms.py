"""Lambda processors without Lambda: ``[firehose.transforms]`` maps a ``LambdaArn`` to either

- ``"module:function"``: a Python callable, called as a Lambda handler ``function(event, None)``
  in the delivery thread (import errors surface at the first batch, in the gateway log), or
- ``"http://..."`` / ``"https://..."``: the event is POSTed there as JSON, the response is the result.

The event and the result are Firehose's data-transformation shapes::

    event  = {"invocationId", "deliveryStreamArn", "region",
              "records": [{"recordId", "approximateArrivalTimestamp" (ms), "data" (base64)}]}
    result = {"records": [{"recordId", "result": "Ok" | "Dropped" | "ProcessingFailed",
                           "data" (base64), "metadata": {"partitionKeys": {...}}}]}

Records are sent in invocations of at most ``BufferSizeInMBs`` (default 1 MiB); an invocation
that raises or answers badly is retried ``NumberOfRetries`` times (default 3), then its records go
to ``processing-failed`` with errorCode ``Lambda.FunctionError``; records marked
ProcessingFailed get ``Lambda.ProcessingFailedStatus``, records left out ``Lambda.MissingRecordId``.
"""

from __future__ import annotations

import base64
import importlib
import json
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from gateway.firehose.pipeline import Failure, Record, Step, error_doc
from gateway.firehose.streams import DeliveryStream

PROCESSING_FAILED = "processing-failed"
MiB = 1024 * 1024
HTTP_TIMEOUT = 60.0

Invoke = Callable[[dict[str, Any]], Any]


def resolve(target: str) -> Invoke:
    """The callable a ``[firehose.transforms]`` value names."""
    if target.startswith(("http://", "https://")):

        def post(event: dict[str, Any]) -> Any:
            request = urllib.request.Request(target, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310 - operator-configured URL
                return json.loads(response.read())

        return post
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return lambda event: function(event, None)


def lambda_step(transforms: dict[str, str]) -> Callable[[dict[str, str]], Step]:
    def make(params: dict[str, str]) -> Step:
        arn = params.get("LambdaArn", "")
        retries = int(params.get("NumberOfRetries", "3"))
        chunk_bytes = int(float(params.get("BufferSizeInMBs", "1")) * MiB)

        def transform(stream: DeliveryStream, records: list[Record]) -> tuple[list[Record], list[Failure]]:
            ok: list[Record] = []
            failed: list[Failure] = []
            start = 0
            while start < len(records):
                end, size = start, 0
                while end < len(records) and (end == start or size + len(records[end].data) <= chunk_bytes):
                    size += len(records[end].data)
                    end += 1
                good, bad = _invoke(transforms.get(arn, ""), arn, retries, stream, records[start:end])
                ok += good
                failed += bad
                start = end
            return ok, failed

        return transform

    return make


def _invoke(target: str, arn: str, retries: int, stream: DeliveryStream, records: list[Record]) -> tuple[list[Record], list[Failure]]:
    ids = {f"{r.seq}.{i}": r for i, r in enumerate(records)}
    event = {
        "invocationId": str(uuid.uuid4()),
        "deliveryStreamArn": stream.arn,
        "region": stream.region,
        "records": [{"recordId": rid, "approximateArrivalTimestamp": int(r.arrival * 1000), "data": base64.b64encode(r.data).decode()} for rid, r in ids.items()],
    }
    error = ""
    for _ in range(retries + 1):
        try:
            result = resolve(target)(event)
            returned = result["records"]
            if not isinstance(returned, list):
                raise ValueError("records is not a list")
            break
        except Exception as exc:  # whatever the transform does wrong is its failure, never the gateway's
            error = f"{type(exc).__name__}: {exc}"[:1000]
    else:
        return [], [Failure(r, PROCESSING_FAILED, error_doc(r, "Lambda.FunctionError", f"The Lambda function failed: {error}", lambdaArn=arn)) for r in records]
    ok: list[Record] = []
    failed: list[Failure] = []
    seen: set[str] = set()
    for item in returned:
        record = ids.get(str(item.get("recordId"))) if isinstance(item, dict) else None
        if record is None or item["recordId"] in seen:
            continue
        seen.add(item["recordId"])
        status = item.get("result")
        if status == "Dropped":
            continue
        if status == "Ok":
            try:
                data = base64.b64decode(item.get("data", ""), validate=True)
            except ValueError:
                failed.append(Failure(record, PROCESSING_FAILED, error_doc(record, "Lambda.JsonProcessingException", "The Lambda function returned data that is not base64.", lambdaArn=arn)))
                continue
            keys = (item.get("metadata") or {}).get("partitionKeys") or {}
            ok.append(Record(record.seq, record.arrival, data, record.raw, {**record.keys, **{str(k): str(v) for k, v in keys.items()}}))
        else:
            failed.append(Failure(record, PROCESSING_FAILED, error_doc(record, "Lambda.ProcessingFailedStatus", f"The Lambda function returned result {status!r} for this record.", lambdaArn=arn)))
    for rid, record in ids.items():
        if rid not in seen:
            failed.append(Failure(record, PROCESSING_FAILED, error_doc(record, "Lambda.MissingRecordId", f"The Lambda function did not return record {rid}.", lambdaArn=arn)))
    return ok, failed
