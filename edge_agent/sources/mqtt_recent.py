"""The MQTT source's memory of its latest QoS 1/2 deliveries, to recognise a redelivery.

A message committed to the spool whose PUBACK/PUBREC never reached the broker (a crash or SIGKILL
in between) comes again after the restart, with the DUP flag. Its identity, (packet id, CRC-32 of
topic and payload), is saved in the same spool transaction as the message, so the redelivery is
acknowledged without being spooled twice. Packet ids cycle through 65535 values per session, far
more than a broker keeps in flight, so a match is the same delivery.

The memory is a ring of ``RECENT_DELIVERIES`` entries in the spool's rings (``ring_names``, ``ring_slots``; delivery
number ``ordinal`` in slot ``ordinal % RECENT_DELIVERIES``): a commit writes only the slots of the
messages it holds. It must hold at least the broker's in-flight window (what can be redelivered).
A spool written before the ring held the same pairs as one JSON checkpoint: it is read, and moved
to the ring.
"""

from __future__ import annotations

import json
import zlib
from collections import deque

from edge_agent.sources import mqtt_wire as wire
from edge_agent.spool import RingEntry, Spool

#: Deliveries remembered: at least the largest in-flight window a broker may use with us.
RECENT_DELIVERIES = 1024


def identity(publish: wire.Publish) -> int:
    """What tells a redelivery of a message apart from another message: packet id and checksum."""
    payload = publish.payload if publish.payload is not None else publish.size.to_bytes(8, "big")
    return publish.packet_id << 32 | zlib.crc32(payload, zlib.crc32(publish.topic))


class RecentDeliveries:
    def __init__(self, spool: Spool, client_id: str) -> None:
        self.ring = f"mqtt-recent:{client_id}"
        self._order: deque[int] = deque()  # identities, oldest first
        self._count: dict[int, int] = {}  # the same, to look up
        self.ordinal = 0  # of the latest delivery
        entries = spool.ring(self.ring)
        if not entries:  # a spool written before the ring: one JSON checkpoint of (mid, crc) pairs
            saved = spool.checkpoint(self.ring)
            pairs = json.loads(saved) if saved else []
            entries = [self._entry(i + 1, mid << 32 | crc) for i, (mid, crc) in enumerate(pairs[-RECENT_DELIVERIES:])]
            if entries:
                spool.append([], ring=entries)
        for entry in entries:
            self._remember(entry.value)
        self.ordinal = entries[-1].ordinal if entries else 0

    def __contains__(self, identity: int) -> bool:
        return identity in self._count

    def __len__(self) -> int:
        return len(self._order)

    def identities(self) -> list[int]:
        return list(self._order)

    def add(self, identity: int) -> RingEntry:
        """Remember a delivery; the entry goes to the spool with the message."""
        self.ordinal = ordinal = self.ordinal + 1
        self._remember(identity)
        return RingEntry(self.ring, ordinal % RECENT_DELIVERIES, ordinal, identity)

    def _entry(self, ordinal: int, identity: int) -> RingEntry:
        return RingEntry(self.ring, ordinal % RECENT_DELIVERIES, ordinal, identity)

    def _remember(self, identity: int) -> None:
        order, count = self._order, self._count
        order.append(identity)
        count[identity] = count.get(identity, 0) + 1
        if len(order) > RECENT_DELIVERIES:
            old = order.popleft()
            if count[old] == 1:
                del count[old]
            else:
                count[old] -= 1
