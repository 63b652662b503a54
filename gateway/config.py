"""Gateway configuration: typed sections with named defaults, loaded from flags or TOML.

A TOML file mirrors these dataclasses: top-level keys for the server, and one table per
section (``[limits]``, ``[video]``, ``[auth]``, ``[tls]``, ``[server]``, ``[consumers]``, ``[analytics]``, ``[firehose]``).
``typed_config`` checks them as it checks the agent's config: the type hints are the schema, each
section's ``check()`` adds its rules, and ``ConfigError`` lists *every* problem, one per line, each
naming its key, so a typo never silently falls back to a default. (``[analytics]`` holds
arrays of tables, which ``gateway.analytics.spec.analytics_from_toml`` builds one by one with
``typed_config``; its errors join the same list.)

Adding a section (a new service's ``[firehose]``): write a frozen dataclass with defaulted,
``#:``-documented fields (and a ``check()`` for rules types cannot say), add it as a field of
``GatewayConfig`` with ``field(default_factory=...)``, and show it with its defaults in
``configs/gateway.example.toml``. Nothing else: loading, errors and the CLI follow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import typed_config
from gateway.analytics.spec import AnalyticsConfig, analytics_from_toml

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


    def check(self) -> list[str]:
        problems = []
        for name, secret in self.credentials.items():
            if not secret:
                problems.append(f"credentials.{name}: expected a non-empty secret string")
        for name in self.allowed_streams:
            if name not in self.credentials:
                problems.append(f"allowed_streams.{name}: no such access key in auth.credentials")
        if self.max_clock_skew_seconds <= 0:
            problems.append("max_clock_skew_seconds: must be positive")
        return problems


@dataclass(frozen=True)
class EncryptionConfig:
    """At-rest encryption of data streams (StartStreamEncryption)."""

    #: The local key store (KMS stand-in) file; empty = ``kms-keys.json`` in the data dir. Keep it
    #: off the data disk (a removable or secrets mount) so a stolen disk alone reveals nothing.
    key_store: str = ""


@dataclass(frozen=True)
class CorsConfig:
    """Which web origins may call the gateway from a browser (see ``gateway.cors``)."""

    #: Origins (``https://example.com``) whose pages may read the gateway's answers; ``"*"`` = any.
    allowed_origins: list[str] = field(default_factory=lambda: ["*"])


@dataclass(frozen=True)
class TlsConfig:
    certfile: str = ""
    keyfile: str = ""

    def check(self) -> list[str]:
        return [] if bool(self.certfile) == bool(self.keyfile) else ["certfile: certfile and keyfile go together"]


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

    def check(self) -> list[str]:
        """Values that would make the gateway unusable."""
        rules = [
            ("max_connections", self.max_connections >= 1, "must be at least 1"),
            ("header_timeout_seconds", self.header_timeout_seconds > 0, "must be positive"),
            ("body_timeout_seconds", self.body_timeout_seconds > 0, "must be positive"),
            ("body_idle_seconds", self.body_idle_seconds > 0, "must be positive"),
            ("write_stall_seconds", self.write_stall_seconds >= 0, "must be 0 (off) or positive"),
            ("max_buffered_body_bytes", self.max_buffered_body_bytes >= 0, "must be 0 (no limit) or positive"),
            ("max_header_bytes", self.max_header_bytes >= 1024, "must be at least 1024"),
            ("max_headers", self.max_headers >= 16, "must be at least 16"),
        ]
        return typed_config.unmet(self, rules)


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
    #: SubscribeToShard calls per consumer and shard: at most one per this many seconds (AWS: one
    #: per second); a call sooner gets LimitExceededException. Off with ``--no-limits``.
    subscribe_interval_seconds: float = 1.0
    #: An idle subscription still gets an event (no records, a ContinuationSequenceNumber) this often.
    heartbeat_seconds: float = 5.0


@dataclass(frozen=True)
class FirehoseConfig:
    """Amazon Data Firehose delivery streams: where S3 objects go, per-stream limits, transforms."""

    #: S3 server objects are written to (AWS S3, SeaweedFS, MinIO...); empty = the embedded
    #: default, bucket ``arn:aws:s3:::NAME`` is the directory ``<data dir>/s3/NAME/``.
    s3_endpoint_url: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_region: str = "us-east-1"
    #: Per delivery stream, PutRecord/PutRecordBatch input (AWS defaults in us-east-1); above
    #: them callers get ServiceUnavailableException "Slow down.". ``--no-limits`` turns them off.
    stream_bytes_per_sec: int = 5 * MiB
    stream_records_per_sec: int = 500_000
    stream_requests_per_sec: int = 2000
    #: Largest buffer (all records not yet delivered, every stream) on disk; above it puts fail
    #: with ServiceUnavailableException until delivery catches up.
    max_buffered_bytes: int = 1024 * MiB
    #: GZIP level (1 fastest .. 9 smallest) for CompressionFormat GZIP and HTTP endpoint bodies.
    gzip_level: int = 6
    #: Seconds an HTTP endpoint delivery is retried (with backoff) before the batch goes to the S3
    #: error output, when the destination's RetryOptions does not say. (S3 writes are retried until
    #: they succeed: nothing is dropped.)
    retry_seconds: float = 300.0
    #: Lambda processors: LambdaArn -> ``module:function`` (a Python callable taking the Lambda
    #: event dict) or an ``http://`` / ``https://`` URL the event is POSTed to as JSON.
    transforms: dict[str, str] = field(default_factory=dict)

    def check(self) -> list[str]:
        rules = [
            ("gzip_level", 1 <= self.gzip_level <= 9, "must be 1..9"),
            ("stream_bytes_per_sec", self.stream_bytes_per_sec > 0, "must be positive"),
            ("stream_records_per_sec", self.stream_records_per_sec > 0, "must be positive"),
            ("stream_requests_per_sec", self.stream_requests_per_sec > 0, "must be positive"),
            ("retry_seconds", self.retry_seconds >= 0, "must be 0 or positive"),
        ]
        return typed_config.unmet(self, rules)


@dataclass(frozen=True)
class GatewayConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: str = DEFAULT_DATA_DIR
    #: "normal" survives a killed process; "full" also survives power loss (fsync per commit).
    durability: Literal["normal", "full"] = "normal"
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
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    consumers: ConsumersConfig = field(default_factory=ConsumersConfig)
    #: ``[[analytics.applications]]`` and ``[[analytics.motion]]`` (see ``gateway.analytics.spec``).
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    firehose: FirehoseConfig = field(default_factory=FirehoseConfig)

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

    def check(self) -> list[str]:
        problems = [] if 0 < self.port < 65536 else [f"port: {self.port} is not a TCP port"]
        if not (len(self.account_id) == 12 and self.account_id.isdigit() and self.account_id.isascii()):
            problems.append(f"account_id: expected 12 digits, got {self.account_id!r}")
        return problems


def config_from_dict(values: dict[str, Any]) -> GatewayConfig:
    """The config of a parsed TOML document; ``ConfigError`` listing every problem, one per line."""
    values = dict(values)
    errors: list[str] = []
    analytics = analytics_from_toml(values.pop("analytics", {}), errors)
    config = typed_config.build(GatewayConfig, values, "", errors)
    if config is None or errors:
        raise ConfigError("\n".join(errors))
    config = dataclasses.replace(config, analytics=analytics)
    return config


def load_config(path: str | Path) -> GatewayConfig:
    return config_from_dict(typed_config.read_toml(path, ConfigError))
