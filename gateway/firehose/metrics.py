"""Prometheus metrics of the Firehose buffer, read from it at scrape time (``GET /metrics``):

    gateway_firehose_buffered_records{delivery_stream}        records waiting for delivery
    gateway_firehose_buffered_bytes{delivery_stream}          their bytes
    gateway_firehose_oldest_record_age_seconds{delivery_stream}   how far delivery is behind
    gateway_firehose_<counter>_total                          objects_delivered, bytes_delivered,
        records_delivered, records_failed (to an error output), redelivered_batches (written
        again after a crash), http_requests_delivered -- kept in the buffer, so across restarts
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.firehose.store import BufferStore

COUNTERS = {
    "objects_delivered": "Objects written (data and error objects)",
    "bytes_delivered": "Bytes of the objects written",
    "records_delivered": "Records delivered to their destination",
    "records_failed": "Records sent to an error output",
    "redelivered_batches": "Batches written again after a crash (same keys)",
    "http_requests_delivered": "Batches an HTTP endpoint accepted",
}


class FirehoseCollector(Collector):
    def __init__(self, store: BufferStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        records = GaugeMetricFamily("gateway_firehose_buffered_records", "Records waiting for delivery", labels=["delivery_stream"])
        nbytes = GaugeMetricFamily("gateway_firehose_buffered_bytes", "Bytes waiting for delivery", labels=["delivery_stream"])
        age = GaugeMetricFamily("gateway_firehose_oldest_record_age_seconds", "Age of the oldest record waiting", labels=["delivery_stream"])
        now = time.time()
        for name, pending in sorted(self.store.pending.items()):
            records.add_metric([name], pending.records)
            nbytes.add_metric([name], pending.nbytes)
            age.add_metric([name], max(0.0, now - pending.oldest) if pending.records else 0.0)
        yield from (records, nbytes, age)
        counts = self.store.counters()
        for key, text in COUNTERS.items():
            yield CounterMetricFamily(f"gateway_firehose_{key}", text, value=counts.get(key, 0))
