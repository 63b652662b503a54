"""Fuzzing the data-stream API of a real gateway process: no 500, no crash, AWS-shaped errors,
bounded memory, and records stored before the storm still readable (and writable) after it.

Bodies come three ways: shaped by botocore's model, random CBOR and bytes, and each action's own
member names holding values of any JSON/CBOR type."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_support import SCALE, weighted, JUNK, NAME_LIKE, RawClient, assert_aws_error, from_shape, rss_kib, service_model
from gateway.kds.api import HANDLERS
from helpers import GatewayProcess
from kds_support import read_shard

KEEP = "fuzz-keep"  # holds the reference records; no fuzz input ever names it
TARGET = "fuzz-target"  # fuzz inputs name this one, so they reach past "stream not found"
KINESIS = service_model("kinesis")
ACTIONS = sorted(KINESIS.operation_names)
SERVED = sorted(set(HANDLERS) & set(ACTIONS))  # what the gateway implements gets 9 in 10 cases
NAMES = st.one_of(st.just(TARGET), st.just(f"arn:aws:kinesis:us-east-1:000000000000:stream/{TARGET}"),
                  NAME_LIKE.filter(lambda n: KEEP not in n))
BODIES = {op: from_shape(KINESIS.operation_model(op).input_shape, NAMES) for op in ACTIONS}
PICK_ACTION = weighted(st.sampled_from(SERVED), st.sampled_from(ACTIONS), 9)
FUZZ = settings(max_examples=200 * SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("fuzz-kds") / "data", "--no-limits").start()
    kinesis = gateway.client("kinesis")
    for name in (KEEP, TARGET):
        kinesis.create_stream(StreamName=name, ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    kinesis.put_records(StreamName=KEEP, Records=[{"Data": f"before-{i}".encode(), "PartitionKey": str(i)} for i in range(20)])
    gateway.rss_before = rss_kib(gateway.proc.pid)  # type: ignore[attr-defined, union-attr]
    yield gateway
    gateway.kill()


def headers(action: str, content_type: str = "application/x-amz-json-1.1") -> dict[str, str]:
    return {"Content-Type": content_type, "X-Amz-Target": f"Kinesis_20131202.{action}"}


def check(gw: GatewayProcess, resp: object, context: object) -> None:
    assert gw.proc is not None and gw.proc.poll() is None, f"gateway died on {context!r}"
    assert_aws_error(resp, context)  # type: ignore[arg-type]


@FUZZ
@given(data=st.data())
def test_every_action_with_shaped_json(gw: GatewayProcess, raw: RawClient, data: st.DataObject) -> None:
    action = data.draw(PICK_ACTION)
    body = data.draw(BODIES[action])
    payload = json.dumps(body, allow_nan=True).encode()
    resp = raw.post("/", payload, headers(action), read_limit=1 << 20 if action == "SubscribeToShard" else None)
    check(gw, resp, (action, body))
    if resp.status >= 400:
        assert json.loads(resp.body)["__type"]
    outcome = "OK" if resp.status < 400 else json.loads(resp.body)["__type"]
    COUNTS[f"json {outcome}"] = COUNTS.get(f"json {outcome}", 0) + 1


@settings(FUZZ, max_examples=100 * SCALE)
@given(action=PICK_ACTION, body=st.one_of(JUNK.map(cbor2.dumps), st.binary(max_size=300)))
def test_every_action_with_cbor_and_random_bytes(gw: GatewayProcess, raw: RawClient, action: str, body: bytes) -> None:
    resp = raw.post("/", body, headers(action, "application/x-amz-cbor-1.1"), read_limit=1 << 20 if action == "SubscribeToShard" else None)
    check(gw, resp, (action, body[:100]))
    if resp.status >= 400:
        assert cbor2.loads(resp.body)["__type"]  # errors come back in the protocol the client spoke
    COUNTS["cbor"] = COUNTS.get("cbor", 0) + 1


@settings(FUZZ, max_examples=40 * SCALE)
@given(target=st.text(max_size=60), content_type=st.sampled_from(["application/x-amz-json-1.1", "application/json", "text/plain", ""]),
       body=st.binary(max_size=200))
def test_garbled_targets_and_content_types(gw: GatewayProcess, raw: RawClient, target: str, content_type: str, body: bytes) -> None:
    target = target.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
    resp = raw.post("/", body, {"Content-Type": content_type, "X-Amz-Target": target})
    check(gw, resp, (target, content_type, body[:100]))
    COUNTS["garbled"] = COUNTS.get("garbled", 0) + 1


def test_non_ascii_base64_blob_is_a_400(gw: GatewayProcess, raw: RawClient) -> None:
    for action, body in (("PutRecord", {"StreamName": TARGET, "Data": "\x80", "PartitionKey": "k"}),
                         ("PutRecords", {"StreamName": TARGET, "Records": [{"Data": "\u00e9t\u00e9", "PartitionKey": "k"}]})):
        resp = raw.post("/", json.dumps(body).encode(), headers(action))
        check(gw, resp, (action, body))
        assert json.loads(resp.body)["__type"] == "SerializationException"


VALID_REQUEST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n"
                 b"X-Amz-Target: Kinesis_20131202.PutRecord\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3a\r\n{\"StreamName\":\"fuzz-target\",\"Data\":\"QQ==\",\"PartitionKey\":\"k\"}\r\n0\r\n\r\n")


@st.composite
def mangled_http(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=400))
    data = VALID_REQUEST
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "truncate", "drop"]))
        if kind == "flip" and pos < len(data):
            data = data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
        elif kind == "insert":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
        elif kind == "truncate":
            data = data[:pos]
        else:
            data = data[:pos] + data[pos + draw(st.integers(1, 8)):]
    return data


@settings(FUZZ, max_examples=50 * SCALE)
@given(wire=mangled_http())
def test_garbled_http_on_the_wire(gw: GatewayProcess, wire: bytes) -> None:
    """Random or mangled bytes as the HTTP request itself: an answer (AWS-shaped if an error) or a close."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        try:
            sock.sendall(wire)
            sock.shutdown(socket.SHUT_WR)  # end of input: a half request cannot wait for the header timeout
        except OSError:
            pass  # the gateway already hung up on it
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert gw.proc is not None and gw.proc.poll() is None, f"gateway died on {wire!r}"
    for response in received.split(b"HTTP/1.1 ")[1:]:
        status = int(response[:3])
        assert status < 500, (wire, received[:300])
        if status >= 400:
            assert b"x-amzn-ErrorType" in response or b"__type" in response, (wire, received[:300])
    COUNTS["wire"] = COUNTS.get("wire", 0) + 1


def test_huge_bodies_and_headers(gw: GatewayProcess, raw: RawClient) -> None:
    big_record = {"StreamName": TARGET, "Data": "A" * (2 * 1024 * 1024), "PartitionKey": "k"}
    many_records = {"StreamName": TARGET, "Records": [{"Data": "QQ==", "PartitionKey": "k" * 300}] * 20_000}
    for action, body in (("PutRecord", big_record), ("PutRecords", many_records), ("ListStreams", {"Limit": 10**30})):
        check(gw, raw.post("/", json.dumps(body).encode(), headers(action)), action)
    check(gw, raw.post("/", b"[" * 100_000 + b"]" * 100_000, headers("PutRecords")), "deep nesting")
    check(gw, raw.post("/", b'{"StreamName":"' + b"x" * (15 * 1024 * 1024) + b'"}', headers("DescribeStream")), "15 MiB name")
    raw.close()
    resp = raw.post("/", b"{}", {**headers("ListStreams"), "X-Huge": "h" * 9000})
    assert resp.status == 400
    raw.close()
    COUNTS["huge"] = 6


# -- member-shaped bodies with values of any type (JSON and CBOR) ------------------------------------

PLAUSIBLE = st.sampled_from([TARGET, "shardId-000000000000", "shardId-000000000001", "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "UNIFORM_SCALING", "ON_DEMAND", "0", "49000000000000000000000000000000000000000000000000000001", "b2s=", f"arn:aws:kinesis:us-east-1:000000000000:stream/{TARGET}"])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), PLAUSIBLE)
#: CBOR also carries byte strings and tags (1 is a timestamp as the AWS SDKs write it).
CBOR_LEAF = st.one_of(LEAF, st.binary(max_size=8), st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 99]), st.integers(-10, 2**70)))
MEMBER_KEYS = st.sampled_from(["Data", "PartitionKey", "Type", "ShardId", "StreamMode", "x"])
VALUE = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(MEMBER_KEYS, inner, max_size=3)), max_leaves=8)
CBOR_VALUE = st.recursive(CBOR_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(MEMBER_KEYS, inner, max_size=3)), max_leaves=8)


@st.composite
def member_bodies(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(content type, action, body): the action's member names, values of any JSON/CBOR type."""
    action = draw(st.sampled_from(sorted(HANDLERS)))
    shape = KINESIS.operation_model(action).input_shape if action in ACTIONS else None
    names = st.sampled_from(sorted(shape.members) if shape is not None and shape.members else ["x"])
    if draw(st.booleans()):
        return "application/x-amz-cbor-1.1", action, cbor2.dumps(draw(st.dictionaries(names, CBOR_VALUE, max_size=5)))
    return "application/x-amz-json-1.1", action, json.dumps(draw(st.dictionaries(names, VALUE, max_size=5))).encode()


@settings(FUZZ, max_examples=120)
@given(request=member_bodies())
def test_member_shaped_bodies_of_any_type(gw: GatewayProcess, request: tuple[str, str, bytes]) -> None:
    content_type, action, body = request
    req = urllib.request.Request(gw.url + "/", data=body, method="POST", headers={"Content-Type": content_type, "X-Amz-Target": f"Kinesis_20131202.{action}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    assert status in (200, 400), (action, body, status, payload)
    if status == 400:
        error = cbor2.loads(payload) if content_type.endswith("cbor-1.1") else json.loads(payload)
        assert error["__type"].endswith("Exception"), payload


def test_zz_reference_data_survives_and_memory_is_bounded(gw: GatewayProcess) -> None:
    """Runs last in this module (file order): the storm is over."""
    kinesis = gw.client("kinesis")
    shards = kinesis.describe_stream(StreamName=KEEP)["StreamDescription"]["Shards"]
    before = sorted(r["Data"] for s in shards for r in read_shard(kinesis, KEEP, s["ShardId"])[0])
    assert before == sorted(f"before-{i}".encode() for i in range(20))
    kinesis.put_record(StreamName=KEEP, Data=b"after", PartitionKey="z")
    after = [r["Data"] for s in shards for r in read_shard(kinesis, KEEP, s["ShardId"])[0]]
    assert b"after" in after
    rss_after = rss_kib(gw.proc.pid)  # type: ignore[union-attr]
    growth_mib = (rss_after - gw.rss_before) / 1024  # type: ignore[attr-defined]
    print(f"\nfuzz-kds cases: {COUNTS}; gateway RSS {gw.rss_before // 1024} -> {rss_after // 1024} MiB")  # type: ignore[attr-defined]
    assert growth_mib < 200, f"gateway RSS grew by {growth_mib:.0f} MiB during fuzzing"
