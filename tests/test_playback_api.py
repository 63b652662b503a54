"""Playback through boto3 against a real gateway: GetClip, GetImages, HLS and DASH sessions.

Video goes in through PutMedia (raw HTTP, the ingest engineer's endpoint) as FragmentWriter
fragments, and comes back out decoded by PyAV / FFmpeg.
"""

from __future__ import annotations

import base64
import io
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import av
import botocore.exceptions
import cv2
import numpy as np
import pytest
from video_support import PutMediaClient, camera_fragments, create_stream

from helpers import GatewayProcess
from kvs import Fragment, FragmentWriter

T0 = (int(time.time() * 1000) - 120_000) // 1000 * 1000  # two minutes ago, on a whole second
ARCHIVED = "kinesis-video-archived-media"


def put(gw: GatewayProcess, stream: str, fragments: list[Fragment]) -> list[str]:
    client = PutMediaClient(gw.url, stream)
    client.send_all(f.data for f in fragments)
    acks = client.finish()
    persisted = [a["FragmentNumber"] for a in acks if a["EventType"] == "PERSISTED"]
    assert len(persisted) == len(fragments), acks
    return persisted


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("playback") / "data").start()
    create_stream(gateway, "cam")
    put(gateway, "cam", camera_fragments(6, start_ms=T0))  # 6 x 1 s at 10 fps, T0 .. T0+6 s
    create_stream(gateway, "cam-gap")
    put(gateway, "cam-gap", camera_fragments(2, start_ms=T0) + camera_fragments(2, start_ms=T0 + 10_000))
    yield gateway
    gateway.kill()


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def test_get_clip_is_an_mp4_with_every_frame(gw: GatewayProcess) -> None:
    client = gw.client(ARCHIVED)
    out = client.get_clip(
        StreamName="cam",
        ClipFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                              "TimestampRange": {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 6000) / 1000}},
    )
    assert out["ContentType"] == "video/mp4"
    data = out["Payload"].read()
    with av.open(io.BytesIO(data)) as container:
        assert container.duration == pytest.approx(6_000_000, abs=1000)
        frames = list(container.decode(video=0))
    assert len(frames) == 60
    assert (frames[0].width, frames[0].height) == (160, 120)
    assert frames[0].key_frame and frames[10].key_frame


def test_get_clip_of_a_sub_range_has_whole_fragments(gw: GatewayProcess) -> None:
    client = gw.client(ARCHIVED)
    out = client.get_clip(
        StreamName="cam",
        ClipFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                              "TimestampRange": {"StartTimestamp": (T0 + 2500) / 1000, "EndTimestamp": (T0 + 3500) / 1000}},
    )
    assert len(decode(out["Payload"].read())) == 20  # fragments [2 s, 3 s) and [3 s, 4 s)


def test_get_clip_errors(gw: GatewayProcess) -> None:
    client = gw.client(ARCHIVED)

    def clip(stream: str, start: float, end: float) -> None:
        client.get_clip(StreamName=stream, ClipFragmentSelector={
            "FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": {"StartTimestamp": start, "EndTimestamp": end}})

    with pytest.raises(client.exceptions.ResourceNotFoundException):
        clip("cam", 1_000_000, 1_000_010)  # nothing recorded in 1970
    with pytest.raises(client.exceptions.InvalidArgumentException):
        clip("cam", T0 / 1000 + 10, T0 / 1000)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        clip("no-such-stream", T0 / 1000, T0 / 1000 + 10)


def test_get_images_sampled_resized_and_paginated(gw: GatewayProcess) -> None:
    client = gw.client(ARCHIVED)
    request = dict(StreamName="cam", ImageSelectorType="PRODUCER_TIMESTAMP", StartTimestamp=T0 / 1000,
                   EndTimestamp=(T0 + 3000) / 1000, SamplingInterval=500, Format="JPEG", WidthPixels=80, MaxResults=4)
    first = client.get_images(**request)
    assert len(first["Images"]) == 4 and "NextToken" in first
    second = client.get_images(**request, NextToken=first["NextToken"])
    assert "NextToken" not in second
    entries = first["Images"] + second["Images"]
    assert [round(e["TimeStamp"].timestamp() * 1000) - T0 for e in entries] == [0, 500, 1000, 1500, 2000, 2500]
    for entry in entries:
        assert "Error" not in entry
        img = cv2.imdecode(np.frombuffer(base64.b64decode(entry["ImageContent"]), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (60, 80, 3)
    png = client.get_images(**{**request, "Format": "PNG", "WidthPixels": 32, "HeightPixels": 24, "MaxResults": 1})
    assert base64.b64decode(png["Images"][0]["ImageContent"]).startswith(b"\x89PNG")
    sizes = [len(client.get_images(**{**request, "MaxResults": 1, "FormatConfig": {"JPEGQuality": q}})["Images"][0]["ImageContent"])
             for q in ("10", "95")]
    assert sizes[0] < sizes[1]
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.get_images(**{**request, "SamplingInterval": 10})
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.get_images(**{**request, "FormatConfig": {"JPEGQuality": "high"}})


def test_get_images_reports_no_media_in_a_gap(gw: GatewayProcess) -> None:
    client = gw.client(ARCHIVED)
    out = client.get_images(StreamName="cam-gap", ImageSelectorType="PRODUCER_TIMESTAMP", StartTimestamp=T0 / 1000,
                            EndTimestamp=(T0 + 12_000) / 1000, SamplingInterval=3000, Format="JPEG")
    errors = [e.get("Error") for e in out["Images"]]
    assert errors == [None, "NO_MEDIA", "NO_MEDIA", "NO_MEDIA"]  # T0 | T0+3 s, +6 s, +9 s fall in the gap


def hls_url(gw: GatewayProcess, stream: str, mode: str, **extra: object) -> str:
    client = gw.client(ARCHIVED)
    kwargs: dict = {"StreamName": stream, "PlaybackMode": mode, **extra}
    if mode != "LIVE":
        kwargs["HLSFragmentSelector"] = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                                         "TimestampRange": {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 60_000) / 1000}}
    url = client.get_hls_streaming_session_url(**kwargs)["HLSStreamingSessionURL"]
    assert url.startswith(gw.url + "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=")
    return url


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_hls_on_demand_plays_in_ffmpeg(gw: GatewayProcess) -> None:
    url = hls_url(gw, "cam", "ON_DEMAND", DisplayFragmentTimestamp="ALWAYS")
    with av.open(url) as container:  # FFmpeg's own HLS demuxer over HTTP
        frames = list(container.decode(video=0))
    assert len(frames) == 60
    times = [round(f.pts * f.time_base * 1000) for f in frames]
    assert times[0] == T0 and times[-1] == T0 + 5900  # media time is the producer timestamp
    media = fetch(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"))
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in media and "#EXT-X-ENDLIST" in media
    assert media.count("#EXT-X-PROGRAM-DATE-TIME") == 6


def test_hls_mpeg_ts_plays_in_ffmpeg(gw: GatewayProcess) -> None:
    url = hls_url(gw, "cam", "ON_DEMAND", ContainerFormat="MPEG_TS")
    media = fetch(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"))
    assert "#EXT-X-MAP" not in media and "getTSFragment.ts?" in media
    with av.open(url) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 60
    ticks = [f.pts for f in frames]
    assert all(b - a == 9000 for a, b in zip(ticks, ticks[1:]))  # 100 ms apart on the 90 kHz TS clock


def test_hls_gap_is_a_discontinuity(gw: GatewayProcess) -> None:
    url = hls_url(gw, "cam-gap", "ON_DEMAND")
    media = fetch(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"))
    assert media.count("#EXT-X-DISCONTINUITY\n") == 1
    with av.open(url) as container:
        assert len(list(container.decode(video=0))) == 40


def test_hls_live_window_slides(gw: GatewayProcess) -> None:
    create_stream(gw, "live")
    start = int(time.time() * 1000) - 10_000
    put(gw, "live", camera_fragments(3, start_ms=start))
    url = hls_url(gw, "live", "LIVE", MaxMediaPlaylistFragmentResults=2)
    media_url = url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist")
    before = fetch(media_url)
    assert "#EXT-X-ENDLIST" not in before and before.count("#EXTINF") == 2
    put(gw, "live", camera_fragments(2, start_ms=start + 3000))
    after = fetch(media_url)
    seq_before = int(before.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])
    seq_after = int(after.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])
    assert seq_after == seq_before + 2 and after.count("#EXTINF") == 2
    master = fetch(url)
    assert 'CODECS="avc1.' in master and "RESOLUTION=160x120" in master


def test_hls_session_errors(gw: GatewayProcess) -> None:
    client = gw.client(ARCHIVED)
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.get_hls_streaming_session_url(StreamName="cam", PlaybackMode="ON_DEMAND")  # no range
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.get_hls_streaming_session_url(StreamName="cam", ContainerFormat="MKV")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_hls_streaming_session_url(StreamName="cam", PlaybackMode="ON_DEMAND", HLSFragmentSelector={
            "FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": {"StartTimestamp": 1000, "EndTimestamp": 2000}})
    url = hls_url(gw, "cam", "ON_DEMAND")
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"))  # tampered signature
    assert info.value.code == 401


def test_dash_on_demand_plays_in_ffmpeg(gw: GatewayProcess) -> None:
    import xml.etree.ElementTree as ET

    client = gw.client(ARCHIVED)
    url = client.get_dash_streaming_session_url(
        StreamName="cam", PlaybackMode="ON_DEMAND", DisplayFragmentNumber="ALWAYS", DisplayFragmentTimestamp="ALWAYS",
        DASHFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                              "TimestampRange": {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 60_000) / 1000}},
    )["DASHStreamingSessionURL"]
    listed = client.list_fragments(StreamName="cam", FragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                                   "TimestampRange": {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 60_000) / 1000}})
    entries = [el.attrib for el in ET.fromstring(fetch(url)).iter("{urn:mpeg:dash:schema:mpd:2011}S")]
    kvs_ns = "{urn:edge-ingest:kvs}"
    assert [e[kvs_ns + "fn"] for e in entries] == sorted(f["FragmentNumber"] for f in listed["Fragments"])
    assert [int(e[kvs_ns + "ts"]) for e in entries] == [T0 + i * 1000 for i in range(6)]
    probe = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"]
    out = subprocess.run([*probe, url], capture_output=True, text=True, timeout=60)
    assert set(out.stdout.split()) == {"60"}, out.stderr


def test_mjpeg_stream_gives_images_but_no_clip(gw: GatewayProcess, tmp_path: Path) -> None:
    create_stream(gw, "mjpeg")
    writer = FragmentWriter(64, 48, 5, fragment_seconds=1.0, codec="mjpeg-passthrough")
    fragments: list[Fragment] = []
    for i in range(10):
        jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), i * 20, np.uint8))[1].tobytes()
        fragments += writer.add_packet(jpeg, T0 + i * 200, keyframe=True)
    put(gw, "mjpeg", fragments + writer.flush())
    client = gw.client(ARCHIVED)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.get_clip(StreamName="mjpeg", ClipFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                        "TimestampRange": {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 2000) / 1000}})
    assert info.value.response["Error"]["Code"] == "UnsupportedStreamMediaTypeException"
    with pytest.raises(client.exceptions.UnsupportedStreamMediaTypeException):
        client.get_hls_streaming_session_url(StreamName="mjpeg", PlaybackMode="LIVE")
    out = client.get_images(StreamName="mjpeg", ImageSelectorType="PRODUCER_TIMESTAMP", StartTimestamp=T0 / 1000,
                            EndTimestamp=(T0 + 2000) / 1000, SamplingInterval=1000, Format="JPEG")
    assert [("ImageContent" in e) for e in out["Images"]] == [True, True]


def test_hls_live_plays_in_ffmpeg_as_fragments_arrive(gw: GatewayProcess) -> None:
    from test_player_browser import LiveCamera

    create_stream(gw, "live-ffmpeg")
    camera = LiveCamera(gw, "live-ffmpeg", backlog_s=2, seconds=15)
    camera.start()
    try:
        camera.wait_persisted(2)
        url = hls_url(gw, "live-ffmpeg", "LIVE")
        times: list[int] = []
        # start at the window's first segment (FFmpeg's default is 3 from the end)
        with av.open(url, timeout=15, options={"live_start_index": "0"}) as container:
            for frame in container.decode(video=0):
                times.append(round(frame.pts * frame.time_base * 1000))
                if len(times) == 40:  # about 20 frames were there at the start; the rest arrive live
                    break
        assert (times[0] - camera.start_ms) % 1000 == 0  # starts at a fragment (keyframe)
        assert times == [times[0] + i * 100 for i in range(40)]  # every frame, in order, across live reloads
        assert camera.sent >= (times[-1] - camera.start_ms) // 1000
    finally:
        camera.stop()


def test_get_images_by_server_timestamp(gw: GatewayProcess) -> None:
    client = gw.client("kinesis-video-archived-media")
    fragments = client.list_fragments(StreamName="cam", FragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                                      "TimestampRange": {"StartTimestamp": T0 / 1000, "EndTimestamp": (T0 + 6000) / 1000}})
    first = min(f["ServerTimestamp"].timestamp() for f in fragments["Fragments"])
    out = client.get_images(StreamName="cam", ImageSelectorType="SERVER_TIMESTAMP", StartTimestamp=first,
                            EndTimestamp=first + 0.5, SamplingInterval=1000, Format="JPEG")
    assert len(out["Images"]) == 1 and "ImageContent" in out["Images"][0]


def test_expired_or_foreign_session_tokens_are_refused(tmp_path: Path) -> None:
    from gateway.errors import AwsError
    from gateway.kvs.sessions import Session, decode_token, encode_token

    session = Session("cam", 1, "LIVE", "SERVER_TIMESTAMP", None, None, 1_000_000, 5, "ON_DISCONTINUITY", "NEVER", "1")
    token = encode_token(session, b"k" * 32)
    assert decode_token(token, b"k" * 32, 999_999) == session
    for key, now in ((b"k" * 32, 1_000_001), (b"x" * 32, 0)):
        with pytest.raises(AwsError) as info:
            decode_token(token, key, now)
        assert info.value.code == "NotAuthorizedException"


def test_session_urls_survive_a_gateway_restart(gw: GatewayProcess) -> None:
    url = hls_url(gw, "cam-gap", "ON_DEMAND")
    before = fetch(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"))
    gw.restart()  # SIGKILL + start on the same data dir and port (later tests see the same data)
    assert fetch(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist")) == before
    with av.open(url) as container:
        assert len(list(container.decode(video=0))) == 40


def test_get_clip_ends_where_the_resolution_changes(gw: GatewayProcess) -> None:
    create_stream(gw, "resized")
    start = T0 + 100_000
    put(gw, "resized", camera_fragments(2, start_ms=start) + camera_fragments(2, start_ms=start + 2000, width=96, height=64))
    client = gw.client(ARCHIVED)
    out = client.get_clip(StreamName="resized", ClipFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                          "TimestampRange": {"StartTimestamp": start / 1000, "EndTimestamp": (start + 4000) / 1000}})
    frames = decode(out["Payload"].read())
    assert len(frames) == 20 and {(f.width, f.height) for f in frames} == {(160, 120)}


def test_dash_live_manifest_is_dynamic_and_plays(gw: GatewayProcess) -> None:
    from test_player_browser import LiveCamera

    create_stream(gw, "live-dash")
    camera = LiveCamera(gw, "live-dash", backlog_s=3, seconds=12)
    camera.start()
    try:
        camera.wait_persisted(3)
        client = gw.client(ARCHIVED)
        url = client.get_dash_streaming_session_url(StreamName="live-dash", PlaybackMode="LIVE")["DASHStreamingSessionURL"]
        mpd = fetch(url)
        assert 'type="dynamic"' in mpd and 'availabilityStartTime="1970-01-01T00:00:00.000Z"' in mpd
        probe = ["ffprobe", "-v", "error", "-read_intervals", "%+2", "-count_frames", "-select_streams", "v",
                 "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url]
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        counts = {int(x) for x in out.stdout.split()}
        assert out.returncode == 0 and counts and min(counts) >= 10, (out.stdout, out.stderr)
    finally:
        camera.stop()
