"""CORS as AWS's endpoints answer it, so a web page on another origin can call the gateway.

A browser page served from elsewhere (hls.js on your own site, the AWS SDK for JavaScript in a
dashboard) needs the gateway to say which origins may read its answers:

* a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) on any path is answered 200
  before authentication (a preflight carries no signature), allowing the methods the APIs use
  and the headers the page asked for;
* every answer (errors and streamed media included) to a request with an allowed ``Origin`` gets
  ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers`` naming AWS's headers
  (request id, error type), so SDKs can read them.

``[cors] allowed_origins`` lists the origins (default ``["*"]``, as AWS's APIs: any origin, no
cookies); an origin not listed gets no CORS headers and its preflight a 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config import CorsConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
EXPOSED_HEADERS = "x-amzn-RequestId, x-amzn-ErrorType, x-amzn-ErrorMessage, x-amz-request-id, Date, Content-Length, Content-Type"
#: How long a browser may cache a preflight answer, seconds.
MAX_AGE = "86400"


class Cors:
    def __init__(self, config: CorsConfig) -> None:
        self.any_origin = "*" in config.allowed_origins
        self.origins = frozenset(o.rstrip("/") for o in config.allowed_origins)

    def allow(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for ``origin``; None when it is not allowed."""
        if not origin:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        allowed = self.allow(request.headers.get("Origin"))
        if allowed is None:
            return web.Response(status=403, text="origin not allowed by [cors] allowed_origins")
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        }
        if allowed != "*":
            headers["Vary"] = "Origin"
        return web.Response(status=200, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: CORS headers on every answer to an allowed origin."""
        allowed = self.allow(request.headers.get("Origin"))
        if allowed is None or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if allowed != "*":
            response.headers.add("Vary", "Origin")
