"""Analytics applications as the gateway config declares them (``[[analytics.applications]]``).

Frozen dataclasses whose field comments are the user documentation (every key, with its default,
is also in ``configs/gateway.example.toml``), checked by ``typed_config`` like every other
section: each table is built with ``typed_config.build`` and its ``check()``; the arrays of
tables (``inputs``, ``references``, ``queries``, ``motion``) are built here one by one, since
``typed_config`` takes plain values only. ``analytics_from_toml`` appends *every* problem, with
its full key, to the caller's list. Window queries are parsed here too
(``gateway.analytics.windows``), so a bad TVF fails at load.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import typed_config
from gateway.analytics.windows import Window, find_window

#: Column types a schema may use (DuckDB names).
COLUMN_TYPES = ("VARCHAR", "DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "BOOLEAN", "TIMESTAMP")
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


def _identifier_problem(value: str, name: str) -> list[str]:
    return [] if IDENTIFIER.match(value) else [f"{name}: {value!r} is not a plain SQL identifier (letters, digits, _)"]


@dataclass(frozen=True)
class InputSpec:
    """One gateway data stream read by the application, visible to its SQL as ``table``."""

    stream: str
    #: Name of the input in the SQL (default: the stream name with non-identifier chars as ``_``).
    table: str = ""
    #: Where a new application starts reading: "TRIM_HORIZON" (oldest) or "LATEST" (new records only).
    start: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    #: "json" (one object per record) or "csv" (one line per record, fields in ``columns`` order).
    format: Literal["json", "csv"] = "json"
    #: Schema: "name TYPE" strings (types: VARCHAR DOUBLE FLOAT BIGINT INTEGER SMALLINT BOOLEAN TIMESTAMP).
    #: A TIMESTAMP takes an ISO-8601 string or epoch seconds (a number).
    columns: tuple[str, ...] = ()
    #: TIMESTAMP column holding the event time; "" = the record's arrival time at the gateway.
    event_time: str = ""
    #: The watermark trails the newest event time seen by this many seconds; a record older than
    #: the watermark when it is read is late (counted, sent to the error stream).
    allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS
    #: Idleness (Flink's ``withIdleness``): after this many seconds without a new record, read to
    #: the end, the watermark follows the gateway's clock (now - allowed lateness), so the last
    #: windows of a stream that stopped close. 0 = off (default): windows then depend on the records
    #: alone, not on the clock, which a device without a real-time clock may not share. event_time only.
    idle_timeout_seconds: float = 0.0

    @cached_property
    def schema(self) -> tuple[Column, ...]:
        """``columns`` parsed (after ``check`` passed)."""
        return tuple(Column(text.split()[0], text.split()[1].upper()) for text in self.columns)

    def check(self) -> list[str]:
        problems: list[str] = []
        names: list[str] = []
        for i, text in enumerate(self.columns):
            parts = text.split()
            if len(parts) != 2:
                problems.append(f"columns[{i}]: expected \"name TYPE\", got {text!r}")
                continue
            problems += _identifier_problem(parts[0], f"columns[{i}]")
            if parts[1].upper() not in COLUMN_TYPES:
                problems.append(f"columns[{i}]: type {parts[1]!r} is not one of {', '.join(COLUMN_TYPES)}")
            if parts[0] in METADATA_COLUMNS or parts[0] in names:
                problems.append(f"columns[{i}]: column {parts[0]!r} is reserved or repeated")
            names.append(parts[0])
        if not self.columns:
            problems.append("columns: required (a non-empty list of \"name TYPE\" strings)")
        if self.table:
            problems += _identifier_problem(self.table, "table")
        if self.event_time and not any(c.upper().split()[1:] == ["TIMESTAMP"] and c.split()[0] == self.event_time for c in self.columns):
            problems.append(f"event_time: {self.event_time!r} must name a TIMESTAMP column of the schema")
        if self.allowed_lateness_seconds < 0:
            problems.append("allowed_lateness_seconds: must not be negative")
        if self.idle_timeout_seconds < 0:
            problems.append("idle_timeout_seconds: must not be negative (0 = off)")
        elif self.idle_timeout_seconds and not self.event_time:
            problems.append("idle_timeout_seconds: needs event_time (on arrival time the watermark follows the clock already)")
        return problems


@dataclass(frozen=True)
class ReferenceSpec:
    """A static table loaded at start from a CSV (with a header) or JSON (array or one object per line) file."""

    table: str
    path: str

    def check(self) -> list[str]:
        problems = _identifier_problem(self.table, "table")
        if not self.path.endswith((".csv", ".json", ".jsonl", ".ndjson")):
            problems.append(f"path: expected a .csv or .json file, got {self.path!r}")
        return problems


@dataclass(frozen=True)
class QuerySpec:
    """One continuous query; its result rows become JSON records."""

    name: str
    #: DuckDB SQL over the inputs and references. A window aggregation reads
    #: TABLE(TUMBLE|HOP|SESSION(TABLE <input>, DESCRIPTOR(<time column>), ...)) as in Flink SQL.
    sql: str
    #: Data stream the rows go to ("" = dashboard only).
    output_stream: str = ""
    #: Firehose delivery stream the rows also go to, one JSON object per line ("" = none).
    delivery_stream: str = ""
    #: Column whose value is each output record's partition key ("" = the query name).
    partition_key: str = ""

    @cached_property
    def window(self) -> Window | None:
        """The query's window function (after ``check`` passed), None for a per-record query."""
        return find_window(self.sql)

    def check(self) -> list[str]:
        problems = _identifier_problem(self.name, "name")
        if not self.sql.strip():
            problems.append("sql: must not be empty")
        try:
            find_window(self.sql)
        except ValueError as exc:
            problems.append(f"sql: {exc}")
        return problems


@dataclass(frozen=True)
class ApplicationSpec:
    name: str
    #: Data stream for malformed and late records, as JSON with the reason ("" = only count them).
    error_stream: str = ""
    #: Most records read per micro-batch.
    max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS
    #: Seconds between polls of the inputs when there is nothing new.
    poll_seconds: float = DEFAULT_POLL_SECONDS
    #: [[...inputs]], [[...references]], [[...queries]]: built by ``application_from_toml``.
    inputs: tuple[InputSpec, ...] = ()
    references: tuple[ReferenceSpec, ...] = ()
    queries: tuple[QuerySpec, ...] = ()

    def input(self, table: str) -> InputSpec:
        return next(i for i in self.inputs if i.table == table)

    def check(self) -> list[str]:
        return _identifier_problem(self.name, "name") + typed_config.positive(self, "max_batch_records", "poll_seconds")

    def check_tables(self) -> list[str]:
        """Rules across the nested tables (run once they are built)."""
        problems = []
        if not self.inputs:
            problems.append("inputs: at least one [[...inputs]] table is required")
        if not self.queries:
            problems.append("queries: at least one [[...queries]] table is required")
        tables = [i.table for i in self.inputs] + [r.table for r in self.references]
        if len(set(tables)) != len(tables):
            problems.append(f"inputs, references: table names must differ ({', '.join(tables)})")
        if len({q.name for q in self.queries}) != len(self.queries):
            problems.append("queries: query names must differ")
        for i, query in enumerate(self.queries):
            window = query.window
            if window is None:
                continue
            source = next((s for s in self.inputs if s.table == window.table), None)
            if source is None:
                problems.append(f"queries[{i}].sql: {window.function} reads {window.table!r}, which is not an input table")
            elif window.time_column != (source.event_time or "arrival_time"):
                problems.append(f"queries[{i}].sql: DESCRIPTOR({window.time_column}) must be the input's event time column ({source.event_time or 'arrival_time'})")
        return problems


def _tables(values: Any, where: str, errors: list[str]) -> list[Any]:
    if values is None:
        return []
    if not isinstance(values, list):
        errors.append(f"{where}: expected an array of tables ([[{where}]])")
        return []
    return values


NESTED = ("inputs", "references", "queries")


def application_from_toml(values: Any, where: str, errors: list[str]) -> ApplicationSpec | None:
    if not isinstance(values, dict):
        errors.append(f"{where}: expected a table")
        return None
    before = len(errors)
    plain = {k: v for k, v in values.items() if k not in NESTED}
    app = typed_config.build(ApplicationSpec, plain, where, errors)
    inputs = []
    for i, table in enumerate(_tables(values.get("inputs"), f"{where}.inputs", errors)):
        spec = typed_config.build(InputSpec, table, f"{where}.inputs[{i}]", errors)
        if spec is not None:
            inputs.append(dataclasses.replace(spec, table=spec.table or re.sub(r"\W", "_", spec.stream)))
    references = [typed_config.build(ReferenceSpec, t, f"{where}.references[{i}]", errors)
                  for i, t in enumerate(_tables(values.get("references"), f"{where}.references", errors))]
    queries = [typed_config.build(QuerySpec, t, f"{where}.queries[{i}]", errors)
               for i, t in enumerate(_tables(values.get("queries"), f"{where}.queries", errors))]
    if app is None or len(errors) != before:
        return None
    app = dataclasses.replace(app, inputs=tuple(inputs), references=tuple(r for r in references if r), queries=tuple(q for q in queries if q))
    errors.extend(typed_config.key(where, m) for m in app.check_tables())
    return app if len(errors) == before else None


@dataclass(frozen=True)
class MotionSpec:
    """Motion detection on one video stream (``[[analytics.motion]]``)."""

    #: Video stream whose fragments are analysed.
    video_stream: str
    #: Data stream the motion_start / motion_end records go to.
    output_stream: str
    #: Frames analysed per second of video (the others are decoded, H.264 needs them, but not analysed).
    sample_fps: float = 2.0
    #: 0..1: a zone moves when at least (1 - sensitivity) / 40 of its pixels changed (0.8: 0.5 %).
    sensitivity: float = 0.8
    #: Zones as [x, y, width, height] fractions of the frame (empty = the whole frame).
    zones: tuple[tuple[float, ...], ...] = ()
    #: Motion ends after this many seconds without a moving sample.
    end_after_seconds: float = 1.0

    def check(self) -> list[str]:
        problems = typed_config.positive(self, "sample_fps")
        if not 0 <= self.sensitivity < 1:
            problems.append(f"sensitivity: expected 0 <= sensitivity < 1, got {self.sensitivity}")
        for i, zone in enumerate(self.zones):
            if len(zone) != 4 or not all(0 <= v <= 1 for v in zone):
                problems.append(f"zones[{i}]: expected [x, y, width, height] as fractions 0..1, got {list(zone)}")
        return problems


@dataclass(frozen=True)
class AnalyticsConfig:
    """The ``[analytics]`` table: applications and motion detectors the gateway runs."""

    applications: tuple[ApplicationSpec, ...] = field(default_factory=tuple)
    motion: tuple[MotionSpec, ...] = field(default_factory=tuple)


def analytics_from_toml(values: Any, errors: list[str], where: str = "analytics") -> AnalyticsConfig:
    """The ``[analytics]`` table; every problem is appended to ``errors`` (then the result is empty)."""
    if not isinstance(values, dict):
        errors.append(f"{where}: expected a table")
        return AnalyticsConfig()
    before = len(errors)
    for name in values:
        if name not in ("applications", "motion"):
            errors.append(f"{where}.{name}: unknown key (expected applications, motion)")
    apps = [application_from_toml(v, f"{where}.applications[{i}]", errors)
            for i, v in enumerate(_tables(values.get("applications"), f"{where}.applications", errors))]
    motion = [typed_config.build(MotionSpec, v, f"{where}.motion[{i}]", errors)
              for i, v in enumerate(_tables(values.get("motion"), f"{where}.motion", errors))]
    names = [a.name for a in apps if a]
    if len(set(names)) != len(names):
        errors.append(f"{where}.applications: application names must differ")
    streams = [m.video_stream for m in motion if m]
    if len(set(streams)) != len(streams):
        errors.append(f"{where}.motion: one [[analytics.motion]] per video stream")
    if len(errors) != before:
        return AnalyticsConfig()
    return AnalyticsConfig(tuple(a for a in apps if a), tuple(m for m in motion if m))
