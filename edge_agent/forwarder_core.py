"""What both forwarders share: the run loop, the last-success checkpoint, the log throttle, and
which errors mean "wait long before retrying".

A forwarder drains one spool lane to the gateway with one sender: ``RecordForwarder``
(``edge_agent.forwarder``, PutRecords) or ``MediaForwarder`` (``edge_agent.media_forwarder``,
PutMedia). Each implements ``step`` (send one request; False when nothing was ready) and
``_idle`` (sleep until there may be something to send); this class runs them until ``stop``
is set, survives its own bugs (logged, paused, continued), and keeps a ``heartbeat`` the
service's watchdog reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent import metrics
from edge_agent.config import ForwarderSection
from edge_agent.spool import SpoolClosed

log = logging.getLogger("edge_agent.forwarder")

#: Spool checkpoint key prefix (+ lane) of the last acknowledged send, so ``edge-agent status`` can
#: tell it while the agent is down. Saved at most every ``LAST_SEND_SAVE_SECONDS``.
LAST_SEND_CHECKPOINT = "forwarder.last_send."
LAST_SEND_SAVE_SECONDS = 30.0
#: Errors that do not fix themselves within seconds (a missing stream, unknown or refused
#: credentials): retried no sooner than a quarter of ``retry_max_seconds``.
LONG_WAIT_CODES = frozenset({"ResourceNotFoundException", "AccessDeniedException", "UnrecognizedClientException", "NotAuthorizedException"})
#: A given kind of failure is logged at most once per this many seconds (an outage must not flood the journal).
WARN_INTERVAL_SECONDS = 10.0


def last_send_key(lane: str) -> str:
    """The spool checkpoint holding the lane's last successful send (unix seconds, as text)."""
    return LAST_SEND_CHECKPOINT + lane


class ForwarderCore:
    """The loop and bookkeeping of one forwarder; subclasses send."""

    #: Spool lane drained, and the ``lane`` label of the send metrics.
    lane = ""

    def __init__(self, spool: Any, config: ForwarderSection) -> None:
        self.spool = spool
        self.config = config
        self.heartbeat = time.monotonic()
        self.last_success: float | None = None
        self._last_success_saved = 0.0
        self._warned: dict[str, float] = {}

    def run(self, stop: threading.Event) -> None:
        log.info("%s forwarder started%s", self.lane, self._started_note())
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                if not self.step(stop):
                    self._idle(stop)
            except SpoolClosed:
                break
            except Exception:  # a bug must not kill the forwarder: log, pause, go on
                log.exception("%s forwarder: unexpected error", self.lane)
                stop.wait(1.0)
        self.close()

    def step(self, stop: threading.Event | None = None) -> bool:  # pragma: no cover - interface
        """Send one request; False when nothing was ready to send."""
        raise NotImplementedError

    def _idle(self, stop: threading.Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _started_note(self) -> str:
        return ""

    def close(self) -> None:
        """Release what the forwarder holds (outstanding spool acks, connections); ``run`` calls
        it when its loop ends. Call it before closing the spool when driving ``step`` by hand."""

    def _succeeded(self, save: Callable[[str, str], object] | None = None) -> None:
        """A send went through: note the time (metric; spool checkpoint every ~30 s, through
        ``save(key, value)`` when given, else a spool append of the checkpoint)."""
        self.last_success = time.time()
        metrics.LAST_SEND_SUCCESS.labels(self.lane).set(self.last_success)
        if self.last_success - self._last_success_saved >= LAST_SEND_SAVE_SECONDS:
            self._last_success_saved = self.last_success
            key, value = last_send_key(self.lane), f"{self.last_success:.3f}"
            if save is None:
                self.spool.append([], checkpoint=(key, value))
            else:
                save(key, value)

    def _long_wait(self, code: str) -> float:
        """The least delay before retrying after ``code`` (0 unless it will not pass soon)."""
        return self.config.retry_max_seconds / 4 if code in LONG_WAIT_CODES else 0.0

    def _warn(self, kind: str, message: str) -> None:
        """Log a failure at most every ``WARN_INTERVAL_SECONDS`` per kind."""
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) >= WARN_INTERVAL_SECONDS:
            self._warned[kind] = now
            log.warning(message)
