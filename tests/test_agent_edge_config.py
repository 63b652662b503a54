"""The agent applies its streams' edge configuration (StartEdgeConfigurationUpdate on the gateway):
AWS cron windows for recording and uploading, the local size limit, and the status it reports."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agent_helpers import running_media_forwarder, synthetic_fragments, video_records, wait_until  # noqa: E402
from video_support import create_stream  # noqa: E402

from edge_agent.edge_config import EdgeConfigSync, EdgeSchedules, Schedule, policy_of  # noqa: E402
from edge_agent.spool import Spool  # noqa: E402
from helpers import GatewayProcess  # noqa: E402

WEEKDAY_MORNING = datetime(2026, 11, 30, 9, 30, 0)  # a Monday
SATURDAY = datetime(2026, 11, 28, 9, 30, 0)


@pytest.mark.parametrize(("expression", "duration", "now", "open_"), [
    ("0 0 8-18 ? * MON-FRI *", 3600, WEEKDAY_MORNING, True),
    ("0 0 8-18 ? * MON-FRI *", 3600, SATURDAY, False),
    ("0 0 8-18 ? * MON-FRI *", 1200, WEEKDAY_MORNING, False),  # 09:00 + 20 min is over by 09:30
    ("0 15,30 9 * * ?", 60, WEEKDAY_MORNING, True),
    ("0 0/20 * * * ?", 300, WEEKDAY_MORNING.replace(minute=44), True),
    ("0 0/20 * * * ?", 300, WEEKDAY_MORNING.replace(minute=46), False),
    ("0 0 9 ? JAN,DEC 2 2026", 3600, WEEKDAY_MORNING, False),  # Mondays of Jan/Dec... but it is November
    ("0 0 9 ? NOV 2 2026", 3600, WEEKDAY_MORNING, True),
])
def test_cron_windows(expression: str, duration: int, now: datetime, open_: bool) -> None:
    assert Schedule.parse(expression, duration).open_at(now) is open_


@pytest.mark.parametrize("expression", ["0 0 25 * * ?", "* * *", "0 0 9 ? * FUNDAY *"])
def test_bad_cron_is_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        Schedule.parse(expression, 60)


def test_schedules_gate_recording_and_uploading() -> None:
    schedules = EdgeSchedules()
    schedules.policies["porch"] = policy_of({"RecorderConfig": {"ScheduleConfig": {"ScheduleExpression": "0 0 8-18 ? * MON-FRI *", "DurationInSeconds": 3600}},
                                             "DeletionConfig": {"LocalSizeConfig": {"MaxLocalMediaSizeInMB": 64, "StrategyOnFullSize": "DENY_NEW_MEDIA"}}})
    assert schedules.may_record("porch", WEEKDAY_MORNING) and not schedules.may_record("porch", SATURDAY)
    assert schedules.may_upload("porch", SATURDAY) and schedules.may_record("garage", SATURDAY)
    schedules.spool_full = True
    assert not schedules.may_record("porch", WEEKDAY_MORNING)


def test_agent_fetches_applies_and_reports(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "data").start()
    try:
        kv = create_stream(gw, "porch")
        never = {"ScheduleExpression": "0 0 0 1 1 ? 2099", "DurationInSeconds": 60}  # the upload window opens in 2099
        kv.start_edge_configuration_update(StreamName="porch", EdgeConfig={
            "HubDeviceArn": "arn:aws:iot:us-east-1:000000000000:thing/pi-porch",
            "RecorderConfig": {"MediaSourceConfig": {"MediaUriSecretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:porch", "MediaUriType": "RTSP_URI"}},
            "UploaderConfig": {"ScheduleConfig": never},
            "DeletionConfig": {"LocalSizeConfig": {"MaxLocalMediaSizeInMB": 64, "StrategyOnFullSize": "DELETE_OLDEST_MEDIA"}}})
        spool = Spool(str(tmp_path / "spool.db"), max_bytes=512 * 1024 * 1024)
        with running_media_forwarder(spool, gw.url, agent_id="pi-porch") as media:
            schedules = EdgeSchedules()
            sync = EdgeConfigSync(media.transport, gw.url, "pi-porch", spool, media, schedules)
            assert sync.sync_once() == 1
            assert spool.max_bytes == 64 * 1024 * 1024  # the local size limit now caps the spool
            assert not schedules.may_upload("porch")
            spool.append(video_records("porch", synthetic_fragments(2)))
            described = kv.describe_edge_configuration(StreamName="porch")
            assert described["SyncStatus"] == "IN_SYNC" and described["EdgeAgentStatus"]["LastRecorderStatus"]["RecorderStatus"] == "SUCCESS"
            time.sleep(1.5)  # proving an absence takes a while: the forwarder would send within ~0.1 s
            assert spool.stats().records.get("media", 0) == 2  # held: outside the upload window, nothing is sent
            kv.delete_edge_configuration(StreamName="porch")
            sync.sync_once()  # the agent sees the delete: always upload again
            assert schedules.may_upload("porch") and spool.max_bytes == 512 * 1024 * 1024
            media.hold("porch", 0)
            wait_until(lambda: spool.stats().records.get("media", 0) == 0, timeout=20)
        spool.close()
    finally:
        gw.kill()
