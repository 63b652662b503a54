"""Crash safety and retention of the video store: SIGKILL mid-PutMedia, orphans, disk budget, age."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from helpers import GatewayProcess
from video_support import PutMediaClient, camera_fragments, create_stream, data_client

from gateway.kvs.retention import sweep
from gateway.kvs.store import NewFragment, StoreInUseError, VideoStore
from kvs import MkvStreamParser


def stored_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "video" / "streams").glob("*/*/*.mkv"))


def list_all(gw: GatewayProcess, stream: str) -> list[dict]:
    archived = data_client(gw, "kinesis-video-archived-media", stream, "LIST_FRAGMENTS")
    return [f for p in archived.get_paginator("list_fragments").paginate(StreamName=stream) for f in p["Fragments"]]


def test_sigkill_mid_putmedia_keeps_every_persisted_fragment_and_no_partial(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gw = GatewayProcess(data_dir).start()
    try:
        create_stream(gw, "crash")
        fragments = camera_fragments(12, start_ms=1_700_000_000_000)
        client = PutMediaClient(gw.url, "crash")
        for i, fragment in enumerate(fragments):
            half = len(fragment.data) // 2
            client.send(fragment.data[:half])
            if i == 8:
                client.wait_for(lambda acks: sum(a["EventType"] == "PERSISTED" for a in acks) >= 6)
                gw.kill(signal.SIGKILL)  # mid-fragment, maybe mid-fsync of the previous one
                break
            client.send(fragment.data[half:])
            time.sleep(0.02)
        persisted = [a["FragmentNumber"] for a in client.acks if a["EventType"] == "PERSISTED"]
        client.close()
        gw.start()
        listed = [f["FragmentNumber"] for f in list_all(gw, "crash")]
        assert set(persisted) <= set(listed)
        assert 6 <= len(listed) <= 8  # fragment 8 was cut mid-way: never stored
        assert len(stored_files(data_dir)) == len(listed)
        assert list((data_dir / "video" / "tmp").iterdir()) == []
        archived = data_client(gw, "kinesis-video-archived-media", "crash", "GET_MEDIA_FOR_FRAGMENT_LIST")
        raw = archived.get_media_for_fragment_list(StreamName="crash", Fragments=listed)["Payload"].read()
        docs = MkvStreamParser().feed(raw)
        assert [d.frame_count for d in docs] == [10] * len(listed)
        assert [d.timecode_ms for d in docs] == [f.start_ms for f in fragments[: len(listed)]]
        # the stream goes on after the restart with higher numbers
        client = PutMediaClient(gw.url, "crash")
        client.send(fragments[9].data)
        after = [a["FragmentNumber"] for a in client.finish() if a["EventType"] == "PERSISTED"]
        assert len(after) == 1 and int(after[0]) > max(int(n) for n in listed)
    finally:
        gw.kill()


def test_orphans_are_removed_on_open_and_numbers_never_reused(tmp_path: Path) -> None:
    fragment = camera_fragments(1, start_ms=1_700_000_000_000)[0]
    store = VideoStore(tmp_path / "video")
    stream = store.create_stream("orphans")
    new = NewFragment(fragment.data, fragment.start_ms, int(time.time() * 1000), fragment.duration_ms, fragment.frame_count)
    first, _ = store.persist(stream.id, new)
    store.close()
    # what a crash can leave behind: a temp file, and a renamed file whose index row never committed
    (tmp_path / "video" / "tmp" / "x.part").write_bytes(b"half a fragment")
    orphan = store._fragment_path(stream.id, 2)
    orphan.write_bytes(fragment.data[:100])
    (tmp_path / "video" / "streams" / "999").mkdir()  # a deleted stream's leftovers
    store = VideoStore(tmp_path / "video")
    try:
        assert not orphan.exists() and not (tmp_path / "video" / "streams" / "999").exists()
        assert list((tmp_path / "video" / "tmp").iterdir()) == []
        assert [f.fragment_number for f in store.list_fragments("orphans")] == [first]
        second, _ = store.persist(stream.id, new)
        assert int(second) == int(first) + 2  # seq 2 may have been acked BUFFERING: skip it
        assert store.read_fragment("orphans", second) == fragment.data
    finally:
        store.close()


def test_disk_budget_deletes_oldest_fragments_with_their_files(gateway_factory, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('durability = "full"\nretention_sweep_seconds = 0.2\n[video]\nstream_disk_budget_bytes = 100000\n')
    gw = gateway_factory("--config", str(config))
    create_stream(gw, "budget")
    create_stream(gw, "other")
    fragments = camera_fragments(8, start_ms=1_700_000_000_000)
    for stream in ("budget", "other"):
        client = PutMediaClient(gw.url, stream)
        client.send_all(f.data for f in fragments)
        assert sum(a["EventType"] == "PERSISTED" for a in client.finish()) == 8
    for stream in ("budget", "other"):
        listed = list_all(gw, stream)
        assert sum(f["FragmentSizeInBytes"] for f in listed) <= 100000
        assert 2 <= len(listed) < 8
        # the newest fragments are the ones kept
        assert [int(f["ProducerTimestamp"].timestamp() * 1000) for f in listed] == [f.start_ms for f in fragments[-len(listed):]]
    data_dir = gw.data_dir
    assert len(stored_files(data_dir)) == len(list_all(gw, "budget")) + len(list_all(gw, "other"))


def test_age_retention_sweep(tmp_path: Path) -> None:
    fragment = camera_fragments(1, start_ms=1_700_000_000_000)[0]
    store = VideoStore(tmp_path / "video")
    try:
        keep_forever = store.create_stream("no-age-limit", retention_hours=0)
        hourly = store.create_stream("hourly", retention_hours=1)
        now = int(time.time() * 1000)
        for stream in (keep_forever, hourly):
            for age_minutes in (90, 61, 30, 1):
                server_ms = now - age_minutes * 60_000
                store.persist(stream.id, NewFragment(fragment.data, server_ms, server_ms, 1000, 10))
        assert sweep(store, budget_bytes=0, now_ms=now) == 2
        assert len(store.list_fragments("hourly")) == 2 and len(store.list_fragments("no-age-limit")) == 4
        assert len(list((tmp_path / "video" / "streams").glob("*/*/*.mkv"))) == 6
    finally:
        store.close()


def test_stream_names_never_reach_outside_the_data_dir(gateway_factory, tmp_path: Path) -> None:
    gw = gateway_factory()
    kv = gw.client("kinesisvideo")
    for name in ("..", "...", "a..b", ".hidden"):
        kv.create_stream(StreamName=name)
        client = PutMediaClient(gw.url, name)
        client.send(camera_fragments(1)[0].data)
        assert [a["EventType"] for a in client.finish()][-1] == "PERSISTED"
    files = stored_files(gw.data_dir)
    assert len(files) == 4 and all(p.parent.parent.name.isdigit() for p in files)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [gw.data_dir.name]


def test_a_second_process_cannot_open_the_same_store(tmp_path: Path) -> None:
    store = VideoStore(tmp_path / "video")
    try:
        with pytest.raises(StoreInUseError):
            VideoStore(tmp_path / "video")
    finally:
        store.close()
    VideoStore(tmp_path / "video").close()  # free again once closed


def test_sigterm_winds_up_live_sessions_promptly(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "data").start()
    try:
        create_stream(gw, "term")
        fragments = camera_fragments(2, start_ms=1_700_000_000_000)
        client = PutMediaClient(gw.url, "term")
        client.send(fragments[0].data)
        client.send(fragments[1].data[:1000])  # a producer in the middle of a fragment
        client.wait_for(lambda acks: any(a["EventType"] == "PERSISTED" for a in acks))
        media = data_client(gw, "kinesis-video-media", "term", "GET_MEDIA")
        payload = media.get_media(StreamName="term", StartSelector={"StartSelectorType": "EARLIEST"})["Payload"]
        started = time.monotonic()
        gw.stop()  # SIGTERM
        assert time.monotonic() - started < 3 and gw.proc is not None and gw.proc.returncode == 0
        assert client.done.wait(5)  # the ack stream ended cleanly, not cut
        assert len(payload.read()) > 0
        client.close()
        gw.start()
        assert len(list_all(gw, "term")) == 1
    finally:
        gw.kill()
