"""Enhanced (shard-level) monitoring: the metrics AWS names, per shard, on ``GET /metrics``.

A stream under EnableEnhancedMonitoring gets, for each enabled metric, one Prometheus series
per shard (labels ``stream`` and ``shard``); the names follow AWS's (HELP gives the AWS name):

    IncomingBytes                       kinesis_shard_incoming_bytes_total
    IncomingRecords                     kinesis_shard_incoming_records_total
    OutgoingBytes                       kinesis_shard_outgoing_bytes_total
    OutgoingRecords                     kinesis_shard_outgoing_records_total
    WriteProvisionedThroughputExceeded  kinesis_shard_write_provisioned_throughput_exceeded_total
    ReadProvisionedThroughputExceeded   kinesis_shard_read_provisioned_throughput_exceeded_total
    IteratorAgeMilliseconds             kinesis_shard_iterator_age_milliseconds (last GetRecords)

Counting happens on the event loop and only for streams with a metric enabled, so streams
without monitoring pay one attribute check per call. DisableEnhancedMonitoring hides the series
(as AWS stops publishing them); counts restart at zero with the gateway, as Prometheus expects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from gateway.kds.store import PutEntry, PutResult, ReadResult, Store, Stream

#: AWS metric name -> (Prometheus name, is a counter, help)
METRICS: dict[str, tuple[str, bool, str]] = {
    "IncomingBytes": ("kinesis_shard_incoming_bytes", True, "IncomingBytes: bytes put to the shard"),
    "IncomingRecords": ("kinesis_shard_incoming_records", True, "IncomingRecords: records put to the shard"),
    "OutgoingBytes": ("kinesis_shard_outgoing_bytes", True, "OutgoingBytes: bytes GetRecords returned from the shard"),
    "OutgoingRecords": ("kinesis_shard_outgoing_records", True, "OutgoingRecords: records GetRecords returned from the shard"),
    "WriteProvisionedThroughputExceeded": ("kinesis_shard_write_provisioned_throughput_exceeded", True, "WriteProvisionedThroughputExceeded: records refused by the shard's write limit"),
    "ReadProvisionedThroughputExceeded": ("kinesis_shard_read_provisioned_throughput_exceeded", True, "ReadProvisionedThroughputExceeded: GetRecords calls refused by the shard's read limit"),
    "IteratorAgeMilliseconds": ("kinesis_shard_iterator_age_milliseconds", False, "IteratorAgeMilliseconds: age of the last record the last GetRecords returned"),
}


class ShardMonitor:
    """Per-shard figures, kept for the streams that have enhanced monitoring on."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: (stream key, shard id) -> AWS metric name -> value
        self.values: dict[tuple[int, str], dict[str, float]] = {}

    def _add(self, stream: Stream, shard_id: str, metric: str, amount: float) -> None:
        slot = self.values.setdefault((stream.key, shard_id), {})
        slot[metric] = slot.get(metric, 0.0) + amount

    def put(self, stream: Stream, entries: list[PutEntry], results: list[PutResult], throttled: int) -> None:
        if not stream.settings.metrics:
            return
        for (key, data, _, _), (shard_id, seq) in zip(entries, results):
            if seq == throttled:
                self._add(stream, shard_id, "WriteProvisionedThroughputExceeded", 1)
            else:
                self._add(stream, shard_id, "IncomingRecords", 1)
                self._add(stream, shard_id, "IncomingBytes", len(data) + len(key))

    def read(self, stream: Stream, shard_id: str, result: ReadResult) -> None:
        if not stream.settings.metrics:
            return
        self._add(stream, shard_id, "OutgoingRecords", len(result.rows))
        self._add(stream, shard_id, "OutgoingBytes", result.nbytes)
        age = max(0.0, (time.time() - result.rows[-1][1]) * 1000) if result.rows else 0.0
        self.values.setdefault((stream.key, shard_id), {})["IteratorAgeMilliseconds"] = age

    def read_throttled(self, stream: Stream, shard_id: str) -> None:
        if stream.settings.metrics:
            self._add(stream, shard_id, "ReadProvisionedThroughputExceeded", 1)

    def collect(self) -> Iterator[Metric]:
        """The prometheus_client collector protocol: enabled metrics of live streams only."""
        streams = self.store.streams_by_key
        for gone in [k for k in self.values if k[0] not in streams]:  # deleted streams' figures
            del self.values[gone]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for aws_name, (name, counter, doc) in METRICS.items():
            cls = CounterMetricFamily if counter else GaugeMetricFamily
            families[aws_name] = cls(name, doc, labels=["stream", "shard"])
        for stream in streams.values():
            enabled = stream.settings.metrics
            if not enabled:
                continue
            for shard in stream.shards:
                slot = self.values.get((stream.key, shard.shard_id), {})
                for metric in enabled:
                    families[metric].add_metric([stream.name, shard.shard_id], slot.get(metric, 0.0))
        yield from families.values()


MONITOR = web.AppKey("kds_monitor", ShardMonitor)
