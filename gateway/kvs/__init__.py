"""Kinesis Video Streams: control plane, PutMedia/GetMedia, archived media, HLS and the player."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

ROUTES: list[web.RouteDef] = []


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
