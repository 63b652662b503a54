"""The interface a user implements, and the checkpointer it is handed.

A worker creates one ``RecordProcessor`` per shard it takes (from the factory it was given) and
calls, in order: ``initialize`` once, ``process_records`` for each batch, then exactly one of
``lease_lost`` (another worker has the shard: do not checkpoint), ``shard_ended`` (the shard is
read to its end; the worker checkpoints SHARD_END after it returns) or ``shutdown_requested``
(this worker stops, or hands the shard to another worker for balance: checkpoint now). These are
the KCL's (and its Python MultiLangDaemon's) calls.

Checkpoints are at-least-once: a restart or a new owner resumes right after the last checkpoint,
so everything processed after it may be delivered again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from consumer.records import Record


class Checkpointer:
    """Records progress in the lease table; ``checkpoint()`` with no argument = everything delivered so far."""

    def __init__(self, shard_id: str, write: Callable[[str, int], None], still_held: Callable[[], bool] = lambda: True) -> None:
        self.shard_id = shard_id
        self._write = write
        #: True while this worker may process the shard (long retry loops check it).
        self.still_held = still_held
        #: (sequence number, sub-sequence) of the last record handed to the processor.
        self.delivered: tuple[str, int] | None = None
        #: The last checkpoint written by this checkpointer.
        self.last: tuple[str, int] | None = None

    def checkpoint(self, sequence_number: str | Record | None = None, sub_sequence_number: int = 0) -> None:
        """Checkpoint at a record (or its sequence number; the sub-sequence for a KPL user record).
        Raises ``LeaseLost`` if the shard is no longer this worker's, ``ValueError`` for a position
        not delivered yet."""
        if isinstance(sequence_number, Record):
            record = sequence_number
            sequence_number, sub_sequence_number = record.sequence_number, record.sub_sequence_number
        if sequence_number is None:
            if self.delivered is None:
                return
            sequence_number, sub_sequence_number = self.delivered
        position = (int(sequence_number), sub_sequence_number)
        if self.delivered is None or position > (int(self.delivered[0]), self.delivered[1]):
            raise ValueError(f"{self.shard_id}: cannot checkpoint at {sequence_number}/{sub_sequence_number}: not delivered yet")
        self._write(sequence_number, sub_sequence_number)
        self.last = (sequence_number, sub_sequence_number)


class RecordProcessor(Protocol):
    def initialize(self, shard_id: str, checkpoint: str) -> None: ...

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None: ...

    def lease_lost(self) -> None: ...

    def shard_ended(self, checkpointer: Checkpointer) -> None: ...

    def shutdown_requested(self, checkpointer: Checkpointer) -> None: ...


class BaseProcessor:
    """Defaults for every call but ``process_records``: checkpoint everything delivered on shutdown."""

    shard_id = ""

    def initialize(self, shard_id: str, checkpoint: str) -> None:
        self.shard_id = shard_id

    def process_records(self, records: list[Record], checkpointer: Checkpointer, millis_behind_latest: int | None) -> None:
        raise NotImplementedError

    def lease_lost(self) -> None:
        pass

    def shard_ended(self, checkpointer: Checkpointer) -> None:
        pass

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        checkpointer.checkpoint()


ProcessorFactory = Callable[[], RecordProcessor]
