"""Apache Iceberg tables as a destination (``IcebergDestinationConfiguration``), with pyiceberg.

The catalog is a pyiceberg SQL catalog on SQLite, ``<data dir>/iceberg/catalog.sqlite3``: what
AWS does with the Glue catalog named by ``CatalogConfiguration.CatalogARN``. Tables live under
``CatalogConfiguration.WarehouseLocation`` (``s3://bucket/path``), by default the S3
configuration's bucket: on the embedded S3 that is ``<data dir>/s3/<bucket>/...`` on disk, with
``[firehose] s3_endpoint_url`` the S3 server. Read them back with pyiceberg
(``SqlCatalog("firehose", uri="sqlite:///<data dir>/iceberg/catalog.sqlite3")``) and DuckDB
(``table.scan().to_duckdb(...)``) or any Iceberg reader.

Records (JSON objects) go to the first ``DestinationTableConfigurationList`` entry, or, with a
``MetadataExtraction`` processor yielding ``destinationDatabaseName``/``destinationTableName``,
to the table they name (AWS's JQ routing). A missing table is created from the batch's inferred
schema when ``TableCreationConfiguration.Enabled``; otherwise, and for records that do not fit
the table's schema, records go to the S3 error output (``iceberg-failed``). Each append carries
the batch's id in its snapshot summary (``firehose.batch``), so a batch appended just before a
crash is not appended again after the restart.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.table import Table

from gateway.config import FirehoseConfig
from gateway.firehose import pipeline
from gateway.firehose.conversion import to_arrow
from gateway.firehose.naming import Namer, time_zone
from gateway.firehose.pipeline import Failure, Record, error_doc
from gateway.firehose.store import Row
from gateway.firehose.streams import DeliveryStream, bucket_name

FAILED = "iceberg-failed"
BATCH_PROPERTY = "firehose.batch"


class IcebergTables:
    def __init__(self, data_path: Path, config: FirehoseConfig) -> None:
        self.data_path = data_path
        self.config = config
        self._catalog: SqlCatalog | None = None
        self._lock = threading.Lock()
        #: Appends are serialised: two batches committing to one table at once would conflict.
        self._appending = threading.Lock()

    def catalog(self) -> SqlCatalog:
        with self._lock:
            if self._catalog is None:
                root = self.data_path / "iceberg"
                root.mkdir(parents=True, exist_ok=True)
                properties = {"uri": f"sqlite:///{root / 'catalog.sqlite3'}", "warehouse": f"file://{self.data_path / 's3'}"}
                if self.config.s3_endpoint_url:
                    properties.update({"s3.endpoint": self.config.s3_endpoint_url, "s3.region": self.config.s3_region,
                                       "s3.access-key-id": self.config.s3_access_key_id, "s3.secret-access-key": self.config.s3_secret_access_key,
                                       "s3.force-virtual-addressing": "false"})
                self._catalog = SqlCatalog("firehose", **properties)
            return self._catalog

    def location(self, stream: DeliveryStream, database: str, table: str) -> str:
        warehouse = (stream.destination.get("CatalogConfiguration") or {}).get("WarehouseLocation") or f"s3://{bucket_name(stream.s3['BucketARN'])}"
        if not self.config.s3_endpoint_url and warehouse.startswith("s3://"):
            warehouse = f"file://{self.data_path / 's3'}/{warehouse[len('s3://'):]}"
        return f"{warehouse.rstrip('/')}/{database}.db/{table}"

    def deliver(self, stream: DeliveryStream, rows: list[Row], steps: list[pipeline.Step]) -> tuple[list[Failure], dict[str, int]]:
        """Append the batch (blocking: runs in a thread); the failures go to the S3 error output."""
        records, failures = pipeline.run_steps(stream, rows, steps)
        tables = stream.destination.get("DestinationTableConfigurationList") or []
        batch_id = f"{stream.name}/{stream.version}/{rows[0].seq}"
        routed: dict[tuple[str, str], list[Record]] = {}
        for record in records:
            target = self._route(record, tables)
            if target is None:
                failures.append(Failure(record, FAILED, error_doc(record, "Iceberg.NoDestinationTable", "The record names no configured destination table.")))
            else:
                routed.setdefault(target, []).append(record)
        counts: dict[str, int] = {}
        for (database, name), members in routed.items():
            with self._appending:
                bad, appended = self._append(stream, database, name, members, f"{batch_id}/{database}.{name}")
            failures += bad
            counts["records_delivered"] = counts.get("records_delivered", 0) + appended
        return failures, counts

    @staticmethod
    def _route(record: Record, tables: list[dict[str, Any]]) -> tuple[str, str] | None:
        database, table = record.keys.get("destinationDatabaseName"), record.keys.get("destinationTableName")
        if database and table:
            known = {(t["DestinationDatabaseName"], t["DestinationTableName"]) for t in tables}
            return (database, table) if (database, table) in known or not tables else None
        if tables:
            return tables[0]["DestinationDatabaseName"], tables[0]["DestinationTableName"]
        return None

    def _append(self, stream: DeliveryStream, database: str, name: str, records: list[Record], batch_id: str) -> tuple[list[Failure], int]:
        catalog = self.catalog()

        def failed(record: Record, message: str) -> Failure:
            return Failure(record, FAILED, error_doc(record, "Iceberg.InvalidRecord", message, destinationTable=f"{database}.{name}"))

        try:
            table = catalog.load_table((database, name))
        except NoSuchTableError:
            if not (stream.destination.get("TableCreationConfiguration") or {}).get("Enabled"):
                return [failed(r, f"Table {database}.{name} does not exist and table creation is not enabled.") for r in records], 0
            schema = _inferred_schema(records)
            if schema is None:
                return [failed(r, "No record is a JSON object to infer the new table's schema from.") for r in records], 0
            try:
                catalog.create_namespace(database)
            except NamespaceAlreadyExistsError:
                pass
            table = catalog.create_table((database, name), schema=schema, location=self.location(stream, database, name))
        arrow_schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in table.schema().as_arrow()])
        data, failures = to_arrow(records, arrow_schema, failed)
        if data.num_rows and not _already_appended(table, batch_id):
            try:
                table.append(data, snapshot_properties={BATCH_PROPERTY: batch_id})
            except (ValueError, TypeError, pa.ArrowException) as exc:  # the table refuses the data: a commit conflict is retried, this is not
                misfits = {id(f.record) for f in failures}
                refused = [failed(r, f"The table refused the batch: {type(exc).__name__}: {exc}"[:1000]) for r in records if id(r) not in misfits]
                return failures + refused, 0
        return failures, data.num_rows


def _already_appended(table: Table, batch_id: str) -> bool:
    for snapshot in table.metadata.snapshots[-50:]:
        summary = snapshot.summary
        if summary is not None and summary.additional_properties.get(BATCH_PROPERTY) == batch_id:
            return True
    return False


def _inferred_schema(records: list[Record]) -> pa.Schema | None:
    """The schema Arrow infers from the first records (or, when they disagree, the first one
    that parses alone: the others then fit or go to the error output)."""
    import io

    import pyarrow.json as pj

    def infer(group: list[Record]) -> pa.Schema | None:
        body = b"\n".join(r.data.strip() for r in group if r.data.strip())
        try:
            return pj.read_json(io.BytesIO(body)).schema if body else None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    inferred = infer(records[:100])
    for record in records[:100] if inferred is None else []:
        inferred = infer([record])
        if inferred is not None:
            break
    return None if inferred is None else pa.schema([pa.field(f.name, _icebergable(f.type)) for f in inferred])


def _icebergable(kind: pa.DataType) -> pa.DataType:
    """Iceberg has no second timestamps and no null type: microseconds, and strings."""
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", tz=kind.tz)
    if pa.types.is_null(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _icebergable(f.type)) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(_icebergable(kind.value_type))
    return kind


def error_objects(stream: DeliveryStream, rows: list[Row], failures: list[Failure], gzip_level: int) -> list[pipeline.S3Object]:
    s3 = stream.s3
    namer = Namer(stream.name, stream.version, f"{stream.name}/{stream.version}/{rows[0].seq}/iceberg", time_zone(s3.get("CustomTimeZone")))
    return pipeline.error_objects(stream, namer, failures, s3, s3.get("CompressionFormat", "UNCOMPRESSED"), gzip_level, bucket_name(s3["BucketARN"]))

