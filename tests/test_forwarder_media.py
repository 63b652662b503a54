"""The media forwarder against a real gateway: PutMedia, PERSISTED acks, replays, outages."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import list_fragments, metric, running_media_forwarder, synthetic_fragments, video_records, wait_until  # noqa: E402

from helpers import GatewayProcess, module_gateway  # noqa: E402

from edge_agent.media_forwarder import parse_acks  # noqa: E402
from edge_agent.spool import NewRecord, Spool  # noqa: E402


#: One gateway for the tests that never stop it (each uses its own stream).
shared_gateway = module_gateway("shared_gateway")


def test_fragments_are_persisted_once_even_when_replayed(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway = shared_gateway
    gateway.client("kinesisvideo").create_stream(StreamName="cam-1", DataRetentionInHours=1)
    fragments = synthetic_fragments(5)
    with Spool(tmp_path / "spool.db") as spool:
        spool.append(video_records("cam-1", fragments))
    shutil.copy(tmp_path / "spool.db", tmp_path / "replay.db")  # as if acks were lost in a crash
    for path in ("spool.db", "replay.db"):
        with Spool(tmp_path / path) as spool, running_media_forwarder(spool, gateway.url):
            wait_until(lambda: spool.stats().records["media"] == 0, 60, what="fragments to be persisted")
    stored = list_fragments(gateway.url, "cam-1")
    assert len(stored) == 5
    assert [round(f["ProducerTimestamp"].timestamp() * 1000) for f in stored] == [f.start_ms for f in fragments]
    assert metric("edge_agent_last_send_success_timestamp_seconds", lane="media") > 0


def test_gateway_down_fragments_wait_then_drain(gateway, tmp_path: Path) -> None:
    gateway.client("kinesisvideo").create_stream(StreamName="cam-2", DataRetentionInHours=1)
    fragments = synthetic_fragments(6)
    errors_before = metric("edge_agent_send_errors_total", lane="media", reason="connection")
    with Spool(tmp_path / "spool.db") as spool, running_media_forwarder(spool, gateway.url):
        spool.append(video_records("cam-2", fragments[:2]))
        wait_until(lambda: spool.stats().records["media"] == 0, 60, what="the first fragments")
        gateway.kill()
        spool.append(video_records("cam-2", fragments[2:]))
        wait_until(lambda: metric("edge_agent_send_errors_total", lane="media", reason="connection") > errors_before, 60,
                   what="connection errors")
        assert spool.stats().records["media"] == 4
        gateway.start()
        wait_until(lambda: spool.stats().records["media"] == 0, 60, what="the spool to drain")
    assert len(list_fragments(gateway.url, "cam-2")) == 6


def test_bad_fragment_is_rejected_and_the_rest_goes_through(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    """Garbage between good fragments in one request: only the garbage is refused and dropped."""
    gateway = shared_gateway
    gateway.client("kinesisvideo").create_stream(StreamName="cam-3", DataRetentionInHours=1)
    fragments = synthetic_fragments(3)
    rejected_before = sum(metric("edge_agent_records_rejected_total", source="camera-bad", reason=f"putmedia_{i}") for i in (4006, 4011, 4010))
    good_rejected_before = sum(metric("edge_agent_records_rejected_total", source="camera-test", reason=f"putmedia_{i}") for i in range(4000, 4013))
    with Spool(tmp_path / "spool.db") as spool, running_media_forwarder(spool, gateway.url, media_fragments_per_request=5):
        garbage = NewRecord("video", "cam-3", "cam-3", b"\x1a\x45\xdf\xa3 not really a matroska file", "camera-bad")
        spool.append([*video_records("cam-3", fragments[:1]), garbage, *video_records("cam-3", fragments[1:])])
        wait_until(lambda: spool.stats().records["media"] == 0, 60, what="the spool to drain")
    rejected = sum(metric("edge_agent_records_rejected_total", source="camera-bad", reason=f"putmedia_{i}") for i in (4006, 4011, 4010))
    assert rejected == rejected_before + 1
    # a good fragment is never mistaken for the bad one (their acks interleave with its ERROR)
    assert sum(metric("edge_agent_records_rejected_total", source="camera-test", reason=f"putmedia_{i}") for i in range(4000, 4013)) == good_rejected_before
    assert len(list_fragments(gateway.url, "cam-3")) == 3


def test_parse_acks_handles_any_split() -> None:
    body = b'{"EventType":"BUFFERING","FragmentTimecode":5}\n{"EventType":"PERSISTED","FragmentTimecode":5,"FragmentNumber":"9"}{"EventType":"ERROR","ErrorId":4004}'
    for cut in range(1, len(body)):
        acks = list(parse_acks(iter([body[:cut], body[cut:]])))
        assert [(a.event, a.timecode, a.fragment_number, a.error_id) for a in acks] == [
            ("BUFFERING", 5, None, None), ("PERSISTED", 5, "9", None), ("ERROR", None, None, 4004)]


def test_a_missing_video_stream_does_not_hold_back_another_camera(shared_gateway: GatewayProcess, tmp_path: Path) -> None:
    video = shared_gateway.client("kinesisvideo")
    video.create_stream(StreamName="cam-ok", DataRetentionInHours=1)
    fragments = synthetic_fragments(4)
    with Spool(tmp_path / "spool.db", sync="normal") as spool, running_media_forwarder(spool, shared_gateway.url, media_fragments_per_request=2):
        spool.append(video_records("cam-late", fragments[:2]) + video_records("cam-ok", fragments[2:]))
        wait_until(lambda: len(list_fragments(shared_gateway.url, "cam-ok")) == 2, 60, interval=0.2, what="the other camera's video")
        # (acked in the spool just after the gateway persisted them)
        wait_until(lambda: spool.stats().records["media"] == 2, 10, what="the other camera's fragments to leave the spool")
        time.sleep(0.3)
        assert spool.stats().records["media"] == 2  # the missing stream's fragments wait, nothing dropped
        video.create_stream(StreamName="cam-late", DataRetentionInHours=1)
        wait_until(lambda: spool.stats().records["media"] == 0, 60, what="the late stream's fragments")
    assert len(list_fragments(shared_gateway.url, "cam-late")) == 2
