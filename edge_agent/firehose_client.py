"""A lean PutRecordBatch client (Firehose's JSON 1.1 call, SigV4 for service ``firehose``), and
``RecordsClient``, which the records forwarder sends through: PutRecords for data streams,
PutRecordBatch for records spooled for a delivery stream (``firehose:NAME``), the answer put in
PutRecords' shape (``Records`` with ``ErrorCode`` per failed record) so the forwarder's
acknowledgement, retry and throttling logic is the same for both. The exactly-once headers go
along: the gateway recognises a replayed PutRecordBatch as it does a PutRecords.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Mapping, Sequence
from typing import Any

from edge_agent.config import GatewaySection
from edge_agent.kinesis_client import CONTENT_TYPE, KinesisClient, json_string
from edge_agent.kinesis_limits import delivery_stream_of
from edge_agent.transport import Transport

TARGET = "Firehose_20150804.PutRecordBatch"


class FirehoseClient:
    """``put_record_batch(DeliveryStreamName, Records, headers)`` → the PutRecordBatch response."""

    def __init__(self, session: Any, gateway: GatewaySection) -> None:
        self.url = (gateway.firehose_endpoint_url or gateway.endpoint_url).rstrip("/") + "/"
        self.transport = Transport(session, gateway)

    def put_record_batch(self, DeliveryStreamName: str, Records: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None) -> dict[str, Any]:  # noqa: N803 - botocore's names
        records = b",".join([b'{"Data":"%b"}' % b2a_base64(r["Data"], newline=False) for r in Records])
        body = b'{"DeliveryStreamName":%b,"Records":[%b]}' % (json_string(DeliveryStreamName), records)
        return self.transport.post_json(self.url, "firehose", body, {"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET, **(headers or {})})

    def close(self) -> None:
        self.transport.close()


class RecordsClient:
    """``put_records`` to a data stream or, for a ``firehose:NAME`` stream, PutRecordBatch to NAME."""

    def __init__(self, kinesis: KinesisClient, firehose: FirehoseClient) -> None:
        self.kinesis = kinesis
        self.firehose = firehose

    def put_records(self, StreamName: str, Records: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None) -> dict[str, Any]:  # noqa: N803
        delivery_stream = delivery_stream_of(StreamName)
        if delivery_stream is None:
            return self.kinesis.put_records(StreamName=StreamName, Records=Records, headers=headers)
        answer = self.firehose.put_record_batch(DeliveryStreamName=delivery_stream, Records=Records, headers=headers)
        return {"FailedRecordCount": answer.get("FailedPutCount", 0), "Records": answer.get("RequestResponses", [])}

    def close(self) -> None:
        self.kinesis.close()
        self.firehose.close()
