"""The consumer's Prometheus metrics, one registry per process (served on ``[metrics] listen``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS_PROCESSED = Counter("edge_consumer_records_processed", "User records handed to the record processor",
                            ["stream", "shard"], registry=REGISTRY)
MILLIS_BEHIND_LATEST = Gauge("edge_consumer_millis_behind_latest", "How far the last batch of a shard was behind its tip, ms",
                             ["stream", "shard"], registry=REGISTRY)
LEASES_HELD = Gauge("edge_consumer_leases_held", "Leases this worker holds", ["stream"], registry=REGISTRY)
LEASE_TAKES = Counter("edge_consumer_lease_takes", "Leases taken, by how (expired, stolen)", ["stream", "how"], registry=REGISTRY)
LEASES_LOST = Counter("edge_consumer_leases_lost", "Leases lost to another worker or to a failed renew", ["stream"], registry=REGISTRY)
CHECKPOINTS = Counter("edge_consumer_checkpoints", "Checkpoints written", ["stream"], registry=REGISTRY)
THROTTLED = Counter("edge_consumer_throttled", "Reads refused with ProvisionedThroughputExceeded", ["stream"], registry=REGISTRY)
PROCESSOR_ERRORS = Counter("edge_consumer_processor_errors", "Exceptions raised by the record processor", ["stream"], registry=REGISTRY)
HANDLER_FAILURES = Counter("edge_consumer_handler_failures", "Handler calls that failed (raised or reported batchItemFailures)",
                           ["stream"], registry=REGISTRY)
RECORDS_SET_ASIDE = Counter("edge_consumer_records_set_aside", "Records that failed every attempt (sent to the on-failure stream or skipped)",
                            ["stream"], registry=REGISTRY)
