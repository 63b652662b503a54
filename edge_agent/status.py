"""``edge-agent status``: what is waiting, what was dropped, when the last send went through.

Asks the running agent's metrics endpoint first (it knows everything: per-source counts, retries,
throttles). If no agent answers, it reads the spool file through ``edge_agent.spool.inspect``
(read-only, no lock): depth, bytes, drops and the forwarders' last successful sends survive there.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge_agent import spool
from edge_agent.forwarder_core import last_send_key


@dataclass
class Status:
    origin: str
    spool_records: dict[str, int] = field(default_factory=dict)
    spool_bytes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    last_send: dict[str, float] = field(default_factory=dict)
    records_in: dict[str, float] = field(default_factory=dict)
    records_out: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, float] = field(default_factory=dict)
    retries: float = 0
    throttled: float = 0
    #: lane -> producer time (unix seconds) of the oldest record still waiting: how far behind we are.
    oldest: dict[str, float] = field(default_factory=dict)
    #: What the running agent costs (from its metrics): CPU seconds and bytes written to storage
    #: since it started (unix seconds), resident memory now.
    started: float = 0
    cpu_seconds: float = 0
    rss_bytes: int = 0
    disk_written_bytes: int = 0

    def cost(self, now: float | None = None) -> dict[str, float] | None:
        """CPU % of one core and disk MiB written per day, averaged since the agent started; RSS MiB."""
        uptime = (now or time.time()) - self.started
        if not self.started or uptime <= 0:
            return None
        return {
            "uptime_hours": uptime / 3600,
            "cpu_percent": 100 * self.cpu_seconds / uptime,
            "rss_mib": self.rss_bytes / 2**20,
            "disk_mib_per_day": self.disk_written_bytes / uptime * 86400 / 2**20,
        }

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def render(self) -> str:
        now = time.time()
        lines = [f"status from {self.origin}"]
        lines.append("spool: " + ", ".join(f"{lane} {n}" for lane, n in sorted(self.spool_records.items())) + f"; {self.spool_bytes} bytes")
        lines.append("dropped (spool cap): " + (", ".join(f"{k} {n}" for k, n in sorted(self.dropped.items())) or "none"))
        for lane in ("records", "media"):
            ts = self.last_send.get(lane)
            lines.append(f"last successful send ({lane}): " + (f"{now - ts:.1f}s ago" if ts else "never"))
        for lane, ts in sorted(self.oldest.items()):
            lines.append(f"oldest waiting ({lane}): {now - ts:.1f}s old")
        if self.records_in or self.records_out:
            for source in sorted(set(self.records_in) | set(self.records_out)):
                lines.append(f"source {source}: in {int(self.records_in.get(source, 0))}, out {int(self.records_out.get(source, 0))}")
        if self.rejected:
            lines.append("rejected: " + ", ".join(f"{k} {int(n)}" for k, n in sorted(self.rejected.items())))
        if self.origin.startswith("http"):
            lines.append(f"retries {int(self.retries)}, throttled {int(self.throttled)}")
        cost = self.cost(now)
        if cost:
            lines.append(
                f"cost: CPU {cost['cpu_percent']:.1f} % of a core, RSS {cost['rss_mib']:.0f} MiB, "
                f"disk written {cost['disk_mib_per_day']:.0f} MiB/day (averages over {cost['uptime_hours']:.1f} h since start)"
            )
        return "\n".join(lines)


def from_metrics(url: str, timeout: float = 2.0) -> Status:
    """Parse the agent's Prometheus endpoint; raises OSError when nothing answers."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    status = Status(origin=url)
    rejected: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "edge_agent_spool_records":
                status.spool_records[labels["lane"]] = int(value)
            elif name == "edge_agent_spool_bytes":
                status.spool_bytes = int(value)
            elif name == "edge_agent_records_dropped_total":
                status.dropped[labels["kind"]] = int(value)
            elif name == "edge_agent_last_send_success_timestamp_seconds":
                status.last_send[labels["lane"]] = value
            elif name == "process_start_time_seconds":
                status.started = value
            elif name == "process_cpu_seconds_total":
                status.cpu_seconds = value
            elif name == "process_resident_memory_bytes":
                status.rss_bytes = int(value)
            elif name == "edge_agent_disk_written_bytes_total":
                status.disk_written_bytes = int(value)
            elif name == "edge_agent_records_in_total":
                status.records_in[labels["source"]] = value
            elif name == "edge_agent_records_out_total":
                status.records_out[labels["source"]] = value
            elif name == "edge_agent_records_rejected_total":
                rejected[f"{labels['source']}/{labels['reason']}"] += value
            elif name == "edge_agent_send_retries_total":
                status.retries += value
            elif name == "edge_agent_throttled_total":
                status.throttled += value
    status.rejected = dict(rejected)
    return status


def from_spool(path: str | Path) -> Status:
    """Depth, bytes, drops, last sends and oldest records, read from the spool file (read-only)."""
    contents = spool.inspect(path)
    status = Status(origin=str(path), spool_records=dict(contents.records), spool_bytes=contents.bytes, dropped=dict(contents.dropped))
    for lane in spool.LANES:
        saved = contents.checkpoints.get(last_send_key(lane))
        try:
            if saved is not None:
                status.last_send[lane] = float(saved)
        except ValueError:
            pass
    _add_oldest(status, contents)
    return status


def _add_oldest(status: Status, contents: spool.SpoolContents) -> None:
    for lane, ms in contents.oldest_ms.items():
        status.oldest[lane] = ms / 1000


def add_oldest(status: Status, spool_path: str | Path) -> None:
    """Best effort: the age of the oldest waiting record, read from the spool file."""
    try:
        _add_oldest(status, spool.inspect(spool_path))
    except (OSError, spool.SpoolError):
        pass


def get_status(metrics_url: str | None, spool_path: str | None) -> Status:
    if metrics_url:
        try:
            status = from_metrics(metrics_url)
        except (OSError, urllib.error.URLError):
            if not spool_path:
                raise
        else:
            if spool_path and Path(spool_path).exists():
                add_oldest(status, spool_path)
            return status
    if not spool_path:
        raise FileNotFoundError("no metrics endpoint and no spool path to read")
    return from_spool(spool_path)
