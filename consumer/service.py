"""The running consumer: lease store, Kinesis client, the user's processor, metrics, signals.

``run_consumer(config)`` is what ``edge-consumer run`` calls: it builds the pieces from the
config, serves metrics, and runs the worker until SIGTERM/SIGINT, after which every shard
consumer finishes its batch, checkpoints (``shutdown_requested``) and the leases are released.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from types import FrameType
from typing import Any

from prometheus_client import start_http_server

from consumer import metrics
from consumer.config import ConsumerConfig
from consumer.errors import ConfigError, ConsumerError
from consumer.leases import LeaseStore
from consumer.processor import ProcessorFactory
from consumer.store_sqlite import SqliteLeaseStore
from consumer.worker import Worker, WorkerSettings
from edge_agent import aws

log = logging.getLogger("consumer.service")


def load_object(ref: str, key: str) -> Any:
    """Import ``module:attr`` (the current directory is importable, as for ``python -m``)."""
    module_name, _, attr = ref.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key}: cannot load {ref!r}: {exc}") from exc
    return obj


def kinesis_client(config: ConsumerConfig, pool: int = 50) -> Any:
    """A botocore Kinesis client for [gateway] (our gateway or AWS), retries off: the reader backs off itself."""
    session = aws.make_session(config.gateway)
    return session.create_client("kinesis", endpoint_url=config.gateway.endpoint_url, region_name=config.gateway.region,
                                 verify=config.gateway.ca_file or True, config=aws.client_config(config.gateway, pool=pool))


def lease_store(config: ConsumerConfig) -> LeaseStore:
    if config.leases.store == "dynamodb":
        from consumer.store_dynamodb import DynamoDBLeaseStore

        session = aws.make_session(config.gateway)
        return DynamoDBLeaseStore.from_session(session, config.leases.table or config.consumer.application, config.gateway.region,
                                               config.leases.dynamodb_endpoint_url or None)
    return SqliteLeaseStore(config.leases.path, config.consumer.application)


def processor_factory(config: ConsumerConfig, client: Any) -> ProcessorFactory:
    if config.consumer.processor:
        factory: ProcessorFactory = load_object(config.consumer.processor, "consumer.processor")
        return factory
    from consumer.handlers import HandlerProcessor

    handler = load_object(config.consumer.handler, "consumer.handler")
    return lambda: HandlerProcessor(handler, config.handler, config.consumer.stream, client)


def build_worker(config: ConsumerConfig) -> Worker:
    c = config.consumer
    client = kinesis_client(config)
    settings = WorkerSettings(
        stream=c.stream, worker_id=c.worker_id, failover_seconds=c.failover_seconds, take_interval_seconds=c.take_interval_seconds,
        shard_sync_seconds=c.shard_sync_seconds, initial_position=c.initial_position, initial_timestamp=config.initial_timestamp,
        max_leases=c.max_leases, poll_interval_seconds=config.polling.interval_seconds, max_records=config.polling.max_records,
    )
    reader_factory = None
    if c.reader == "fanout":
        from consumer.fanout import fanout_reader_factory

        reader_factory = fanout_reader_factory(client, c.stream, c.consumer_name or c.application)
    return Worker(settings, lease_store(config), client, processor_factory(config, client), reader_factory)


def run_consumer(config: ConsumerConfig) -> int:
    if config.metrics.listen:
        host, _, port = config.metrics.listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host.strip("[]"), registry=metrics.REGISTRY)
        except OSError as exc:
            log.error("metrics endpoint %s unavailable: %s (continuing without it)", config.metrics.listen, exc)
    try:
        worker = build_worker(config)  # registers the fan-out consumer: may take a while
    except ConsumerError as exc:
        log.error("%s", exc)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: checkpointing and releasing leases", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    except ConsumerError as exc:
        log.error("%s", exc)
        return 1
    finally:
        worker.store.close()
    return 0
