"""A delivery stream's configuration: checked at create/update time, rendered as AWS describes it.

The destination configuration is kept as the client sent it (after botocore-model validation),
merged by UpdateDestination, and rendered through the model's *Description* shape, so
``DescribeDeliveryStream`` shows exactly the members AWS shows (an HTTP endpoint's access key,
for one, is never echoed back). Supported destinations: ``ExtendedS3`` (and the deprecated
``S3``, stored as ExtendedS3), ``HttpEndpoint`` and ``Iceberg``; the others are refused with
InvalidArgumentException.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.model import ServiceModel, Shape

from gateway.firehose.naming import check_prefix, invalid, time_zone
from gateway.kds.validate import service_model
from gateway.wire import DEFAULT_REGION

DESTINATION_ID = "destinationId-000000000001"
#: Destination kind -> (configuration member of CreateDeliveryStream, description member)
DESTINATIONS = {
    "ExtendedS3": ("ExtendedS3DestinationConfiguration", "ExtendedS3DestinationDescription"),
    "HttpEndpoint": ("HttpEndpointDestinationConfiguration", "HttpEndpointDestinationDescription"),
    "Iceberg": ("IcebergDestinationConfiguration", "IcebergDestinationDescription"),
}
UNSUPPORTED = ("Redshift", "Elasticsearch", "Amazonopensearchservice", "Splunk", "AmazonOpenSearchServerless", "Snowflake")
#: Configuration member -> the member of the Description shape that shows it
RENAMES = {"S3BackupConfiguration": "S3BackupDescription", "S3Configuration": "S3DestinationDescription"}
DEFAULT_HINTS = {"SizeInMBs": 5, "IntervalInSeconds": 300}


def model() -> ServiceModel:
    return service_model("firehose")


def stream_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:firehose:{region}:{account}:deliverystream/{name}"


def bucket_name(bucket_arn: str) -> str:
    return bucket_arn.rsplit(":", 1)[-1]


@dataclass
class DeliveryStream:
    name: str
    type: str
    kind: str
    destination: dict[str, Any]
    source: dict[str, Any] | None = None
    version: int = 1
    created: float = 0.0
    updated: float = 0.0
    region: str = DEFAULT_REGION
    tags: dict[str, str] = field(default_factory=dict)
    account: str = "000000000000"
    #: Server-side encryption as StartDeliveryStreamEncryption set it ({"KeyType", "KeyARN"}); None: off.
    #: (Records are stored as on any other stream: the gateway's data dir is the trust boundary.)
    encryption: dict[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, doc: str) -> DeliveryStream:
        return cls(**json.loads(doc))

    @property
    def arn(self) -> str:
        return stream_arn(self.region, self.account, self.name)

    # -- what delivery reads -----------------------------------------------------------------

    @property
    def s3(self) -> dict[str, Any]:
        """The S3 configuration objects (or backups/errors) are written with."""
        if self.kind == "ExtendedS3":
            return self.destination
        return self.destination.get("S3Configuration", {})

    @property
    def hints(self) -> dict[str, int]:
        hints = dict(DEFAULT_HINTS)
        if self.kind == "ExtendedS3" and _conversion_on(self.destination):
            hints["SizeInMBs"] = 128
        hints.update(self.destination.get("BufferingHints", {}))
        return hints

    @property
    def partitioned(self) -> bool:
        return bool(self.destination.get("DynamicPartitioningConfiguration", {}).get("Enabled"))


def _conversion_on(dest: dict[str, Any]) -> bool:
    conversion = dest.get("DataFormatConversionConfiguration")
    return conversion is not None and conversion.get("Enabled", True)


def destination_of(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one destination a CreateDeliveryStream request configures: (kind, config)."""
    given = [k for k in params if k.endswith("DestinationConfiguration")]
    if len(given) != 1:
        raise invalid("Exactly one destination configuration must be provided." if not given else f"Only one destination can be configured, got {', '.join(sorted(given))}.")
    member = given[0]
    kind = member[: -len("DestinationConfiguration")]
    if kind in UNSUPPORTED:
        raise invalid(f"{member} is not supported by this gateway (supported: ExtendedS3, S3, HttpEndpoint, Iceberg).")
    config = copy.deepcopy(params[member])
    if kind == "S3":
        kind = "ExtendedS3"
    check_destination(kind, config)
    return kind, config


def check_destination(kind: str, dest: dict[str, Any]) -> None:
    """The rules AWS applies beyond the model's shapes (processors: ``processors.check_processors``)."""
    if kind == "ExtendedS3":
        _check_s3(dest, extended=True)
    elif kind == "HttpEndpoint":
        s3 = dest.get("S3Configuration")
        if not s3:
            raise invalid("S3Configuration is required for an HTTP endpoint destination.")
        _check_s3(s3, extended=False)
        url = dest.get("EndpointConfiguration", {}).get("Url", "")
        if not (url.startswith("https://") or loopback_http(url)):
            raise invalid(f"The HTTP endpoint URL {url!r} must use https:// (plain http:// is allowed for loopback only).")
    elif kind == "Iceberg":
        s3 = dest.get("S3Configuration")
        if not s3:
            raise invalid("S3Configuration is required for an Iceberg destination.")


def loopback_http(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def _check_s3(dest: dict[str, Any], *, extended: bool) -> None:
    for required in ("RoleARN", "BucketARN"):
        if not dest.get(required):
            raise invalid(f"{required} is required for an S3 destination.")
    partitioned = extended and bool(dest.get("DynamicPartitioningConfiguration", {}).get("Enabled"))
    prefix = dest.get("Prefix", "")
    error_prefix = dest.get("ErrorOutputPrefix", "")
    check_prefix(prefix, partitioned=partitioned, error_prefix=False)
    check_prefix(error_prefix, partitioned=partitioned, error_prefix=True)
    if ("!{" in prefix or partitioned) and not error_prefix:
        raise invalid("ErrorOutputPrefix cannot be null or empty when Prefix contains expressions or dynamic partitioning is enabled.")
    if partitioned and "!{partitionKeyFrom" not in prefix:
        raise invalid("When dynamic partitioning is enabled, Prefix must contain at least one partitionKeyFromQuery or partitionKeyFromLambda expression.")
    time_zone(dest.get("CustomTimeZone"))
    hints = dest.get("BufferingHints", {})
    if ("SizeInMBs" in hints) != ("IntervalInSeconds" in hints) and hints:
        raise invalid("BufferingHints: SizeInMBs and IntervalInSeconds must be given together.")
    conversion = extended and _conversion_on(dest)
    if (partitioned or conversion) and hints.get("SizeInMBs", 64) < 64:
        raise invalid("BufferingHints.SizeInMBs must be at least 64 when dynamic partitioning or data format conversion is enabled.")
    if conversion and dest.get("CompressionFormat", "UNCOMPRESSED") != "UNCOMPRESSED":
        raise invalid("CompressionFormat must be UNCOMPRESSED when data format conversion is enabled (compress inside the Parquet/ORC serializer instead).")
    if extended and dest.get("S3BackupMode") == "Enabled" and not dest.get("S3BackupConfiguration"):
        raise invalid("S3BackupConfiguration is required when S3BackupMode is Enabled.")


def merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """UpdateDestination's merge: structures merged member by member, everything else replaced."""
    out = copy.deepcopy(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- rendering ---------------------------------------------------------------------------------


def _project(value: Any, shape: Shape) -> Any:
    """Keep what ``shape`` has of ``value`` (configuration members mapped to description ones)."""
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return value
        members = shape.members
        out: dict[str, Any] = {}
        for key, item in value.items():
            renamed: str = RENAMES.get(str(key), str(key))
            name: str = renamed if renamed in members else str(key)
            if name in members:
                out[name] = _project(item, members[name])
        return out
    if shape.type_name == "list" and isinstance(value, list):
        return [_project(item, shape.member) for item in value]
    return value


def _s3_description(s3: dict[str, Any]) -> dict[str, Any]:
    out = {"BufferingHints": dict(DEFAULT_HINTS), "CompressionFormat": "UNCOMPRESSED", "EncryptionConfiguration": {"NoEncryptionConfig": "NoEncryption"},
           "CloudWatchLoggingOptions": {"Enabled": False}}
    return merge(out, s3)


def describe(stream: DeliveryStream) -> dict[str, Any]:
    shapes = model()
    dest = copy.deepcopy(stream.destination)
    _, description_member = DESTINATIONS[stream.kind]
    destination: dict[str, Any] = {"DestinationId": DESTINATION_ID}
    if stream.kind == "ExtendedS3":
        full = _s3_description(dest)
        full["BufferingHints"] = stream.hints
        full.setdefault("S3BackupMode", "Disabled")
        if "S3BackupConfiguration" in full:
            full["S3BackupConfiguration"] = _s3_description(full["S3BackupConfiguration"])
        destination[description_member] = _project(full, shapes.shape_for("ExtendedS3DestinationDescription"))
        basic = {k: v for k, v in full.items() if k in ("RoleARN", "BucketARN", "Prefix", "ErrorOutputPrefix", "BufferingHints", "CompressionFormat", "EncryptionConfiguration", "CloudWatchLoggingOptions")}
        destination["S3DestinationDescription"] = _project(basic, shapes.shape_for("S3DestinationDescription"))
    else:
        dest["S3Configuration"] = _s3_description(dest.get("S3Configuration", {}))
        if stream.kind == "HttpEndpoint":
            dest.setdefault("BufferingHints", dict(DEFAULT_HINTS))
            dest.setdefault("S3BackupMode", "FailedDataOnly")
            dest.setdefault("RetryOptions", {"DurationInSeconds": 300})
            dest.setdefault("RequestConfiguration", {"ContentEncoding": "NONE"})
        destination[description_member] = _project(dest, shapes.shape_for(description_member))
    out: dict[str, Any] = {
        "DeliveryStreamName": stream.name,
        "DeliveryStreamARN": stream.arn,
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamEncryptionConfiguration": {**stream.encryption, "Status": "ENABLED"} if stream.encryption else {"Status": "DISABLED"},
        "DeliveryStreamType": stream.type,
        "VersionId": str(stream.version),
        "CreateTimestamp": stream.created,
        "LastUpdateTimestamp": stream.updated,
        "Destinations": [destination],
        "HasMoreDestinations": False,
    }
    if stream.source is not None:
        source = {k: v for k, v in stream.source.items() if k in ("KinesisStreamARN", "RoleARN")}
        source["DeliveryStartTimestamp"] = stream.created
        out["Source"] = {"KinesisStreamSourceDescription": source}
    return out


def check_conversion(dest: dict[str, Any]) -> None:
    conversion = dest.get("DataFormatConversionConfiguration")
    if not conversion or not conversion.get("Enabled", True):
        return
    schema = conversion.get("SchemaConfiguration") or {}
    if not schema.get("DatabaseName") or not schema.get("TableName"):
        raise invalid("SchemaConfiguration with DatabaseName and TableName is required when data format conversion is enabled.")
    deserializers = (conversion.get("InputFormatConfiguration") or {}).get("Deserializer") or {}
    serializers = (conversion.get("OutputFormatConfiguration") or {}).get("Serializer") or {}
    if len(deserializers) != 1:
        raise invalid("InputFormatConfiguration.Deserializer must name exactly one of OpenXJsonSerDe, HiveJsonSerDe.")
    if len(serializers) != 1:
        raise invalid("OutputFormatConfiguration.Serializer must name exactly one of ParquetSerDe, OrcSerDe.")
