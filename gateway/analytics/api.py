"""HTTP side of analytics: applications as JSON, their output as server-sent events, the dashboard.

    GET /analytics/applications              {"ApplicationSummaries": [...]}
    GET /analytics/applications/{name}       one application: inputs, queries (SQL), counters, recent rows
    GET /analytics/applications/{name}/rows?query=Q&after=N   output rows of Q with id > N
    GET /analytics/events                    text/event-stream: "stats" and "rows" events as they happen
    GET /analytics/motion                    {"MotionDetectors": [...]}: every watched video stream
    GET /analytics/motion/{stream}           one detector: counters and motion periods (the player's timeline)
    GET /analytics                           the dashboard page (static/, nothing from a CDN)

These are GET routes next to the player's, outside the AWS API (no SigV4, like the player page).
Because they carry stream data, the data endpoints answer 403 when the gateway verifies SigV4
(``[auth] credentials``): then read the output streams with a signed client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import static
from gateway.analytics.output import Outputs
from gateway.errors import AwsError, not_found, validation
from gateway.firehose import SERVICES as FIREHOSE
from gateway.kds import STORE
from gateway.keys import CONFIG
from gateway.kvs.keys import VIDEO_STORE

if TYPE_CHECKING:  # DuckDB/pyarrow and OpenCV load only when an application or a detector is configured
    from gateway.analytics.engine import Application
    from gateway.analytics.motion import MotionWatcher

log = logging.getLogger("gateway.analytics")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"dashboard.html": "text/html", "dashboard.js": "application/javascript", "dashboard.css": "text/css"}
#: Seconds between stats events when nothing else happens.
STATS_SECONDS = 1.0


class Analytics:
    """The running applications and the SSE subscribers waiting for news of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.apps: dict[str, Application] = {}
        self.motion: dict[str, MotionWatcher] = {}
        self.subscribers: set[asyncio.Event] = set()
        self.closing = False

    def check_open(self, request: web.Request) -> None:
        """Stream data is served here only when the gateway does not require signed requests."""
        if request.app[CONFIG].auth.credentials:
            raise AwsError("AccessDeniedException", "The analytics endpoints are off while the gateway verifies SigV4 signatures "
                           "(they would serve stream data unsigned); read the output streams with a signed client.", 403)

    def app(self, name: str) -> Application:
        found = self.apps.get(name)
        if found is None:
            raise not_found(f"Application {name} does not exist.")
        return found

    def wake(self) -> None:
        """Called from application threads: wake every subscriber on the loop."""
        try:
            self.loop.call_soon_threadsafe(self._wake_all)
        except RuntimeError:  # loop closed (shutdown)
            pass

    def _wake_all(self) -> None:
        for event in self.subscribers:
            event.set()


ANALYTICS = web.AppKey("analytics", Analytics)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    analytics = app[ANALYTICS] = Analytics(asyncio.get_running_loop())
    outputs = Outputs(app[STORE], analytics.loop, lambda: app.get(FIREHOSE))
    if config.analytics.applications:
        from gateway.analytics.engine import Application
    for spec in config.analytics.applications:
        application = Application(spec, outputs, config.data_path, config.durability)
        application.listeners.append(analytics.wake)
        analytics.apps[spec.name] = application
        application.start()
    if config.analytics.motion:
        from gateway.analytics.motion import MotionWatcher
    for motion in config.analytics.motion:
        watcher = MotionWatcher(motion, app[VIDEO_STORE], outputs, config.data_path, config.durability)
        analytics.motion[motion.video_stream] = watcher
        watcher.start()
    app.on_shutdown.append(_wind_up)
    try:
        yield
    finally:
        analytics.closing = True
        running: list[Application | MotionWatcher] = [*analytics.apps.values(), *analytics.motion.values()]
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in running))


async def _wind_up(app: web.Application) -> None:
    analytics = app[ANALYTICS]
    analytics.closing = True
    analytics._wake_all()


async def list_applications(request: web.Request) -> web.Response:
    request.app[ANALYTICS].check_open(request)
    apps = request.app[ANALYTICS].apps.values()
    return web.json_response({"ApplicationSummaries": [a.summary() for a in apps]})


async def describe_application(request: web.Request) -> web.Response:
    request.app[ANALYTICS].check_open(request)
    application = request.app[ANALYTICS].app(request.match_info["name"])
    detail = application.detail()
    detail["RecentRows"] = {q.name: [row for _, row in application.rows_since(q.name, 0)[-20:]] for q in application.spec.queries}
    return web.json_response(detail)


async def application_rows(request: web.Request) -> web.Response:
    request.app[ANALYTICS].check_open(request)
    application = request.app[ANALYTICS].app(request.match_info["name"])
    query = request.query.get("query", "")
    if query not in application.recent:
        raise not_found(f"Application {application.spec.name} has no query {query!r}.")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError as exc:
        raise validation("after must be an integer") from exc
    return web.json_response({"Rows": [{"Id": n, "Row": row} for n, row in application.rows_since(query, after)]})


async def list_motion(request: web.Request) -> web.Response:
    request.app[ANALYTICS].check_open(request)
    return web.json_response({"MotionDetectors": [w.summary() for w in request.app[ANALYTICS].motion.values()]})


async def describe_motion(request: web.Request) -> web.Response:
    request.app[ANALYTICS].check_open(request)
    watcher = request.app[ANALYTICS].motion.get(request.match_info["stream"])
    if watcher is None:
        raise not_found(f"No motion detection is configured for video stream {request.match_info['stream']}.", 404)
    return web.json_response(watcher.summary())


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``stats`` (every application's summary) and ``rows`` (new output rows)."""
    analytics = request.app[ANALYTICS]
    analytics.check_open(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    wake = asyncio.Event()
    analytics.subscribers.add(wake)
    seen: dict[tuple[str, str], int] = {}
    try:
        while not analytics.closing:
            await response.write(_event("stats", [a.summary() for a in analytics.apps.values()]))
            for name, application in analytics.apps.items():
                for query in application.spec.queries:
                    key = (name, query.name)
                    rows = application.rows_since(query.name, seen.get(key, 0))
                    if rows:
                        seen[key] = rows[-1][0]
                        await response.write(_event("rows", {"application": name, "query": query.name, "rows": [r for _, r in rows]}))
            wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), STATS_SECONDS)
    except ConnectionResetError:
        pass
    finally:
        analytics.subscribers.discard(wake)
    return response


ROUTES: list[web.RouteDef] = [
    web.get("/analytics", static.page(STATIC_DIR / "dashboard.html")),
    web.get("/analytics/static/{name}", static.files(STATIC_DIR, STATIC_FILES)),
    web.get("/analytics/applications", list_applications),
    web.get("/analytics/applications/{name}", describe_application),
    web.get("/analytics/applications/{name}/rows", application_rows),
    web.get("/analytics/events", events),
    web.get("/analytics/motion", list_motion),
    web.get("/analytics/motion/{stream}", describe_motion),
]
