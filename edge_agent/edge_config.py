"""Remote edge configuration, as AWS's KVS edge agent takes it: the gateway's
``StartEdgeConfigurationUpdate`` for this device's cameras, fetched and applied.

This agent is the hub device ``arn:aws:iot:<region>:<account>:thing/<agent id>``: every
``EDGE_POLL_SECONDS`` it asks the gateway (``POST /edgeAgent/configurations`` with its thing
name) for the edge configurations of its streams, applies them and reports back
(``POST /edgeAgent/status``: IN_SYNC, or SYNC_FAILED with the reason), which is what
``DescribeEdgeConfiguration`` shows. Applying means:

* ``RecorderConfig.ScheduleConfig``: the camera of that stream spools fragments only inside a
  recording window (a window opens at each time the Quartz cron ``ScheduleExpression`` names and
  lasts ``DurationInSeconds``); fragments outside are not kept. No schedule: always record.
* ``UploaderConfig.ScheduleConfig``: the stream's spooled fragments are sent only inside an upload
  window; outside they wait in the spool.
* ``DeletionConfig.LocalSizeConfig``: ``MaxLocalMediaSizeInMB`` caps the spool; with
  ``DELETE_OLDEST_MEDIA`` the spool drops its oldest records (video first, by ``drop_order``) to stay
  under it, with ``DENY_NEW_MEDIA`` new fragments are refused while it is full.

A deleted configuration (SyncStatus DELETING) puts the stream back to always record, always upload.
The cron dialect is AWS's (six or seven fields: seconds minutes hours day-of-month month
day-of-week [year], ``*``, ``?``, lists, ranges, ``/`` steps, ``MON``..``SUN``, ``JAN``..``DEC``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

log = logging.getLogger("edge_agent.edge_config")

EDGE_POLL_SECONDS = 30.0
_NAMES = {"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12,
          "SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
#: (lowest, highest) of each cron field; day-of-week is Quartz's 1 (Sunday) .. 7 (Saturday).
_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (1, 7), (1970, 2199)]


def _field(text: str, low: int, high: int) -> frozenset[int] | None:
    """The values a cron field allows (None: any)."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = _NAMES.get(a.upper(), None) or int(a), _NAMES.get(b.upper(), None) or int(b)
        else:
            start = end = _NAMES.get(base.upper(), None) or int(base)
            if step:
                end = high
        if not low <= start <= high or not low <= end <= high:
            raise ValueError(f"cron value {part!r} outside {low}..{high}")
        values.update(range(start, end + 1, int(step) if step else 1))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """Windows of ``duration`` seconds opening at the times a Quartz cron expression names."""

    fields: tuple[frozenset[int] | None, ...]
    duration: int

    @classmethod
    def parse(cls, expression: str, duration: int) -> Schedule:
        parts = expression.split()
        if len(parts) not in (6, 7):
            raise ValueError(f"ScheduleExpression {expression!r}: expected 6 or 7 fields (sec min hour day month weekday [year])")
        return cls(tuple(_field(p, *r) for p, r in zip(parts, _RANGES)), duration)

    def fires(self, t: datetime) -> bool:
        dow = (t.isoweekday() % 7) + 1  # Quartz: Sunday = 1
        for allowed, value in zip(self.fields, (t.second, t.minute, t.hour, t.day, t.month, dow, t.year)):
            if allowed is not None and value not in allowed:
                return False
        return True

    def open_at(self, now: datetime) -> bool:
        """Is ``now`` inside a window (one opened less than ``duration`` seconds ago)?"""
        start = now.replace(microsecond=0)
        seconds_fixed = self.fields[0] is not None and len(self.fields[0]) == 1
        step = 60 if seconds_fixed else 1
        if seconds_fixed:  # fire times are whole minutes at that second: check minutes only
            start = start.replace(second=next(iter(self.fields[0])))  # type: ignore[arg-type]
            if start > now:
                start -= timedelta(minutes=1)
        t = start
        while (now - t).total_seconds() < self.duration:
            if self.fires(t):
                return True
            t -= timedelta(seconds=step)
        return False


@dataclass(frozen=True)
class StreamPolicy:
    recorder: Schedule | None = None
    uploader: Schedule | None = None
    max_local_bytes: int = 0
    deny_when_full: bool = False


class EdgeSchedules:
    """What the applied edge configurations allow, per stream; read by the camera and forwarder."""

    def __init__(self) -> None:
        self.policies: dict[str, StreamPolicy] = {}
        self.spool_full = False

    def may_record(self, stream: str, now: datetime | None = None) -> bool:
        policy = self.policies.get(stream)
        if policy is None:
            return True
        if policy.deny_when_full and self.spool_full:
            return False
        return policy.recorder is None or policy.recorder.open_at(now or datetime.now())

    def may_upload(self, stream: str, now: datetime | None = None) -> bool:
        policy = self.policies.get(stream)
        return policy is None or policy.uploader is None or policy.uploader.open_at(now or datetime.now())


#: The agent's one set of schedules (a camera source asks it before spooling a fragment).
SCHEDULES = EdgeSchedules()


def policy_of(edge: dict[str, Any]) -> StreamPolicy:
    """A StreamPolicy from an API ``EdgeConfig``; ValueError saying what cannot be applied."""
    def schedule(section: dict[str, Any] | None) -> Schedule | None:
        config = (section or {}).get("ScheduleConfig")
        return None if not config else Schedule.parse(config["ScheduleExpression"], int(config["DurationInSeconds"]))

    local = (edge.get("DeletionConfig") or {}).get("LocalSizeConfig") or {}
    return StreamPolicy(schedule(edge.get("RecorderConfig")), schedule(edge.get("UploaderConfig")),
                        int(local.get("MaxLocalMediaSizeInMB", 0)) * 1024 * 1024, local.get("StrategyOnFullSize") == "DENY_NEW_MEDIA")


class EdgeConfigSync:
    """Fetches this device's edge configurations, applies them, reports back (a thread's loop)."""

    def __init__(self, transport: Any, video_url: str, thing_name: str, spool: Any, media: Any, schedules: EdgeSchedules = SCHEDULES) -> None:
        self.transport = transport
        self.video_url = video_url.rstrip("/")
        self.thing = thing_name
        self.spool = spool
        self.media = media
        self.schedules = schedules
        self.spool_cap = spool.max_bytes

    def sync_once(self) -> int:
        """One fetch/apply/report round; the number of configurations applied."""
        answer = self.transport.post_json(f"{self.video_url}/edgeAgent/configurations", "kinesisvideo", {"ThingName": self.thing}, {"Content-Type": "application/json"})
        policies: dict[str, StreamPolicy] = {}
        for config in answer.get("EdgeConfigs", []):
            stream = config.get("StreamName", "")
            if config.get("SyncStatus") == "DELETING":
                continue
            try:
                policies[stream] = policy_of(config.get("EdgeConfig", {}))
                status: dict[str, Any] = {"SyncStatus": "IN_SYNC"}
            except (ValueError, KeyError, TypeError) as exc:
                status = {"SyncStatus": "SYNC_FAILED", "FailedStatusDetails": str(exc)[:500]}
                log.warning("edge configuration of %s cannot be applied: %s", stream, exc)
            now = time.time()
            status["EdgeAgentStatus"] = {"LastRecorderStatus": {"JobStatusDetails": "schedule applied", "LastCollectedTime": now, "LastUpdatedTime": now,
                                                                "RecorderStatus": "SUCCESS" if status["SyncStatus"] == "IN_SYNC" else "USER_ERROR"}}
            self.transport.post_json(f"{self.video_url}/edgeAgent/status", "kinesisvideo", {"StreamARN": config["StreamARN"], **status}, {"Content-Type": "application/json"})
        self.schedules.policies = policies
        self.enforce()
        return len(policies)

    def enforce(self) -> None:
        """Apply what changes with time: upload windows and the local size limit."""
        limits = [p.max_local_bytes for p in self.schedules.policies.values() if p.max_local_bytes]
        self.spool.max_bytes = min([self.spool_cap, *limits])  # DELETE_OLDEST_MEDIA: the spool drops the oldest to fit
        self.schedules.spool_full = bool(limits) and self.spool.stats().bytes >= min(limits) * 0.95
        for stream in self.schedules.policies:
            if not self.schedules.may_upload(stream):
                self.media.hold(stream, EDGE_POLL_SECONDS / 6)

    def run(self, stop: threading.Event) -> None:
        next_fetch = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_fetch:
                try:
                    self.sync_once()
                except Exception as exc:  # the gateway may be away: keep the last configuration
                    log.info("edge configuration not fetched: %s", exc)
                next_fetch = time.monotonic() + EDGE_POLL_SECONDS
            self.enforce()
            stop.wait(EDGE_POLL_SECONDS / 6)
