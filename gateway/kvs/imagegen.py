"""Images on a schedule (UpdateImageGenerationConfiguration): a background task writes one image
every ``SamplingInterval`` ms of each enabled stream to its destination.

Destinations (``DestinationConfig.Uri``):

* ``s3://bucket/prefix``: an S3 bucket as Firehose writes them (the embedded ``<data dir>/s3/``
  directories, or ``[firehose] s3_endpoint_url``);
* ``file://localhost/abs/dir``: a local directory.

Object names: ``<prefix>/<stream name>/<YYYY>/<MM>/<DD>/<HH>/<epoch ms>.<jpg|png>`` (the sample
time on the configured timeline). Every fragment persisted after the configuration was set is
sampled once, at the multiples of ``SamplingInterval`` that fall inside it (so images line up on
the interval whatever the fragment boundaries); a sample with no frame is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import AwsError
from gateway.firehose.sinks import LocalS3, make_sink
from gateway.keys import CONFIG
from gateway.kvs.clips import build_images
from gateway.kvs.configstore import CONFIGS
from gateway.kvs.keys import VIDEO_STORE
from gateway.kvs.model import BY_PRODUCER, BY_SERVER, FragmentInfo
from gateway.kvs.store import StreamNotFoundError, StreamRecord

log = logging.getLogger("gateway.kvs.imagegen")

TICK_SECONDS = 1.0
#: Most fragments of one stream sampled per tick.
MAX_FRAGMENTS = 20

Writer = Callable[[str, bytes], None]


def destination_of(app: web.Application, config: dict[str, Any]) -> Writer:
    """``(object name, body) -> None`` for the configuration's destination; InvalidArgumentException if unusable."""
    uri = config.get("DestinationConfig", {}).get("Uri", "")
    parts = urlsplit(uri)
    prefix = parts.path.strip("/")
    if parts.scheme == "s3" and parts.netloc:
        gateway = app[CONFIG]
        sink = make_sink(gateway.firehose, gateway.data_path, gateway.durability)
        bucket = parts.netloc
        return lambda name, body: sink.put(bucket, f"{prefix}/{name}" if prefix else name, body)
    if parts.scheme == "file" and parts.netloc == "localhost" and prefix:
        local = LocalS3(Path("/" + prefix).parent, fsync=False)
        folder = Path("/" + prefix).name
        return lambda name, body: local.put(folder, name, body)
    raise AwsError("InvalidArgumentException", f"DestinationConfig Uri {uri!r}: use s3://<bucket>/<prefix> or file://localhost/<directory>", 400)


def _name(stream: str, t_ms: int, fmt: str) -> str:
    when = dt.datetime.fromtimestamp(t_ms / 1000, dt.timezone.utc)
    return f"{stream}/{when:%Y/%m/%d/%H}/{t_ms}.{'png' if fmt == 'PNG' else 'jpg'}"


class ImageGenerator:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        #: stream ARN -> the last fragment sampled
        self.last: dict[str, str] = {}
        self.written = 0

    def tick(self) -> None:
        """One pass over the enabled configurations (blocking: runs in a thread)."""
        store = self.app[VIDEO_STORE]
        for arn, config, _, updated in self.app[CONFIGS].all("image"):
            if config.get("Status") != "ENABLED":
                self.last.pop(arn, None)
                continue
            try:
                stream = store.describe(arn=arn)
                after = self.last.get(arn)
                if after is None:  # fragments persisted since the configuration was set
                    fragments = store.list_fragments_by_id(stream.id, int(updated * 1000), None, BY_SERVER, MAX_FRAGMENTS)
                else:
                    fragments = store.list_fragments_by_id(stream.id, None, None, BY_SERVER, MAX_FRAGMENTS, after)
                if not fragments:
                    continue
                self._sample(stream, config, fragments)
                self.last[arn] = fragments[-1].fragment_number
            except StreamNotFoundError:
                continue
            except Exception:  # a destination that fails now may work later; these samples are skipped
                log.exception("image generation for %s failed", arn)

    def _sample(self, stream: StreamRecord, config: dict[str, Any], fragments: list[FragmentInfo]) -> None:
        """Images at the multiples of SamplingInterval that fall inside the new fragments."""
        interval = int(config["SamplingInterval"])
        by = BY_SERVER if config.get("ImageSelectorType") == "SERVER_TIMESTAMP" else BY_PRODUCER
        times: set[int] = set()
        for info in fragments:
            start = info.server_ts_ms if by == BY_SERVER else info.producer_ts_ms
            first = -(-start // interval) * interval
            times.update(range(first, start + max(info.duration_ms, 1), interval))
        if not times:
            return
        write = destination_of(self.app, config)
        fmt = config.get("Format", "JPEG")
        quality = int(config.get("FormatConfig", {}).get("JPEGQuality", "80"))
        ordered = sorted(times)
        images = build_images(self.app[VIDEO_STORE], stream, ordered, by, fmt, config.get("WidthPixels"), config.get("HeightPixels"), quality)
        for t, image in zip(ordered, images):
            if "ImageContent" in image:
                write(_name(stream.name, t, fmt), base64.b64decode(image["ImageContent"]))
                self.written += 1


async def run_forever(app: web.Application) -> None:
    generator = ImageGenerator(app)
    while True:
        await asyncio.sleep(TICK_SECONDS)
        try:
            await asyncio.to_thread(generator.tick)
        except Exception:
            log.exception("image generation pass failed")
