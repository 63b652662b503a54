"""Agent configuration: typed sections with named defaults, loaded from TOML.

The file mirrors these dataclasses: one table per section (``[agent]``, ``[spool]``,
``[gateway]``, ``[forwarder]``, ``[metrics]``) and any number of ``[[sources.<type>]]``
tables whose types come from ``edge_agent.sources.SOURCE_TYPES``. Loading checks every key
and collects *every* error with its key (``check_config`` reports them all at once), so a
typo never silently falls back to a default. ``configs/agent.example.toml`` documents
every option with its default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MiB = 1024 * 1024

DEFAULT_CONFIG_PATH = "/etc/edge-agent/agent.toml"
DEFAULT_SPOOL_PATH = "/var/lib/edge-agent/spool.db"
DEFAULT_SPOOL_MAX_BYTES = 512 * MiB
DEFAULT_DROP_ORDER = ("video", "log", "telemetry")
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


@dataclass(frozen=True)
class GatewaySection:
    #: Kinesis Data Streams endpoint: our gateway, or https://kinesis.<region>.amazonaws.com.
    endpoint_url: str = DEFAULT_ENDPOINT_URL
    #: Kinesis Video control-plane endpoint (GetDataEndpoint is asked for the PutMedia URL). Empty: endpoint_url.
    video_endpoint_url: str = ""
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
    #: Send rate ceiling in records/s (0 = no ceiling). While the gateway throttles the rate is
    #: halved; it then grows back additively (AIMD).
    max_records_per_second: int = 0
    #: Retry delays: full jitter over base * 2^attempt, capped.
    retry_base_seconds: float = 0.1
    retry_max_seconds: float = 20.0
    #: Video fragments sent per PutMedia request.
    media_fragments_per_request: int = 10


@dataclass(frozen=True)
class MetricsSection:
    #: host:port of the Prometheus endpoint (keep it on localhost). Empty: no endpoint.
    listen: str = DEFAULT_METRICS_LISTEN


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


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def _build_section(cls: type, values: Any, prefix: str, errors: list[str]) -> Any:
    """Build dataclass ``cls`` from ``values``; append one message per bad key to ``errors``."""
    if not isinstance(values, dict):
        errors.append(f"{prefix.rstrip('.')}: expected a table, got {type(values).__name__}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            errors.append(f"{name}: unknown key (expected one of {', '.join(sorted(fields))})")
            continue
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
            errors.append(f"{name}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
            continue
        if expected is list and not all(isinstance(v, str) for v in value):
            errors.append(f"{name}: expected a list of strings")
            continue
        kwargs[key] = value
    return cls(**kwargs)


def _check_url(value: str, name: str, errors: list[str], allow_empty: bool = False) -> None:
    if allow_empty and not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        errors.append(f"{name}: expected an http:// or https:// URL, got {value!r}")


def _check_values(config: AgentConfig, errors: list[str]) -> None:
    if config.agent.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        errors.append(f"agent.log_level: expected DEBUG, INFO, WARNING or ERROR, got {config.agent.log_level!r}")
    if config.agent.source_restart_seconds <= 0:
        errors.append("agent.source_restart_seconds: must be > 0")
    if not config.spool.path:
        errors.append("spool.path: must not be empty")
    if config.spool.max_bytes < 1 * MiB:
        errors.append(f"spool.max_bytes: must be at least 1 MiB ({MiB}), got {config.spool.max_bytes}")
    if sorted(config.spool.drop_order) != sorted(KINDS):
        errors.append(f"spool.drop_order: expected each of {', '.join(KINDS)} once, got {config.spool.drop_order!r}")
    if config.spool.sync not in ("full", "normal"):
        errors.append(f"spool.sync: expected 'full' or 'normal', got {config.spool.sync!r}")
    gw = config.gateway
    _check_url(gw.endpoint_url, "gateway.endpoint_url", errors)
    _check_url(gw.video_endpoint_url, "gateway.video_endpoint_url", errors, allow_empty=True)
    if bool(gw.access_key_id) != bool(gw.secret_access_key):
        errors.append("gateway.secret_access_key: access_key_id and secret_access_key go together")
    if gw.ca_file and not os.path.isfile(gw.ca_file):
        errors.append(f"gateway.ca_file: no such file {gw.ca_file!r}")
    for key in ("connect_timeout_seconds", "read_timeout_seconds"):
        if getattr(gw, key) <= 0:
            errors.append(f"gateway.{key}: must be > 0")
    fw = config.forwarder
    if not 1 <= fw.batch_max_records <= MAX_BATCH_RECORDS:
        errors.append(f"forwarder.batch_max_records: expected 1..{MAX_BATCH_RECORDS}, got {fw.batch_max_records}")
    if not 1024 <= fw.batch_max_bytes <= MAX_BATCH_BYTES:
        errors.append(f"forwarder.batch_max_bytes: expected 1024..{MAX_BATCH_BYTES}, got {fw.batch_max_bytes}")
    if not 1024 <= fw.aggregate_max_bytes <= MiB:
        errors.append(f"forwarder.aggregate_max_bytes: expected 1024..{MiB}, got {fw.aggregate_max_bytes}")
    if fw.linger_ms < 0 or fw.max_records_per_second < 0:
        errors.append("forwarder: linger_ms and max_records_per_second must be >= 0")
    if fw.retry_base_seconds <= 0 or fw.retry_max_seconds < fw.retry_base_seconds:
        errors.append("forwarder.retry_max_seconds: need 0 < retry_base_seconds <= retry_max_seconds")
    if fw.media_fragments_per_request < 1:
        errors.append("forwarder.media_fragments_per_request: must be >= 1")
    if config.metrics.listen:
        host, sep, port = config.metrics.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            errors.append(f"metrics.listen: expected host:port, got {config.metrics.listen!r}")


#: Kinesis data stream names (KVS allows up to 256 of the same characters).
STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")


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
            try:
                built.append(SOURCE_TYPES[kind].from_dict(entry, prefix))
            except ConfigError as exc:
                # One message per error, whether the source joined them with newlines or "; ".
                errors.extend(m for line in str(exc).splitlines() for m in re.split(r"; (?=sources\.)", line) if m)
    for source in built:
        stream = getattr(source, "stream", "")
        if stream and not STREAM_NAME.fullmatch(stream):
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
            sections[key] = _build_section(SECTIONS[key], value, f"{key}.", errors)
        elif key == "sources":
            sources = _build_sources(value, errors)
        else:
            errors.append(f"{key}: unknown section (expected one of {', '.join(sorted([*SECTIONS, 'sources']))})")
    config = AgentConfig(**sections, sources=sources)
    _check_values(config, errors)
    return config, errors


def config_from_dict(values: dict[str, Any]) -> AgentConfig:
    config, errors = parse_config(values)
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def check_config(path: str | Path) -> list[str]:
    """Every error in the config file at ``path`` (empty when it is valid)."""
    try:
        values = read_toml(path)
    except ConfigError as exc:
        return [str(exc)]
    return parse_config(values)[1]


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate; raises ConfigError listing every error, one per line."""
    return config_from_dict(read_toml(path))
