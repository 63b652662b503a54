"""Amazon Data Firehose: delivery streams that buffer records and write them out as objects.

Modules, in the order data flows: ``api`` (action table, limits) -> ``store`` (durable SQLite
buffer) -> ``delivery`` (when a buffer is due) -> ``destinations`` / ``pipeline`` (transform,
partition, convert, compress; ``naming`` for keys, ``compression``) -> ``sinks`` (a directory
tree or an S3 server). ``streams`` holds a delivery stream's configuration and its description;
``sources`` reads a gateway data stream for KinesisStreamAsSource.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.firehose.api import TARGET_PREFIX, Services, make_handler
from gateway.firehose.delivery import DeliveryLoop
from gateway.firehose.destinations import Destinations
from gateway.firehose.metrics import FirehoseCollector
from gateway.firehose.sinks import make_sink
from gateway.firehose.sources import SourceReader, stop
from gateway.firehose.store import BufferStore
from gateway.firehose.streams import model
from gateway.glue import CATALOG as GLUE_CATALOG
from gateway.kds import STORE as KDS_STORE
from gateway.keys import CONFIG
from gateway.metrics import METRICS

__all__ = ["ROUTES", "SERVICES", "TARGETS", "lifecycle"]

SERVICES = web.AppKey("firehose_services", Services)

ROUTES: list[web.RouteDef] = []
TARGETS = {TARGET_PREFIX: make_handler(lambda request: request.app[SERVICES])}


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = await asyncio.to_thread(BufferStore, config.data_path, config.durability)
    await asyncio.to_thread(model)  # load botocore's model now, not in the first request
    sink = await asyncio.to_thread(make_sink, config.firehose, config.data_path, config.durability)
    app[SERVICES] = Services(store, config.firehose, config.limits.enabled, config.account_id, lambda name: name in app[KDS_STORE].streams)
    catalog = app[GLUE_CATALOG]
    destinations = Destinations(sink, config.firehose, catalog.table, config.data_path)
    loop = DeliveryLoop(store, config.firehose, destinations.deliver)
    runner = asyncio.create_task(loop.run(), name="firehose-delivery")
    reader = asyncio.create_task(SourceReader(store, app[KDS_STORE], config.firehose.max_buffered_bytes).run(), name="firehose-sources")
    collector = FirehoseCollector(store)
    app[METRICS].register(collector)
    try:
        yield
    finally:
        app[METRICS].unregister(collector)
        await stop(reader)
        await loop.stop()
        await stop(runner)
        await destinations.close()
        await asyncio.to_thread(store.close)
