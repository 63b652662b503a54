"""Reading video back through boto3: ListFragments, GetMedia (stored and live), GetMediaForFragmentList."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest
from botocore.exceptions import ClientError
from helpers import GatewayProcess, module_gateway
from video_support import PutMediaClient, camera_fragments, create_stream, data_client

from kvs import MkvStreamParser, ParsedFragment
from kvs.tags import read_tags

START_MS = 1_700_000_000_000
COUNT = 6


gw = module_gateway("gw")


@pytest.fixture(scope="module")
def numbers(gw: GatewayProcess) -> list[str]:
    """Six 1-second fragments (10 frames each) at START_MS, START_MS+1s, ...; their fragment numbers."""
    create_stream(gw, "reads")
    client = PutMediaClient(gw.url, "reads")
    client.send_all(f.data for f in camera_fragments(COUNT, start_ms=START_MS))
    return [a["FragmentNumber"] for a in client.finish() if a["EventType"] == "PERSISTED"]


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def read_docs(payload: Any, count: int, timeout: float = 20.0) -> tuple[list[ParsedFragment], bytes]:
    """The first ``count`` fragments of a streaming payload (which may stay open), and their raw bytes."""
    parser = MkvStreamParser()
    raw = b""
    out: list[ParsedFragment] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        chunk = payload._raw_stream.read1(65536)
        if not chunk:
            break
        raw += chunk
        out += parser.feed(chunk)
    payload.close()
    return out, raw


def test_list_fragments_time_ranges_and_pagination(gw: GatewayProcess, numbers: list[str]) -> None:
    archived = data_client(gw, "kinesis-video-archived-media", "reads", "LIST_FRAGMENTS")
    selector = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": at(START_MS + 2000), "EndTimestamp": at(START_MS + 3000)}}
    got = archived.list_fragments(StreamName="reads", FragmentSelector=selector)["Fragments"]
    assert [f["FragmentNumber"] for f in got] == numbers[2:4]
    pages: list[list[str]] = []
    kwargs: dict[str, Any] = {"StreamName": "reads", "MaxResults": 4}
    while True:
        page = archived.list_fragments(**kwargs)
        pages.append([f["FragmentNumber"] for f in page["Fragments"]])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    assert pages == [numbers[:4], numbers[4:]]
    # a paged time range keeps its range on every page
    now = time.time() * 1000
    server = {"FragmentSelectorType": "SERVER_TIMESTAMP",
              "TimestampRange": {"StartTimestamp": at(int(now) - 120_000), "EndTimestamp": at(int(now) + 120_000)}}
    paged = [f["FragmentNumber"] for p in archived.get_paginator("list_fragments").paginate(
        StreamName="reads", FragmentSelector=server, PaginationConfig={"PageSize": 2}) for f in p["Fragments"]]
    assert paged == numbers
    empty = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
             "TimestampRange": {"StartTimestamp": at(START_MS - 60_000), "EndTimestamp": at(START_MS - 30_000)}}
    assert archived.list_fragments(StreamName="reads", FragmentSelector=empty)["Fragments"] == []


def test_get_media_earliest_decodes_every_frame_with_tags(gw: GatewayProcess, numbers: list[str]) -> None:
    media = data_client(gw, "kinesis-video-media", "reads", "GET_MEDIA")
    response = media.get_media(StreamName="reads", StartSelector={"StartSelectorType": "EARLIEST"})
    assert response["ContentType"] == "video/webm"
    docs, raw = read_docs(response["Payload"], COUNT)
    assert len(docs) == COUNT
    frames = 0
    for doc in docs:
        with av.open(io.BytesIO(doc.mkv)) as container:
            frames += sum(1 for _ in container.decode(video=0))
    assert frames == COUNT * 10
    tags = read_tags(raw)[:COUNT]
    assert [t["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for t in tags] == numbers
    assert [t["AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"] for t in tags] == [f"{(START_MS + i * 1000) // 1000}.000" for i in range(COUNT)]
    assert all(t["AWS_KINESISVIDEO_CONTINUATION_TOKEN"] == t["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for t in tags)
    assert all(int(t["AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"]) >= 0 for t in tags)


def test_get_media_start_selectors(gw: GatewayProcess, numbers: list[str]) -> None:
    media = data_client(gw, "kinesis-video-media", "reads", "GET_MEDIA")

    def first(selector: dict[str, Any]) -> str:
        payload = media.get_media(StreamName="reads", StartSelector=selector)["Payload"]
        _, raw = read_docs(payload, 1)
        return read_tags(raw)[0]["AWS_KINESISVIDEO_FRAGMENT_NUMBER"]

    assert first({"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": numbers[2]}) == numbers[2]
    assert first({"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": numbers[2]}) == numbers[3]
    assert first({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": at(START_MS + 3000)}) == numbers[3]
    assert first({"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": at(START_MS)}) == numbers[0]
    with pytest.raises(ClientError) as exc:
        media.get_media(StreamName="nope", StartSelector={"StartSelectorType": "EARLIEST"})
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as exc:
        media.get_media(StreamName="reads", StartSelector={"StartSelectorType": "FRAGMENT_NUMBER"})
    assert exc.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_live_get_media_sees_a_fragment_put_after_it_started(gw: GatewayProcess, numbers: list[str]) -> None:
    media = data_client(gw, "kinesis-video-media", "reads", "GET_MEDIA")
    new_ms = START_MS + COUNT * 1000
    selectors = [{"StartSelectorType": "NOW"},  # and a time nothing has reached yet:
                 {"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": at(new_ms)}]
    got: list[dict[str, Any]] = [{}, {}]
    readers = []
    for selector, out in zip(selectors, got):
        payload = media.get_media(StreamName="reads", StartSelector=selector)["Payload"]
        readers.append(threading.Thread(target=lambda p=payload, o=out: o.update(zip(("docs", "raw"), read_docs(p, 1)))))
        readers[-1].start()
    time.sleep(0.3)
    client = PutMediaClient(gw.url, "reads")
    put_at = time.monotonic()
    client.send(camera_fragments(1, start_ms=new_ms)[0].data)
    new_number = [a["FragmentNumber"] for a in client.finish() if a["EventType"] == "PERSISTED"][0]
    for reader, out in zip(readers, got):
        reader.join(15)
        assert not reader.is_alive()
        assert read_tags(out["raw"])[0]["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] == new_number
    assert time.monotonic() - put_at < 10  # generous: the suite shares 2 cores
    numbers.append(new_number)


def test_get_media_for_fragment_list(gw: GatewayProcess, numbers: list[str]) -> None:
    archived = data_client(gw, "kinesis-video-archived-media", "reads", "GET_MEDIA_FOR_FRAGMENT_LIST")
    response = archived.get_media_for_fragment_list(StreamName="reads", Fragments=[numbers[4], numbers[1]])
    assert response["ContentType"] == "video/webm"
    raw = response["Payload"].read()
    assert [t["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] for t in read_tags(raw)] == [numbers[4], numbers[1]]
    parser = MkvStreamParser()
    docs = parser.feed(raw)
    assert [d.frame_count for d in docs] == [10, 10]
    with pytest.raises(ClientError) as exc:
        archived.get_media_for_fragment_list(StreamName="reads", Fragments=[numbers[0], str(int(numbers[-1]) + 1000)])
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
