"""Firehose control and data plane through boto3 against a real gateway: streams, tags,
UpdateDestination versions, put limits and throttling, AWS-shaped errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from firehose_support import objects, s3_config, start_gateway
from helpers import GatewayProcess, wait_until


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # the key helpers.aws_client signs with
    gw = start_gateway(tmp_path_factory.mktemp("firehose-api"), "stream_bytes_per_sec = 1048576\n", more_toml=f'[auth.credentials]\nAKIDEXAMPLE = "{secret}"\n')
    yield gw
    gw.kill()


@pytest.fixture(scope="module")
def firehose(gateway: GatewayProcess) -> Any:
    return gateway.client("firehose")


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


def test_lifecycle_describe_list_tags(firehose: Any) -> None:
    arn = firehose.create_delivery_stream(
        DeliveryStreamName="life", ExtendedS3DestinationConfiguration=s3_config("life"), Tags=[{"Key": "team", "Value": "edge"}]
    )["DeliveryStreamARN"]
    assert arn == "arn:aws:firehose:us-east-1:000000000000:deliverystream/life"
    d = firehose.describe_delivery_stream(DeliveryStreamName="life")["DeliveryStreamDescription"]
    assert (d["DeliveryStreamStatus"], d["DeliveryStreamType"], d["VersionId"]) == ("ACTIVE", "DirectPut", "1")
    dest = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert dest["BufferingHints"] == {"SizeInMBs": 5, "IntervalInSeconds": 300}
    assert dest["CompressionFormat"] == "UNCOMPRESSED" and dest["BucketARN"] == "arn:aws:s3:::life"
    assert "life" in firehose.list_delivery_streams(Limit=100)["DeliveryStreamNames"]
    assert firehose.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")["DeliveryStreamNames"] == []

    firehose.tag_delivery_stream(DeliveryStreamName="life", Tags=[{"Key": "env", "Value": "test"}])
    firehose.untag_delivery_stream(DeliveryStreamName="life", TagKeys=["team"])
    tags = firehose.list_tags_for_delivery_stream(DeliveryStreamName="life")
    assert tags["Tags"] == [{"Key": "env", "Value": "test"}] and tags["HasMoreTags"] is False

    assert error_of(firehose.create_delivery_stream, DeliveryStreamName="life", ExtendedS3DestinationConfiguration=s3_config("life"))[0] == "ResourceInUseException"
    firehose.delete_delivery_stream(DeliveryStreamName="life")
    assert error_of(firehose.describe_delivery_stream, DeliveryStreamName="life")[0] == "ResourceNotFoundException"
    assert error_of(firehose.put_record, DeliveryStreamName="life", Record={"Data": b"x"})[0] == "ResourceNotFoundException"


def test_server_side_encryption_status(firehose: Any) -> None:
    firehose.create_delivery_stream(DeliveryStreamName="sse", ExtendedS3DestinationConfiguration=s3_config("sse"))
    assert firehose.put_record(DeliveryStreamName="sse", Record={"Data": b"x"})["Encrypted"] is False
    firehose.start_delivery_stream_encryption(DeliveryStreamName="sse", DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})
    config = firehose.describe_delivery_stream(DeliveryStreamName="sse")["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"]
    assert config == {"KeyType": "AWS_OWNED_CMK", "Status": "ENABLED"}
    assert firehose.put_record_batch(DeliveryStreamName="sse", Records=[{"Data": b"x"}])["Encrypted"] is True
    code, _ = error_of(firehose.start_delivery_stream_encryption, DeliveryStreamName="sse",
                       DeliveryStreamEncryptionConfigurationInput={"KeyType": "CUSTOMER_MANAGED_CMK"})
    assert code == "InvalidArgumentException"
    firehose.stop_delivery_stream_encryption(DeliveryStreamName="sse")
    status = firehose.describe_delivery_stream(DeliveryStreamName="sse")["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"]["Status"]
    assert status == "DISABLED"


def test_update_destination_checks_the_version(firehose: Any, gateway: GatewayProcess) -> None:
    firehose.create_delivery_stream(DeliveryStreamName="upd", ExtendedS3DestinationConfiguration=s3_config("upd", Prefix="old/"))
    firehose.update_destination(
        DeliveryStreamName="upd", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
        ExtendedS3DestinationUpdate={"Prefix": "new/", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}},
    )
    d = firehose.describe_delivery_stream(DeliveryStreamName="upd")["DeliveryStreamDescription"]
    assert d["VersionId"] == "2"
    dest = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert dest["Prefix"] == "new/" and dest["BucketARN"] == "arn:aws:s3:::upd"  # merged, not replaced
    code, _ = error_of(
        firehose.update_destination, DeliveryStreamName="upd", CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001", ExtendedS3DestinationUpdate={"Prefix": "x/"},
    )
    assert code == "ConcurrentModificationException"
    code, _ = error_of(
        firehose.update_destination, DeliveryStreamName="upd", CurrentDeliveryStreamVersionId="2",
        DestinationId="destinationId-000000000009", ExtendedS3DestinationUpdate={"Prefix": "x/"},
    )
    assert code == "InvalidArgumentException"
    # the new version's objects carry it in their names and use the new prefix
    firehose.put_record(DeliveryStreamName="upd", Record={"Data": b"after-update\n"})
    wait_until(lambda: objects(gateway, "upd"), what="an object of the updated stream")
    [(key, body)] = objects(gateway, "upd").items()
    assert key.startswith("new/") and "/upd-2-" in key and body == b"after-update\n"


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({"Prefix": "p/!{timestamp:yyyy}/"}, "ErrorOutputPrefix cannot be null"),
        ({"Prefix": "!{timestamp:qqq}/", "ErrorOutputPrefix": "e/"}, "timestamp format"),
        ({"Prefix": "!{nope:x}/", "ErrorOutputPrefix": "e/"}, "namespace"),
        ({"Prefix": "!{partitionKeyFromQuery:k}/", "ErrorOutputPrefix": "e/"}, "dynamic partitioning"),
        ({"CustomTimeZone": "Mars/Olympus"}, "time zone"),
        ({"BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
          "DynamicPartitioningConfiguration": {"Enabled": True}, "Prefix": "!{partitionKeyFromQuery:k}/", "ErrorOutputPrefix": "e/"}, "at least 64"),
    ],
)
def test_bad_destination_configs_are_invalid_argument(firehose: Any, config: dict[str, Any], fragment: str) -> None:
    code, message = error_of(firehose.create_delivery_stream, DeliveryStreamName="bad", ExtendedS3DestinationConfiguration=s3_config("bad", **config))
    assert code == "InvalidArgumentException" and fragment in message


def test_model_violations_and_missing_destination(firehose: Any) -> None:
    code, message = error_of(firehose.create_delivery_stream, DeliveryStreamName="bad name!", ExtendedS3DestinationConfiguration=s3_config("b"))
    assert code == "ValidationException" and "deliveryStreamName" in message
    assert error_of(firehose.create_delivery_stream, DeliveryStreamName="nodest")[0] == "InvalidArgumentException"
    code, message = error_of(
        firehose.create_delivery_stream, DeliveryStreamName="splunk",
        SplunkDestinationConfiguration={"HECEndpoint": "https://x", "HECEndpointType": "Raw", "HECToken": "t",
                                        "S3Configuration": s3_config("b")},
    )
    assert code == "InvalidArgumentException" and "not supported" in message
    code, _ = error_of(
        firehose.create_delivery_stream, DeliveryStreamName="src", DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/missing", "RoleARN": "arn:aws:iam::000000000000:role/r"},
        ExtendedS3DestinationConfiguration=s3_config("b"),
    )
    assert code == "InvalidArgumentException"


def test_put_limits(firehose: Any, gateway: GatewayProcess) -> None:
    firehose.create_delivery_stream(DeliveryStreamName="limits", ExtendedS3DestinationConfiguration=s3_config("limits"))
    code, message = error_of(firehose.put_record_batch, DeliveryStreamName="limits", Records=[{"Data": b"x"}] * 501)
    assert code == "ValidationException" and "less than or equal to 500" in message
    code, message = error_of(firehose.put_record, DeliveryStreamName="limits", Record={"Data": b"x" * 1_024_001})
    assert code == "ValidationException" and "1024000" in message
    code, message = error_of(firehose.put_record_batch, DeliveryStreamName="limits", Records=[{"Data": b"x" * 1_000_000}] * 5)
    assert code == "InvalidArgumentException" and "4 MiB" in message
    for records, expected in ([{"Data": "not base64!"}], "records.1.member.data"), ([{"Data": "eA=="}, {"Data": 7}], "records.2.member.data"):
        raw = gateway_client_with_body(gateway, {"DeliveryStreamName": "limits", "Records": records})
        code, message = error_of(raw.put_record_batch, DeliveryStreamName="limits", Records=[{"Data": b"x"}])
        assert code == "SerializationException" and expected in message


def test_throttling_is_slow_down(firehose: Any) -> None:
    """1 MiB/s for this module's streams: 3 x 400 KiB fits in part; a 900 KiB record right after does not."""
    firehose.create_delivery_stream(DeliveryStreamName="throttle", ExtendedS3DestinationConfiguration=s3_config("throttle"))
    out = firehose.put_record_batch(DeliveryStreamName="throttle", Records=[{"Data": b"a" * 400 * 1024}] * 3)
    assert out["FailedPutCount"] == 1
    assert [("RecordId" in r) for r in out["RequestResponses"]] == [True, True, False]
    assert out["RequestResponses"][2] == {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}
    code, message = error_of(firehose.put_record, DeliveryStreamName="throttle", Record={"Data": b"b" * 900 * 1024})
    assert (code, message) == ("ServiceUnavailableException", "Slow down.")


def test_unknown_operation_and_garbage(gateway: GatewayProcess) -> None:
    firehose = gateway.client("firehose")
    firehose.meta.events.register("before-sign.firehose.ListDeliveryStreams", _garble)
    assert error_of(firehose.list_delivery_streams)[0] == "SerializationException"
    r = httpx.post(gateway.url + "/", content=b"{}", headers={"X-Amz-Target": "Nope_1.Nope", "Content-Type": "application/x-amz-json-1.1"})
    assert r.json()["__type"] in ("UnknownOperationException", "MissingAuthenticationTokenException")


def gateway_client_with_body(gateway: GatewayProcess, body: dict[str, Any]) -> Any:
    """A client whose PutRecordBatch sends ``body`` (signed as it is)."""
    import json

    other = gateway.client("firehose")
    other.meta.events.register("before-sign.firehose.PutRecordBatch", lambda request, **_: setattr(request, "data", json.dumps(body).encode()))
    return other


def _garble(request: Any, **kwargs: Any) -> None:
    """Replace the body before it is signed, so only the body is wrong."""
    request.data = b"{not json"


def test_sigv4_scoped_to_firehose(gateway: GatewayProcess) -> None:
    """With credentials configured, Firehose calls must be signed for service ``firehose``."""
    assert "DeliveryStreamNames" in gateway.client("firehose").list_delivery_streams()
    wrong = boto3.client("firehose", endpoint_url=gateway.url, region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="nope")
    assert error_of(wrong.list_delivery_streams)[0] == "InvalidSignatureException"
    r = httpx.post(gateway.url + "/", content=b"{}", headers={"X-Amz-Target": "Firehose_20150804.ListDeliveryStreams", "Content-Type": "application/x-amz-json-1.1"})
    assert (r.status_code, r.json()["__type"]) == (400, "MissingAuthenticationTokenException")
