"""Agent configuration: typed sections with named defaults, loaded from TOML.

The file mirrors these dataclasses: one table per section (``[agent]``, ``[spool]``,
``[gateway]``, ``[forwarder]``, ``[metrics]``) and any number of ``[[sources.<type>]]``
tables whose types come from ``edge_agent.sources.SOURCE_TYPES``. Loading checks every key
(``typed_config``: the type hints are the schema, ``check()`` adds each section's rules) and
collects *every* error with its key (``check_config`` reports them all at once), so a typo
never silently falls back to a default. ``configs/agent.example.toml`` documents
every option with its default.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typed_config
from edge_agent.errors import ConfigError
from edge_agent.kinesis_limits import delivery_stream_of
from typed_config import host_port, positive, url

MiB = 1024 * 1024

DEFAULT_CONFIG_PATH = "/etc/edge-agent/agent.toml"
DEFAULT_SPOOL_PATH = "/var/lib/edge-agent/spool.db"
DEFAULT_SPOOL_MAX_BYTES = 512 * MiB
DEFAULT_DROP_ORDER = ("video", "log", "telemetry")
#: 300 records/s with sync = "full": 6.6 bytes written per payload byte at 100 ms, 3.2 at 500, 2.7 at 1000.
DEFAULT_COMMIT_INTERVAL_MS = 1000
DEFAULT_ENDPOINT_URL = "http://127.0.0.1:4567"
DEFAULT_REGION = "us-east-1"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9108"
#: PutRecords limits of the Kinesis API: per request.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * MiB
KINDS = ("telemetry", "log", "video")


@dataclass(frozen=True)
class AgentSection:
    #: This device's id: sent as X-Edge-Producer-Id (replay detection) and used in logs. Default: the hostname.
    id: str = ""
    #: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    #: Seconds a sources waits before it is restarted after it failed (device gone, broker down).
    source_restart_seconds: float = 5.0

    def check(self) -> list[str]:
        problems = []
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.source_restart_seconds <= 0:
            problems.append("source_restart_seconds: must be > 0")
        return problems


@dataclass(frozen=True)
class SpoolSection:
    #: SQLite file holding everything not yet acknowledged by the gateway.
    path: str = DEFAULT_SPOOL_PATH
    #: Size cap in bytes; when reached the oldest records of the first kind in drop_order go first.
    max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    #: Which kind of record to drop first when the cap is reached.
    drop_order: list[str] = field(default_factory=lambda: list(DEFAULT_DROP_ORDER))
    #: "full": fsync every group commit (survives power loss); "normal": survives a killed process.
    sync: str = "full"
    #: Longest a record waits for others to share its commit (ms). Each commit costs a few pages
    #: and an fsync on the SD card: longer means less wear and more latency before the log
    #: checkpoint and the records' send (MQTT commits early when the broker's in-flight window fills).
    commit_interval_ms: int = DEFAULT_COMMIT_INTERVAL_MS

    def check(self) -> list[str]:
        problems = []
        if not 0 <= self.commit_interval_ms <= 1000:
            problems.append(f"commit_interval_ms: expected 0 to 1000, got {self.commit_interval_ms}")
        if not self.path:
            problems.append("path: must not be empty")
        if self.max_bytes < 1 * MiB:
            problems.append(f"max_bytes: must be at least 1 MiB ({MiB}), got {self.max_bytes}")
        if sorted(self.drop_order) != sorted(KINDS):
            problems.append(f"drop_order: expected each of {', '.join(KINDS)} once, got {self.drop_order!r}")
        if self.sync not in ("full", "normal"):
            problems.append(f"sync: expected 'full' or 'normal', got {self.sync!r}")
        return problems


@dataclass(frozen=True)
class GatewaySection:
    #: Kinesis Data Streams endpoint: our gateway, or https://kinesis.<region>.amazonaws.com.
    endpoint_url: str = DEFAULT_ENDPOINT_URL
    #: Kinesis Video control-plane endpoint (GetDataEndpoint is asked for the PutMedia URL). Empty: endpoint_url.
    video_endpoint_url: str = ""
    #: Firehose endpoint for sources with ``delivery_stream`` (https://firehose.<region>.amazonaws.com
    #: on AWS). Empty: endpoint_url (our gateway answers both APIs).
    firehose_endpoint_url: str = ""
    region: str = DEFAULT_REGION
    #: Static credentials. Empty: the usual AWS chain (AWS_* env vars, profile, instance role); if that
    #: finds nothing, requests are signed with a placeholder key (fine for a gateway without [auth]).
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    #: Named profile from ~/.aws/credentials (used when access_key_id is empty).
    profile: str = ""
    #: PEM bundle to verify the gateway's TLS certificate (self-signed gateways). Empty: system CAs.
    ca_file: str = ""
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0

    @property
    def video_url(self) -> str:
        return (self.video_endpoint_url or self.endpoint_url).rstrip("/")

    def check(self) -> list[str]:
        problems = [*url(self.endpoint_url, "endpoint_url"), *url(self.video_endpoint_url, "video_endpoint_url", allow_empty=True),
                    *url(self.firehose_endpoint_url, "firehose_endpoint_url", allow_empty=True)]
        if bool(self.access_key_id) != bool(self.secret_access_key):
            problems.append("secret_access_key: access_key_id and secret_access_key go together")
        if self.ca_file and not os.path.isfile(self.ca_file):
            problems.append(f"ca_file: no such file {self.ca_file!r}")
        return problems + positive(self, "connect_timeout_seconds", "read_timeout_seconds")


@dataclass(frozen=True)
class ForwarderSection:
    #: Records per PutRecords request (Kinesis allows at most 500).
    batch_max_records: int = MAX_BATCH_RECORDS
    #: Bytes (data + partition keys) per PutRecords request (Kinesis allows at most 5 MiB).
    batch_max_bytes: int = MAX_BATCH_BYTES
    #: Wait this long for more records before sending a batch that is not full: fewer, fuller
    #: requests (each costs a few ms of CPU on a Pi) for at most this much added latency.
    linger_ms: int = 100
    #: Pack many records of one partition key into one Kinesis record (KPL aggregation format); gets
    #: past the 1000 records/s per-shard limit. Consumers de-aggregate (KCL, aws_kinesis_agg).
    aggregate: bool = False
    #: Largest aggregated record, bytes (Kinesis allows 1 MiB).
    aggregate_max_bytes: int = 256 * 1024
    #: Send rate ceiling in records/s (0 = no ceiling). On a throttle the rate drops to what the
    #: gateway accepted over the last second (at most 0.7x); it then grows back by 15 %/s, doubling
    #: every second once 5 s pass without a throttle.
    max_records_per_second: int = 0
    #: Retry delays: full jitter over base * 2^attempt, capped.
    retry_base_seconds: float = 0.1
    retry_max_seconds: float = 20.0
    #: Video fragments sent per PutMedia request.
    media_fragments_per_request: int = 10

    def check(self) -> list[str]:
        problems = []
        if not 1 <= self.batch_max_records <= MAX_BATCH_RECORDS:
            problems.append(f"batch_max_records: expected 1..{MAX_BATCH_RECORDS}, got {self.batch_max_records}")
        if not 1024 <= self.batch_max_bytes <= MAX_BATCH_BYTES:
            problems.append(f"batch_max_bytes: expected 1024..{MAX_BATCH_BYTES}, got {self.batch_max_bytes}")
        if not 1024 <= self.aggregate_max_bytes <= MiB:
            problems.append(f"aggregate_max_bytes: expected 1024..{MiB}, got {self.aggregate_max_bytes}")
        if self.linger_ms < 0 or self.max_records_per_second < 0:
            problems.append("linger_ms: linger_ms and max_records_per_second must be >= 0")
        if self.retry_base_seconds <= 0 or self.retry_max_seconds < self.retry_base_seconds:
            problems.append("retry_max_seconds: need 0 < retry_base_seconds <= retry_max_seconds")
        if self.media_fragments_per_request < 1:
            problems.append("media_fragments_per_request: must be >= 1")
        return problems


@dataclass(frozen=True)
class MetricsSection:
    #: host:port of the Prometheus endpoint (keep it on localhost). Empty: no endpoint.
    listen: str = DEFAULT_METRICS_LISTEN

    def check(self) -> list[str]:
        return host_port(self.listen, "listen")


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection = field(default_factory=AgentSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    forwarder: ForwarderSection = field(default_factory=ForwarderSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    #: Source configs built by edge_agent.sources (each has ``name``, ``stream`` and ``build()``).
    sources: tuple[Any, ...] = ()

    @property
    def agent_id(self) -> str:
        return self.agent.id or socket.gethostname()


SECTIONS = {"agent": AgentSection, "spool": SpoolSection, "gateway": GatewaySection, "forwarder": ForwarderSection, "metrics": MetricsSection}


#: Kinesis data stream names (KVS allows up to 256 of the same characters).
STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
#: Firehose delivery stream names.
DELIVERY_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}")


def _position(built: list[Any], source: Any) -> int:
    """Index of ``source`` among the sources of its kind (as in ``sources.mqtt[1]``)."""
    same = [s for s in built if type(s) is type(source)]
    return next(i for i, s in enumerate(same) if s is source)


def _build_sources(values: Any, errors: list[str]) -> tuple[Any, ...]:
    if not isinstance(values, dict):
        errors.append("sources: expected tables like [[sources.mqtt]]")
        return ()
    try:
        from edge_agent.sources import SOURCE_TYPES
    except ImportError as exc:  # pragma: no cover - sources package missing
        errors.append(f"sources: source types are unavailable ({exc})")
        return ()
    built: list[Any] = []
    for kind, entries in values.items():
        if kind not in SOURCE_TYPES:
            errors.append(f"sources.{kind}: unknown source type (expected one of {', '.join(sorted(SOURCE_TYPES))})")
            continue
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            errors.append(f"sources.{kind}: expected [[sources.{kind}]] tables")
            continue
        for index, entry in enumerate(entries):
            prefix = f"sources.{kind}[{index}]"
            if not isinstance(entry, dict):
                errors.append(f"{prefix}: expected a table")
                continue
            before = len(errors)
            source = SOURCE_TYPES[kind].parse(entry, prefix, errors)
            if source is not None and len(errors) == before:
                built.append(source)
    for source in built:
        stream = getattr(source, "stream", "")
        delivery_stream = delivery_stream_of(stream)
        if delivery_stream is not None and not DELIVERY_STREAM_NAME.fullmatch(delivery_stream):
            errors.append(f"sources.{source.KIND}[{_position(built, source)}].delivery_stream: {delivery_stream!r} is not a valid delivery "
                          "stream name (1-64 characters: letters, digits, _ . -)")
        elif delivery_stream is None and stream and not STREAM_NAME.fullmatch(stream):
            errors.append(f"sources.{source.KIND}[{_position(built, source)}].stream: {stream!r} is not a valid stream name "
                          "(1-128 characters: letters, digits, _ . -)")
    names = [getattr(s, "name", "") for s in built]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"sources: name {name!r} is used by more than one source")
    return tuple(built)


def parse_config(values: dict[str, Any]) -> tuple[AgentConfig, list[str]]:
    """Build the config from parsed TOML; returns it with the list of every error found."""
    errors: list[str] = []
    sections: dict[str, Any] = {}
    sources: tuple[Any, ...] = ()
    for key, value in values.items():
        if key in SECTIONS:
            section = typed_config.build(SECTIONS[key], value, key, errors)
            if section is not None:
                sections[key] = section
        elif key == "sources":
            sources = _build_sources(value, errors)
        else:
            errors.append(f"{key}: unknown section (expected one of {', '.join(sorted([*SECTIONS, 'sources']))})")
    return AgentConfig(**sections, sources=sources), errors


def config_from_dict(values: dict[str, Any]) -> AgentConfig:
    return typed_config.valid(parse_config(values), ConfigError)


def check_config(path: str | Path) -> list[str]:
    """Every error in the config file at ``path`` (empty when it is valid)."""
    return typed_config.file_errors(path, parse_config, ConfigError)


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate; raises ConfigError listing every error, one per line."""
    return config_from_dict(typed_config.read_toml(path, ConfigError))
