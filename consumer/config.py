"""Consumer configuration: typed sections with named defaults, loaded from TOML.

The file mirrors these dataclasses: ``[consumer]`` (what to read and how leases behave),
``[leases]`` (where the lease table lives), ``[polling]``, ``[handler]`` (Lambda-style batches),
``[gateway]`` (the Kinesis endpoint and credentials: the agent's section, same keys) and
``[metrics]``. ``typed_config`` checks every key and reports every error with its key, as for
the agent and the gateway; ``configs/consumer.example.toml`` documents each option with its default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import typed_config
from consumer.errors import ConfigError
from edge_agent import config as agent_config
from edge_agent.config import STREAM_NAME, GatewaySection
from typed_config import positive, url

DEFAULT_CONFIG_PATH = "/etc/edge-consumer/consumer.toml"
DEFAULT_LEASES_PATH = "/var/lib/edge-consumer/leases.db"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9110"
#: module:attribute, as in console-script entry points.
OBJECT_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
#: Lease table names: the KCL's (a DynamoDB table name).
APPLICATION_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")


@dataclass(frozen=True)
class ConsumerSection:
    #: Required: the Kinesis data stream to read.
    stream: str = ""
    #: Names the lease table: workers with the same application share the stream's shards.
    application: str = "edge-consumer"
    #: Record processor factory "module:attr" (a class with process_records...), or use handler.
    processor: str = ""
    #: Lambda-style handler "module:function" getting batches (see [handler]); set this or processor.
    handler: str = ""
    #: Unique per running worker (leaseOwner). Empty: <hostname>-<pid>-<random>.
    worker_id: str = ""
    #: Where a shard with no checkpoint starts.
    initial_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    #: For AT_TIMESTAMP: ISO 8601, e.g. "2026-11-30T12:00:00+00:00".
    initial_timestamp: str = ""
    #: A lease not renewed for this long is taken over by another worker.
    failover_seconds: float = 10.0
    #: How often to look for leases to take or steal; 0 = failover_seconds / 2.
    take_interval_seconds: float = 0.0
    #: How often to list the stream's shards for new ones (splits and merges are also followed at shard end).
    shard_sync_seconds: float = 60.0
    #: Most leases one worker holds; 0 = no cap.
    max_leases: int = 0
    #: "polling" (GetRecords) or "fanout" (SubscribeToShard with a registered consumer).
    reader: Literal["polling", "fanout"] = "polling"
    #: Enhanced fan-out consumer name (registered if missing). Empty: the application name.
    consumer_name: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def check(self) -> list[str]:
        problems = positive(self, "failover_seconds", "shard_sync_seconds")
        if not self.stream:
            problems.append("stream: required")
        elif not STREAM_NAME.fullmatch(self.stream):
            problems.append(f"stream: {self.stream!r} is not a valid stream name")
        if not APPLICATION_NAME.fullmatch(self.application):
            problems.append(f"application: expected 3-255 letters, digits, _ . - (it names the lease table), got {self.application!r}")
        if bool(self.processor) == bool(self.handler):
            problems.append("processor: set exactly one of processor and handler")
        problems += [f"{k}: expected module:attribute, got {getattr(self, k)!r}" for k in ("processor", "handler")
                     if getattr(self, k) and not OBJECT_REF.fullmatch(getattr(self, k))]
        if self.initial_position == "AT_TIMESTAMP" and not self.initial_timestamp:
            problems.append("initial_timestamp: required with initial_position = AT_TIMESTAMP")
        if self.initial_timestamp:
            try:
                datetime.fromisoformat(self.initial_timestamp)
            except ValueError:
                problems.append(f"initial_timestamp: expected ISO 8601, got {self.initial_timestamp!r}")
        if self.take_interval_seconds < 0 or self.max_leases < 0:
            problems.append("take_interval_seconds: take_interval_seconds and max_leases must be >= 0")
        return problems


@dataclass(frozen=True)
class LeasesSection:
    #: "sqlite" (one file shared by the workers of one host) or "dynamodb" (workers on many hosts).
    store: Literal["sqlite", "dynamodb"] = "sqlite"
    #: SQLite lease file.
    path: str = DEFAULT_LEASES_PATH
    #: DynamoDB table. Empty: the application name (as the KCL names it).
    table: str = ""
    #: DynamoDB endpoint. Empty: AWS's for [gateway] region.
    dynamodb_endpoint_url: str = ""

    def check(self) -> list[str]:
        problems = url(self.dynamodb_endpoint_url, "dynamodb_endpoint_url", allow_empty=True)
        if self.store == "sqlite" and not self.path:
            problems.append("path: must not be empty")
        return problems


@dataclass(frozen=True)
class PollingSection:
    #: Seconds between GetRecords calls on one shard (Kinesis allows 5 per second per shard).
    interval_seconds: float = 0.2
    #: GetRecords Limit (Kinesis allows 10000).
    max_records: int = 10_000

    def check(self) -> list[str]:
        problems = [] if self.interval_seconds >= 0 else ["interval_seconds: must be >= 0"]
        if not 1 <= self.max_records <= 10_000:
            problems.append(f"max_records: expected 1..10000, got {self.max_records}")
        return problems


@dataclass(frozen=True)
class HandlerSection:
    #: Most records per handler call.
    batch_size: int = 100
    #: Seconds to gather records before calling the handler with a batch that is not full.
    batching_window_seconds: float = 0.0
    #: Calls of a failing record (batches bisected on each failure) before it goes to on_failure_stream.
    max_attempts: int = 3
    #: Split a failing batch in two and retry the halves, to isolate the bad record.
    bisect_on_error: bool = True
    #: Stream that gets records that failed max_attempts times (with the error). Empty: logged and skipped.
    on_failure_stream: str = ""
    retry_base_seconds: float = 0.1
    retry_max_seconds: float = 5.0

    def check(self) -> list[str]:
        problems = positive(self, "batch_size", "max_attempts", "retry_base_seconds")
        if self.batching_window_seconds < 0:
            problems.append("batching_window_seconds: must be >= 0")
        if self.retry_max_seconds < self.retry_base_seconds:
            problems.append("retry_max_seconds: need retry_base_seconds <= retry_max_seconds")
        if self.on_failure_stream and not STREAM_NAME.fullmatch(self.on_failure_stream):
            problems.append(f"on_failure_stream: {self.on_failure_stream!r} is not a valid stream name")
        return problems


@dataclass(frozen=True)
class MetricsSection(agent_config.MetricsSection):
    #: host:port of the Prometheus endpoint (keep it on localhost). Empty: no endpoint.
    listen: str = DEFAULT_METRICS_LISTEN


@dataclass(frozen=True)
class ConsumerConfig:
    consumer: ConsumerSection = field(default_factory=ConsumerSection)
    leases: LeasesSection = field(default_factory=LeasesSection)
    polling: PollingSection = field(default_factory=PollingSection)
    handler: HandlerSection = field(default_factory=HandlerSection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    @property
    def initial_timestamp(self) -> datetime | None:
        return datetime.fromisoformat(self.consumer.initial_timestamp) if self.consumer.initial_timestamp else None


def parse_config(values: dict[str, Any]) -> tuple[ConsumerConfig | None, list[str]]:
    """Build the config from parsed TOML; returns it (None if invalid) with every error found."""
    errors: list[str] = []
    values.setdefault("consumer", {})  # so a missing [consumer] reports its required keys
    return typed_config.build(ConsumerConfig, values, "", errors), errors


def config_from_dict(values: dict[str, Any]) -> ConsumerConfig:
    return typed_config.valid(parse_config(values), ConfigError)


def check_config(path: str | Path) -> list[str]:
    """Every error in the config file at ``path`` (empty when it is valid)."""
    return typed_config.file_errors(path, parse_config, ConfigError)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ConsumerConfig:
    """Load and validate; raises ConfigError listing every error, one per line. ``overrides``
    (command-line flags) replace ``[consumer]`` keys before checking; giving a processor
    clears the handler and the other way round."""
    values = typed_config.read_toml(path, ConfigError)
    if overrides:
        section = values.setdefault("consumer", {})
        if isinstance(section, dict):
            if overrides.get("processor"):
                section.pop("handler", None)
            if overrides.get("handler"):
                section.pop("processor", None)
            section.update(overrides)
    return config_from_dict(values)
