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

from gateway import static

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Files the page may load; anything else is a 404 (no directory listing, no path tricks).
STATIC_FILES = {"player.js": "application/javascript", "sigv4.js": "application/javascript", "player.css": "text/css",
                "player.html": "text/html"}


ROUTES: list[web.RouteDef] = [
    web.get("/", static.page(STATIC_DIR / "player.html")),
    web.get("/player", static.page(STATIC_DIR / "player.html")),
    web.get("/player/static/{name}", static.files(STATIC_DIR, STATIC_FILES)),
]
