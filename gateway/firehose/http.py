"""HTTP endpoint destinations: one POST per batch, in Firehose's request format.

    POST <EndpointConfiguration.Url>
    Content-Type: application/json            (Content-Encoding: gzip with ContentEncoding GZIP)
    X-Amz-Firehose-Protocol-Version: 1.0
    X-Amz-Firehose-Request-Id: <uuid>         the same on every retry of the batch, even after a restart
    X-Amz-Firehose-Access-Key: <AccessKey>    when configured
    X-Amz-Firehose-Source-Arn: <delivery stream ARN>
    X-Amz-Firehose-Common-Attributes: {"commonAttributes": {...}}   (RequestConfiguration)

    {"requestId": "<uuid>", "timestamp": <ms>, "records": [{"data": "<base64>"}, ...]}

The endpoint must answer 200 with ``{"requestId": "<the same uuid>", "timestamp": <ms>}``;
anything else (another status, another id, no answer within the timeout) is a failure, retried
with backoff for ``RetryOptions.DurationInSeconds`` (default ``[firehose] retry_seconds``, 300 as on AWS). Then the batch's records go to
the S3 configuration's bucket under ``ErrorOutputPrefix`` (``http-endpoint-failed``) as error
documents; with ``S3BackupMode = AllData`` every record is also written there as delivered
data. Plain ``http://`` is accepted for loopback endpoints only (checked at create time).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import time
import uuid
from typing import Any

import aiohttp

from gateway.config import FirehoseConfig
from gateway.firehose import pipeline
from gateway.firehose.delivery import retry_delay, write_objects
from gateway.firehose.naming import Namer, time_zone
from gateway.firehose.sinks import ObjectSink
from gateway.firehose.store import Row
from gateway.firehose.streams import DeliveryStream, bucket_name

log = logging.getLogger("gateway.firehose.http")

HTTP_FAILED = "http-endpoint-failed"
REQUEST_TIMEOUT = 30.0


def request_id(stream: DeliveryStream, first_seq: int) -> str:
    """Stable for a batch: derived from (stream, version, first record), like its object keys."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"firehose:{stream.arn}/{stream.version}/{first_seq}"))


class HttpEndpoint:
    def __init__(self, sink: ObjectSink, config: FirehoseConfig) -> None:
        self.sink = sink
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    async def deliver(self, stream: DeliveryStream, rows: list[Row], steps: list[pipeline.Step]) -> dict[str, int]:
        dest = stream.destination
        records, failures = await asyncio.to_thread(pipeline.run_steps, stream, rows, steps)
        counts: dict[str, int] = {}
        rid = request_id(stream, rows[0].seq)
        error = ""
        if records:
            error = await self._post_with_retries(stream, rid, records)
            if error:
                failures += [pipeline.Failure(r, HTTP_FAILED, pipeline.error_doc(r, "HttpEndpoint.RequestFailed", error[:1000], httpEndpointRequestId=rid)) for r in records]
            else:
                counts["records_delivered"] = len(records)
                counts["http_requests_delivered"] = 1
        s3 = dest.get("S3Configuration", {})
        objects: list[pipeline.S3Object] = []
        namer = Namer(stream.name, stream.version, f"{stream.name}/{stream.version}/{rows[0].seq}/backup", time_zone(s3.get("CustomTimeZone")))
        if dest.get("S3BackupMode") == "AllData":
            backup = await asyncio.to_thread(pipeline.build, stream, rows, [], pipeline.concatenate, self.config.gzip_level, s3)
            objects += [o for o in backup.objects]
        if failures:
            fmt = s3.get("CompressionFormat", "UNCOMPRESSED")
            objects += pipeline.error_objects(stream, namer, failures, s3, fmt, self.config.gzip_level, bucket_name(s3["BucketARN"]))
            counts["records_failed"] = len(failures)
        await write_objects(self.sink, objects)
        return counts

    async def _post_with_retries(self, stream: DeliveryStream, rid: str, records: list[pipeline.Record]) -> str:
        """POST until the endpoint accepts or the retry window closes; the last error, "" when accepted."""
        dest = stream.destination
        endpoint = dest["EndpointConfiguration"]
        request_config = dest.get("RequestConfiguration") or {}
        body = json.dumps({"requestId": rid, "timestamp": int(time.time() * 1000), "records": [{"data": base64.b64encode(r.data).decode()} for r in records]}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Amz-Firehose-Protocol-Version": "1.0",
            "X-Amz-Firehose-Request-Id": rid,
            "X-Amz-Firehose-Source-Arn": stream.arn,
        }
        if endpoint.get("AccessKey"):
            headers["X-Amz-Firehose-Access-Key"] = endpoint["AccessKey"]
        attributes = {a["AttributeName"]: a["AttributeValue"] for a in request_config.get("CommonAttributes", [])}
        if attributes:
            headers["X-Amz-Firehose-Common-Attributes"] = json.dumps({"commonAttributes": attributes})
        if request_config.get("ContentEncoding") == "GZIP":
            body = await asyncio.to_thread(gzip.compress, body, self.config.gzip_level)
            headers["Content-Encoding"] = "gzip"
        window = (dest.get("RetryOptions") or {}).get("DurationInSeconds", self.config.retry_seconds)
        deadline = time.monotonic() + window
        attempt = 0
        while True:
            attempt += 1
            error = await self._post(endpoint["Url"], body, headers, rid)
            if not error:
                return ""
            if time.monotonic() >= deadline:
                log.warning("%s: giving up on %s after %d attempts: %s", stream.name, endpoint["Url"], attempt, error)
                return error
            delay = min(retry_delay(attempt), max(0.0, deadline - time.monotonic()))
            log.info("%s: POST %s failed (attempt %d, retry in %.1fs): %s", stream.name, endpoint["Url"], attempt, delay, error)
            await asyncio.sleep(delay)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], rid: str) -> str:
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                text = await response.text()
                if response.status != 200:
                    return f"HTTP {response.status}: {text[:300]}"
                answer: Any = json.loads(text)
                if not isinstance(answer, dict) or answer.get("requestId") != rid:
                    return f"the response does not echo requestId {rid}: {text[:300]}"
                return ""
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

