"""Where S3 objects go: the embedded directory tree, or an S3 server.

``LocalS3``: bucket ``arn:aws:s3:::NAME`` is ``<data dir>/s3/NAME/`` and a key is a path under it.
An object is written to a temporary file and renamed into place, so a reader never sees half an
object (with ``durability = "full"`` the file is fsynced first). ``RemoteS3``: PutObject on
``[firehose] s3_endpoint_url`` with botocore (path-style addressing, which every S3 server takes).

Both are blocking and run in the delivery threads; failures are ``SinkError`` (retried).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import FirehoseConfig


class SinkError(Exception):
    """An object could not be written (retried by the delivery loop)."""


class ObjectSink(Protocol):
    def put(self, bucket: str, key: str, body: bytes) -> None: ...


class LocalS3:
    def __init__(self, root: Path, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync

    def path(self, bucket: str, key: str) -> Path:
        target = (self.root / bucket / key).resolve()
        if not str(target).startswith(str((self.root / bucket).resolve()) + os.sep):
            raise SinkError(f"object key {key!r} leaves bucket {bucket!r}")
        return target

    def put(self, bucket: str, key: str, body: bytes) -> None:
        target = self.path(bucket, key)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(body)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SinkError(f"cannot write {target}: {exc.strerror or exc}") from exc


class RemoteS3:
    def __init__(self, config: FirehoseConfig) -> None:
        session = botocore.session.get_session()
        credentials: dict[str, Any] = {}
        if config.s3_access_key_id:
            credentials = {"aws_access_key_id": config.s3_access_key_id, "aws_secret_access_key": config.s3_secret_access_key}
        self.client = session.create_client(
            "s3",
            endpoint_url=config.s3_endpoint_url,
            region_name=config.s3_region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60, max_pool_connections=16),
            **credentials,
        )

    def put(self, bucket: str, key: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body)
        except (BotoCoreError, ClientError) as exc:
            raise SinkError(f"PutObject s3://{bucket}/{key} failed: {exc}") from exc


def make_sink(config: FirehoseConfig, data_path: Path, durability: str) -> ObjectSink:
    if config.s3_endpoint_url:
        return RemoteS3(config)
    return LocalS3(data_path / "s3", fsync=durability == "full")
