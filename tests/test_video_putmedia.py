"""PutMedia over real HTTP: acknowledgements, bad input, limits and exactly-once replays."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import GatewayProcess, module_gateway, wait_until
from video_support import PutMediaClient, camera_fragments, create_stream, data_client

from kvs import Fragment, ebml
from kvs.tags import read_tags, with_kvs_tags


gw = module_gateway("gw")


@pytest.fixture(scope="module")
def fragments() -> list[Fragment]:
    return camera_fragments(6, start_ms=1_700_000_000_000)


def listed(gw: GatewayProcess, stream: str) -> list[dict]:
    archived = data_client(gw, "kinesis-video-archived-media", stream, "LIST_FRAGMENTS")
    return archived.list_fragments(StreamName=stream)["Fragments"]


def by_timecode(acks: list[dict]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for ack in acks:
        if "FragmentTimecode" in ack:
            out.setdefault(ack["FragmentTimecode"], []).append(ack["EventType"])
    return out


def test_acks_in_order_numbers_increase_and_idle(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "acks")
    client = PutMediaClient(gw.url, "acks")
    for fragment in fragments[:4]:
        client.send(fragment.data)
        time.sleep(0.05)
    client.wait_for(lambda acks: sum(a["EventType"] == "PERSISTED" for a in acks) == 4)
    client.wait_for(lambda acks: any(a["EventType"] == "IDLE" for a in acks), timeout=6)  # quiet producer
    acks = client.finish()
    assert client.status == 200
    assert by_timecode(acks) == {f.start_ms: ["BUFFERING", "RECEIVED", "PERSISTED"] for f in fragments[:4]}
    numbers = [a["FragmentNumber"] for a in acks if a["EventType"] == "PERSISTED"]
    assert [int(n) for n in numbers] == sorted(int(n) for n in numbers) and len(set(numbers)) == 4
    assert all(n.isdigit() for n in numbers)
    stored = listed(gw, "acks")
    assert [f["FragmentNumber"] for f in stored] == numbers
    assert [int(f["ProducerTimestamp"].timestamp() * 1000) for f in stored] == [f.start_ms for f in fragments[:4]]
    assert [f["FragmentLengthInMilliseconds"] for f in stored] == [f.duration_ms for f in fragments[:4]]
    assert all(abs(f["ServerTimestamp"].timestamp() - time.time()) < 60 for f in stored)


def test_relative_timecodes_add_the_producer_start(gw: GatewayProcess) -> None:
    kv = create_stream(gw, "relative")
    arn = kv.describe_stream(StreamName="relative")["StreamInfo"]["StreamARN"]
    relative = camera_fragments(2, start_ms=0)
    client = PutMediaClient(gw.url, None, timecode_type="RELATIVE", start_ts=1_600_000_000.5,
                            headers={"x-amzn-stream-arn": arn})  # by ARN this time
    client.send_all(f.data for f in relative)
    acks = client.finish()
    assert [a["EventType"] for a in acks if a["EventType"] != "IDLE"].count("PERSISTED") == 2
    stored = listed(gw, "relative")
    assert [round(f["ProducerTimestamp"].timestamp() * 1000) for f in stored] == [1_600_000_000_500 + f.start_ms for f in relative]


def test_garbage_is_an_error_ack_and_nothing_is_stored(gw: GatewayProcess) -> None:
    create_stream(gw, "garbage")
    client = PutMediaClient(gw.url, "garbage")
    client.send(os.urandom(4096))
    acks = client.finish()
    assert client.status == 200
    assert [a for a in acks if a["EventType"] == "ERROR"][0]["ErrorId"] == 4006
    assert listed(gw, "garbage") == []
    client = PutMediaClient(gw.url, "garbage")  # the gateway is still fine
    client.send(b"GET / HTTP/1.0\r\n\r\n" * 10)
    assert any(a.get("ErrorId") == 4006 for a in client.finish())


def test_truncated_fragment_is_reported_not_stored(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "truncated")
    client = PutMediaClient(gw.url, "truncated")
    client.send(fragments[0].data)
    client.send(fragments[1].data[: len(fragments[1].data) // 2])
    acks = client.finish()
    events = [(a["EventType"], a.get("FragmentTimecode"), a.get("ErrorId")) for a in acks if a["EventType"] != "IDLE"]
    assert ("PERSISTED", fragments[0].start_ms, None) in events
    assert events[-1] == ("ERROR", fragments[1].start_ms, 4006)  # after the PERSISTED ack of the one before
    stored = listed(gw, "truncated")
    assert len(stored) == 1 and int(stored[0]["ProducerTimestamp"].timestamp() * 1000) == fragments[0].start_ms
    # a body cut inside the MKV header (before any cluster) is reported too
    for cut in (30, 200):
        client = PutMediaClient(gw.url, "truncated")
        client.send(fragments[2].data[:cut])
        assert [a.get("ErrorId") for a in client.finish() if a["EventType"] == "ERROR"] == [4006]
    assert len(listed(gw, "truncated")) == 1


def test_unknown_stream_and_missing_headers_are_aws_errors(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    client = PutMediaClient(gw.url, "no-such-stream")
    client.send(fragments[0].data)
    client.done.wait(10)
    assert client.status == 404 and b"ResourceNotFoundException" in client.error_body
    client.close()
    for stream, timecode_type in ((None, "ABSOLUTE"), ("acks", None), ("acks", "SOMETIMES")):
        client = PutMediaClient(gw.url, stream, timecode_type=timecode_type)
        client.done.wait(10)
        assert client.status == 400 and b"InvalidArgumentException" in client.error_body
        client.close()


def test_timecode_going_backwards_rejects_that_fragment_only(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "backwards")
    client = PutMediaClient(gw.url, "backwards")
    client.send_all(f.data for f in (fragments[2], fragments[1], fragments[3]))
    acks = client.finish()
    final = {tc: events[-1] for tc, events in by_timecode(acks).items()}
    assert final == {fragments[2].start_ms: "PERSISTED", fragments[1].start_ms: "ERROR", fragments[3].start_ms: "PERSISTED"}
    assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [4004]
    assert len(listed(gw, "backwards")) == 2


def test_replayed_fragments_are_acked_with_their_original_numbers(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "exactly-once")
    first = PutMediaClient(gw.url, "exactly-once", headers={"X-Edge-Producer-Id": "pi-7", "X-Edge-Fragment-Seqs": "10,11,12"})
    first.send_all(f.data for f in fragments[:3])
    numbers = {a["FragmentTimecode"]: a["FragmentNumber"] for a in first.finish() if a["EventType"] == "PERSISTED"}
    assert len(numbers) == 3
    replay = PutMediaClient(gw.url, "exactly-once", headers={"X-Edge-Producer-Id": "pi-7", "X-Edge-Fragment-Seqs": "11,12,13"})
    replay.send_all(f.data for f in fragments[1:4])
    again = {a["FragmentTimecode"]: a["FragmentNumber"] for a in replay.finish() if a["EventType"] == "PERSISTED"}
    assert again[fragments[1].start_ms] == numbers[fragments[1].start_ms]
    assert again[fragments[2].start_ms] == numbers[fragments[2].start_ms]
    assert int(again[fragments[3].start_ms]) > max(int(n) for n in numbers.values())
    assert len(listed(gw, "exactly-once")) == 4
    # without the headers it is plain KVS: the same bytes are a new fragment
    plain = PutMediaClient(gw.url, "exactly-once")
    plain.send(fragments[3].data)
    plain.finish()
    assert len(listed(gw, "exactly-once")) == 5
    # a producer whose sequence restarted (wiped spool) reuses seq 10 for new video: stored, not dropped
    restarted = PutMediaClient(gw.url, "exactly-once", headers={"X-Edge-Producer-Id": "pi-7", "X-Edge-Fragment-Seqs": "10"})
    restarted.send(fragments[5].data)
    fresh = [a["FragmentNumber"] for a in restarted.finish() if a["EventType"] == "PERSISTED"]
    assert len(fresh) == 1 and fresh[0] not in numbers.values()
    assert len(listed(gw, "exactly-once")) == 6


def test_fragment_limits_and_ingest_rate(gateway_factory, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[video]\nmax_fragment_bytes = 100000\nmax_fragment_seconds = 1.5\ningest_bytes_per_sec = 60000\n")
    gw = gateway_factory("--config", str(config))
    create_stream(gw, "limits")
    small = camera_fragments(2, start_ms=1_700_000_000_000)
    long = camera_fragments(1, seconds=2.0, start_ms=1_700_000_010_000)[0]
    big = camera_fragments(1, width=640, height=480, start_ms=1_700_000_020_000)[0]
    assert long.duration_ms > 1500 and len(big.data) > 100000 and len(long.data) < 100000
    client = PutMediaClient(gw.url, "limits")
    started = time.monotonic()
    client.send_all([small[0].data, long.data, small[1].data])
    acks = client.finish()
    assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [4002]
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 2
    # ~100 KB through a 60 KB/s bucket (60 KB burst): the gateway paced the read
    sent = len(small[0].data) + len(long.data) + len(small[1].data)
    assert time.monotonic() - started >= (sent - 60000) / 60000 * 0.8
    client = PutMediaClient(gw.url, "limits")
    client.send(big.data)
    acks = client.finish()
    assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [4001]
    assert len(listed(gw, "limits")) == 2


def test_producer_vanishing_mid_fragment_keeps_the_complete_ones(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "vanish")
    client = PutMediaClient(gw.url, "vanish")
    client.send_all(f.data for f in fragments[:2])
    client.send(fragments[2].data[:5000])
    client.wait_for(lambda acks: sum(a["EventType"] == "PERSISTED" for a in acks) == 2)
    client.abort()
    wait_until(lambda: len(listed(gw, "vanish")) == 2, 5, what="the two complete fragments listed")
    stored = listed(gw, "vanish")
    assert [int(f["ProducerTimestamp"].timestamp() * 1000) for f in stored] == [f.start_ms for f in fragments[:2]]
    time.sleep(0.3)
    assert len(listed(gw, "vanish")) == 2  # the cut third one never appears


def test_deleting_a_stream_during_putmedia_and_getmedia(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    kv = create_stream(gw, "doomed")
    media = data_client(gw, "kinesis-video-media", "doomed", "GET_MEDIA")
    client = PutMediaClient(gw.url, "doomed")
    client.send(fragments[0].data)
    client.wait_for(lambda acks: any(a["EventType"] == "PERSISTED" for a in acks))
    payload = media.get_media(StreamName="doomed", StartSelector={"StartSelectorType": "EARLIEST"})["Payload"]
    files = len(list((gw.data_dir / "video" / "streams").glob("*/*/*.mkv")))
    kv.delete_stream(StreamARN=kv.describe_stream(StreamName="doomed")["StreamInfo"]["StreamARN"])
    client.send(fragments[1].data)
    acks = client.finish()
    assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [4008]
    started = time.monotonic()
    assert len(payload.read()) > 0  # the stored fragment, then the response ends with the stream
    assert time.monotonic() - started < 10
    assert len(list((gw.data_dir / "video" / "streams").glob("*/*/*.mkv"))) == files - 1


def rebuild_cluster(doc: bytes, change: Any) -> bytes:
    """``doc`` with its Cluster's children replaced by ``change(children)`` (list of (id, payload))."""
    header = ebml.read_header(doc, 0)
    assert header is not None
    segment_at = header[2] + header[1]
    seg = ebml.read_header(doc, segment_at)
    assert seg is not None
    body_at = segment_at + seg[2]
    children = []
    for element_id, payload in ebml.iter_children(memoryview(doc)[body_at : body_at + seg[1]]):
        if element_id == ebml.CLUSTER:
            inner = [(cid, bytes(p)) for cid, p in ebml.iter_children(payload)]
            children.append(ebml.master(ebml.CLUSTER, *(ebml.element(cid, p) for cid, p in change(inner))))
        else:
            children.append(ebml.element(element_id, bytes(payload)))
    return doc[:segment_at] + ebml.master(ebml.SEGMENT, *children)


def test_track_mismatch_and_track_without_frames(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "tracks")
    no_frames = rebuild_cluster(fragments[1].data, lambda kids: [k for k in kids if k[0] == ebml.CLUSTER_TIMECODE])
    wrong_track = rebuild_cluster(fragments[1].data, lambda kids: [
        (cid, b"\x82" + p[1:]) if cid == ebml.SIMPLE_BLOCK else (cid, p) for cid, p in kids])
    for body, error_id in ((no_frames, 4011), (wrong_track, 4010)):
        client = PutMediaClient(gw.url, "tracks")
        client.send(fragments[0].data)
        client.send(body)
        acks = client.finish()
        assert [a["EventType"] for a in acks if a["EventType"] != "IDLE"][-1] == "ERROR"
        assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [error_id]
        assert sum(a["EventType"] == "PERSISTED" for a in acks) == 1
    assert len(listed(gw, "tracks")) == 2  # fragments[0] twice, nothing of the bad ones


def test_producer_metadata_tags_are_kept_and_limited(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    create_stream(gw, "metadata")
    tagged = with_kvs_tags(fragments[0].data, {"site": "barn", "AWS_KINESISVIDEO_FRAGMENT_NUMBER": "1"})  # a spoof
    too_many = with_kvs_tags(fragments[1].data, {f"tag{i}": str(i) for i in range(11)})
    client = PutMediaClient(gw.url, "metadata")
    client.send_all([tagged, too_many, fragments[2].data])
    acks = client.finish()
    assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [4009]
    numbers = [a["FragmentNumber"] for a in acks if a["EventType"] == "PERSISTED"]
    assert len(numbers) == 2
    archived = data_client(gw, "kinesis-video-archived-media", "metadata", "GET_MEDIA_FOR_FRAGMENT_LIST")
    raw = archived.get_media_for_fragment_list(StreamName="metadata", Fragments=numbers)["Payload"].read()
    tags = read_tags(raw)
    assert tags[0]["site"] == "barn" and tags[0]["AWS_KINESISVIDEO_FRAGMENT_NUMBER"] == numbers[0]
    assert "site" not in tags[1]


def test_good_fragments_then_garbage_in_one_chunk_keeps_the_good_and_errors_at_once(
    gw: GatewayProcess, fragments: list[Fragment]
) -> None:
    """The error ack must not wait for more body: the producer may be waiting for acks."""
    create_stream(gw, "good-then-bad")
    client = PutMediaClient(gw.url, "good-then-bad")
    client.send(fragments[0].data + fragments[1].data + b"\x00" * 64)  # 0x00 never starts an EBML id
    acks = client.wait_for(lambda acks: any(a["EventType"] == "ERROR" for a in acks), timeout=10)  # body still open
    assert [a["EventType"] for a in acks if a["EventType"] in ("PERSISTED", "ERROR")] == ["PERSISTED", "PERSISTED", "ERROR"]
    assert acks[-1]["ErrorId"] == 4006
    client.close()
    assert len(listed(gw, "good-then-bad")) == 2


def test_one_putmedia_connection_per_stream(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    """As KVS: a second concurrent PutMedia on a stream gets ConnectionLimitExceededException; the
    same edge agent reconnecting (same X-Edge-Producer-Id) takes over from its stale session."""
    create_stream(gw, "one-at-a-time")
    first = PutMediaClient(gw.url, "one-at-a-time")
    first.send(fragments[0].data)
    first.wait_for(lambda acks: any(a["EventType"] == "PERSISTED" for a in acks))
    second = PutMediaClient(gw.url, "one-at-a-time")
    second.done.wait(10)
    assert second.status == 400 and json.loads(second.error_body)["__type"] == "ConnectionLimitExceededException"
    second.close()
    first.send(fragments[1].data)
    assert sum(a["EventType"] == "PERSISTED" for a in first.finish()) == 2
    after = PutMediaClient(gw.url, "one-at-a-time")  # the stream is free again
    after.send(fragments[2].data)
    assert sum(a["EventType"] == "PERSISTED" for a in after.finish()) == 1
    agent = {"X-Edge-Producer-Id": "pi-9", "X-Edge-Fragment-Seqs": "1"}
    stale = PutMediaClient(gw.url, "one-at-a-time", headers=agent)
    stale.send(fragments[3].data)
    stale.wait_for(lambda acks: any(a["EventType"] == "PERSISTED" for a in acks))
    again = PutMediaClient(gw.url, "one-at-a-time", headers={**agent, "X-Edge-Fragment-Seqs": "2"})
    again.send(fragments[4].data)
    assert sum(a["EventType"] == "PERSISTED" for a in again.finish()) == 1
    stale.close()


def test_laced_video_block_is_refused_at_putmedia_not_persisted(gw: GatewayProcess, fragments: list[Fragment]) -> None:
    """Issue 15 regression: a fragment the readers cannot play must not be PERSISTED."""
    create_stream(gw, "laced")

    def lace_second_block(kids: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        blocks = [i for i, (cid, _) in enumerate(kids) if cid == ebml.SIMPLE_BLOCK]
        cid, p = kids[blocks[1]]
        kids[blocks[1]] = (cid, p[:3] + bytes([p[3] | 0x02, 0]) + p[4:])  # Xiph lacing, one frame
        return kids

    client = PutMediaClient(gw.url, "laced")
    client.send(fragments[0].data)
    client.send(rebuild_cluster(fragments[1].data, lace_second_block))
    acks = client.finish()
    assert [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"] == [4006]
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 1
    assert len(listed(gw, "laced")) == 1  # only the good fragment; GetClip on what is stored works
    clip = data_client(gw, "kinesis-video-archived-media", "laced", "GET_CLIP").get_clip(StreamName="laced", ClipFragmentSelector={
        "FragmentSelectorType": "PRODUCER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": fragments[0].start_ms / 1000, "EndTimestamp": (fragments[0].start_ms + 5000) / 1000}})
    assert clip["Payload"].read()[4:8] == b"ftyp"
