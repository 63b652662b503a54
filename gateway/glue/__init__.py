"""AWS Glue Data Catalog, the part Firehose's record format conversion reads: databases and tables.

``api`` (action table on ``POST /``, ``AWSGlue.*``) -> ``catalog`` (SQLite, ``glue.sqlite3``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.glue.api import TARGET_PREFIX, make_handler
from gateway.glue.catalog import Catalog
from gateway.keys import CONFIG

__all__ = ["CATALOG", "ROUTES", "TARGETS", "lifecycle"]

CATALOG = web.AppKey("glue_catalog", Catalog)
ROUTES: list[web.RouteDef] = []
TARGETS = {TARGET_PREFIX: make_handler(lambda request: request.app[CATALOG])}


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    catalog = await asyncio.to_thread(Catalog, config.data_path, config.durability, config.account_id)
    app[CATALOG] = catalog
    try:
        yield
    finally:
        await asyncio.to_thread(catalog.close)
