"""Kinesis Video Streams: control plane, PutMedia/GetMedia, archived media, HLS and the player.

``ROUTES`` aggregates each module's route table; ``lifecycle`` opens the fragment store and the
configurations (and the retention, scheduled-image and notification tasks) for the app's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.keys import CONFIG
from gateway.kvs import clips, configs, control, fragments, hls, imagegen, media, notify, player, putmedia, sessions
from gateway.kvs.configstore import CONFIGS, FILE, StreamConfigs
from gateway.kvs.keys import SHUTTING_DOWN, VIDEO_EVENTS, VIDEO_STORE
from gateway.kvs.live import FragmentEvents
from gateway.kvs.retention import run_retention
from gateway.kvs.store import VideoStore

ROUTES: list[web.RouteDef] = [
    *control.ROUTES,
    *configs.ROUTES,
    *putmedia.ROUTES,
    *media.ROUTES,
    *fragments.ROUTES,
    *clips.ROUTES,
    *sessions.ROUTES,
    *hls.ROUTES,
    *player.ROUTES,
]


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = await asyncio.to_thread(VideoStore, config.data_path / "video", config.durability, config.account_id)
    app[VIDEO_STORE] = store
    app[VIDEO_EVENTS] = FragmentEvents()
    app[SHUTTING_DOWN] = asyncio.Event()
    await putmedia.setup(app)
    app.on_shutdown.append(_wind_up)
    app[CONFIGS] = await asyncio.to_thread(StreamConfigs, config.data_path / "video" / FILE)
    tasks = [
        asyncio.create_task(run_retention(store, config), name="video-retention"),
        asyncio.create_task(imagegen.run_forever(app), name="video-images"),
        asyncio.create_task(notify.run_forever(app), name="video-notifications"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app[CONFIGS].close()
        await putmedia.drain(app)
        await asyncio.to_thread(store.close)


async def _wind_up(app: web.Application) -> None:
    """On shutdown, end live GetMedia tails and PutMedia sessions now rather than at the timeout."""
    app[SHUTTING_DOWN].set()
    app[VIDEO_EVENTS].notify_all()
    putmedia.stop_sessions(app)
