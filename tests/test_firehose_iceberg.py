"""Firehose into Apache Iceberg tables (pyiceberg SQL catalog on SQLite), read back with
pyiceberg and DuckDB; misfits to the S3 error output; no duplicate append after a SIGKILL."""

from __future__ import annotations

import base64
import json
from typing import Any

import pyarrow as pa
import pytest
from firehose_support import firehose_gateway, objects, s3_config, start_gateway  # noqa: F401 (fixture)
from helpers import GatewayProcess, wait_until
from pyiceberg.catalog.sql import SqlCatalog

NOW = {"SizeInMBs": 1, "IntervalInSeconds": 0}
CATALOG_ARN = "arn:aws:glue:us-east-1:000000000000:catalog"


@pytest.fixture(scope="module")
def gateway(firehose_gateway: GatewayProcess) -> GatewayProcess:
    return firehose_gateway


def catalog(gateway: GatewayProcess) -> SqlCatalog:
    """The gateway's catalog, opened here (its directory may not exist before a first Iceberg delivery)."""
    (gateway.data_dir / "iceberg").mkdir(parents=True, exist_ok=True)
    return SqlCatalog("firehose", uri=f"sqlite:///{gateway.data_dir / 'iceberg' / 'catalog.sqlite3'}", warehouse=f"file://{gateway.data_dir / 's3'}")


def rows(gateway: GatewayProcess, table: str) -> list[dict[str, Any]]:
    try:
        return catalog(gateway).load_table(table).scan().to_arrow().to_pylist()
    except Exception:  # not created yet
        return []


def iceberg_destination(bucket: str, database: str, table: str, **extra: Any) -> dict[str, Any]:
    return {
        "RoleARN": "arn:aws:iam::000000000000:role/r", "CatalogConfiguration": {"CatalogARN": CATALOG_ARN},
        "DestinationTableConfigurationList": [{"DestinationDatabaseName": database, "DestinationTableName": table}],
        "BufferingHints": NOW, "S3Configuration": s3_config(bucket, ErrorOutputPrefix="errors/!{firehose:error-output-type}/"), **extra,
    }


def test_table_created_and_appended_readable_by_pyiceberg_and_duckdb(gateway: GatewayProcess) -> None:
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="ice", IcebergDestinationConfiguration=iceberg_destination(
        "lake", "edge", "readings", TableCreationConfiguration={"Enabled": True}))
    first = [{"device": f"d{i % 3}", "temp": 20.5 + i, "n": i} for i in range(30)]
    firehose.put_record_batch(DeliveryStreamName="ice", Records=[{"Data": json.dumps(d).encode()} for d in first])
    wait_until(lambda: len(rows(gateway, "edge.readings")) == 30, what="30 rows in edge.readings")
    second = [{"device": "d9", "temp": 1.0, "n": 100}, {"device": "bad", "temp": "hot", "n": 101}]
    firehose.put_record_batch(DeliveryStreamName="ice", Records=[{"Data": json.dumps(d).encode()} for d in second])
    wait_until(lambda: len(rows(gateway, "edge.readings")) == 31, what="the good record of the second batch")
    assert sorted(r["n"] for r in rows(gateway, "edge.readings")) == [*range(30), 100]
    table = catalog(gateway).load_table("edge.readings")
    assert table.location().startswith(f"file://{gateway.data_dir / 's3' / 'lake'}")
    con = table.scan().to_duckdb("readings")
    assert con.execute("SELECT count(*), round(sum(temp), 1) FROM readings WHERE device = 'd0'").fetchone() == (10, 10 * 20.5 + sum(range(0, 30, 3)))
    wait_until(lambda: any(k.startswith("errors/iceberg-failed/") for k in objects(gateway, "lake")), what="the misfit in the error output")
    [doc] = [json.loads(line) for k, body in objects(gateway, "lake").items() if k.startswith("errors/") for line in body.splitlines()]
    assert json.loads(base64.b64decode(doc["rawData"]))["device"] == "bad" and doc["errorCode"] == "Iceberg.InvalidRecord"


def test_existing_table_and_missing_table(gateway: GatewayProcess) -> None:
    cat = catalog(gateway)
    cat.create_namespace("made")
    cat.create_table("made.events", schema=pa.schema([pa.field("kind", pa.string()), pa.field("value", pa.int64())]),
                     location=f"file://{gateway.data_dir / 's3' / 'lake2' / 'made.db' / 'events'}")
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="ice2", IcebergDestinationConfiguration=iceberg_destination("lake2", "made", "events"))
    firehose.put_record_batch(DeliveryStreamName="ice2", Records=[{"Data": json.dumps({"kind": "k", "value": i, "extra": 1}).encode()} for i in range(5)])
    wait_until(lambda: len(rows(gateway, "made.events")) == 5, what="5 rows in made.events")
    assert sorted(r["value"] for r in rows(gateway, "made.events")) == list(range(5))
    firehose.create_delivery_stream(DeliveryStreamName="ice3", IcebergDestinationConfiguration=iceberg_destination("lake3", "made", "missing"))
    firehose.put_record(DeliveryStreamName="ice3", Record={"Data": b'{"kind": "x"}'})
    wait_until(lambda: objects(gateway, "lake3"), what="the record of a missing table in the error output")
    assert all(k.startswith("errors/iceberg-failed/") for k in objects(gateway, "lake3"))


def test_a_batch_appended_before_a_sigkill_is_not_appended_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The append commits, the error object cannot be written (its bucket is blocked by a file), the
    gateway is killed: after the restart the batch is delivered again, and the append is skipped."""
    gateway = start_gateway(tmp_path_factory.mktemp("firehose-iceberg-kill"), "", "--no-limits")
    try:
        _append_kill_restart(gateway)
    finally:
        gateway.kill()


def _append_kill_restart(gateway: GatewayProcess) -> None:
    (gateway.data_dir / "s3").mkdir(parents=True, exist_ok=True)
    (gateway.data_dir / "s3" / "blocked").write_text("not a directory")
    firehose = gateway.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="ice-kill", IcebergDestinationConfiguration=iceberg_destination(
        "blocked", "edge", "kill", TableCreationConfiguration={"Enabled": True},
        CatalogConfiguration={"CatalogARN": CATALOG_ARN, "WarehouseLocation": "s3://warehouse/"}))
    batch = [{"n": i} for i in range(10)] + [{"n": "not a number"}]
    firehose.put_record_batch(DeliveryStreamName="ice-kill", Records=[{"Data": json.dumps(d).encode()} for d in batch])
    wait_until(lambda: len(rows(gateway, "edge.kill")) == 10 and "writing s3://blocked/" in gateway.log(), what="the append, then a failing error write")
    gateway.kill()
    (gateway.data_dir / "s3" / "blocked").unlink()
    gateway.start()
    wait_until(lambda: objects(gateway, "blocked"), what="the error object after the restart")
    assert sorted(r["n"] for r in rows(gateway, "edge.kill")) == list(range(10))  # appended once
    assert len(catalog(gateway).load_table("edge.kill").metadata.snapshots) == 1
