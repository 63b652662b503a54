"""Helpers for the agent's tests: a forwarder on a thread, reading a stream back with boto3."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edge_agent import aws
from edge_agent.config import ForwarderSection, GatewaySection
from edge_agent.forwarder import RecordForwarder
from edge_agent.metrics import REGISTRY
from helpers import wait_until  # noqa: F401  (re-exported for the agent tests)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def kinesis_client(url: str) -> Any:
    """The PutRecords client the agent uses (edge_agent.kinesis_client)."""
    from edge_agent.kinesis_client import KinesisClient

    gw = GatewaySection(endpoint_url=url, read_timeout_seconds=10, connect_timeout_seconds=2)
    return KinesisClient(aws.make_session(gw), gw)


@contextmanager
def running(component: Any) -> Iterator[None]:
    """Run ``component.run(stop)`` on a thread for the block; it must stop within 10 s after."""
    stop = threading.Event()
    thread = threading.Thread(target=component.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


@contextmanager
def running_forwarder(spool: Any, url: str, agent_id: str = "agent-test", **forwarder: Any) -> Iterator[RecordForwarder]:
    options = {"retry_base_seconds": 0.05, "retry_max_seconds": 1.0, "linger_ms": 5, **forwarder}
    fw = RecordForwarder(spool, kinesis_client(url), ForwarderSection(**options), agent_id)
    with running(fw):
        yield fw




def read_stream(client: Any, stream: str) -> dict[str, list[dict[str, Any]]]:
    """Every record of every shard (TRIM_HORIZON to the tip), by shard id, in shard order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        records: list[dict[str, Any]] = []
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            for attempt in range(50):
                try:
                    response = client.get_records(ShardIterator=iterator, Limit=10000)
                    break
                except client.exceptions.ProvisionedThroughputExceededException:
                    time.sleep(0.25)
            records.extend(response["Records"])
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
        out[shard["ShardId"]] = records
    return out


def all_data(client: Any, stream: str) -> list[bytes]:
    return [r["Data"] for records in read_stream(client, stream).values() for r in records]


def synthetic_fragments(count: int, width: int = 160, height: int = 120, fps: int = 10, start_ms: int | None = None) -> list[Any]:
    """Real H.264 MKV fragments (1 s each) from generated frames, as the camera source makes them."""
    import numpy as np

    from kvs import FragmentWriter

    writer = FragmentWriter(width, height, fps, fragment_seconds=1.0)
    t0 = start_ms if start_ms is not None else int(time.time() * 1000) - count * 1000
    fragments: list[Any] = []
    frame = 0
    while len(fragments) < count:
        image = np.full((height, width, 3), (frame * 7) % 255, dtype=np.uint8)
        image[:, (frame * 3) % width] = 255
        fragments.extend(writer.add_frame(image, t0 + frame * 1000 // fps))
        frame += 1
    return fragments[:count]


def video_records(stream: str, fragments: list[Any], source: str = "camera-test") -> list[Any]:
    from edge_agent.spool import NewRecord

    return [
        NewRecord("video", stream, stream, f.data, source, timestamp_ms=f.start_ms,
                  attrs={"start_ms": f.start_ms, "duration_ms": f.duration_ms, "frame_count": f.frame_count})
        for f in fragments
    ]


@contextmanager
def running_media_forwarder(spool: Any, url: str, agent_id: str = "agent-test", **forwarder: Any) -> Iterator[Any]:
    from edge_agent.media_forwarder import MediaForwarder

    options = {"retry_base_seconds": 0.05, "retry_max_seconds": 1.0, "media_fragments_per_request": 3, **forwarder}
    gw = GatewaySection(endpoint_url=url, read_timeout_seconds=10, connect_timeout_seconds=2)
    fw = MediaForwarder(spool, aws.make_session(gw), gw, ForwarderSection(**options), agent_id)
    with running(fw):
        yield fw


def list_fragments(url: str, stream: str, make_client: Callable[[str, str], Any] | None = None) -> list[dict[str, Any]]:
    """Every fragment of ``stream`` via boto3 (GetDataEndpoint first), oldest first."""
    if make_client is None:
        from helpers import aws_client as make_client
    assert make_client is not None
    video = make_client("kinesisvideo", url)
    endpoint = video.get_data_endpoint(StreamName=stream, APIName="LIST_FRAGMENTS")["DataEndpoint"]
    archived = make_client("kinesis-video-archived-media", endpoint)
    fragments: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream, "MaxResults": 1000}
    while True:
        response = archived.list_fragments(**kwargs)
        fragments.extend(response["Fragments"])
        if not response.get("NextToken"):
            return sorted(fragments, key=lambda f: f["ProducerTimestamp"])
        kwargs = {"StreamName": stream, "NextToken": response["NextToken"]}
