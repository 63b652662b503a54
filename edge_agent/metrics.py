"""The agent's Prometheus metrics, one registry for the whole process.

Sources count what they take in and reject; the spool counts depth and drops; the
forwarders count what they send, retry and get throttled on. ``edge-agent status`` and
the metrics endpoint read these.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
#: process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds...:
#: what the agent costs, shown by ``edge-agent status``.
ProcessCollector(registry=REGISTRY)


class DiskWritten(Collector):
    """``edge_agent_disk_written_bytes_total``: bytes this process made the kernel write to storage
    (``write_bytes`` of /proc/self/io: spool, WAL, logs), what wears an SD card."""

    def collect(self) -> Iterator[Metric]:
        try:
            with open("/proc/self/io") as f:
                fields = dict(line.split(": ", 1) for line in f.read().splitlines())
        except OSError:  # not Linux, or /proc hidden
            return
        yield CounterMetricFamily("edge_agent_disk_written_bytes", "Bytes the agent had written to storage (/proc/self/io)",
                                  value=int(fields["write_bytes"]))


REGISTRY.register(DiskWritten())

RECORDS_IN = Counter("edge_agent_records_in", "Records a source committed to the spool", ["source"], registry=REGISTRY)
RECORDS_REJECTED = Counter(
    "edge_agent_records_rejected", "Input a source refused (bad payload, oversize...), by reason", ["source", "reason"], registry=REGISTRY
)
RECORDS_DROPPED = Counter("edge_agent_records_dropped", "Spooled records dropped by the size-cap policy, by kind", ["kind"], registry=REGISTRY)
RECORDS_OUT = Counter("edge_agent_records_out", "Records of a source the gateway acknowledged", ["source"], registry=REGISTRY)
RECORDS_SENT = Counter("edge_agent_records_sent", "Records (or fragments) the gateway acknowledged", ["stream"], registry=REGISTRY)
SEND_RETRIES = Counter("edge_agent_send_retries", "Records (or fragments) sent again after a failure", ["stream"], registry=REGISTRY)
THROTTLED = Counter("edge_agent_throttled", "Records the gateway refused with ProvisionedThroughputExceeded", ["stream"], registry=REGISTRY)
SEND_ERRORS = Counter("edge_agent_send_errors", "Failed send attempts (connection, 5xx, error acks), by reason", ["lane", "reason"], registry=REGISTRY)
SPOOL_RECORDS = Gauge("edge_agent_spool_records", "Records waiting in the spool", ["lane"], registry=REGISTRY)
SPOOL_BYTES = Gauge("edge_agent_spool_bytes", "Payload bytes waiting in the spool", registry=REGISTRY)
LAST_SEND_SUCCESS = Gauge(
    "edge_agent_last_send_success_timestamp_seconds", "Unix time of the last acknowledged send", ["lane"], registry=REGISTRY
)
