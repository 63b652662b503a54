"""Fragment notifications (UpdateNotificationConfiguration), delivered to a Kinesis data stream
of this gateway or an HTTP endpoint instead of SNS.

``DestinationConfig.Uri``:

* ``arn:aws:kinesis:<region>:<account>:stream/<name>``: one record per fragment is put to that
  data stream (partition key: the video stream's name);
* ``http://...`` / ``https://...``: one JSON POST per fragment.

Every fragment persisted after the configuration was enabled is announced once, in order, as::

    {"NotificationType": "FRAGMENT_PERSISTED", "StreamARN": ..., "StreamName": ..., "FragmentNumber": ...,
     "ProducerTimestamp": <epoch s>, "ServerTimestamp": <epoch s>, "FragmentLengthInMilliseconds": ...,
     "FragmentSizeInBytes": ...}

A delivery that fails (endpoint down, stream missing) is retried on the next tick from the same
fragment; the position is kept in memory, so a restart resumes from the fragments persisted after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web

from gateway.errors import AwsError
from gateway.kds import STORE
from gateway.kds.store import put_entry
from gateway.kvs.configstore import CONFIGS
from gateway.kvs.keys import VIDEO_STORE
from gateway.kvs.model import BY_SERVER, FragmentInfo
from gateway.kvs.store import StreamNotFoundError
from gateway.wire import stream_name_from_arn

log = logging.getLogger("gateway.kvs.notify")

TICK_SECONDS = 0.5
MAX_PER_TICK = 100


def target_of(uri: str) -> tuple[str, str]:
    """``("stream", name)`` or ``("http", url)``; InvalidArgumentException for anything else."""
    if uri.startswith(("http://", "https://")):
        return "http", uri
    if uri.startswith("arn:aws") and ":kinesis:" in uri and stream_name_from_arn(uri):
        return "stream", stream_name_from_arn(uri)
    raise AwsError("InvalidArgumentException", f"DestinationConfig Uri {uri!r}: use a Kinesis data stream ARN or an http(s):// URL", 400)


def message(stream_arn: str, stream_name: str, info: FragmentInfo) -> dict[str, Any]:
    return {
        "NotificationType": "FRAGMENT_PERSISTED",
        "StreamARN": stream_arn,
        "StreamName": stream_name,
        "FragmentNumber": info.fragment_number,
        "ProducerTimestamp": info.producer_ts_ms / 1000,
        "ServerTimestamp": info.server_ts_ms / 1000,
        "FragmentLengthInMilliseconds": info.duration_ms,
        "FragmentSizeInBytes": info.size,
    }


class Notifier:
    def __init__(self, app: web.Application, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.session = session
        #: stream ARN -> last fragment number announced
        self.last: dict[str, str] = {}
        self.sent = 0

    async def tick(self) -> None:
        store = self.app[VIDEO_STORE]
        for arn, config, _, updated in await asyncio.to_thread(self.app[CONFIGS].all, "notification"):
            if config.get("Status") != "ENABLED":
                self.last.pop(arn, None)
                continue
            try:
                stream = await asyncio.to_thread(store.describe, None, arn)
                after = self.last.get(arn)
                if after is None:
                    fragments = await asyncio.to_thread(store.list_fragments_by_id, stream.id, int(updated * 1000), None, BY_SERVER, MAX_PER_TICK)
                else:
                    fragments = await asyncio.to_thread(store.list_fragments_by_id, stream.id, None, None, BY_SERVER, MAX_PER_TICK, after)
                kind, where = target_of(config["DestinationConfig"]["Uri"])
                for info in fragments:
                    await self._deliver(kind, where, message(arn, stream.name, info))
                    self.last[arn] = info.fragment_number
                    self.sent += 1
            except StreamNotFoundError:
                continue
            except Exception as exc:  # retried next tick from the same fragment
                log.warning("notification for %s not delivered: %s", arn, exc)

    async def _deliver(self, kind: str, where: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        if kind == "http":
            async with self.session.post(where, data=data, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status >= 300:
                    raise OSError(f"{where} answered {resp.status}")
            return
        [(_, seq)] = await self.app[STORE].put(where, [put_entry(body["StreamName"], data)])
        if seq < 0:
            raise OSError(f"data stream {where} throttled the notification")


async def run_forever(app: web.Application) -> None:
    async with aiohttp.ClientSession() as session:
        notifier = Notifier(app, session)
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await notifier.tick()
            except Exception:
                log.exception("notification pass failed")
