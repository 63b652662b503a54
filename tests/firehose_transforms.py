"""A Firehose transform the processing tests register as ``firehose_transforms:shout``
(a Lambda-style handler: Firehose's data-transformation event in, records with results out)."""

from __future__ import annotations

import base64
import json
from typing import Any


def shout(event: dict[str, Any], context: Any) -> dict[str, Any]:
    out = []
    for record in event["records"]:
        data = base64.b64decode(record["data"])
        doc = json.loads(data)
        if doc.get("action") == "drop":
            out.append({"recordId": record["recordId"], "result": "Dropped"})
        elif doc.get("action") == "fail":
            out.append({"recordId": record["recordId"], "result": "ProcessingFailed", "data": record["data"]})
        else:
            doc["name"] = doc["name"].upper()
            body = base64.b64encode(json.dumps(doc).encode() + b"\n").decode()
            out.append({"recordId": record["recordId"], "result": "Ok", "data": body, "metadata": {"partitionKeys": {"kind": doc["kind"]}}})
    return {"records": out}


def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("this transform always fails")
