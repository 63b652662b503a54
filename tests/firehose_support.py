"""Helpers for the Firehose tests: a gateway with a [firehose] config, and reading delivered objects."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from helpers import GatewayProcess

ROLE = "arn:aws:iam::000000000000:role/firehose"


def start_gateway(workdir: Path, firehose_toml: str = "", *args: str, more_toml: str = "") -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(f"[firehose]\n{firehose_toml}\n{more_toml}\n")
    return GatewayProcess(workdir / "data", "--config", str(config), *args).start()


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
