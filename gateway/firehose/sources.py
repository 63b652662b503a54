"""KinesisStreamAsSource: a delivery stream fed by one of the gateway's own data streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.firehose.naming import invalid
from gateway.wire import stream_name_from_arn


def check_source(source: dict[str, Any], has_data_stream: Callable[[str], bool]) -> None:
    arn = source.get("KinesisStreamARN", "")
    name = stream_name_from_arn(arn)
    if not name or not has_data_stream(name):
        raise invalid(f"Kinesis data stream {arn} does not exist or is not accessible.")
