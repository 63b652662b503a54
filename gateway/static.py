"""Serving a web page's own files (the player, the analytics dashboard): nothing from a CDN.

Only the files named in a page's table are served, with their content type; anything else is a
404 (no directory listing, no path tricks). Pages are revalidated on every load (``no-cache``),
so an upgraded gateway never runs old JavaScript.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _file(path: Path, kind: str) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": f"{kind}; charset=utf-8", "Cache-Control": "no-cache"})


def page(path: Path) -> Handler:
    """A handler answering with the HTML file ``path``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return _file(path, "text/html")

    return handler


def files(directory: Path, kinds: dict[str, str]) -> Handler:
    """A handler for ``.../{name}``: the file ``name`` of ``directory`` if ``kinds`` lists it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = kinds.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        return _file(directory / name, kind)

    return handler
