"""Per-stream and per-account settings: their state, on disk and in memory.

The operations that change them are in ``configure`` (mode, record size, warm throughput,
distribution, monitoring, account settings), ``encryption`` and ``policies``.

On disk (``kds.sqlite3``)::

    settings(owner, value)    owner = stream key, or 0 for the account; value = JSON of the
                              non-default fields of StreamSettings / AccountSettings

A change that AWS applies asynchronously (mode, encryption, record size, warm throughput) puts
the stream in ``UPDATING`` for ``UPDATE_SECONDS`` and then back to ``ACTIVE``; a second change in
that window gets ``ResourceInUseException`` as on AWS. The status is not stored: a restart finds
every stream ACTIVE with its new settings already in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import in_use, not_found

if TYPE_CHECKING:  # the store creates this module's table, so only types come from there
    from gateway.kds.store import Store, Stream

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings(owner INTEGER PRIMARY KEY, value TEXT NOT NULL);
"""
ACCOUNT = 0
#: How long an asynchronous change keeps a stream UPDATING (long enough that a client sees it, short
#: enough that tests and scripts waiting for ACTIVE barely notice).
UPDATE_SECONDS = 1.0
#: Shard-level metrics of EnableEnhancedMonitoring, in AWS's order ("ALL" names them all).
SHARD_METRICS = ("IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
                 "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded", "IteratorAgeMilliseconds")
DEFAULT_MAX_RECORD_KIB = 1024
#: A billing commitment runs at least this long once enabled (as AWS: 24 hours).
COMMITMENT_SECONDS = 24 * 3600
#: Warm throughput one shard provides, MiB/s (an on-demand stream is scaled to cover it).
MIB_PER_SHARD = 1


@dataclass(frozen=True)
class StreamSettings:
    encryption_type: str = "NONE"
    #: KeyId as the client gave it (DescribeStream shows it back) and the key it resolved to.
    key_id: str = ""
    key_uuid: str = ""
    metrics: tuple[str, ...] = ()
    max_record_kib: int = DEFAULT_MAX_RECORD_KIB
    warm_mibps: int = 0
    distribution: str = "USER_PARTITION_KEY"
    policy: str = ""

    @property
    def max_record_bytes(self) -> int:
        return self.max_record_kib * 1024


@dataclass(frozen=True)
class AccountSettings:
    commitment: str = "DISABLED"
    started: float = 0.0
    ended: float = 0.0


def encode(value: Any) -> str:
    default = type(value)()
    return json.dumps({f.name: getattr(value, f.name) for f in dataclasses.fields(value) if getattr(value, f.name) != getattr(default, f.name)})


def _decode(cls: type, text: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items() if k in names}
    return cls(**raw)


def load(conn: sqlite3.Connection, streams: dict[int, Stream]) -> AccountSettings:
    """Attach each stream's settings; return the account's."""
    account = AccountSettings()
    for owner, value in conn.execute("SELECT owner, value FROM settings"):
        if owner == ACCOUNT:
            account = _decode(AccountSettings, value)
        elif owner in streams:
            streams[owner].settings = _decode(StreamSettings, value)
    return account


def save(conn: sqlite3.Connection, stream: Stream, **changes: Any) -> None:
    """Change some of ``stream``'s settings (in a writer job)."""
    stream.settings = dataclasses.replace(stream.settings, **changes)
    conn.execute("INSERT OR REPLACE INTO settings(owner, value) VALUES (?, ?)", (stream.key, encode(stream.settings)))


def forget_stream(conn: sqlite3.Connection, stream_key: int) -> None:
    conn.execute("DELETE FROM settings WHERE owner=?", (stream_key,))


def require_active(store: Store, stream: Stream) -> None:
    if stream.status != "ACTIVE":
        raise in_use(f"Stream {stream.name} under account {store.account_id} not ACTIVE, instead in state {stream.status}")


def live(store: Store, stream: Stream) -> Stream:
    if store.streams.get(stream.name) is not stream:
        raise not_found(f"Stream {stream.name} under account {store.account_id} not found.")
    return stream


async def change(store: Store, stream: Stream, updating: bool = True, check: Any = None, **changes: Any) -> None:
    """Apply ``changes`` in one writer job (after ``check(stream)``); with ``updating`` the
    stream shows UPDATING for a moment, as AWS's asynchronous updates do."""

    def job(conn: sqlite3.Connection) -> None:
        live(store, stream)
        require_active(store, stream)
        if check is not None:
            check(stream)
        save(conn, stream, **changes)
        if updating:
            stream.status = "UPDATING"

    await store.run(job)
    if updating:
        asyncio.get_running_loop().call_later(UPDATE_SECONDS, activate, stream)


def activate(stream: Stream) -> None:
    if stream.status == "UPDATING":
        stream.status = "ACTIVE"
