"""One running analytics application: a thread that reads committed records in micro-batches,
lets DuckDB do the work, and writes results through a transactional outbox.

Each step: read up to ``max_batch_records`` new records of every input straight from the data
store (``Store.read_segments``, no HTTP), decode and type-check them in DuckDB
(``gateway.analytics.decode``), split off malformed and late records, run plain queries over
the batch and window queries over their buffered rows once the watermark passes a window's
end (``gateway.analytics.windows``), then commit positions, window state and output records
together (``gateway.analytics.checkpoint``) and only then write the output to its streams.
Everything runs off the event loop: the loop is only used to submit output to the store.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any

import duckdb
import pyarrow as pa

from gateway.analytics.checkpoint import Checkpoint, CheckpointError, State, WindowState, checkpoint_path
from gateway.analytics.decode import RAW_SCHEMA, csv_fields, decode_sql, raw_table
from gateway.analytics.spec import ApplicationSpec, InputSpec, QuerySpec
from gateway.analytics.output import FIREHOSE_PREFIX, Outputs, Runner, deliver
from gateway.kds.store import Store

log = logging.getLogger("gateway.analytics")

#: A step that emits nothing saves its progress at most this often (one that emits saves at once,
#: before its output leaves). Between saves a crash only means re-reading a little input.
CHECKPOINT_SECONDS = 1.0
#: Output rows per query kept in memory for the dashboard and the HTTP API.
RECENT_ROWS = 500
SEQ_DIGITS = 54  # external sequence number = "49" + the store's number, zero-padded (gateway.kds.sequence)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The one row of a one-row result, read to its end: DuckDB refuses ``con.sql`` on a connection
    whose last result was not (an unfinished count made the next checkpoint save fail)."""
    return result.fetchall()[0]  # type: ignore[no-any-return]


class QueryFailed(Exception):
    """A query cannot run (SQL error): the application stops with this message."""


class Application(Runner):
    def __init__(self, spec: ApplicationSpec, outputs: Outputs, data_dir: Any, durability: str = "normal") -> None:
        super().__init__(f"analytics-{spec.name}")
        self.spec = spec
        self.outputs = outputs
        self.store = outputs.store
        self.path = checkpoint_path(data_dir, spec.name)
        self.durability = durability
        self.state = State()
        self.lag_ms = 0
        self.watermarks: dict[str, str | None] = {}
        #: Inputs whose watermark follows the clock now (``idle_timeout_seconds`` passed without records).
        self.idle: set[str] = set()
        #: time.monotonic() of each input's last non-empty read (or of the start): idleness counts from it.
        self._last_read: dict[str, float] = {}
        self.recent: dict[str, collections.deque[tuple[int, dict[str, Any]]]] = {q.name: collections.deque(maxlen=RECENT_ROWS) for q in spec.queries}
        self.row_counter = 0
        #: Called (from this thread) after each step that produced rows or changed stats.
        self.listeners: list[Any] = []
        self._rate: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._checkpoint: Checkpoint | None = None
        self._dirty_windows: set[str] = set()
        self._unsaved = False
        self._saved_at = 0.0
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._setup()
        except (CheckpointError, duckdb.Error, OSError, QueryFailed) as exc:
            self._fail(f"cannot start: {exc}")
            return
        self.status = "RUNNING"
        while not self._stop.is_set():
            try:
                if not self._deliver():
                    self._stop.wait(1.0)
                    continue
                busy = self._step()
                self._deliver()
                self._notify()
                if not busy:
                    self._stop.wait(self.spec.poll_seconds)
            except QueryFailed as exc:
                self._fail(str(exc))
                break
            except CheckpointError as exc:
                self._fail(str(exc))
                break
            except Exception:
                # the step may have advanced positions in memory: start again from the last save
                log.exception("analytics application %s: step failed; resuming from its checkpoint", self.spec.name)
                self._stop.wait(1.0)
                try:
                    self._close()
                    self._setup()
                except (CheckpointError, duckdb.Error, OSError, QueryFailed) as exc:
                    self._fail(f"cannot resume: {exc}")
                    break
                self.message = "a step failed, see the gateway log; resumed from the checkpoint"
        if self._unsaved and self._con is not None and self.status != "FAILED":
            try:
                self._save([])  # a clean stop saves what a crash would have to read again
            except (CheckpointError, duckdb.Error) as exc:
                log.warning("analytics %s: cannot save on stop: %s", self.spec.name, exc)
        self._close()

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._checkpoint is not None:
            self._checkpoint.close()
            self._checkpoint = None
        self._dirty_windows.clear()
        self._unsaved = False

    def _fail(self, message: str) -> None:
        log.error("analytics application %s failed: %s", self.spec.name, message)
        self.status, self.message = "FAILED", message
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a listener must never stop the application
                log.exception("analytics listener failed")

    def _setup(self) -> None:
        self._checkpoint = Checkpoint(self.path, self.durability)
        self.state = self._checkpoint.load()
        self._last_read = {spec.table: time.monotonic() for spec in self.spec.inputs}
        self.idle.clear()
        con = self._con = duckdb.connect()
        con.execute("SET threads=1")  # one core: ingest keeps the other
        for ref in self.spec.references:
            reader = "read_csv_auto" if ref.path.endswith(".csv") else "read_json_auto"
            con.execute(f"CREATE TABLE {_q(ref.table)} AS SELECT * FROM {reader}(?)", [ref.path])
        for spec in self.spec.inputs:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_q('__good_' + spec.table)} AS SELECT * EXCLUDE (seq, data, __error) FROM ({self._decoded(spec, RAW_SCHEMA.empty_table())}) WHERE false")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_q(spec.table)} AS SELECT * FROM {_q('__good_' + spec.table)}")
        for query in self.spec.queries:
            if query.window is None:
                continue
            pending = _q("__pending_" + query.name)
            con.execute(f"CREATE TEMP TABLE {pending} AS SELECT * FROM {_q('__good_' + query.window.table)} WHERE false")
            saved = self.state.windows.get(query.name)
            if saved is not None and saved.sql != query.sql:
                log.warning("analytics %s: query %s changed; its open windows start empty", self.spec.name, query.name)
                saved = None
            if saved is not None and saved.pending is not None:
                try:
                    restored = saved.pending
                    con.execute(f"INSERT INTO {pending} SELECT * FROM restored")
                except duckdb.Error as exc:
                    log.warning("analytics %s: cannot restore the windows of %s (%s); they start empty", self.spec.name, query.name, exc)
            self.state.windows[query.name] = WindowState(query.sql, None if saved is None else saved.emitted_until_us, None)
        for query in self.spec.queries:  # every query must at least compile
            sql = query.sql
            if query.window is not None:
                sql = query.window.rewrite(sql, f"(SELECT *, arrival_time AS window_start, arrival_time AS window_end, "
                                                f"arrival_time AS window_time FROM {_q('__pending_' + query.name)} WHERE false)")
            try:
                con.execute(f"EXPLAIN {sql}")
            except duckdb.Error as exc:
                raise QueryFailed(f"query {query.name}: {exc}") from exc

    def _decoded(self, spec: InputSpec, raw: pa.Table) -> str:
        assert self._con is not None
        source = csv_fields(raw, len(spec.schema)) if spec.format == "csv" else raw
        self._con.register("__raw", source)
        return decode_sql(spec, "__raw")

    # -- one micro-batch -----------------------------------------------------------------

    def _read(self, spec: InputSpec) -> tuple[pa.Table, bool]:
        """New records of one input, and whether every shard was read to its end."""
        stream = self.store.streams.get(spec.stream)
        if stream is None:
            self.message = f"input stream {spec.stream} does not exist"
            return RAW_SCHEMA.empty_table(), True
        shards = stream.shards
        first_run = not any(table == spec.table for table, _ in self.state.positions)  # LATEST applies to a new input only
        per_shard = max(1, self.spec.max_batch_records // max(1, len(shards)))
        tables, at_tip = [], True
        for shard in shards:
            key = (spec.table, shard.key)
            position = self.state.positions.get(key)
            if position is None:
                latest = spec.start == "LATEST" and first_run
                position = (self.store.committed_seq if shard.end_seq is None else shard.end_seq + 1) if latest else shard.start_seq
                self.state.positions[key] = position
            rows, _ = self.store.read_segments(shard.key, position, per_shard)
            if not rows:
                continue
            table = raw_table(rows, position, per_shard)
            if table.num_rows:
                self.state.positions[key] = table.column("seq")[-1].as_py() + 1
                tables.append(table)
                if table.num_rows >= per_shard:
                    at_tip = False
        return (pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()), at_tip

    def _watermark_us(self, spec: InputSpec) -> int | None:
        top = self.state.watermarks.get(spec.table)
        return None if top is None else top - round(spec.allowed_lateness_seconds * 1_000_000)

    def _idle(self, spec: InputSpec) -> bool:
        """Whether ``spec`` had no new record for its ``idle_timeout_seconds`` (Flink's idleness)."""
        timeout = spec.idle_timeout_seconds
        idle = bool(timeout) and time.monotonic() - self._last_read[spec.table] >= timeout
        if not idle:
            self.idle.discard(spec.table)
        elif spec.table not in self.idle:
            log.info("analytics %s: input %s idle for %gs; its watermark follows the clock", self.spec.name, spec.table, timeout)
            self.idle.add(spec.table)
        return idle

    def _step(self) -> bool:
        con = self._con
        assert con is not None and self._checkpoint is not None
        started = time.time()
        outbox: list[tuple[str, str, bytes]] = []
        counters = self.state.counters
        read_total, behind, oldest_arrival = 0, False, None
        self.message = ""
        for spec in self.spec.inputs:
            raw, at_tip = self._read(spec)
            behind |= not at_tip
            read_total += raw.num_rows
            good = _q("__good_" + spec.table)
            column = _q(spec.event_time or "arrival_time")
            if raw.num_rows:
                self._last_read[spec.table] = time.monotonic()
                arrival = raw.column("arrival")[-1].as_py()
                oldest_arrival = arrival if oldest_arrival is None else min(oldest_arrival, arrival)
                con.execute(f"CREATE OR REPLACE TEMP TABLE __batch AS {self._decoded(spec, raw)}")
                before = self._watermark_us(spec)
                late = "false" if before is None else f"(__error IS NULL AND epoch_us({column}) < {before})"
                con.execute(f"CREATE OR REPLACE TEMP TABLE {good} AS SELECT * EXCLUDE (seq, data, __error) FROM __batch WHERE __error IS NULL AND NOT {late}")
                bad = _first(con.execute(
                    f"SELECT count(*) FILTER (WHERE __error IS NOT NULL), count(*) FILTER (WHERE {late}), max(epoch_us({column})) FILTER (WHERE __error IS NULL) FROM __batch"
                ))
                assert bad is not None
                malformed, late_count, newest = bad
                counters["records_in"] = counters.get("records_in", 0) + raw.num_rows
                counters["malformed"] = counters.get("malformed", 0) + malformed
                counters["late"] = counters.get("late", 0) + late_count
                if (malformed or late_count) and self.spec.error_stream:
                    outbox += self._errors(spec, late, before)
                if newest is not None:
                    self.state.watermarks[spec.table] = max(self.state.watermarks.get(spec.table, newest), newest)
            else:
                con.execute(f"DELETE FROM {good}")
            idle = self._idle(spec)
            if at_tip and (not spec.event_time or idle):
                # arrival time: once read to the end, nothing older than "now" can still come;
                # an idle event-time input: its event clock is taken to be the gateway's
                self.state.watermarks[spec.table] = max(self.state.watermarks.get(spec.table, 0), int(started * 1_000_000))
            self.watermarks[spec.table] = _iso(self._watermark_us(spec))
        for query in self.spec.queries:
            if query.window is None:
                if read_total:
                    outbox += self._emit(query, query.sql)
            elif self._advance_windows(query, outbox):
                self._dirty_windows.add(query.name)
        self._unsaved |= bool(read_total or self._dirty_windows)
        if outbox or (self._unsaved and time.monotonic() - self._saved_at >= CHECKPOINT_SECONDS):
            self._save(outbox)
        now = time.time()
        self._rate.append((now, counters.get("records_in", 0)))
        self.lag_ms = int((now - oldest_arrival) * 1000) if behind and oldest_arrival is not None else 0
        return behind

    def _save(self, outbox: list[tuple[str, str, bytes]]) -> None:
        """Commit the state (with the open windows that changed since the last save) and ``outbox``."""
        con, checkpoint = self._con, self._checkpoint
        assert con is not None and checkpoint is not None
        changed = sorted(self._dirty_windows)
        for name in changed:
            self.state.windows[name].pending = con.sql(f"SELECT * FROM {_q('__pending_' + name)}").to_arrow_table()
        checkpoint.save(self.state, changed, outbox)
        self._dirty_windows.clear()
        self._unsaved = False
        self._saved_at = time.monotonic()

    def _advance_windows(self, query: QuerySpec, outbox: list[tuple[str, str, bytes]]) -> bool:
        """Buffer the batch's rows; emit every window the watermark has passed. True if state changed."""
        con = self._con
        window = query.window
        assert con is not None and window is not None
        pending = _q("__pending_" + query.name)
        state = self.state.windows[query.name]
        added = _first(con.execute(f"INSERT INTO {pending} SELECT * FROM {_q('__good_' + window.table)}"))
        changed = bool(added and added[0])
        upto = self._watermark_us(self.spec.input(window.table))
        if upto is None:
            return changed
        if window.function == "SESSION":
            con.execute(f"CREATE OR REPLACE TEMP TABLE __sessions AS {window.sessions(pending)}")
            closed = _first(con.execute(f"SELECT count(*) FROM __sessions WHERE epoch_us(window_end) <= {upto}"))
            if not closed or not closed[0]:
                return changed
            con.execute(f"CREATE OR REPLACE TEMP TABLE __fired AS SELECT * FROM __sessions WHERE epoch_us(window_end) <= {upto}")
            outbox += self._emit(query, window.rewrite(query.sql, "__fired"))
            con.execute(f"DELETE FROM {pending}")
            con.execute(f"INSERT INTO {pending} SELECT * EXCLUDE (window_start, window_end, window_time) FROM __sessions WHERE epoch_us(window_end) > {upto}")
            return True
        if state.emitted_until_us is not None and upto <= state.emitted_until_us:
            return changed
        con.execute(f"CREATE OR REPLACE TEMP TABLE __fired AS {window.fired_rows(pending, state.emitted_until_us, upto)}")
        outbox += self._emit(query, window.rewrite(query.sql, "__fired"))
        state.emitted_until_us = upto
        con.execute(f"DELETE FROM {pending} WHERE epoch_us({_q(window.time_column)}) <= {upto - window.retain_us}")
        return True

    def _emit(self, query: QuerySpec, sql: str) -> list[tuple[str, str, bytes]]:
        """Run ``sql``; its rows as outbox records (JSON) and in the recent-rows buffer."""
        con = self._con
        assert con is not None
        key = f"CAST(__r.{_q(query.partition_key)} AS VARCHAR)" if query.partition_key else "NULL"
        try:
            rows = con.execute(f"SELECT to_json(__r)::VARCHAR, left(coalesce({key}, ?), 256) FROM ({sql}) AS __r", [query.name]).fetchall()
        except duckdb.Error as exc:
            raise QueryFailed(f"query {query.name}: {exc}") from exc
        if not rows:
            return []
        name = f"outputs.{query.name}"
        self.state.counters[name] = self.state.counters.get(name, 0) + len(rows)
        recent = self.recent[query.name]
        for text, _ in rows[-RECENT_ROWS:]:
            self.row_counter += 1
            recent.append((self.row_counter, json.loads(text)))
        out: list[tuple[str, str, bytes]] = []
        if query.output_stream:
            out += [(query.output_stream, pk, text.encode()) for text, pk in rows]
        if query.delivery_stream:
            out += [(FIREHOSE_PREFIX + query.delivery_stream, pk, text.encode()) for text, pk in rows]
        return out

    def _errors(self, spec: InputSpec, late: str, watermark_us: int | None) -> list[tuple[str, str, bytes]]:
        con = self._con
        assert con is not None
        reason = f"coalesce(__error, 'late: event time before the watermark {_iso(watermark_us)}')"
        rows = con.execute(
            f"SELECT to_json({{application: ?, input: ?, reason: {reason}, sequenceNumber: '49' || lpad(seq::VARCHAR, {SEQ_DIGITS}, '0'), "
            f"partitionKey: partition_key, arrivalTime: arrival_time, data: try(decode(data)), "
            f"dataBase64: CASE WHEN try(decode(data)) IS NULL THEN to_base64(data) END}})::VARCHAR, partition_key "
            f"FROM __batch WHERE __error IS NOT NULL OR {late} ORDER BY seq",
            [self.spec.name, spec.table],
        ).fetchall()
        return [(self.spec.error_stream, pk, text.encode()) for text, pk in rows]

    def _deliver(self) -> bool:
        assert self._checkpoint is not None
        return deliver(self._checkpoint, self.outputs, self._stop, self._report)

    def _report(self, message: str) -> None:
        self.message = message

    # -- what the API shows ----------------------------------------------------------------

    def records_per_second(self) -> float:
        samples = [s for s in self._rate if s[0] >= time.time() - 5]
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return 0.0
        return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])

    def summary(self) -> dict[str, Any]:
        counters = dict(self.state.counters)
        return {
            "ApplicationName": self.spec.name,
            "ApplicationStatus": self.status,
            "Message": self.message,
            "Inputs": [{"Stream": i.stream, "Table": i.table, "Format": i.format, "Watermark": self.watermarks.get(i.table),
                        "Idle": i.table in self.idle} for i in self.spec.inputs],
            "Queries": [{"Name": q.name, "Window": q.window.function if q.window else None, "OutputStream": q.output_stream or None,
                         "DeliveryStream": q.delivery_stream or None, "Outputs": counters.get(f"outputs.{q.name}", 0)} for q in self.spec.queries],
            "RecordsIn": counters.get("records_in", 0),
            "RecordsPerSecond": round(self.records_per_second(), 1),
            "Malformed": counters.get("malformed", 0),
            "Late": counters.get("late", 0),
            "InputLagMillis": self.lag_ms,
            "ErrorStream": self.spec.error_stream or None,
        }

    def detail(self) -> dict[str, Any]:
        out = self.summary()
        out["Queries"] = [{**s, "Sql": q.sql, "PartitionKey": q.partition_key or None} for s, q in zip(out["Queries"], self.spec.queries)]
        out["Inputs"] = [{**s, "Start": i.start, "Columns": [f"{c.name} {c.type}" for c in i.schema], "EventTime": i.event_time or "arrival_time",
                          "AllowedLatenessSeconds": i.allowed_lateness_seconds,
                          "IdleTimeoutSeconds": i.idle_timeout_seconds} for s, i in zip(out["Inputs"], self.spec.inputs)]
        out["References"] = [{"Table": r.table, "Path": r.path} for r in self.spec.references]
        return out

    def rows_since(self, query: str, after: int) -> list[tuple[int, dict[str, Any]]]:
        return [r for r in list(self.recent.get(query, ())) if r[0] > after]


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000 // 1000:03d}Z"
