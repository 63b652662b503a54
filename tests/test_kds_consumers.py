"""Enhanced fan-out consumers through boto3: register, describe, list (paged), deregister;
AWS-formed ARNs, CREATING then ACTIVE, the 20-per-stream limit, durable across a SIGKILL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import GatewayProcess, wait_until
from kds_support import error_code

ACTIVATION_SECONDS = 0.4
ARN_RE = re.compile(r"arn:aws:kinesis:us-east-1:\d{12}:stream/(?P<stream>[^/]+)/consumer/(?P<name>[^:]+):(?P<created>\d+)")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    toml = f"[consumers]\nactivation_seconds = {ACTIVATION_SECONDS}\n"
    gw = GatewayProcess.configured(tmp_path_factory.mktemp("consumers"), toml, "--no-limits").start()
    yield gw
    gw.kill()


@pytest.fixture
def kinesis(gateway: GatewayProcess) -> Any:
    return gateway.client("kinesis")


def stream_arn(kinesis: Any, name: str, shards: int = 1) -> str:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    return str(kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"])


def test_register_describe_activate_deregister(kinesis: Any) -> None:
    arn = stream_arn(kinesis, "fanout")
    before = time.time()
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="app-1")["Consumer"]
    match = ARN_RE.fullmatch(consumer["ConsumerARN"])
    assert match and match["stream"] == "fanout" and match["name"] == "app-1"
    assert abs(int(match["created"]) - before) <= 2  # the creation time in epoch seconds, as AWS
    assert consumer["ConsumerStatus"] == "CREATING"
    assert abs(consumer["ConsumerCreationTimestamp"].timestamp() - before) < 2
    by_arn = kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
    by_name = kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName="app-1")["ConsumerDescription"]
    assert by_arn["StreamARN"] == arn and by_arn["ConsumerARN"] == by_name["ConsumerARN"] == consumer["ConsumerARN"]
    wait_until(lambda: kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE", timeout=5, what="ACTIVE")
    assert kinesis.describe_stream_summary(StreamName="fanout")["StreamDescriptionSummary"]["ConsumerCount"] == 1

    with pytest.raises(ClientError) as exc:
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="app-1")
    assert error_code(exc) == "ResourceInUseException"

    kinesis.deregister_stream_consumer(StreamARN=arn, ConsumerName="app-1")
    with pytest.raises(ClientError) as exc:
        kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
    assert error_code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        kinesis.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
    assert error_code(exc) == "ResourceNotFoundException"
    assert kinesis.describe_stream_summary(StreamName="fanout")["StreamDescriptionSummary"]["ConsumerCount"] == 0


def test_list_pages_and_the_limit_of_twenty(kinesis: Any) -> None:
    arn = stream_arn(kinesis, "crowd")
    names = [f"c{i:02d}" for i in range(20)]
    for name in names:
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=name)
    with pytest.raises(ClientError) as exc:
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="one-too-many")
    assert error_code(exc) == "LimitExceededException"
    first = kinesis.list_stream_consumers(StreamARN=arn, MaxResults=7)
    assert len(first["Consumers"]) == 7 and "NextToken" in first
    pages = kinesis.get_paginator("list_stream_consumers").paginate(StreamARN=arn, PaginationConfig={"PageSize": 6})
    listed = [c["ConsumerName"] for page in pages for c in page["Consumers"]]
    assert listed == names  # registration order, each once
    last = kinesis.list_stream_consumers(StreamARN=arn)
    assert len(last["Consumers"]) == 20 and "NextToken" not in last
    with pytest.raises(ClientError) as exc:
        kinesis.list_stream_consumers(StreamARN=arn, NextToken="not-a-token")
    assert error_code(exc) == "InvalidArgumentException"

    with pytest.raises(ClientError) as exc:  # as AWS: a stream with consumers is kept unless told
        kinesis.delete_stream(StreamName="crowd")
    assert error_code(exc) == "ResourceInUseException"
    kinesis.delete_stream(StreamName="crowd", EnforceConsumerDeletion=True)
    arn = stream_arn(kinesis, "crowd")  # the same name again starts with no consumers
    assert kinesis.list_stream_consumers(StreamARN=arn)["Consumers"] == []


def test_bad_input_gets_aws_errors(kinesis: Any) -> None:
    arn = stream_arn(kinesis, "strict")
    with pytest.raises(ClientError) as exc:
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="bad name!")
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        kinesis.register_stream_consumer(StreamARN=arn.replace("strict", "absent"), ConsumerName="x")
    assert error_code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:  # neither an ARN nor stream + name
        kinesis.describe_stream_consumer(ConsumerName="x")
    assert error_code(exc) == "InvalidArgumentException"
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="again")["Consumer"]
    stale = consumer["ConsumerARN"].rsplit(":", 1)[0] + ":12345"  # same name, another registration
    with pytest.raises(ClientError) as exc:
        kinesis.describe_stream_consumer(ConsumerARN=stale)
    assert error_code(exc) == "ResourceNotFoundException"


def test_consumer_tags(kinesis: Any) -> None:
    arn = stream_arn(kinesis, "tagging")
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="t", Tags={"team": "edge"})["Consumer"]["ConsumerARN"]
    kinesis.tag_resource(ResourceARN=consumer, Tags={"tier": "gold", "site": "lab"})
    kinesis.untag_resource(ResourceARN=consumer, TagKeys=["site"])
    assert kinesis.list_tags_for_resource(ResourceARN=consumer)["Tags"] == [{"Key": "team", "Value": "edge"}, {"Key": "tier", "Value": "gold"}]
    assert kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"] == []  # the stream's own tags are apart


def test_consumers_survive_a_sigkill(gateway: GatewayProcess, kinesis: Any) -> None:
    arn = stream_arn(kinesis, "durable")
    registered = [kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=f"d{i}")["Consumer"] for i in range(3)]
    kinesis.deregister_stream_consumer(ConsumerARN=registered[1]["ConsumerARN"])
    gateway.restart()  # SIGKILL, then start on the same data dir
    kinesis = gateway.client("kinesis")
    listed = kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]
    assert [(c["ConsumerName"], c["ConsumerARN"]) for c in listed] == [(c["ConsumerName"], c["ConsumerARN"]) for c in (registered[0], registered[2])]
    assert all(c["ConsumerStatus"] == "ACTIVE" for c in listed)


def test_example_config_documents_the_consumer_defaults() -> None:
    from gateway.config import ConsumersConfig, load_config

    example = load_config(Path(__file__).parent.parent / "configs" / "gateway.example.toml")
    assert example.consumers == ConsumersConfig()
