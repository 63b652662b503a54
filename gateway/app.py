"""The gateway's aiohttp application: one process, one port, every API.

Routes come from each subsystem's ``ROUTES`` table; their stores open and close through
``cleanup_ctx``. The JSON-protocol services share ``POST /``: each subsystem's ``TARGETS`` maps
an ``X-Amz-Target`` prefix (``Kinesis_20131202``, ``Firehose_20150804``, ``AWSGlue``) to its
handler, and ``target_dispatcher`` picks one per request. One middleware turns ``AwsError`` into the wire error shape of the
protocol the request used (see ``gateway.errors``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

import cbor2
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from gateway import firehose, glue, kds, kvs, metrics
from gateway.analytics import api as analytics
from gateway.auth import VERIFIER, SigV4Verifier
from gateway.config import GatewayConfig
from gateway.cors import Cors
from gateway.errors import AwsError
from gateway.keys import CONFIG
from gateway.limits import request_limits
from gateway.metrics import METRICS

log = logging.getLogger("gateway")

#: Largest request body read whole (PutRecords is at most 5 MiB of data, ~6.7 MiB as base64 JSON).
MAX_BODY_BYTES = 16 * 1024 * 1024

CBOR_CONTENT_TYPE = "application/x-amz-cbor-1.1"
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(request: web.Request, error: AwsError) -> web.Response:
    """Render ``error`` the way the request's protocol expects it."""
    headers = {"x-amzn-ErrorType": error.code}
    if request.headers.get("X-Amz-Target"):
        body = {"__type": error.code, "message": error.message}
        if request.content_type == CBOR_CONTENT_TYPE:
            return web.Response(status=error.status, body=cbor2.dumps(body), content_type=CBOR_CONTENT_TYPE, headers=headers)
        return web.Response(status=error.status, text=json.dumps(body), content_type=JSON_CONTENT_TYPE, headers=headers)
    body = {"__type": error.code, "message": error.message, "Message": error.message}
    return web.Response(status=error.status, text=json.dumps(body), content_type="application/json", headers=headers)


@web.middleware
async def aws_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AwsError as exc:
        log.debug("%s %s -> %s: %s", request.method, request.path, exc.code, exc.message)
        return error_response(request, exc)
    except web.HTTPException:
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
            log.debug("%s %s: the client went away mid-request (%s)", request.method, request.path, exc)
        else:
            log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(request, AwsError("InternalFailure", "internal error, see the gateway log", 500))


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))


def target_dispatcher(targets: dict[str, Handler]) -> Handler:
    """``POST /``: the handler of the service the ``X-Amz-Target`` prefix names."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target", "")
        handler = targets.get(target.partition(".")[0])
        if handler is None:
            raise AwsError("UnknownOperationException", f"Operation {target!r} is not supported by this endpoint.")
        return await handler(request)

    return dispatch


def create_app(config: GatewayConfig) -> web.Application:
    config.data_path.mkdir(parents=True, exist_ok=True)
    limits = request_limits(MAX_BODY_BYTES, config.server)
    middlewares: list[Middleware] = [aws_errors, limits]
    if config.auth.credentials:
        verifier = SigV4Verifier(config.auth, config.account_id)
        # who signed is checked before the body is read, the signature once it is
        middlewares = [aws_errors, verifier.headers_middleware, limits, verifier.signature_middleware]
    cors = Cors(config.cors)
    app = web.Application(middlewares=[cors.preflight, *middlewares], client_max_size=MAX_BODY_BYTES)
    app[CONFIG] = config
    if config.auth.credentials:
        app[VERIFIER] = verifier
    app[METRICS] = CollectorRegistry()
    app.router.add_routes(metrics.ROUTES)
    app.on_response_prepare.append(_add_request_id)
    app.on_response_prepare.append(cors.on_prepare)
    targets: dict[str, Handler] = {}
    for subsystem in (kds, kvs, glue, firehose, analytics):  # firehose reads the kds store and glue, analytics kds+kvs+firehose: after them
        app.cleanup_ctx.append(subsystem.lifecycle)
        app.router.add_routes(subsystem.ROUTES)
        targets.update(getattr(subsystem, "TARGETS", {}))
    app.router.add_post("/", target_dispatcher(targets))
    app.on_shutdown.append(kds.shutdown)
    return app
