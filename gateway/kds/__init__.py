"""Kinesis Data Streams: the JSON/CBOR 1.1 API on ``POST /`` and its durable shard store."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

ROUTES: list[web.RouteDef] = []


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
