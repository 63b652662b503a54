"""Typed application-state keys of the video API (the store itself knows nothing of aiohttp)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.kvs.live import FragmentEvents
from gateway.kvs.store import VideoStore

VIDEO_STORE = web.AppKey("video_store", VideoStore)
VIDEO_EVENTS = web.AppKey("video_events", FragmentEvents)
#: Set when the gateway begins shutting down: live tails and PutMedia sessions wind up at once.
SHUTTING_DOWN = web.AppKey("video_shutting_down", asyncio.Event)
