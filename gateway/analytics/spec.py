"""Analytics applications as the gateway config declares them (``[[analytics.applications]]``).

Typed, frozen values whose field comments are the user documentation (every key, with its
default, is also in ``configs/gateway.example.toml``). ``applications_from_toml`` checks every
key and raises ``ValueError`` naming it; ``gateway.config`` turns that into its ``ConfigError``.
Window queries are parsed here too (``gateway.analytics.windows``), so a bad TVF fails at load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.analytics.windows import Window, find_window

#: Column types a schema may use (DuckDB names).
COLUMN_TYPES = ("VARCHAR", "DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "BOOLEAN", "TIMESTAMP")
FORMATS = ("json", "csv")
STARTS = ("TRIM_HORIZON", "LATEST")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Extra columns every input row has besides its schema.
METADATA_COLUMNS = ("arrival_time", "partition_key")
DEFAULT_ALLOWED_LATENESS = 1.0
DEFAULT_MAX_BATCH_RECORDS = 100_000
DEFAULT_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class InputSpec:
    """One gateway data stream read by the application, visible to its SQL as ``table``."""

    stream: str = ""
    #: Name of the input in the SQL (default: the stream name with non-identifier chars as ``_``).
    table: str = ""
    #: Where a new application starts reading: "TRIM_HORIZON" (oldest) or "LATEST" (new records only).
    start: str = "TRIM_HORIZON"
    #: "json" (one object per record) or "csv" (one line per record, fields in ``columns`` order).
    format: str = "json"
    #: Schema: "name TYPE" strings (types: VARCHAR DOUBLE FLOAT BIGINT INTEGER SMALLINT BOOLEAN TIMESTAMP).
    #: A TIMESTAMP takes an ISO-8601 string or epoch seconds (a number).
    columns: tuple[Column, ...] = ()
    #: TIMESTAMP column holding the event time; "" = the record's arrival time at the gateway.
    event_time: str = ""
    #: The watermark trails the newest event time seen by this many seconds; a record older than
    #: the watermark when it is read is late (counted, sent to the error stream).
    allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS


@dataclass(frozen=True)
class ReferenceSpec:
    """A static table loaded at start from a CSV (with a header) or JSON (array or one object per line) file."""

    table: str = ""
    path: str = ""


@dataclass(frozen=True)
class QuerySpec:
    """One continuous query; its result rows become JSON records."""

    name: str = ""
    #: DuckDB SQL over the inputs and references. A window aggregation reads
    #: TABLE(TUMBLE|HOP|SESSION(TABLE <input>, DESCRIPTOR(<time column>), ...)) as in Flink SQL.
    sql: str = ""
    #: Data stream the rows go to ("" = dashboard only).
    output_stream: str = ""
    #: Firehose delivery stream the rows also go to ("" = none).
    delivery_stream: str = ""
    #: Column whose value is each output record's partition key ("" = the query name).
    partition_key: str = ""
    window: Window | None = None


@dataclass(frozen=True)
class ApplicationSpec:
    name: str = ""
    #: Data stream for malformed and late records, as JSON with the reason ("" = only count them).
    error_stream: str = ""
    #: Most records read per micro-batch.
    max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS
    #: Seconds between polls of the inputs when there is nothing new.
    poll_seconds: float = DEFAULT_POLL_SECONDS
    inputs: tuple[InputSpec, ...] = ()
    references: tuple[ReferenceSpec, ...] = ()
    queries: tuple[QuerySpec, ...] = ()

    def input(self, table: str) -> InputSpec:
        return next(i for i in self.inputs if i.table == table)


def _scalars(cls: type, values: Any, where: str, nested: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check ``values`` against the plain fields of ``cls``; nested list fields are left to the caller."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a table")
    known = {f.name: f for f in fields(cls) if f.name not in ("window",)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{where}.{key}"
        if key not in known:
            raise ValueError(f"{name}: unknown key (expected one of {', '.join(sorted(known))})")
        if key in nested:
            continue
        default = known[key].default
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
            raise ValueError(f"{name}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
        out[key] = value
    return out


def _tables(values: Any, where: str) -> list[Any]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise ValueError(f"{where}: expected an array of tables ([[{where}]])")
    return values


def _identifier(value: str, where: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{where}: {value!r} is not a plain SQL identifier (letters, digits, _)")
    return value


def _columns(values: Any, where: str) -> tuple[Column, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: expected a non-empty array of \"name TYPE\" strings")
    out: list[Column] = []
    for i, text in enumerate(values):
        parts = text.split() if isinstance(text, str) else []
        if len(parts) != 2:
            raise ValueError(f"{where}[{i}]: expected \"name TYPE\", got {text!r}")
        name, kind = _identifier(parts[0], f"{where}[{i}]"), parts[1].upper()
        if kind not in COLUMN_TYPES:
            raise ValueError(f"{where}[{i}]: type {parts[1]!r} is not one of {', '.join(COLUMN_TYPES)}")
        if name in METADATA_COLUMNS or any(c.name == name for c in out):
            raise ValueError(f"{where}[{i}]: column {name!r} is reserved or repeated")
        out.append(Column(name, kind))
    return tuple(out)


def _input(values: Any, where: str) -> InputSpec:
    plain = _scalars(InputSpec, values, where, ("columns",))
    if "columns" not in values:
        raise ValueError(f"{where}.columns: required")
    plain["columns"] = _columns(values["columns"], f"{where}.columns")
    spec = InputSpec(**plain)
    if not spec.stream:
        raise ValueError(f"{where}.stream: required")
    table = spec.table or re.sub(r"\W", "_", spec.stream)
    _identifier(table, f"{where}.table")
    if spec.start not in STARTS:
        raise ValueError(f"{where}.start: expected one of {', '.join(STARTS)}, got {spec.start!r}")
    if spec.format not in FORMATS:
        raise ValueError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {spec.format!r}")
    if spec.event_time and not any(c.name == spec.event_time and c.type == "TIMESTAMP" for c in spec.columns):
        raise ValueError(f"{where}.event_time: {spec.event_time!r} must name a TIMESTAMP column of the schema")
    if spec.allowed_lateness_seconds < 0:
        raise ValueError(f"{where}.allowed_lateness_seconds: must not be negative")
    return InputSpec(**{**plain, "table": table})


def _reference(values: Any, where: str) -> ReferenceSpec:
    spec = ReferenceSpec(**_scalars(ReferenceSpec, values, where))
    _identifier(spec.table, f"{where}.table")
    if not spec.path.endswith((".csv", ".json", ".jsonl", ".ndjson")):
        raise ValueError(f"{where}.path: expected a .csv or .json file, got {spec.path!r}")
    return spec


def _query(values: Any, where: str, inputs: tuple[InputSpec, ...]) -> QuerySpec:
    spec = QuerySpec(**_scalars(QuerySpec, values, where))
    _identifier(spec.name, f"{where}.name")
    if not spec.sql.strip():
        raise ValueError(f"{where}.sql: required")
    try:
        window = find_window(spec.sql)
    except ValueError as exc:
        raise ValueError(f"{where}.sql: {exc}") from exc
    if window is not None:
        source = next((i for i in inputs if i.table == window.table), None)
        if source is None:
            raise ValueError(f"{where}.sql: {window.function} reads {window.table!r}, which is not an input table")
        wanted = source.event_time or "arrival_time"
        if window.time_column != wanted:
            raise ValueError(f"{where}.sql: DESCRIPTOR({window.time_column}) must be the input's event time column ({wanted})")
    return QuerySpec(**{**_scalars(QuerySpec, values, where), "window": window})


def application_from_toml(values: Any, where: str) -> ApplicationSpec:
    nested = ("inputs", "references", "queries")
    plain = _scalars(ApplicationSpec, values, where, nested)
    name = _identifier(plain.get("name", ""), f"{where}.name")
    inputs = tuple(_input(v, f"{where}.inputs[{i}]") for i, v in enumerate(_tables(values.get("inputs"), f"{where}.inputs")))
    if not inputs:
        raise ValueError(f"{where}.inputs: at least one [[...inputs]] table is required")
    references = tuple(_reference(v, f"{where}.references[{i}]") for i, v in enumerate(_tables(values.get("references"), f"{where}.references")))
    tables = [i.table for i in inputs] + [r.table for r in references]
    if len(set(tables)) != len(tables):
        raise ValueError(f"{where}: input and reference table names must differ ({', '.join(tables)})")
    queries = tuple(_query(v, f"{where}.queries[{i}]", inputs) for i, v in enumerate(_tables(values.get("queries"), f"{where}.queries")))
    if not queries:
        raise ValueError(f"{where}.queries: at least one [[...queries]] table is required")
    if len({q.name for q in queries}) != len(queries):
        raise ValueError(f"{where}.queries: query names must differ")
    spec = ApplicationSpec(**{**plain, "name": name, "inputs": inputs, "references": references, "queries": queries})
    if spec.max_batch_records < 1 or spec.poll_seconds <= 0:
        raise ValueError(f"{where}: max_batch_records and poll_seconds must be positive")
    return spec


@dataclass(frozen=True)
class MotionSpec:
    """Motion detection on one video stream (``[[analytics.motion]]``)."""

    #: Video stream whose fragments are analysed.
    video_stream: str = ""
    #: Data stream the motion_start / motion_end records go to.
    output_stream: str = ""
    #: Frames analysed per second of video (the rest are skipped, not decoded where possible).
    sample_fps: float = 2.0
    #: 0..1: a zone moves when at least (1 - sensitivity) / 40 of its pixels changed (0.8: 0.5 %).
    sensitivity: float = 0.8
    #: Zones as [x, y, width, height] fractions of the frame (empty = the whole frame).
    zones: tuple[tuple[float, float, float, float], ...] = ()
    #: Motion ends after this many seconds without a moving sample.
    end_after_seconds: float = 1.0


def motion_from_toml(values: Any, where: str) -> MotionSpec:
    plain = _scalars(MotionSpec, values, where, ("zones",))
    zones: list[tuple[float, float, float, float]] = []
    for i, zone in enumerate(_tables(values.get("zones"), f"{where}.zones")):
        if not (isinstance(zone, list) and len(zone) == 4 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in zone)):
            raise ValueError(f"{where}.zones[{i}]: expected [x, y, width, height] as fractions 0..1")
        zones.append((float(zone[0]), float(zone[1]), float(zone[2]), float(zone[3])))
    spec = MotionSpec(**{**plain, "zones": tuple(zones)})
    if not spec.video_stream or not spec.output_stream:
        raise ValueError(f"{where}: video_stream and output_stream are required")
    if spec.sample_fps <= 0 or not 0 <= spec.sensitivity < 1:
        raise ValueError(f"{where}: sample_fps must be positive and sensitivity in [0, 1)")
    return spec


@dataclass(frozen=True)
class AnalyticsConfig:
    """The ``[analytics]`` table: applications and motion detectors the gateway runs."""

    applications: tuple[ApplicationSpec, ...] = field(default_factory=tuple)
    motion: tuple[MotionSpec, ...] = field(default_factory=tuple)


def analytics_from_toml(values: Any, where: str = "analytics") -> AnalyticsConfig:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a table")
    for key in values:
        if key not in ("applications", "motion"):
            raise ValueError(f"{where}.{key}: unknown key (expected applications, motion)")
    apps = tuple(application_from_toml(v, f"{where}.applications[{i}]") for i, v in enumerate(_tables(values.get("applications"), f"{where}.applications")))
    if len({a.name for a in apps}) != len(apps):
        raise ValueError(f"{where}.applications: application names must differ")
    motion = tuple(motion_from_toml(v, f"{where}.motion[{i}]") for i, v in enumerate(_tables(values.get("motion"), f"{where}.motion")))
    return AnalyticsConfig(apps, motion)
