"""Resource policies on a gateway that checks SigV4: stored, shown back, and enforced together
with ``[auth] allowed_streams`` (an explicit Deny wins; an Allow grants what the key's list lacks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import GatewayProcess

ADMIN, ADMIN_SECRET = "AKIAADMINEXAMPLE", "admin-secret"
CAMERA, CAMERA_SECRET = "AKIACAMERAEXAMPLE", "camera-secret"
ACCOUNT = "000000000000"
SHARED = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/shared"


def client(gw: GatewayProcess, key: str, secret: str) -> Any:
    return boto3.client("kinesis", endpoint_url=gw.url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("kds-policies")
    config = root / "gateway.toml"
    config.write_text(f'[auth]\ncredentials = {{ {ADMIN} = "{ADMIN_SECRET}", {CAMERA} = "{CAMERA_SECRET}" }}\nallowed_streams = {{ {CAMERA} = ["camera-own"] }}\n')
    gateway = GatewayProcess(root / "data", "--config", str(config)).start()
    admin = client(gateway, ADMIN, ADMIN_SECRET)
    for name in ("shared", "camera-own"):
        admin.create_stream(StreamName=name, ShardCount=1)
    yield gateway
    gateway.kill()


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@pytest.mark.parametrize(("document", "expected"), [
    ("not json", "Policy document is not valid JSON"),
    (json.dumps({"Statement": []}), 'Policy document is malformed: it must be an object with "Version": "2012-10-17".'),
    (policy({"Effect": "Maybe", "Principal": "*", "Action": "kinesis:*", "Resource": "*"}), "Policy document is malformed: Effect must be Allow or Deny."),
    (policy({"Effect": "Allow", "Principal": "*", "Action": [], "Resource": "*"}), "Policy document is malformed: Action must be a string or a non-empty list of strings."),
    (policy({"Effect": "Allow", "Principal": "*", "Action": "kinesis:*", "Resource": "*", "Condition": {}}), "Policy document is malformed: unsupported statement element(s) ['Condition']."),
])
def test_malformed_policies_are_invalid_arguments(gw: GatewayProcess, document: str, expected: str) -> None:
    with pytest.raises(ClientError) as exc:
        client(gw, ADMIN, ADMIN_SECRET).put_resource_policy(ResourceARN=SHARED, Policy=document)
    assert code(exc) == "InvalidArgumentException" and exc.value.response["Error"]["Message"].startswith(expected)


def test_policy_round_trip_and_not_found(gw: GatewayProcess) -> None:
    admin = client(gw, ADMIN, ADMIN_SECRET)
    admin.create_stream(StreamName="round-trip", ShardCount=1)
    arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/round-trip"
    assert admin.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
    doc = policy({"Effect": "Allow", "Principal": {"AWS": ADMIN}, "Action": "kinesis:*", "Resource": arn})
    admin.put_resource_policy(ResourceARN=arn, Policy=doc)
    assert admin.get_resource_policy(ResourceARN=arn)["Policy"] == doc
    admin.delete_resource_policy(ResourceARN=arn)
    with pytest.raises(ClientError) as exc:
        admin.delete_resource_policy(ResourceARN=arn)
    assert code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        admin.put_resource_policy(ResourceARN=arn.replace("round-trip", "nope"), Policy=doc)
    assert code(exc) == "ResourceNotFoundException"


def test_deny_and_allow_are_enforced_for_signed_requests(gw: GatewayProcess) -> None:
    admin = client(gw, ADMIN, ADMIN_SECRET)
    camera = client(gw, CAMERA, CAMERA_SECRET)
    with pytest.raises(ClientError) as exc:  # [auth] allowed_streams alone: not this stream
        camera.put_record(StreamName="shared", Data=b"x", PartitionKey="k")
    assert code(exc) == "AccessDeniedException"
    admin.put_resource_policy(ResourceARN=SHARED, Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam::{ACCOUNT}:user/{CAMERA}"]}, "Action": ["kinesis:PutRecord*"], "Resource": SHARED},
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kinesis:GetShardIterator", "Resource": "arn:aws:kinesis:*:*:stream/shared"},
    ))
    camera.put_record(StreamName="shared", Data=b"from the camera", PartitionKey="k")  # granted by the policy
    camera.put_records(StreamName="shared", Records=[{"Data": b"y", "PartitionKey": "k"}])
    with pytest.raises(ClientError) as exc:  # the policy allows only PutRecord(s)
        camera.describe_stream(StreamName="shared")
    assert code(exc) == "AccessDeniedException"
    with pytest.raises(ClientError) as exc:  # an explicit deny beats the admin key's full access
        admin.get_shard_iterator(StreamName="shared", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")
    assert code(exc) == "AccessDeniedException"
    assert exc.value.response["Error"]["Message"] == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{ADMIN} is not authorized to perform: kinesis:GetShardIterator on resource: {SHARED} "
        "with an explicit deny in a resource-based policy")
    admin.describe_stream(StreamName="shared")  # what the deny does not name still works
    admin.put_resource_policy(ResourceARN=SHARED, Policy=policy({"Effect": "Deny", "Principal": "*", "Action": "kinesis:GetRecords", "Resource": SHARED}))
    it = admin.get_shard_iterator(StreamName="shared", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    with pytest.raises(ClientError) as exc:  # GetRecords names its stream only through the iterator
        admin.get_records(ShardIterator=it)
    assert code(exc) == "AccessDeniedException"
    admin.delete_resource_policy(ResourceARN=SHARED)
    assert [r["Data"] for r in admin.get_records(ShardIterator=it)["Records"]] == [b"from the camera", b"y"]
