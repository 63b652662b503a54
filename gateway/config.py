"""Gateway configuration: typed sections with named defaults, loaded from flags or TOML.

A TOML file mirrors these dataclasses: top-level keys for the server, and one table per
section (``[limits]``, ``[video]``, ``[auth]``, ``[tls]``, ``[server]``, ``[consumers]``, ``[analytics]``). Unknown or
mistyped keys raise ``ConfigError`` naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.analytics.spec import AnalyticsConfig, analytics_from_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4567
DEFAULT_DATA_DIR = "./gateway-data"
DEFAULT_ACCOUNT_ID = "000000000000"
MiB = 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


@dataclass(frozen=True)
class LimitsConfig:
    """Per-shard throughput limits of the data-stream API (the AWS defaults)."""

    enabled: bool = True
    #: Bytes (data + partition key) a shard accepts per second.
    shard_write_bytes_per_sec: int = 1 * MiB
    #: Records a shard accepts per second.
    shard_write_records_per_sec: int = 1000
    #: Bytes GetRecords may return from one shard per second.
    shard_read_bytes_per_sec: int = 2 * MiB
    #: GetRecords calls per shard per second.
    shard_read_calls_per_sec: int = 5


@dataclass(frozen=True)
class VideoConfig:
    """Limits of the video API (Kinesis Video Streams defaults)."""

    #: Ingest rate per stream, bytes per second (12.5 MB/s as in KVS).
    ingest_bytes_per_sec: int = 12_500_000
    #: Longest fragment accepted, seconds.
    max_fragment_seconds: float = 10.0
    #: Largest fragment accepted, bytes.
    max_fragment_bytes: int = 50 * MiB
    #: Disk budget for all fragments of one stream, bytes (0 = no budget, retention by age only).
    stream_disk_budget_bytes: int = 0


@dataclass(frozen=True)
class AuthConfig:
    """SigV4 verification. With no credentials every request is accepted (loopback use)."""

    #: access key id -> secret access key
    credentials: dict[str, str] = field(default_factory=dict)
    #: access key id -> stream names it may use (absent = every stream)
    allowed_streams: dict[str, list[str]] = field(default_factory=dict)
    #: Requests signed more than this many seconds away from now are rejected.
    max_clock_skew_seconds: int = 300


@dataclass(frozen=True)
class TlsConfig:
    certfile: str = ""
    keyfile: str = ""


@dataclass(frozen=True)
class ServerConfig:
    """Connection-level limits that keep one misbehaving client from starving the others."""

    #: Open connections accepted at once; above it new connections get an immediate 503.
    max_connections: int = 512
    #: A connection must deliver a complete request head within this many seconds
    #: (also the idle keep-alive timeout).
    header_timeout_seconds: float = 15.0
    #: A request body read whole (every API but PutMedia) must arrive within this many seconds.
    body_timeout_seconds: float = 60.0
    #: Request bodies held in memory at once across all requests (0 = no limit); above it a request
    #: waits for room, then gets a 503 that clients retry.
    max_buffered_body_bytes: int = 256 * MiB
    #: A streamed body (PutMedia) that sends nothing for this many seconds is cut off (a backstop:
    #: the PutMedia handler ends idle sessions itself, sooner).
    body_idle_seconds: float = 90.0
    #: A client that drains none of a full send buffer for this many seconds is disconnected (0 = never).
    write_stall_seconds: float = 60.0
    #: Longest request line and longest single header, bytes.
    max_header_bytes: int = 8190
    #: Most header fields in one request.
    max_headers: int = 100


@dataclass(frozen=True)
class ConsumersConfig:
    """Enhanced fan-out consumers and SubscribeToShard (the defaults are AWS's behaviour)."""

    #: Seconds a newly registered consumer stays CREATING before it becomes ACTIVE.
    activation_seconds: float = 1.0
    #: Seconds a SubscribeToShard subscription lasts; the client then subscribes again.
    subscription_seconds: float = 300.0
    #: A second subscription of the same consumer to the same shard within this many seconds of
    #: the first gets ResourceInUseException; after it, the second one takes over.
    takeover_seconds: float = 5.0
    #: An idle subscription still gets an event (no records, a ContinuationSequenceNumber) this often.
    heartbeat_seconds: float = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: str = DEFAULT_DATA_DIR
    #: "normal" survives a killed process; "full" also survives power loss (fsync per commit).
    durability: str = "normal"
    #: URL clients should use to reach this gateway (GetDataEndpoint, HLS URLs); derived if empty.
    public_url: str = ""
    #: Seconds between background retention sweeps.
    retention_sweep_seconds: float = 60.0
    log_level: str = "INFO"
    #: The AWS account id this gateway plays: in every ARN and in error messages (12 digits).
    account_id: str = DEFAULT_ACCOUNT_ID
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    consumers: ConsumersConfig = field(default_factory=ConsumersConfig)
    #: ``[[analytics.applications]]`` and ``[[analytics.motion]]`` (see ``gateway.analytics.spec``).
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls.certfile else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{scheme}://{host}:{self.port}"


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``values``, checking every key and type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown key (expected one of {', '.join(sorted(fields))})")
        default = fields[key].default
        if default is dataclasses.MISSING:
            default = fields[key].default_factory()  # type: ignore[misc,operator]
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a table")
            kwargs[key] = _build(type(default), value, f"{name}.")
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is int and isinstance(value, bool) or not isinstance(value, expected):
            raise ConfigError(f"{name}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> GatewayConfig:
    values = dict(values)
    try:
        analytics = analytics_from_toml(values.pop("analytics", {}))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    config: GatewayConfig = dataclasses.replace(_build(GatewayConfig, values, ""), analytics=analytics)
    if config.durability not in ("normal", "full"):
        raise ConfigError(f"durability: expected 'normal' or 'full', got {config.durability!r}")
    if not 0 < config.port < 65536:
        raise ConfigError(f"port: {config.port} is not a TCP port")
    if not (len(config.account_id) == 12 and config.account_id.isdigit() and config.account_id.isascii()):
        raise ConfigError(f"account_id: expected 12 digits, got {config.account_id!r}")
    if bool(config.tls.certfile) != bool(config.tls.keyfile):
        raise ConfigError("tls: certfile and keyfile go together")
    return config


def load_config(path: str | Path) -> GatewayConfig:
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return config_from_dict(values)
