"""The gateway's Prometheus endpoint: ``GET /metrics`` renders the app's collector registry.

Subsystems register their collectors in ``app[METRICS]`` from their ``lifecycle`` (for example
``gateway.kds.monitoring``: the shard-level metrics of EnableEnhancedMonitoring).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

METRICS = web.AppKey("metrics_registry", CollectorRegistry)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES: list[web.RouteDef] = [web.get("/metrics", metrics)]
