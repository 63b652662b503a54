"""The web player: ``GET /`` and ``GET /player`` serve a page that plays live and recorded video.

Everything the page needs (HTML, JS, CSS) ships in ``gateway/kvs/static`` and is served here;
nothing comes from a CDN. The page uses only the gateway's public API (ListStreams,
ListFragments, GetHLSStreamingSessionURL, GetImages) and Media Source Extensions. When the
gateway verifies SigV4, the viewer enters an access key in the page, which signs its calls itself
(``static/sigv4.js``); the playlist and segment URLs carry their own session token.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Files the page may load; anything else is a 404 (no directory listing, no path tricks).
STATIC_FILES = {"player.js": "application/javascript", "sigv4.js": "application/javascript", "player.css": "text/css",
                "player.html": "text/html"}


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "player.html", headers={"Content-Type": "text/html; charset=utf-8",
                                                                 "Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    kind = STATIC_FILES.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": f"{kind}; charset=utf-8", "Cache-Control": "no-cache"})


ROUTES: list[web.RouteDef] = [
    web.get("/", page),
    web.get("/player", page),
    web.get("/player/static/{name}", static_file),
]
