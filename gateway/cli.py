"""``edge-gateway``: run the Kinesis-compatible gateway."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from gateway.config import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, ConfigError, GatewayConfig, LimitsConfig, load_config
from gateway.credentials import auth_from_environment
from gateway.kds.encryption import KEY_FILE, KeyStore
from gateway.server import serve, ssl_context

EXAMPLES = """\
examples:
  edge-gateway                                   # 127.0.0.1:4567, data in ./gateway-data
  edge-gateway --port 8080 --data-dir /var/lib/edge-gateway
  edge-gateway --config /etc/edge-gateway/gateway.toml
  edge-gateway --no-limits                       # no per-shard throughput limits (benchmarks)
  edge-gateway --create-key alias/cameras        # a new key in the local key store (prints its id), then:
                                                 # aws kinesis start-stream-encryption --encryption-type KMS --key-id alias/cameras ...
  EDGE_GATEWAY_CREDENTIALS_FILE=/etc/edge-gateway/credentials.toml edge-gateway --host 0.0.0.0
                                                 # require SigV4 from the keys in that file ([auth] shape)

then, from any machine that reaches it:
  aws kinesis list-streams --endpoint-url http://127.0.0.1:4567
  python -c "import boto3; print(boto3.client('kinesis', endpoint_url='http://127.0.0.1:4567').list_streams())"
  aws firehose list-delivery-streams --endpoint-url http://127.0.0.1:4567    # Firehose (objects in <data dir>/s3/)
  open http://127.0.0.1:4567/player to watch video streams
  open http://127.0.0.1:4567/analytics for the analytics dashboard
  edge-gateway analytics list                    # analytics applications (see: edge-gateway analytics --help)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="A Kinesis Data Streams, Kinesis Video Streams and Data Firehose compatible gateway: "
        "boto3, the AWS CLI and the edge agent talk to it as they would to AWS.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (flags given here override it)")
    parser.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--data-dir", metavar="DIR", help=f"where streams and fragments live (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--no-limits", action="store_true", help="turn off per-shard throughput limits")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    parser.add_argument("--create-key", metavar="ALIAS", help="add a key named ALIAS (alias/<name>) to the local key store for "
                        "StartStreamEncryption, print its key id and exit")
    return parser


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    config = load_config(args.config) if args.config else GatewayConfig()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("data_dir", args.data_dir), ("log_level", args.log_level)) if v is not None}
    if args.no_limits:
        overrides["limits"] = LimitsConfig(enabled=False)
    return dataclasses.replace(config, **overrides)


def _create_key(config: GatewayConfig, alias: str) -> int:
    keys = KeyStore(Path(config.encryption.key_store) if config.encryption.key_store else config.data_path / KEY_FILE)
    try:
        print(keys.create_key(alias))
    except ValueError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["analytics"]:
        from gateway.analytics import cli as analytics_cli

        return analytics_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        config = dataclasses.replace(config, auth=auth_from_environment(config.auth))
        context = ssl_context(config.tls)
    except ConfigError as exc:
        print(f"edge-gateway: config error: {exc}", file=sys.stderr)
        return 2
    if args.create_key:
        return _create_key(config, args.create_key)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gateway.app import create_app  # here, not at the top: `edge-gateway analytics` needs none of it

    app = create_app(config)
    try:
        asyncio.run(serve(app, config, context))
    except OSError as exc:
        print(f"edge-gateway: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
