"""Kinesis Data Streams: the JSON/CBOR 1.1 API on ``POST /`` and its durable shard store.

Modules, in the order data flows: ``protocol`` (JSON/CBOR codecs) and ``validate`` (botocore
model checks) → ``api`` (action table) → ``records`` / ``control`` (data and control planes)
→ ``store`` + ``writer`` (SQLite, group commit) with ``shards`` (hash routing), ``limits``,
``iterators``, ``sequence``, ``render`` and ``retention`` as helpers. Enhanced fan-out:
``consumers`` (registered consumers) and ``subscriptions`` (SubscribeToShard, framed by
``eventstream``, woken by the store's commits through ``signals``). Stream and account settings:
``settings`` (state) changed by ``configure``, ``encryption`` (AES-GCM at rest, local key store)
and ``policies`` (resource policies); ``monitoring`` puts shard-level metrics on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.auth import VERIFIER
from gateway.kds import policies
from gateway.kds.api import TARGET_PREFIX, make_handler
from gateway.kds.consumers import CONSUMERS, Consumers
from gateway.kds.queues import QUEUES, Queues
from gateway.kds.signals import SIGNALS, ShardSignals
from gateway.kds.subscriptions import SUBSCRIPTIONS, Subscriptions
from gateway.kds.iterators import IteratorSigner
from gateway.kds.monitoring import MONITOR, ShardMonitor
from gateway.kds.retention import run_forever
from gateway.kds.store import Store
from gateway.kds.validate import service_model
from gateway.keys import CONFIG
from gateway.metrics import METRICS

__all__ = ["ROUTES", "STORE", "TARGETS", "lifecycle", "shutdown"]

STORE = web.AppKey("kds_store", Store)
SIGNER = web.AppKey("kds_signer", IteratorSigner)

ROUTES: list[web.RouteDef] = []
#: ``POST /`` by X-Amz-Target prefix (``gateway.app`` dispatches it).
TARGETS = {TARGET_PREFIX: make_handler(lambda request: request.app[STORE], lambda request: request.app[SIGNER])}


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = await asyncio.to_thread(Store, config)
    await asyncio.to_thread(service_model)  # load botocore's model now, not in the first request
    app[STORE] = store
    consumers = Consumers(store, config.consumers.activation_seconds)
    await consumers.load()
    app[CONSUMERS] = consumers
    signals = app[SIGNALS] = ShardSignals(asyncio.get_running_loop())
    store.on_commit = signals.committed
    hub = app[SUBSCRIPTIONS] = Subscriptions(store, signals, config.consumers)
    consumers.on_deregister.append(hub.consumer_gone)
    queues = app[QUEUES] = Queues(store, config.consumers.activation_seconds)
    await queues.load()
    app[SIGNER] = IteratorSigner(config.data_path)
    monitor = app[MONITOR] = ShardMonitor(store)
    app[METRICS].register(monitor)
    if VERIFIER in app:
        app[VERIFIER].policy_grants = policies.grants(store)
    sweeper = asyncio.create_task(run_forever(store, config.retention_sweep_seconds))
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        store.on_commit = None
        app[METRICS].unregister(monitor)
        await asyncio.to_thread(store.close)


async def shutdown(app: web.Application) -> None:
    """``on_shutdown``: end SubscribeToShard streams and queue long polls before the server waits
    for open requests."""
    if QUEUES in app:
        app[QUEUES].close()
    if SUBSCRIPTIONS in app:
        await app[SUBSCRIPTIONS].close()
