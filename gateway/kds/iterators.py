"""Shard iterators: opaque, tamper-evident position tokens that expire after 5 minutes.

A token is ``base64url(shard_key.position.issued_ms) + "." + HMAC`` signed with a key kept in
the data dir, so iterators survive a gateway restart but a client cannot forge a position in
another shard. ``position`` is the first internal sequence number the next read returns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import AwsError, invalid_argument

ITERATOR_TTL_SECONDS = 300.0
KEY_FILE = "kds-iterator.key"


@dataclass(frozen=True)
class Position:
    shard_key: int
    seq: int
    issued: float


class IteratorSigner:
    def __init__(self, data_dir: Path) -> None:
        path = data_dir / KEY_FILE
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(secrets.token_bytes(32))
            os.replace(tmp, path)
        self._key = path.read_bytes()

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def issue(self, shard_key: int, seq: int, now: float | None = None) -> str:
        issued = int((time.time() if now is None else now) * 1000)
        payload = f"{shard_key}.{seq}.{issued}".encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._mac(payload)

    def parse(self, token: str, now: float | None = None) -> Position:
        try:
            encoded, mac = token.split(".")
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            ok = hmac.compare_digest(mac, self._mac(payload))
            shard_key, seq, issued = (int(p) for p in payload.decode().split("."))
        except ValueError:
            ok = False
        if not ok:
            raise invalid_argument("Invalid ShardIterator.")
        issued_s = issued / 1000.0
        if (time.time() if now is None else now) - issued_s > ITERATOR_TTL_SECONDS:
            raise AwsError("ExpiredIteratorException", f"Iterator expired. The iterator was created at time {issued_s:.3f} while right now it is later than {ITERATOR_TTL_SECONDS:.0f}s after that.")
        return Position(shard_key, seq, issued_s)
