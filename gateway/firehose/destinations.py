"""Which steps a batch goes through, by destination kind and configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from pathlib import Path

from gateway.config import FirehoseConfig
from gateway.firehose import pipeline, processors
from gateway.firehose.delivery import write_objects
from gateway.firehose.http import HttpEndpoint
from gateway.firehose.sinks import ObjectSink
from gateway.firehose.store import Row
from gateway.firehose.streams import DeliveryStream
from gateway.firehose.transforms import lambda_step


#: (database, table) -> the Glue ``Table`` document (``gateway.glue.catalog.Catalog.table``)
TableLookup = Callable[[str, str], dict[str, Any]]


class Destinations:
    def __init__(self, sink: ObjectSink, config: FirehoseConfig, tables: TableLookup, data_path: Path) -> None:
        self.sink = sink
        self.config = config
        self.tables = tables
        self.data_path = data_path
        self.http = HttpEndpoint(sink, config)
        # pyarrow's writers and pyiceberg take seconds to import: loaded with the first stream that needs them
        self._converter: Any = None
        self._iceberg: Any = None

    async def close(self) -> None:
        await self.http.close()

    def steps(self, stream: DeliveryStream) -> list[pipeline.Step]:
        return processors.steps(stream, lambda_step(self.config.transforms))

    def encoder(self, stream: DeliveryStream) -> pipeline.Encoder:
        conversion = stream.destination.get("DataFormatConversionConfiguration")
        if stream.kind == "ExtendedS3" and conversion and conversion.get("Enabled", True):
            if self._converter is None:
                from gateway.firehose.conversion import Converter

                self._converter = Converter(self.tables)
            return self._converter  # type: ignore[no-any-return]
        return pipeline.concatenate

    async def deliver(self, stream: DeliveryStream, rows: list[Row]) -> dict[str, int]:
        if stream.kind == "HttpEndpoint":
            return await self.http.deliver(stream, rows, self.steps(stream))
        if stream.kind == "Iceberg":
            return await self._deliver_iceberg(stream, rows)
        batch = await asyncio.to_thread(pipeline.build, stream, rows, self.steps(stream), self.encoder(stream), self.config.gzip_level)
        objects = batch.objects
        if stream.destination.get("S3BackupMode") == "Enabled":  # the source records, as received, beside the transformed ones
            backup = await asyncio.to_thread(pipeline.build, stream, rows, [], pipeline.concatenate, self.config.gzip_level, stream.destination["S3BackupConfiguration"])
            objects = objects + backup.objects
        await write_objects(self.sink, objects)
        return batch.counts

    async def _deliver_iceberg(self, stream: DeliveryStream, rows: list[Row]) -> dict[str, int]:
        from gateway.firehose import iceberg

        if self._iceberg is None:
            self._iceberg = iceberg.IcebergTables(self.data_path, self.config)
        failures, counts = await asyncio.to_thread(self._iceberg.deliver, stream, rows, self.steps(stream))
        objects = iceberg.error_objects(stream, rows, failures, self.config.gzip_level) if failures else []
        if stream.destination.get("S3BackupMode") == "AllData":
            backup = await asyncio.to_thread(pipeline.build, stream, rows, [], pipeline.concatenate, self.config.gzip_level, stream.s3)
            objects += backup.objects
        await write_objects(self.sink, objects)
        counts["records_failed"] = len(failures)
        return counts
