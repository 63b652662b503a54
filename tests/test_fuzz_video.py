"""Fuzzing the video API of a real gateway process: rest-json bodies for every Kinesis Video
operation, truncated and garbled MKV for PutMedia, odd PutMedia headers. No 500, no crash,
AWS-shaped errors or ERROR acks, bounded memory, and fragments stored before still readable."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from video_support import camera_fragments

from fuzz_support import SCALE, weighted, NAME_LIKE, RawClient, Response, assert_aws_error, from_shape, rss_kib, service_model
from gateway.kvs import ROUTES as VIDEO_ROUTES
from helpers import GatewayProcess
from kvs import MkvStreamParser

KEEP = "fuzz-video-keep"  # reference fragments; no fuzz input names it
TARGET = "fuzz-video-target"
PUT = "fuzz-video-put"
NAMES = st.one_of(st.just(TARGET), st.just(PUT), NAME_LIKE.filter(lambda n: KEEP not in n))
SERVED_PATHS = {route.path for route in VIDEO_ROUTES if route.method == "POST"}  # type: ignore[attr-defined]
OPERATIONS = []  # (path, body strategy)
for _service in ("kinesisvideo", "kinesis-video-media", "kinesis-video-archived-media"):
    _model = service_model(_service)
    for _op in sorted(_model.operation_names):
        _operation = _model.operation_model(_op)
        OPERATIONS.append((_operation.http["requestUri"], from_shape(_operation.input_shape, NAMES)))
SERVED = [op for op in OPERATIONS if op[0] in SERVED_PATHS]
PICK_OPERATION = weighted(st.sampled_from(SERVED), st.sampled_from(OPERATIONS), 9)
FUZZ = settings(max_examples=150 * SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
COUNTS: dict[str, int] = {}
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def fragments() -> list[bytes]:
    return [f.data for f in camera_fragments(3, fps=5, seconds=1.0, width=64, height=48)]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fragments: list[bytes]) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("fuzz-video") / "data").start()
    video = gateway.client("kinesisvideo")
    for name in (KEEP, TARGET, PUT):
        video.create_stream(StreamName=name, DataRetentionInHours=24)
    client = RawClient(gateway.port)
    acks = parse_acks(client.post("/putMedia", b"".join(fragments), putmedia_headers(KEEP)))
    client.close()
    assert [a["EventType"] for a in acks].count("PERSISTED") == len(fragments), acks
    gateway.rss_before = rss_kib(gateway.proc.pid)  # type: ignore[attr-defined, union-attr]
    yield gateway
    gateway.kill()


def putmedia_headers(stream: str, **extra: str) -> dict[str, str]:
    return {"x-amzn-stream-name": stream, "x-amzn-fragment-timecode-type": "ABSOLUTE",
            "x-amzn-producer-start-timestamp": "1700000000.000", **extra}


def parse_acks(resp: Response) -> list[dict]:
    assert resp.status == 200, (resp.status, resp.body[:300])
    acks = [json.loads(line) for line in resp.body.split(b"\n") if line.strip()]
    for ack in acks:
        assert ack["EventType"] in {"BUFFERING", "RECEIVED", "PERSISTED", "ERROR", "IDLE"}, ack
        if ack["EventType"] == "ERROR":
            assert isinstance(ack["ErrorId"], int)
    return acks


def frames_in(mkv: bytes) -> int:
    parser = MkvStreamParser()
    parsed = parser.feed(mkv)
    tail = parser.finish()
    return sum(p.frame_count for p in parsed) + (tail.frame_count if tail is not None and tail.complete else 0)


def alive(gw: GatewayProcess, context: object) -> None:
    assert gw.proc is not None and gw.proc.poll() is None, f"gateway died on {context!r}"


@FUZZ
@given(data=st.data())
def test_every_video_operation_with_shaped_json(gw: GatewayProcess, raw: RawClient, data: st.DataObject) -> None:
    path, bodies = data.draw(PICK_OPERATION)
    body = data.draw(bodies)
    try:
        resp = raw.post(path, json.dumps(body, allow_nan=True).encode(), JSON_HEADERS, read_limit=64 * 1024,
                        timeout=1.5 if path == "/getMedia" else None)
    except TimeoutError:
        # GetMedia on a stream with nothing to send yet waits for the first fragment before answering
        assert path == "/getMedia", (path, body)
        alive(gw, (path, body))
        COUNTS["rest-json getMedia waiting"] = COUNTS.get("rest-json getMedia waiting", 0) + 1
        return
    alive(gw, (path, body))
    assert_aws_error(resp, (path, body))
    COUNTS["rest-json"] = COUNTS.get("rest-json", 0) + 1
    outcome = "OK" if resp.status < 400 else resp.headers.get("x-amzn-errortype", str(resp.status))
    COUNTS[f"rest-json {outcome}"] = COUNTS.get(f"rest-json {outcome}", 0) + 1


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "drop", "garbage", "repeat"]))
    if not data:
        return draw(st.binary(max_size=256))
    pos = draw(st.integers(0, max(0, len(data) - 1)))
    if kind == "truncate":
        return data[:pos]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "insert":
        return data[:pos] + draw(st.binary(min_size=1, max_size=64)) + data[pos:]
    if kind == "drop":
        return data[:pos] + data[pos + draw(st.integers(1, 256)):]
    if kind == "garbage":
        return draw(st.binary(max_size=2048))
    return data[:pos] + data[pos // 2:]  # a stretch sent twice


@st.composite
def mangled_mkv(draw: st.DrawFn, fragments: list[bytes]) -> bytes:
    body = b"".join(draw(st.lists(st.sampled_from(fragments), min_size=1, max_size=3)))
    for _ in range(draw(st.integers(1, 3))):
        body = mutate(body, draw)
    return body


def test_truncated_and_garbled_mkv_bodies(gw: GatewayProcess, raw: RawClient, fragments: list[bytes]) -> None:
    @settings(FUZZ, max_examples=40 * SCALE)
    @given(body=mangled_mkv(fragments))
    def run(body: bytes) -> None:
        resp = raw.post("/putMedia", body, putmedia_headers(PUT))
        alive(gw, body[:64])
        acks = parse_acks(resp)
        if body and not body.startswith(b"\x1a\x45\xdf\xa3"):
            assert any(a["EventType"] == "ERROR" for a in acks), acks
        COUNTS["putmedia-body"] = COUNTS.get("putmedia-body", 0) + 1
        for ack in acks:
            if ack["EventType"] in ("PERSISTED", "ERROR"):
                COUNTS[f"ack {ack['EventType']}"] = COUNTS.get(f"ack {ack['EventType']}", 0) + 1

    run()


@settings(FUZZ, max_examples=40 * SCALE)
@given(
    stream=st.one_of(st.just(PUT), st.from_regex(r"[ -~]{0,300}", fullmatch=True)),
    timecode_type=st.one_of(st.sampled_from(["ABSOLUTE", "RELATIVE"]), st.from_regex(r"[ -~]{0,20}", fullmatch=True)),
    start=st.one_of(st.just("1700000000.000"), st.from_regex(r"[ -~]{0,30}", fullmatch=True)),
    extra=st.dictionaries(st.sampled_from(["x-amzn-stream-arn", "X-Edge-Producer-Id", "X-Edge-Fragment-Seqs"]),
                          st.from_regex(r"[ -~]{0,80}", fullmatch=True), max_size=3),
)
def test_odd_putmedia_headers(gw: GatewayProcess, raw: RawClient, fragments: list[bytes], stream: str, timecode_type: str,
                              start: str, extra: dict[str, str]) -> None:
    headers = {"x-amzn-stream-name": stream, "x-amzn-fragment-timecode-type": timecode_type,
               "x-amzn-producer-start-timestamp": start, **extra}
    resp = raw.post("/putMedia", fragments[0], headers)
    alive(gw, headers)
    assert_aws_error(resp, headers)
    if resp.status == 200:
        parse_acks(resp)
    COUNTS["putmedia-headers"] = COUNTS.get("putmedia-headers", 0) + 1


GET_PATHS = sorted(route.path.replace("{name}", "player.js") for route in VIDEO_ROUTES if route.method == "GET")  # type: ignore[attr-defined]


@st.composite
def session_query(draw: st.DrawFn, token: str) -> dict[str, str]:
    kind = draw(st.sampled_from(["real", "mangled", "random", "none"]))
    query: dict[str, str] = {}
    if kind == "real":
        query["SessionToken"] = token
    elif kind == "mangled" and token:
        pos = draw(st.integers(0, len(token) - 1))
        query["SessionToken"] = token[:pos] + draw(st.text(max_size=3)) + token[pos + 1:]
    elif kind == "random":
        query["SessionToken"] = draw(st.text(max_size=200))
    if draw(st.booleans()):
        query["FragmentNumber"] = draw(st.one_of(st.from_regex(r"[0-9]{1,30}", fullmatch=True), st.text(max_size=30)))
    return query


def test_playback_get_routes_with_odd_tokens(gw: GatewayProcess) -> None:
    """HLS/DASH/player GETs with real, mangled and random session tokens: no 500, no crash, no file outside."""
    import http.client
    import urllib.parse

    archived = gw.client("kinesis-video-archived-media")
    try:
        url = archived.get_hls_streaming_session_url(StreamName=KEEP, PlaybackMode="LIVE_REPLAY", HLSFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {"StartTimestamp": 0}})["HLSStreamingSessionURL"]
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["SessionToken"][0]
    except Exception:  # no HLS session for this stream: fuzz with random tokens only
        token = ""

    @settings(FUZZ, max_examples=60 * SCALE)
    @given(path=st.sampled_from(GET_PATHS + ["/player/static/..%2F..%2F..%2Fpyproject.toml", "/hls/v1/../../etc/passwd"]),
           query=session_query(token))
    def run(path: str, query: dict[str, str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
        try:
            conn.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
            resp = conn.getresponse()
            body = resp.read(1 << 20)
            headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        alive(gw, (path, query))
        assert resp.status < 500, (path, query, body[:300])
        if resp.status >= 400:
            assert "x-amzn-errortype" in headers, (path, query, body[:300])
        assert b"[build-system]" not in body and b"root:x:" not in body
        outcome = "OK" if resp.status < 400 else headers["x-amzn-errortype"]
        COUNTS[f"get {outcome}"] = COUNTS.get(f"get {outcome}", 0) + 1

    run()


def test_get_data_endpoint_with_unhashable_api_name_is_a_400(gw: GatewayProcess, raw: RawClient) -> None:
    for api_name in ([], {}, ["GET_MEDIA"]):
        resp = raw.post("/getDataEndpoint", json.dumps({"StreamName": TARGET, "APIName": api_name}).encode(), JSON_HEADERS)
        alive(gw, api_name)
        assert_aws_error(resp, api_name)
        assert resp.headers["x-amzn-errortype"] == "InvalidArgumentException"


def test_zz_reference_fragments_survive_and_memory_is_bounded(gw: GatewayProcess, fragments: list[bytes]) -> None:
    """Runs last in this module (file order): the storm is over."""
    archived = gw.client("kinesis-video-archived-media")
    listed = archived.list_fragments(StreamName=KEEP)["Fragments"]
    assert len(listed) == len(fragments)
    numbers = sorted((f["FragmentNumber"] for f in listed), key=int)
    payload = archived.get_media_for_fragment_list(StreamName=KEEP, Fragments=numbers)["Payload"].read()
    assert frames_in(payload) == frames_in(b"".join(fragments)) > 0
    rss_after = rss_kib(gw.proc.pid)  # type: ignore[union-attr]
    growth_mib = (rss_after - gw.rss_before) / 1024  # type: ignore[attr-defined]
    print(f"\nfuzz-video cases: {COUNTS}; gateway RSS {gw.rss_before // 1024} -> {rss_after // 1024} MiB")  # type: ignore[attr-defined]
    assert growth_mib < 200, f"gateway RSS grew by {growth_mib:.0f} MiB during fuzzing"
