"""Glue catalog calls through boto3's ``glue`` client, and Firehose record format conversion
(JSON -> Parquet and ORC) with the schema from a Glue table; records that do not fit go to the
error output as AWS documents them. Files are read back with pyarrow."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime, timezone
from typing import Any

import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from firehose_support import firehose_gateway, objects, s3_config  # noqa: F401 (fixture)
from helpers import GatewayProcess, wait_until

NOW = {"SizeInMBs": 64, "IntervalInSeconds": 0}
COLUMNS = [
    {"Name": "device", "Type": "string"}, {"Name": "temp", "Type": "double"}, {"Name": "count", "Type": "bigint"},
    {"Name": "ok", "Type": "boolean"}, {"Name": "ts", "Type": "timestamp"}, {"Name": "tags", "Type": "array<string>"},
    {"Name": "pos", "Type": "struct<x:int,y:int>"}, {"Name": "price", "Type": "decimal(10,2)"},
]


@pytest.fixture(scope="module")
def gateway(firehose_gateway: GatewayProcess) -> GatewayProcess:
    return firehose_gateway


@pytest.fixture(scope="module", autouse=True)
def glue_table(gateway: GatewayProcess) -> None:
    glue = gateway.client("glue")
    glue.create_database(DatabaseInput={"Name": "lake"})
    glue.create_table(DatabaseName="lake", TableInput={"Name": "readings", "StorageDescriptor": {"Columns": COLUMNS}, "TableType": "EXTERNAL_TABLE"})


def test_glue_catalog_calls(gateway: GatewayProcess) -> None:
    glue = gateway.client("glue")
    glue.create_database(DatabaseInput={"Name": "Scratch", "Description": "temporary"})
    assert glue.get_database(Name="scratch")["Database"]["Description"] == "temporary"
    assert "scratch" in [d["Name"] for d in glue.get_databases()["DatabaseList"]]
    glue.create_table(DatabaseName="scratch", TableInput={"Name": "t1", "StorageDescriptor": {"Columns": [{"Name": "a", "Type": "int"}]}})
    glue.create_table(DatabaseName="scratch", TableInput={"Name": "t2"})
    table = glue.get_table(DatabaseName="scratch", Name="T1")["Table"]
    assert table["DatabaseName"] == "scratch" and table["StorageDescriptor"]["Columns"] == [{"Name": "a", "Type": "int"}]
    assert isinstance(table["CreateTime"], datetime)
    assert [t["Name"] for t in glue.get_tables(DatabaseName="scratch")["TableList"]] == ["t1", "t2"]
    for call, kwargs, code in [
        (glue.create_table, {"DatabaseName": "scratch", "TableInput": {"Name": "t1"}}, "AlreadyExistsException"),
        (glue.create_database, {"DatabaseInput": {"Name": "scratch"}}, "AlreadyExistsException"),
        (glue.get_table, {"DatabaseName": "scratch", "Name": "nope"}, "EntityNotFoundException"),
        (glue.get_tables, {"DatabaseName": "nope"}, "EntityNotFoundException"),
        (glue.create_table, {"DatabaseName": "nope", "TableInput": {"Name": "x"}}, "EntityNotFoundException"),
        (glue.update_table, {"DatabaseName": "scratch", "TableInput": {"Name": "nope"}}, "EntityNotFoundException"),
        # found by bench/soak.py's fuzzing: the model leaves TableInput optional (was a 500)
        (glue.update_table, {"DatabaseName": "scratch", "Name": "t2"}, "InvalidInputException"),
    ]:
        with pytest.raises(ClientError) as info:
            call(**kwargs)
        assert info.value.response["Error"]["Code"] == code
    glue.update_table(DatabaseName="scratch", TableInput={"Name": "t2", "StorageDescriptor": {"Columns": [{"Name": "b", "Type": "string"}]}})
    assert glue.get_table(DatabaseName="scratch", Name="t2")["Table"]["StorageDescriptor"]["Columns"] == [{"Name": "b", "Type": "string"}]
    glue.delete_table(DatabaseName="scratch", Name="t1")
    assert [t["Name"] for t in glue.get_tables(DatabaseName="scratch")["TableList"]] == ["t2"]
    glue.delete_database(Name="scratch")
    with pytest.raises(ClientError) as info:
        glue.get_database(Name="scratch")
    assert info.value.response["Error"]["Code"] == "EntityNotFoundException"


def conversion(serializer: dict[str, Any], table: str = "readings") -> dict[str, Any]:
    return {
        "Enabled": True,
        "SchemaConfiguration": {"DatabaseName": "lake", "TableName": table, "RoleARN": "arn:aws:iam::000000000000:role/r"},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
        "OutputFormatConfiguration": {"Serializer": serializer},
    }


GOOD = [
    {"Device": "d1", "temp": 21.5, "count": 3, "ok": True, "ts": "2026-11-30T10:00:00Z", "tags": ["a", "b"], "pos": {"x": 1, "y": 2}, "price": "9.99", "extra": 1},
    {"device": "d2", "temp": 7, "count": 4, "ok": False, "ts": 1796000000000, "tags": [], "pos": {"x": -1, "y": 0}, "price": 0.5},
    {"device": "d3"},
]
BAD = [b"not json", b'["an", "array"]', json.dumps({"device": "d4", "count": "many"}).encode(), json.dumps({"device": "d5", "ts": "yesterday"}).encode(),
       json.dumps({"device": "d6", "price": "123456789012.5"}).encode()]  # too many digits for decimal(10,2): refused by Arrow itself


def _put_all(gateway: GatewayProcess, name: str) -> None:
    records = [json.dumps(doc).encode() for doc in GOOD] + BAD
    assert gateway.client("firehose").put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in records])["FailedPutCount"] == 0


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
def test_json_to_columnar_with_the_glue_schema(gateway: GatewayProcess, fmt: str) -> None:
    serializer = {"ParquetSerDe": {"Compression": "SNAPPY"}} if fmt == "parquet" else {"OrcSerDe": {"Compression": "ZLIB"}}
    name = f"to-{fmt}"
    gateway.client("firehose").create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_config(name, BufferingHints=NOW, Prefix="data/", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                                                     DataFormatConversionConfiguration=conversion(serializer)),
    )
    _put_all(gateway, name)
    wait_until(lambda: len(objects(gateway, name)) == 2, what="a data object and an error object")
    [(data_key, body)] = [(k, v) for k, v in objects(gateway, name).items() if k.startswith("data/")]
    assert data_key.endswith(f".{fmt}")
    table = pq.read_table(io.BytesIO(body)) if fmt == "parquet" else orc.ORCFile(io.BytesIO(body)).read()
    assert table.column_names == [c["Name"] for c in COLUMNS]
    rows = table.to_pylist()
    assert [r["device"] for r in rows] == ["d1", "d2", "d3"]  # "Device" matched case-insensitively
    assert rows[0]["temp"] == 21.5 and rows[1]["temp"] == 7.0 and rows[0]["count"] == 3 and rows[0]["ok"] is True
    assert rows[0]["ts"] == datetime(2026, 11, 30, 10, 0) and rows[1]["ts"] == datetime.fromtimestamp(1796000000, timezone.utc).replace(tzinfo=None)
    assert rows[0]["tags"] == ["a", "b"] and rows[0]["pos"] == {"x": 1, "y": 2} and str(rows[0]["price"]) == "9.99"
    assert rows[2]["temp"] is None and rows[2]["tags"] is None  # missing keys are nulls
    [error_body] = [v for k, v in objects(gateway, name).items() if k.startswith("errors/format-conversion-failed/")]
    errors = [json.loads(line) for line in error_body.splitlines()]
    assert sorted(base64.b64decode(e["rawData"]) for e in errors) == sorted(BAD)
    for e in errors:
        assert e["ErrorCode"] == "DataFormatConversion.MalformedData" and e["ErrorMessage"]
        assert e["dataCatalogTable"]["databaseName"] == "lake" and e["dataCatalogTable"]["tableName"] == "readings"
        assert {"attemptsMade", "arrivalTimestamp", "attemptEndingTimestamp", "sequenceNumber", "subSequenceNumber"} <= set(e)


def test_missing_table_sends_records_to_the_error_output(gateway: GatewayProcess) -> None:
    gateway.client("firehose").create_delivery_stream(
        DeliveryStreamName="no-table",
        ExtendedS3DestinationConfiguration=s3_config("no-table", BufferingHints=NOW, ErrorOutputPrefix="errors/",
                                                     DataFormatConversionConfiguration=conversion({"ParquetSerDe": {}}, table="missing")),
    )
    gateway.client("firehose").put_record(DeliveryStreamName="no-table", Record={"Data": b'{"device": "x"}'})
    wait_until(lambda: objects(gateway, "no-table"), what="the error object")
    [doc] = [json.loads(line) for body in objects(gateway, "no-table").values() for line in body.splitlines()]
    assert doc["ErrorCode"] == "DataFormatConversion.EntityNotFound"


def test_conversion_config_rules(gateway: GatewayProcess) -> None:
    firehose = gateway.client("firehose")
    bad = [
        s3_config("x", BufferingHints=NOW, DataFormatConversionConfiguration=conversion({"ParquetSerDe": {}}), CompressionFormat="GZIP"),
        s3_config("x", BufferingHints={"SizeInMBs": 5, "IntervalInSeconds": 0}, DataFormatConversionConfiguration=conversion({"ParquetSerDe": {}})),
        s3_config("x", BufferingHints=NOW, DataFormatConversionConfiguration=conversion({"ParquetSerDe": {}, "OrcSerDe": {}})),
    ]
    for config in bad:
        with pytest.raises(ClientError) as info:
            firehose.create_delivery_stream(DeliveryStreamName="rules", ExtendedS3DestinationConfiguration=config)
        assert info.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_well_formed_batches_take_the_same_values(gateway: GatewayProcess) -> None:
    """A batch with no misfit (Arrow's JSON reader path) converts exactly as the per-record path does."""
    clean = [
        {"DEVICE": "c1", "temp": 1, "count": 2, "ok": True, "ts": "2026-11-30 10:00:00", "tags": ["x"], "pos": {"x": 3, "y": 4}, "price": "1.25"},
        {"device": "c2", "temp": 2.5, "ok": False, "extra": {"ignored": True}},
        {"device": "c3", "count": 9007199254740993, "tags": [], "pos": {"x": 0, "y": 0}},
    ]
    gateway.client("firehose").create_delivery_stream(
        DeliveryStreamName="clean",
        ExtendedS3DestinationConfiguration=s3_config("clean", BufferingHints=NOW, ErrorOutputPrefix="errors/",
                                                     DataFormatConversionConfiguration=conversion({"ParquetSerDe": {}})),
    )
    gateway.client("firehose").put_record_batch(DeliveryStreamName="clean", Records=[{"Data": json.dumps(d).encode() + b"\n"} for d in clean])
    wait_until(lambda: objects(gateway, "clean"), what="the clean object")
    [(key, body)] = objects(gateway, "clean").items()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [r["device"] for r in rows] == ["c1", "c2", "c3"]
    assert rows[0]["temp"] == 1.0 and rows[1]["temp"] == 2.5 and rows[2]["count"] == 9007199254740993
    assert rows[0]["ts"] == datetime(2026, 11, 30, 10, 0) and rows[1]["ts"] is None
    assert rows[0]["pos"] == {"x": 3, "y": 4} and rows[1]["pos"] is None and rows[2]["tags"] == []
    assert str(rows[0]["price"]) == "1.25" and rows[0]["ok"] is True and rows[1]["ok"] is False
