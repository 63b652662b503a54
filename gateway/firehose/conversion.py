"""Record format conversion: JSON records -> one Parquet or ORC object, schema from a Glue table.

``DataFormatConversionConfiguration``: ``SchemaConfiguration`` names the Glue table (read from
the gateway's own catalog, ``gateway.glue``) whose ``StorageDescriptor.Columns`` (Hive types:
string/varchar/char, tinyint..bigint, float, double, boolean, decimal(p,s), date, timestamp,
binary, array<>, map<>, struct<>) become the Arrow schema. ``InputFormatConfiguration``:
OpenXJsonSerDe (keys matched case-insensitively unless ``CaseInsensitive`` is false,
``ColumnToJsonKeyMappings``, ``ConvertDotsInJsonKeysToUnderscores``) or HiveJsonSerDe.
``OutputFormatConfiguration``: ParquetSerDe (Compression SNAPPY/GZIP/UNCOMPRESSED,
PageSizeBytes, EnableDictionaryCompression, WriterVersion) or OrcSerDe (Compression
SNAPPY/ZLIB/NONE, StripeSizeBytes, RowIndexStride). Objects get ``.parquet`` / ``.orc``.

Timestamps are taken as Firehose's deserializers take them: ISO-8601 / ``yyyy-MM-dd HH:mm:ss[.S]``
strings, epoch seconds (integers below 10^11 or floats) or epoch milliseconds. A record that is
not a JSON object, or whose value does not fit its column, goes to the error output
(``format-conversion-failed``) as the documented JSON document; missing keys are nulls and
unknown keys are ignored, as the SerDes do.

Speed: groups of records are first parsed by Arrow's JSON reader and cast to the schema (C++,
no Python per record); a group the reader or a cast refuses, or one where the two could disagree
(integers in timestamp columns), goes through the per-record Python path, which finds the
records that do not fit.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.orc as orc
import pyarrow.parquet as pq

from gateway.errors import AwsError
from gateway.firehose.pipeline import Failure, Record
from gateway.firehose.streams import DeliveryStream

FAILED = "format-conversion-failed"
#: (database, table) -> the Glue ``Table`` document (raises AwsError when there is none)
TableLookup = Callable[[str, str], dict[str, Any]]


# -- Hive types ----------------------------------------------------------------------------------


class _TypeParser:
    SIMPLE = {
        "string": pa.string(), "varchar": pa.string(), "char": pa.string(), "tinyint": pa.int8(), "smallint": pa.int16(),
        "int": pa.int32(), "integer": pa.int32(), "bigint": pa.int64(), "float": pa.float32(), "double": pa.float64(),
        "boolean": pa.bool_(), "timestamp": pa.timestamp("ms"), "date": pa.date32(), "binary": pa.binary(),
    }

    def __init__(self, text: str) -> None:
        self.text = text.strip().lower()
        self.pos = 0

    def parse(self) -> pa.DataType:
        result = self._type()
        if self.pos != len(self.text):
            raise ValueError(f"unexpected {self.text[self.pos:]!r}")
        return result

    def _word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def _expect(self, char: str) -> None:
        if self.text[self.pos : self.pos + 1] != char:
            raise ValueError(f"expected {char!r} at {self.pos} in {self.text!r}")
        self.pos += 1

    def _type(self) -> pa.DataType:
        word = self._word()
        if word == "array":
            self._expect("<")
            item = self._type()
            self._expect(">")
            return pa.list_(item)
        if word == "map":
            self._expect("<")
            key = self._type()
            self._expect(",")
            value = self._type()
            self._expect(">")
            return pa.map_(key, value)
        if word == "struct":
            self._expect("<")
            fields = []
            while True:
                name = self._word()
                self._expect(":")
                fields.append(pa.field(name, self._type()))
                if self.text[self.pos : self.pos + 1] != ",":
                    break
                self.pos += 1
            self._expect(">")
            return pa.struct(fields)
        if word == "decimal":
            precision, scale = 10, 0
            if self.text[self.pos : self.pos + 1] == "(":
                self.pos += 1
                precision = int(self._word())
                if self.text[self.pos : self.pos + 1] == ",":
                    self.pos += 1
                    scale = int(self._word())
                self._expect(")")
            return pa.decimal128(precision, scale)
        if word in ("varchar", "char") and self.text[self.pos : self.pos + 1] == "(":
            self.pos = self.text.index(")", self.pos) + 1
        if word not in self.SIMPLE:
            raise ValueError(f"unknown Hive type {word!r}")
        return self.SIMPLE[word]


def hive_type(text: str) -> pa.DataType:
    try:
        return _TypeParser(text).parse()
    except (ValueError, IndexError) as exc:
        raise ValueError(f"column type {text!r}: {exc}") from exc


def schema_of(table: dict[str, Any]) -> pa.Schema:
    columns = (table.get("StorageDescriptor") or {}).get("Columns") or []
    if not columns:
        raise ValueError("the Glue table has no columns")
    return pa.schema([pa.field(c["Name"].lower(), hive_type(c.get("Type", "string"))) for c in columns])


# -- values --------------------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, int):
        seconds = value / 1000 if abs(value) >= 10**11 else value
        return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
    if isinstance(value, float):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed
    raise ValueError(f"{type(value).__name__} is not a timestamp")


def coerce(value: Any, kind: pa.DataType) -> Any:
    """``value`` (from JSON) as a Python value of Arrow type ``kind``; ValueError when it does not fit."""
    if value is None:
        return None
    if pa.types.is_string(kind):
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return value if isinstance(value, str) else json.dumps(value)
    if pa.types.is_integer(kind):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r} is not an integer")
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
        if number is None:
            raise ValueError(f"{value!r} is not an integer")
        bits = kind.bit_width
        if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
            raise ValueError(f"{value!r} does not fit {kind}")
        return number
    if pa.types.is_floating(kind):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if pa.types.is_boolean(kind):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{value!r} is not a boolean")
    if pa.types.is_timestamp(kind):
        return _timestamp(value)
    if pa.types.is_date(kind):
        if isinstance(value, str):
            return date.fromisoformat(value[:10])
        if isinstance(value, int) and not isinstance(value, bool):
            return date.fromordinal(date(1970, 1, 1).toordinal() + value)
        raise ValueError(f"{value!r} is not a date")
    if pa.types.is_decimal(kind):
        try:
            amount = Decimal(str(value)) if not isinstance(value, (bool, dict, list)) else None
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a decimal") from exc
        if amount is None:
            raise ValueError(f"{value!r} is not a decimal")
        return amount.quantize(Decimal(1).scaleb(-kind.scale))
    if pa.types.is_binary(kind):
        return base64.b64decode(value) if isinstance(value, str) else bytes(value)
    if pa.types.is_list(kind):
        if not isinstance(value, list):
            raise ValueError(f"{value!r} is not an array")
        return [coerce(v, kind.value_type) for v in value]
    if pa.types.is_map(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not a map")
        return [(coerce(k, kind.key_type), coerce(v, kind.item_type)) for k, v in value.items()]
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not a struct")
        lowered = {str(k).lower(): v for k, v in value.items()}
        return {f.name: coerce(lowered.get(f.name.lower()), f.type) for f in kind}
    return value


# -- the encoder ---------------------------------------------------------------------------------


class Converter:
    """The ``pipeline.Encoder`` of a stream with format conversion on."""

    def __init__(self, lookup: TableLookup) -> None:
        self.lookup = lookup

    def __call__(self, stream: DeliveryStream, records: list[Record]) -> tuple[bytes, str, list[Failure]]:
        conversion = stream.destination["DataFormatConversionConfiguration"]
        schema_config = conversion["SchemaConfiguration"]
        catalog_info = {
            "catalogId": schema_config.get("CatalogId") or stream.account, "databaseName": schema_config["DatabaseName"],
            "tableName": schema_config["TableName"], "region": schema_config.get("Region") or stream.region,
            "versionId": schema_config.get("VersionId", "LATEST"), "catalogArn": None,
        }
        try:
            schema = schema_of(self.lookup(schema_config["DatabaseName"], schema_config["TableName"]))
        except (AwsError, ValueError) as exc:
            reason = exc.message if isinstance(exc, AwsError) else str(exc)
            code = "DataFormatConversion.EntityNotFound" if isinstance(exc, AwsError) else "DataFormatConversion.InvalidSchema"
            return b"", "", [self._failure(r, code, f"The schema cannot be read from Glue: {reason}", catalog_info) for r in records]
        deserializer = conversion["InputFormatConfiguration"]["Deserializer"]
        openx = deserializer.get("OpenXJsonSerDe")
        case_insensitive = openx is None or openx.get("CaseInsensitive", True)
        mappings = {k.lower(): v for k, v in ((openx or {}).get("ColumnToJsonKeyMappings") or {}).items()}
        dots = bool((openx or {}).get("ConvertDotsInJsonKeysToUnderscores"))

        def failed(record: Record, message: str) -> Failure:
            return self._failure(record, "DataFormatConversion.MalformedData", message, catalog_info)

        table, failures = to_arrow(records, schema, failed, mappings=mappings, case_insensitive=case_insensitive, dots=dots)
        if table.num_rows == 0:
            return b"", "", failures
        body, extension = _serialize(table, conversion["OutputFormatConfiguration"]["Serializer"])
        return body, extension, failures

    @staticmethod
    def _failure(record: Record, code: str, message: str, catalog_info: dict[str, Any]) -> Failure:
        doc = {
            "attemptsMade": 1, "arrivalTimestamp": int(record.arrival * 1000), "ErrorCode": code, "ErrorMessage": message,
            "attemptEndingTimestamp": int(time.time() * 1000), "rawData": base64.b64encode(record.raw).decode(),
            "sequenceNumber": str(record.seq), "subSequenceNumber": 0, "dataCatalogTable": catalog_info,
        }
        return Failure(record, FAILED, doc)


FAST_GROUP = 2000


def to_arrow(
    records: list[Record], schema: pa.Schema, failed: Callable[[Record, str], Failure], *,
    mappings: dict[str, str] | None = None, case_insensitive: bool = True, dots: bool = False,
) -> tuple[pa.Table, list[Failure]]:
    """JSON ``records`` as an Arrow table of ``schema``, and the records that do not fit it
    (``failed(record, why)`` makes their error documents). Also Iceberg's path."""
    mappings = mappings or {}
    tables: list[pa.Table] = []
    failures: list[Failure] = []
    for start in range(0, len(records), FAST_GROUP):
        group = records[start : start + FAST_GROUP]
        fast = None if dots else _arrow_parse(group, schema, mappings, case_insensitive)
        if fast is not None:
            tables.append(fast)
            continue
        table, bad = _one_by_one(group, schema, mappings, case_insensitive, dots, failed)
        tables.append(table)
        failures += bad
    return (pa.concat_tables(tables) if tables else schema.empty_table()), failures


def _one_by_one(records: list[Record], schema: pa.Schema, mappings: dict[str, str], case_insensitive: bool, dots: bool,
                failed: Callable[[Record, str], Failure]) -> tuple[pa.Table, list[Failure]]:
    columns: dict[str, list[Any]] = {f.name: [] for f in schema}
    failures: list[Failure] = []
    kept: list[Record] = []
    for record in records:
        try:
            doc = json.loads(record.data)
            if not isinstance(doc, dict):
                raise ValueError("the record is not a JSON object")
            if dots:
                doc = {k.replace(".", "_"): v for k, v in doc.items()}
            if case_insensitive:
                doc = {k.lower(): v for k, v in doc.items()}
            row = []
            for field in schema:
                key = mappings.get(field.name, field.name)
                try:
                    row.append(coerce(doc.get(key.lower() if case_insensitive else key), field.type))
                except (ValueError, TypeError, OverflowError) as exc:
                    raise ValueError(f"column {field.name!r}: {exc}") from exc
        except (ValueError, TypeError, RecursionError) as exc:
            failures.append(failed(record, str(exc)[:1000]))
            continue
        for field, value in zip(schema, row):
            columns[field.name].append(value)
        kept.append(record)
    try:
        return pa.Table.from_pydict(columns, schema=schema), failures
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass  # a value Arrow refuses although it passed ``coerce``: find its record, row by row
    fitting: list[dict[str, Any]] = []
    for i, record in enumerate(kept):
        values = {name: column[i] for name, column in columns.items()}
        try:
            pa.Table.from_pylist([values], schema=schema)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            failures.append(failed(record, f"{type(exc).__name__}: {exc}"[:1000]))
            continue
        fitting.append(values)
    return pa.Table.from_pylist(fitting, schema=schema), failures


def _arrow_parse(records: list[Record], schema: pa.Schema, mappings: dict[str, str], case_insensitive: bool) -> pa.Table | None:
    """``records`` parsed and cast by Arrow, or None when the per-record path must decide."""
    lines = [r.data.rstrip(b"\r\n") for r in records]
    if any(b"\n" in line or not line.strip() for line in lines):
        return None  # a record spanning lines, or an empty one: the record-by-record path decides
    body = b"\n".join(lines)
    try:
        parsed = pj.read_json(io.BytesIO(body), read_options=pj.ReadOptions(block_size=max(1 << 20, len(body) + 1)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if parsed.num_rows != len(records):
        return None
    by_key: dict[str, list[pa.ChunkedArray]] = {}
    for name in parsed.column_names:
        by_key.setdefault(name.lower() if case_insensitive else name, []).append(parsed.column(name))
    arrays = []
    try:
        for field in schema:
            key = mappings.get(field.name, field.name)
            sources = by_key.get(key.lower() if case_insensitive else key)
            if not sources:
                arrays.append(pa.nulls(len(records), field.type))
                continue
            if pa.types.is_timestamp(field.type) and any(not pa.types.is_timestamp(src.type) and not pa.types.is_null(src.type) for src in sources):
                return None  # epoch numbers and other text: the per-record rules decide
            if any(pa.types.is_struct(src.type) or pa.types.is_list(src.type) for src in sources) and not pa.types.is_nested(field.type):
                return None  # objects in a scalar column: JSON text per record, as the SerDe writes it
            cast = [src.cast(field.type) for src in sources]
            arrays.append(cast[0] if len(cast) == 1 else pc.coalesce(*cast))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return pa.Table.from_arrays(arrays, schema=schema)


def _serialize(table: pa.Table, serializer: dict[str, Any]) -> tuple[bytes, str]:
    out = io.BytesIO()
    if "OrcSerDe" in serializer:
        options = serializer["OrcSerDe"]
        compression = {"NONE": "uncompressed", "ZLIB": "zlib", "SNAPPY": "snappy"}[options.get("Compression", "SNAPPY")]
        kwargs: dict[str, Any] = {"compression": compression}
        if "StripeSizeBytes" in options:
            kwargs["stripe_size"] = options["StripeSizeBytes"]
        if "RowIndexStride" in options:
            kwargs["row_index_stride"] = options["RowIndexStride"]
        orc.write_table(table, out, **kwargs)
        return out.getvalue(), ".orc"
    options = serializer.get("ParquetSerDe", {})
    compression = {"UNCOMPRESSED": "none", "GZIP": "gzip", "SNAPPY": "snappy"}[options.get("Compression", "SNAPPY")]
    pq.write_table(
        table, out, compression=compression, use_dictionary=options.get("EnableDictionaryCompression", True),
        data_page_size=options.get("PageSizeBytes"), data_page_version="1.0" if options.get("WriterVersion", "V1") == "V1" else "2.0",
    )
    return out.getvalue(), ".parquet"
