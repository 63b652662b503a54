"""Every video read API answers the same whichever timecode type the producer used.

KVS takes ``x-amzn-fragment-timecode-type: ABSOLUTE`` (cluster timecodes are wall-clock ms) and
``RELATIVE`` (timecodes from 0, added to ``x-amzn-producer-start-timestamp``). The same camera is
sent both ways; ListFragments, GetMediaForFragmentList, GetMedia, GetClip, GetImages (both
selector types) and an HLS session must give the same answers for both streams.
"""

from __future__ import annotations

import base64
import io
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import av
import pytest
from video_support import PutMediaClient, camera_fragments, create_stream

from helpers import GatewayProcess

T0 = (int(time.time() * 1000) - 300_000) // 1000 * 1000  # five minutes ago, on a whole second
ARCHIVED = "kinesis-video-archived-media"
TYPES = ["ABSOLUTE", "RELATIVE"]
EBML = b"\x1a\x45\xdf\xa3"
PRODUCER_RANGE = {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 3000) / 1000}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("timecodes") / "data").start()
    for kind in TYPES:
        create_stream(gateway, f"tc-{kind}")
        start_ms = T0 if kind == "ABSOLUTE" else 0
        client = PutMediaClient(gateway.url, f"tc-{kind}", timecode_type=kind, start_ts=T0 / 1000)
        client.send_all(f.data for f in camera_fragments(3, start_ms=start_ms))  # 3 x 1 s at 10 fps
        acks = client.finish()
        assert [a["EventType"] for a in acks].count("PERSISTED") == 3, acks
    yield gateway
    gateway.kill()


def frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return len(list(container.decode(video=0)))


@pytest.mark.parametrize("kind", TYPES)
def test_list_fragments_and_fragment_media(gw: GatewayProcess, kind: str) -> None:
    client = gw.client(ARCHIVED)
    listed = client.list_fragments(StreamName=f"tc-{kind}", FragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": PRODUCER_RANGE})["Fragments"]
    assert sorted(int(f["ProducerTimestamp"].timestamp() * 1000) for f in listed) == [T0, T0 + 1000, T0 + 2000]
    numbers = [f["FragmentNumber"] for f in sorted(listed, key=lambda f: f["ProducerTimestamp"])]
    payload = client.get_media_for_fragment_list(StreamName=f"tc-{kind}", Fragments=numbers)["Payload"].read()
    docs = payload.split(EBML)[1:]  # one MKV document per fragment
    assert len(docs) == 3 and all(frames(EBML + doc) == 10 for doc in docs)
    media = gw.client("kinesis-video-media")
    live = media.get_media(StreamName=f"tc-{kind}", StartSelector={"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": (T0 + 1000) / 1000})["Payload"]
    first = live.read(4096)
    live.close()
    assert first.startswith(EBML)  # an MKV document from the fragment at T0 + 1 s


@pytest.mark.parametrize("kind", TYPES)
def test_get_clip(gw: GatewayProcess, kind: str) -> None:
    out = gw.client(ARCHIVED).get_clip(StreamName=f"tc-{kind}", ClipFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": PRODUCER_RANGE})
    assert frames(out["Payload"].read()) == 30


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("selector", ["PRODUCER_TIMESTAMP", "SERVER_TIMESTAMP"])
def test_get_images(gw: GatewayProcess, kind: str, selector: str) -> None:
    """Samples inside the fragments (server timestamps of fragments sent back to back overlap,
    so those samples stay inside the first one)."""
    client = gw.client(ARCHIVED)
    start, end, interval = T0 + 100, T0 + 2900, 700
    if selector == "SERVER_TIMESTAMP":
        listed = client.list_fragments(StreamName=f"tc-{kind}", FragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": PRODUCER_RANGE})["Fragments"]
        first = int(min(f["ServerTimestamp"] for f in listed).timestamp() * 1000)
        start, end, interval = first + 100, first + 900, 300
    out = client.get_images(StreamName=f"tc-{kind}", ImageSelectorType=selector, StartTimestamp=start / 1000,
                            EndTimestamp=end / 1000, SamplingInterval=interval, Format="JPEG")
    images = out["Images"]
    assert len(images) == len(range(start, end, interval)) and all("Error" not in i for i in images), images
    assert all(base64.b64decode(i["ImageContent"]).startswith(b"\xff\xd8") for i in images)


@pytest.mark.parametrize("kind", TYPES)
def test_hls_on_demand(gw: GatewayProcess, kind: str) -> None:
    url = gw.client(ARCHIVED).get_hls_streaming_session_url(
        StreamName=f"tc-{kind}", PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": PRODUCER_RANGE})["HLSStreamingSessionURL"]
    media = urllib.request.urlopen(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"), timeout=10).read().decode()
    assert media.count("#EXTINF") == 3 and "#EXT-X-ENDLIST" in media
    with av.open(url) as container:
        assert len(list(container.decode(video=0))) == 30


@pytest.mark.parametrize("kind", TYPES)
def test_list_fragments_returns_those_starting_in_the_range(gw: GatewayProcess, kind: str) -> None:
    """As AWS documents it: fragments starting at 0, 1, 2 s; the range 0.5 s .. 2 s gives those
    starting at 1 s and 2 s (the one begun before the range is left out, the end is inclusive)."""
    listed = gw.client(ARCHIVED).list_fragments(StreamName=f"tc-{kind}", FragmentSelector={
        "FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {"StartTimestamp": (T0 + 500) / 1000, "EndTimestamp": (T0 + 2000) / 1000}})["Fragments"]
    assert sorted(int(f["ProducerTimestamp"].timestamp() * 1000) for f in listed) == [T0 + 1000, T0 + 2000]


def test_hls_live_signals_a_gap(gw: GatewayProcess) -> None:
    """A LIVE playlist marks where the camera's video jumps (EXT-X-DISCONTINUITY), and once that
    tag slides out of the session's window EXT-X-DISCONTINUITY-SEQUENCE counts it, as HLS requires."""
    create_stream(gw, "live-gap")
    now = int(time.time() * 1000) // 1000 * 1000
    before, after = camera_fragments(2, start_ms=now - 10_000), camera_fragments(2, start_ms=now - 3_000)

    def send(fragments: list[Any]) -> None:
        client = PutMediaClient(gw.url, "live-gap")
        client.send_all(f.data for f in fragments)
        assert sum(a["EventType"] == "PERSISTED" for a in client.finish()) == len(fragments)

    send(before)
    url = gw.client(ARCHIVED).get_hls_streaming_session_url(StreamName="live-gap", PlaybackMode="LIVE", MaxMediaPlaylistFragmentResults=2)["HLSStreamingSessionURL"]
    url = url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist")

    def media() -> str:
        return urllib.request.urlopen(url, timeout=10).read().decode()

    assert "DISCONTINUITY" not in media()
    send(after[:1])  # the window [2, 3] spans the gap
    shown = media()
    assert shown.count("#EXT-X-DISCONTINUITY\n") == 1 and "#EXT-X-DISCONTINUITY-SEQUENCE" not in shown, shown
    send(after[1:])  # the window [3, 4] starts after it: the tag left, the count carries it
    slid = media()
    assert "#EXT-X-DISCONTINUITY\n" not in slid and "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in slid, slid
