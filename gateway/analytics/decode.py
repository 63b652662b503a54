"""From stored segments to a typed DuckDB table: columnar, with a reason for every bad record.

``raw_table`` slices segment payloads (``gateway.kds.segments`` layout) straight into Arrow
arrays — no Python object per record. ``decode_sql`` then parses and type-checks the whole
batch in DuckDB: a record whose bytes are not UTF-8, not a JSON object (or, for CSV, have the
wrong number of fields), or whose field does not cast to its column type gets a ``__error``
text; the engine sends those to the error stream instead of the query.
"""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa

from gateway.analytics.spec import InputSpec
from gateway.kds import segments

RAW_SCHEMA = pa.schema([("seq", pa.int64()), ("arrival", pa.float64()), ("partition_key", pa.large_string()), ("data", pa.large_binary())])


def _column(parts: list[memoryview], lengths: list[np.ndarray], kind: pa.DataType) -> pa.Array:
    """One Arrow array over the concatenated ``parts`` (64-bit offsets from ``lengths``)."""
    sizes = np.concatenate(lengths)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return pa.Array.from_buffers(kind, len(sizes), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(parts))])


def raw_table(rows: list[tuple[int, float, bytes]], from_seq: int, limit: int) -> pa.Table:
    """The records of ``rows`` (``Store.read_segments``) at ``from_seq`` and after, at most ``limit``:
    each segment's keys and data are sliced out whole, so the cost per record is numpy's, not Python's."""
    keys: list[memoryview] = []
    datas: list[memoryview] = []
    key_lens: list[np.ndarray] = []
    data_lens: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    arrivals: list[np.ndarray] = []
    taken = 0
    for first, arrival, payload in rows:
        k_lens, d_lens, start = segments.layout(payload)
        kl = np.frombuffer(k_lens, dtype=np.uint32).astype(np.int64)
        dl = np.frombuffer(d_lens, dtype=np.uint32).astype(np.int64)
        skip = max(0, from_seq - first)
        n = min(len(kl) - skip, limit - taken)
        if n <= 0:
            continue
        view = memoryview(payload)
        key_start = start + int(kl[:skip].sum())
        data_start = start + int(kl.sum()) + int(dl[:skip].sum())
        keys.append(view[key_start : key_start + int(kl[skip : skip + n].sum())])
        datas.append(view[data_start : data_start + int(dl[skip : skip + n].sum())])
        key_lens.append(kl[skip : skip + n])
        data_lens.append(dl[skip : skip + n])
        seqs.append(np.arange(first + skip, first + skip + n, dtype=np.int64))
        arrivals.append(np.full(n, arrival, dtype=np.float64))
        taken += n
        if taken >= limit:
            break
    if not seqs:
        return RAW_SCHEMA.empty_table()
    columns = [pa.array(np.concatenate(seqs)), pa.array(np.concatenate(arrivals)),
               _column(keys, key_lens, pa.large_string()), _column(datas, data_lens, pa.large_binary())]
    return pa.Table.from_arrays(columns, schema=RAW_SCHEMA)


def csv_fields(table: pa.Table, width: int) -> pa.Table:
    """``table`` plus ``__pre`` (an error text or null) and one string column ``__s<i>`` per field."""
    columns: list[list[str | None]] = [[] for _ in range(width)]
    errors: list[str | None] = []
    for data in table.column("data").to_pylist():
        try:
            rows = list(csv.reader([data.decode("utf-8").rstrip("\r\n")]))
            fields = rows[0] if rows else []
            error = None if len(fields) == width else f"expected {width} CSV fields, got {len(fields)}"
        except (UnicodeDecodeError, csv.Error) as exc:
            fields, error = [], f"not CSV text: {exc}"
        errors.append(error)
        for i in range(width):
            value = fields[i] if error is None and fields[i] != "" else None
            columns[i].append(value)
    out = table.append_column("__pre", pa.array(errors, pa.string()))
    for i, values in enumerate(columns):
        out = out.append_column(f"__s{i}", pa.array(values, pa.string()))
    return out


def _quote(name: str) -> str:
    return '"' + name + '"'


def _cast(text: str, kind: str) -> str:
    if kind == "VARCHAR":
        return text
    if kind == "TIMESTAMP":
        return f"COALESCE(TRY_CAST({text} AS TIMESTAMP), make_timestamp(TRY_CAST(TRY_CAST({text} AS DOUBLE) * 1000000 AS BIGINT)))"
    return f"TRY_CAST({text} AS {kind})"


def decode_sql(spec: InputSpec, source: str) -> str:
    """SELECT turning ``source`` (``raw_table``, or ``csv_fields`` of it) into the input's typed rows
    plus ``arrival_time``, ``partition_key``, ``seq``, ``data`` and ``__error``."""
    cols = spec.schema
    if spec.format == "json":
        paths = ", ".join(f"'$.{c.name}'" for c in cols)
        inner = (
            f"SELECT *, CASE WHEN __j IS NULL THEN 'not UTF-8 text' WHEN NOT json_valid(__j) THEN 'not valid JSON' "
            f"WHEN json_type(__j) <> 'OBJECT' THEN 'not a JSON object' END AS __pre, "
            f"CASE WHEN json_valid(__j) AND json_type(__j) = 'OBJECT' THEN json_extract_string(__j, [{paths}]) END AS __v "
            f"FROM (SELECT *, try(decode(data)) AS __j FROM {source})"
        )
        strings = [f"__v[{i + 1}]" for i in range(len(cols))]
    else:
        inner = f"SELECT * FROM {source}"
        strings = [f"__s{i}" for i in range(len(cols))]
    typed = [f"{_cast(s, c.type)} AS {_quote(c.name)}" for s, c in zip(strings, cols)]
    checks = [f"WHEN {s} IS NOT NULL AND {_cast(s, c.type)} IS NULL THEN 'column {c.name}: not a {c.type}: ' || left({s}, 80)" for s, c in zip(strings, cols)]
    if spec.event_time:
        index = next(i for i, c in enumerate(cols) if c.name == spec.event_time)
        checks.append(f"WHEN {strings[index]} IS NULL THEN 'event time column {spec.event_time} is missing'")
    error = f"CASE WHEN __pre IS NOT NULL THEN __pre {' '.join(checks)} END"
    return (
        f"SELECT {', '.join(typed)}, make_timestamp(CAST(arrival * 1000000 AS BIGINT)) AS arrival_time, partition_key, "
        f"seq, data, {error} AS __error FROM ({inner})"
    )
