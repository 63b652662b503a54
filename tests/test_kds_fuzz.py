"""Fuzz every action with bodies shaped like its input (member names from botocore's model,
values of any JSON or CBOR type): the gateway answers 200 or an AWS-shaped 400, never a 500."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import cbor2
import pytest
from helpers import GatewayProcess
from kds_support import kds_gateway  # noqa: F401  (fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.kds.api import HANDLERS
from gateway.kds.validate import service_model

PLAUSIBLE = st.sampled_from(["fuzz", "shardId-000000000000", "shardId-000000000001", "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "UNIFORM_SCALING", "ON_DEMAND", "0", "49000000000000000000000000000000000000000000000000000001", "b2s=", "arn:aws:kinesis:us-east-1:000000000000:stream/fuzz"])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), PLAUSIBLE)
#: CBOR also carries byte strings and tags (1 is a timestamp as the AWS SDKs write it).
CBOR_LEAF = st.one_of(LEAF, st.binary(max_size=8), st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 99]), st.integers(-10, 2**70)))
KEYS = st.sampled_from(["Data", "PartitionKey", "Type", "ShardId", "StreamMode", "x"])
VALUE = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)
CBOR_VALUE = st.recursive(CBOR_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(content type, action, body)"""
    action = draw(st.sampled_from(sorted(HANDLERS)))
    shape = service_model().operation_model(action).input_shape
    names = st.sampled_from(sorted(shape.members) if shape is not None and shape.members else ["x"])
    if draw(st.booleans()):
        return "application/x-amz-cbor-1.1", action, cbor2.dumps(draw(st.dictionaries(names, CBOR_VALUE, max_size=5)))
    return "application/x-amz-json-1.1", action, json.dumps(draw(st.dictionaries(names, VALUE, max_size=5))).encode()


@pytest.fixture(scope="module")
def gw(kds_gateway: GatewayProcess) -> GatewayProcess:
    """The shared gateway. Fuzzed names other than "fuzz" are random text that no other test
    uses, and integers stay small, so the account's shard budget holds for the other tests."""
    kds_gateway.client("kinesis").create_stream(StreamName="fuzz", ShardCount=2)
    return kds_gateway


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_random_bodies_never_break_the_gateway(gw: GatewayProcess, request: tuple[str, str, bytes]) -> None:
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
