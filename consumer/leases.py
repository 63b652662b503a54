"""Leases: one row per shard in a lease table; the worker named in ``owner`` processes the shard.

The fields are the KCL's lease-table attributes, so a table written here reads like a KCL one:

    key (leaseKey)              the shard id
    owner (leaseOwner)          worker id of the holder; None: free for any worker to take
    counter (leaseCounter)      +1 on every renew, take and release: a lease whose counter a worker
                                sees unchanged for the failover time is expired (no clocks compared)
    checkpoint                  sequence number processed up to, or TRIM_HORIZON / LATEST /
                                AT_TIMESTAMP (nothing processed yet) / SHARD_END (shard finished)
    checkpoint_sub (checkpointSubSequenceNumber)   position inside a KPL aggregate
    owner_switches (ownerSwitchesSinceCheckpoint)  takes since the last checkpoint
    parents (parentShardId)     shards that must reach SHARD_END before this one starts
    children (childShardIds)    set when the shard ends
    checkpoint_owner (checkpointOwner)   during a graceful hand-off (the lease was stolen to balance
                                load), the previous owner, which finishes its batch, may checkpoint,
                                and then clears this; the new owner starts only once it is clear

Every write is conditional (the store's job, atomically): take and renew on ``counter``, checkpoint
on being the effective checkpointer (``checkpoint_owner`` if set, else ``owner``). That is what
keeps two workers from both believing they hold a shard.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_TIMESTAMP = "AT_TIMESTAMP"
SHARD_END = "SHARD_END"
#: Checkpoint values that are not sequence numbers.
SENTINELS = (TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END)


@dataclass(frozen=True)
class Lease:
    key: str
    owner: str | None = None
    counter: int = 0
    checkpoint: str = TRIM_HORIZON
    checkpoint_sub: int = 0
    owner_switches: int = 0
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    checkpoint_owner: str | None = None
    starting_hash_key: str | None = None
    ending_hash_key: str | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    def checkpointer(self) -> str | None:
        """The worker allowed to checkpoint: the hand-off's previous owner while one is going on."""
        return self.checkpoint_owner or self.owner

    def with_(self, **changes: object) -> "Lease":
        return replace(self, **changes)  # type: ignore[arg-type]


class LeaseStore(abc.ABC):
    """A lease table. Every mutating call is one atomic conditional write and returns the lease as
    written, or None when its condition did not hold (someone else changed the lease first)."""

    @abc.abstractmethod
    def ensure_table(self) -> None:
        """Create the table if it does not exist (idempotent; safe from many workers at once)."""

    @abc.abstractmethod
    def list_leases(self) -> list[Lease]: ...

    @abc.abstractmethod
    def get(self, key: str) -> Lease | None: ...

    @abc.abstractmethod
    def create(self, lease: Lease) -> bool:
        """Insert ``lease`` if no lease has its key; False if one does."""

    @abc.abstractmethod
    def renew(self, lease: Lease) -> Lease | None:
        """counter+1, if ``owner`` and ``counter`` are still those of ``lease``."""

    @abc.abstractmethod
    def take(self, lease: Lease, owner: str, handoff_from: str | None = None) -> Lease | None:
        """Become the owner (counter+1, owner_switches+1) if ``counter`` is still that of ``lease``.
        ``handoff_from`` (stealing a live lease) is stored as checkpoint_owner; None clears it."""

    @abc.abstractmethod
    def finish_handoff(self, key: str, previous_owner: str) -> bool:
        """Clear checkpoint_owner if it is ``previous_owner`` (the old owner is done with the shard)."""

    @abc.abstractmethod
    def release(self, lease: Lease) -> bool:
        """Clear the owner (counter+1) if ``owner`` is still that of ``lease``: others take it at once."""

    @abc.abstractmethod
    def checkpoint(self, key: str, worker: str, checkpoint: str, sub: int = 0, children: tuple[str, ...] | None = None) -> bool:
        """Record a checkpoint (and reset owner_switches) if ``worker`` is the lease's checkpointer."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    def close(self) -> None:
        """Release connections (the default store needs nothing)."""
