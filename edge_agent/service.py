"""The running agent: one thread per source, one per forwarder, the metrics endpoint, sd_notify.

``Agent(config).run(stop)`` opens the spool, starts everything, tells systemd READY=1 and then
pings WATCHDOG=1 while the forwarder loops are alive (a hung forwarder stops the pings and
systemd restarts the service). A source that fails is restarted after a pause; nothing a source
or the gateway does stops the agent. On ``stop`` (SIGTERM/SIGINT) threads are joined and the
spool is closed cleanly; whatever was not sent waits in the spool for the next start.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import start_http_server

from edge_agent import aws, metrics
from edge_agent.config import AgentConfig
from edge_agent.edge_config import EdgeConfigSync
from edge_agent.errors import ConfigError
from edge_agent.forwarder import RecordForwarder
from edge_agent.firehose_client import FirehoseClient, RecordsClient
from edge_agent.kinesis_client import KinesisClient
from edge_agent.media_forwarder import MediaForwarder
from edge_agent.sdnotify import Notifier, watchdog_interval
from edge_agent.spool import Spool, SpoolError

log = logging.getLogger("edge_agent")

#: A forwarder loop silent for longer than this (plus the read timeout) is considered hung.
HUNG_AFTER_SECONDS = 60.0
JOIN_SECONDS = 10.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.agent_id = config.agent_id
        self.spool: Spool | None = None
        self.records: RecordForwarder | None = None
        self.media: MediaForwarder | None = None
        self.threads: list[threading.Thread] = []
        self.notifier = Notifier()
        #: A forwarder loop silent longer than this is hung: the watchdog is no longer fed.
        self.hung_after_seconds = HUNG_AFTER_SECONDS + config.gateway.read_timeout_seconds
        self._metrics_server: Any = None

    # -- starting ------------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> None:
        cfg = self.config
        session = aws.agent_credentials(cfg.gateway)
        self.spool = Spool(cfg.spool.path, max_bytes=cfg.spool.max_bytes, drop_order=cfg.spool.drop_order, sync=cfg.spool.sync,
                           commit_interval=cfg.spool.commit_interval_ms / 1000)
        records = RecordsClient(KinesisClient(session, cfg.gateway), FirehoseClient(session, cfg.gateway))
        self.records = RecordForwarder(self.spool, records, cfg.forwarder, self.agent_id)
        self.media = MediaForwarder(self.spool, session, cfg.gateway, cfg.forwarder, self.agent_id)
        self._thread("forwarder-records", self.records.run, stop)
        self._thread("forwarder-media", self.media.run, stop)
        for source_config in cfg.sources:
            self._thread(f"source-{source_config.name}", functools.partial(self._supervise, source_config), stop)
        if any(getattr(source, "KIND", "") == "camera" for source in cfg.sources):  # remote edge configuration for its cameras
            sync = EdgeConfigSync(self.media.transport, cfg.gateway.video_url, self.agent_id, self.spool, self.media)
            self._thread("edge-config", sync.run, stop)
        if cfg.metrics.listen:
            host, _, port = cfg.metrics.listen.rpartition(":")
            if host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
                log.warning("metrics endpoint on %s is reachable from the network (metrics.listen); keep it on localhost unless intended", cfg.metrics.listen)
            try:
                self._metrics_server, _ = start_http_server(int(port), addr=host.strip("[]"), registry=metrics.REGISTRY)
            except OSError as exc:
                log.error("metrics endpoint %s unavailable: %s (continuing without it)", cfg.metrics.listen, exc)
        log.info(
            "agent %s running: %d source(s), spool %s, gateway %s, metrics %s",
            self.agent_id, len(cfg.sources), cfg.spool.path, cfg.gateway.endpoint_url, cfg.metrics.listen or "off",
        )

    def _thread(self, name: str, target: Callable[[threading.Event], None], stop: threading.Event) -> None:
        thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _supervise(self, source_config: Any, stop: threading.Event) -> None:
        """Run one source; if it raises (a bug, a vanished device), restart it after a pause."""
        pause = self.config.agent.source_restart_seconds
        while not stop.is_set():
            try:
                source = source_config.build(self.spool, self.agent_id)
                source.run(stop)
            except Exception:
                log.exception("source %s failed; restarting in %.0fs", source_config.name, pause)
            else:
                if not stop.is_set():
                    log.warning("source %s stopped by itself; restarting in %.0fs", source_config.name, pause)
            stop.wait(pause)

    # -- running -------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """True while both forwarder loops come round (they update a heartbeat every pass)."""
        now = time.monotonic()
        return all(f is not None and now - f.heartbeat < self.hung_after_seconds for f in (self.records, self.media))

    def run(self, stop: threading.Event) -> None:
        """Start, announce READY, keep the watchdog fed until ``stop``, then shut down."""
        self.start(stop)
        self.notifier.ready(f"forwarding to {self.config.gateway.endpoint_url}")
        interval = watchdog_interval() or 5.0
        try:
            while not stop.wait(interval):
                if self.healthy():
                    self.notifier.watchdog(self.status_line())
                else:
                    log.error("a forwarder loop is stuck: not feeding the watchdog")
        finally:
            self.shutdown(stop)

    def status_line(self) -> str:
        assert self.spool is not None
        stats = self.spool.stats()
        return f"spool: {stats.records.get('records', 0)} records, {stats.records.get('media', 0)} fragments, {stats.bytes} bytes"

    def shutdown(self, stop: threading.Event) -> None:
        stop.set()
        self.notifier.stopping()
        deadline = time.monotonic() + JOIN_SECONDS
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            log.warning("threads still running at shutdown: %s", ", ".join(stuck))
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self.spool is not None:
            self.spool.close()
        log.info("agent stopped")


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM (systemd stop) and SIGINT (Ctrl-C) end the agent cleanly."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_agent(config: AgentConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 if the spool cannot be opened."""
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        Agent(config).run(stop)
    except SpoolError as exc:  # another agent holds it, or the disk refuses
        log.error("cannot open the spool: %s", exc)
        return 1
    except ConfigError as exc:  # found only at start, e.g. a named AWS profile that does not exist
        log.error("config error: %s", exc)
        return 2
    return 0
