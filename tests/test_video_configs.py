"""The rest of the Kinesis Video control plane on a real gateway: tags by ARN, scheduled images,
fragment notifications (to a data stream and to an HTTP endpoint) and edge configurations,
with the model's validation and the documented errors, table-driven."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from video_support import PutMediaClient, camera_fragments, create_stream

from helpers import GatewayProcess, free_port, wait_until
from kds_support import read_shard

HUB = "arn:aws:iot:us-east-1:000000000000:thing/pi-porch"
EDGE = {"HubDeviceArn": HUB,
        "RecorderConfig": {"MediaSourceConfig": {"MediaUriSecretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:porch-rtsp", "MediaUriType": "RTSP_URI"},
                           "ScheduleConfig": {"ScheduleExpression": "0 0 8-18 ? * MON-FRI *", "DurationInSeconds": 3600}},
        "UploaderConfig": {"ScheduleConfig": {"ScheduleExpression": "0 0 * ? * * *", "DurationInSeconds": 600}},
        "DeletionConfig": {"EdgeRetentionInHours": 24, "LocalSizeConfig": {"MaxLocalMediaSizeInMB": 128, "StrategyOnFullSize": "DELETE_OLDEST_MEDIA"}, "DeleteAfterUpload": True}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("video-configs") / "data").start()
    create_stream(gateway, "cfg")
    yield gateway
    gateway.kill()


def arn_of(gw: GatewayProcess, name: str) -> str:
    return str(gw.client("kinesisvideo").describe_stream(StreamName=name)["StreamInfo"]["StreamARN"])


def send_live(gw: GatewayProcess, stream: str, count: int) -> None:
    client = PutMediaClient(gw.url, stream)
    client.send_all(f.data for f in camera_fragments(count, start_ms=int(time.time() * 1000) - count * 1000))
    assert sum(a["EventType"] == "PERSISTED" for a in client.finish()) == count


ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    ("tag_resource", {"ResourceARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/nope/1", "Tags": [{"Key": "a", "Value": "b"}]}, "ResourceNotFoundException", "Stream"),
    ("tag_resource", {"ResourceARN": "arn:aws:kinesisvideo:us-east-1:000000000000:channel/c/1", "Tags": [{"Key": "a", "Value": "b"}]}, "ResourceNotFoundException", "signaling channels"),
    ("update_image_generation_configuration", {"StreamName": "cfg", "ImageGenerationConfiguration": {"Status": "ENABLED", "ImageSelectorType": "SERVER_TIMESTAMP",
     "DestinationConfig": {"Uri": "ftp://host/x", "DestinationRegion": "us-east-1"}, "SamplingInterval": 1000, "Format": "JPEG"}}, "InvalidArgumentException", "DestinationConfig Uri 'ftp://host/x'"),
    ("update_image_generation_configuration", {"StreamName": "cfg", "ImageGenerationConfiguration": {"Status": "ENABLED", "ImageSelectorType": "SERVER_TIMESTAMP",
     "DestinationConfig": {"Uri": "s3://b/p", "DestinationRegion": "us-east-1"}, "SamplingInterval": 50, "Format": "JPEG"}}, "InvalidArgumentException", "SamplingInterval must be between 200 and 20000"),
    ("update_notification_configuration", {"StreamName": "cfg", "NotificationConfiguration": {"Status": "ENABLED", "DestinationConfig": {"Uri": "arn:aws:sns:us-east-1:000000000000:topic"}}},
     "InvalidArgumentException", "DestinationConfig Uri"),
    ("describe_edge_configuration", {"StreamName": "cfg"}, "StreamEdgeConfigurationNotFoundException", "Stream cfg has no edge configuration."),
    ("delete_edge_configuration", {"StreamName": "cfg"}, "StreamEdgeConfigurationNotFoundException", "Stream cfg has no edge configuration."),
    ("describe_image_generation_configuration", {"StreamName": "nope"}, "ResourceNotFoundException", "Stream nope not found"),
]


@pytest.mark.parametrize(("operation", "params", "code", "message"), ERRORS, ids=[f"{i}-{r[0]}" for i, r in enumerate(ERRORS)])
def test_documented_errors(gw: GatewayProcess, operation: str, params: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(ClientError) as exc:
        getattr(gw.client("kinesisvideo"), operation)(**params)
    assert exc.value.response["Error"]["Code"] == code and message in exc.value.response["Error"]["Message"]


def test_model_validation_lists_every_violation(gw: GatewayProcess) -> None:
    """boto3 checks these itself, so this goes over the wire raw, as another SDK could send it."""
    import urllib.error
    import urllib.request

    body = {"StreamName": "cfg", "EdgeConfig": {"HubDeviceArn": "thing", "DeletionConfig": {"EdgeRetentionInHours": 0}}}
    req = urllib.request.Request(gw.url + "/startEdgeConfigurationUpdate", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.headers["x-amzn-ErrorType"] == "InvalidArgumentException"
    assert json.loads(exc.value.read())["message"] == (
        "3 validation errors detected: Value 'thing' at 'edgeConfig.hubDeviceArn' failed to satisfy constraint: Member must satisfy regular expression "
        r"pattern: arn:[a-z\d-]+:iot:[a-z0-9-]+:[0-9]+:thing/[a-zA-Z0-9_.-]+; Value null at 'edgeConfig.recorderConfig' failed to satisfy constraint: "
        "Member must not be null; Value '0' at 'edgeConfig.deletionConfig.edgeRetentionInHours' "
        "failed to satisfy constraint: Member must have value greater than or equal to 1")


def test_storage_tier(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    assert kv.describe_stream_storage_configuration(StreamName="cfg")["StreamStorageConfiguration"] == {"DefaultStorageTier": "HOT"}
    version = kv.describe_stream(StreamName="cfg")["StreamInfo"]["Version"]
    with pytest.raises(ClientError) as exc:
        kv.update_stream_storage_configuration(StreamName="cfg", CurrentVersion="stale", StreamStorageConfiguration={"DefaultStorageTier": "WARM"})
    assert exc.value.response["Error"]["Code"] == "VersionMismatchException"
    kv.update_stream_storage_configuration(StreamName="cfg", CurrentVersion=version, StreamStorageConfiguration={"DefaultStorageTier": "WARM"})
    assert kv.describe_stream_storage_configuration(StreamName="cfg")["StreamStorageConfiguration"] == {"DefaultStorageTier": "WARM"}


def test_tags_by_resource_arn(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    arn = arn_of(gw, "cfg")
    kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "site", "Value": "porch"}, {"Key": "team", "Value": "edge"}])
    assert kv.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"site": "porch", "team": "edge"}
    kv.untag_resource(ResourceARN=arn, TagKeyList=["site"])
    assert kv.list_tags_for_stream(StreamName="cfg")["Tags"] == {"team": "edge"}


@pytest.mark.parametrize("where", ["file", "s3"])
def test_images_written_on_a_schedule(gw: GatewayProcess, tmp_path: Path, where: str) -> None:
    kv = gw.client("kinesisvideo")
    name = f"img-{where}"
    create_stream(gw, name)
    uri, root = (f"file://localhost{tmp_path}/images", tmp_path / "images") if where == "file" else ("s3://stills/porch", gw.data_dir / "s3" / "stills" / "porch")
    config = {"Status": "ENABLED", "ImageSelectorType": "PRODUCER_TIMESTAMP", "DestinationConfig": {"Uri": uri, "DestinationRegion": "us-east-1"},
              "SamplingInterval": 500, "Format": "JPEG", "FormatConfig": {"JPEGQuality": "70"}, "WidthPixels": 80, "HeightPixels": 60}
    kv.update_image_generation_configuration(StreamName=name, ImageGenerationConfiguration=config)
    assert kv.describe_image_generation_configuration(StreamName=name)["ImageGenerationConfiguration"] == config
    send_live(gw, name, 3)
    wait_until(lambda: len(list(root.rglob("*.jpg"))) >= 3, timeout=15, what="scheduled images")
    images = sorted(root.rglob("*.jpg"))
    assert all(p.read_bytes().startswith(b"\xff\xd8") for p in images)
    assert all(p.relative_to(root).parts[0] == name for p in images)
    stamps = [int(p.stem) for p in images]
    assert all(b - a >= 500 for a, b in zip(stamps, stamps[1:]))
    kv.update_image_generation_configuration(StreamName=name, ImageGenerationConfiguration={**config, "Status": "DISABLED"})


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_fragment_notifications_to_a_data_stream_and_http(gw: GatewayProcess) -> None:
    kv = gw.client("kinesisvideo")
    kinesis = gw.client("kinesis")
    kinesis.create_stream(StreamName="video-events", ShardCount=1)
    create_stream(gw, "notified")
    kv.update_notification_configuration(StreamName="notified", NotificationConfiguration={
        "Status": "ENABLED", "DestinationConfig": {"Uri": "arn:aws:kinesis:us-east-1:000000000000:stream/video-events"}})
    send_live(gw, "notified", 2)
    # (read_shard makes up to 2 GetRecords calls: 4/s polled every 0.5 s, under the shard's 5/s limit)
    wait_until(lambda: len(read_shard(kinesis, "video-events", "shardId-0")[0]) >= 2, timeout=10, interval=0.5, what="notifications")
    records, _ = read_shard(kinesis, "video-events", "shardId-0")
    bodies = [json.loads(r["Data"]) for r in records]
    assert [b["NotificationType"] for b in bodies] == ["FRAGMENT_PERSISTED"] * 2 and records[0]["PartitionKey"] == "notified"
    listed = gw.client("kinesis-video-archived-media").list_fragments(StreamName="notified")["Fragments"]
    assert sorted(b["FragmentNumber"] for b in bodies) == sorted(f["FragmentNumber"] for f in listed)

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kv.update_notification_configuration(StreamName="notified", NotificationConfiguration={
            "Status": "ENABLED", "DestinationConfig": {"Uri": f"http://127.0.0.1:{port}/kvs"}})
        assert kv.describe_notification_configuration(StreamName="notified")["NotificationConfiguration"]["DestinationConfig"]["Uri"].endswith("/kvs")
        send_live(gw, "notified", 1)
        wait_until(lambda: len(_Collector.received) >= 1, timeout=10, what="HTTP notification")
        assert _Collector.received[-1]["StreamName"] == "notified"
    finally:
        server.shutdown()


def test_edge_configuration_lifecycle_with_the_agent_calls(gw: GatewayProcess) -> None:
    import urllib.request

    def agent(path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(gw.url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    kv = gw.client("kinesisvideo")
    create_stream(gw, "edge-cam")
    started = kv.start_edge_configuration_update(StreamName="edge-cam", EdgeConfig=EDGE)
    assert started["SyncStatus"] == "SYNCING" and started["EdgeConfig"] == EDGE
    with pytest.raises(ClientError) as exc:  # one update at a time
        kv.start_edge_configuration_update(StreamName="edge-cam", EdgeConfig=EDGE)
    assert exc.value.response["Error"]["Code"] == "ResourceInUseException"
    listed = kv.list_edge_agent_configurations(HubDeviceArn=HUB)["EdgeConfigs"]
    assert [c["StreamName"] for c in listed] == ["edge-cam"]
    assert kv.list_edge_agent_configurations(HubDeviceArn=HUB.replace("pi-porch", "other"))["EdgeConfigs"] == []
    fetched = agent("/edgeAgent/configurations", {"HubDeviceArn": HUB})["EdgeConfigs"]
    assert fetched[0]["EdgeConfig"] == EDGE
    assert kv.describe_edge_configuration(StreamName="edge-cam")["SyncStatus"] == "ACKNOWLEDGED"
    status = {"LastRecorderStatus": {"JobStatusDetails": "recording", "LastCollectedTime": time.time(), "LastUpdatedTime": time.time(), "RecorderStatus": "SUCCESS"}}
    agent("/edgeAgent/status", {"StreamARN": fetched[0]["StreamARN"], "SyncStatus": "IN_SYNC", "EdgeAgentStatus": status})
    described = kv.describe_edge_configuration(StreamName="edge-cam")
    assert described["SyncStatus"] == "IN_SYNC" and described["EdgeAgentStatus"]["LastRecorderStatus"]["RecorderStatus"] == "SUCCESS"
    kv.delete_edge_configuration(StreamName="edge-cam")
    assert kv.describe_edge_configuration(StreamName="edge-cam")["SyncStatus"] == "DELETING"
    assert agent("/edgeAgent/configurations", {"HubDeviceArn": HUB})["EdgeConfigs"][0]["SyncStatus"] == "DELETING"
    with pytest.raises(ClientError) as exc:  # gone once the agent has seen the delete
        kv.describe_edge_configuration(StreamName="edge-cam")
    assert exc.value.response["Error"]["Code"] == "StreamEdgeConfigurationNotFoundException"
