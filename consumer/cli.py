"""``edge-consumer``: a thin shell over the library; each command calls one function.

    edge-consumer run --config FILE       run a worker (same as ``edge-consumer --config FILE``)
    edge-consumer check-config FILE       report every error in a config file (exit 2 if any)
    edge-consumer leases --config FILE    print the lease table: owner, checkpoint, parents per shard
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import typed_config
from consumer.config import DEFAULT_CONFIG_PATH, check_config, load_config
from consumer.errors import ConfigError, ConsumerError

COMMANDS = ("run", "check-config", "leases")

MAIN_EXAMPLES = """\
examples:
  edge-consumer --config /etc/edge-consumer/consumer.toml     # run a worker (start several: they share the shards)
  edge-consumer check-config configs/consumer.example.toml   # validate; every error with its key
  edge-consumer leases --config consumer.toml                # who holds which shard, checkpoints

A processor is a class with process_records(records, checkpointer, millis_behind_latest);
a handler is a function getting a list of records (Lambda-style, see [handler]). Each command
has its own --help with examples.
"""

RUN_EXAMPLES = """\
examples:
  edge-consumer run --config /etc/edge-consumer/consumer.toml
  edge-consumer run --config consumer.toml --stream telemetry --handler myapp:handle
  edge-consumer run --config consumer.toml --processor myapp.processing:Printer --log-level DEBUG

SIGTERM or Ctrl-C: every shard finishes its batch and checkpoints, then the leases are released
so other workers continue at once.
"""

CHECK_EXAMPLES = """\
examples:
  edge-consumer check-config /etc/edge-consumer/consumer.toml && systemctl restart edge-consumer

exit status: 0 valid, 2 invalid (each error printed on its own line, naming its key:
  consumer.initial_position: expected TRIM_HORIZON, LATEST or AT_TIMESTAMP, got 'OLDEST')
"""

LEASES_EXAMPLES = """\
examples:
  edge-consumer leases --config consumer.toml
  edge-consumer leases --config consumer.toml --json | jq '.[] | select(.owner == null)'
"""


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="edge-consumer",
        description="Kinesis consumer library worker: leases shards of a stream (our gateway or AWS), runs your record "
        "processor or Lambda-style handler on them, checkpoints, and shares the shards with other workers.",
        epilog=MAIN_EXAMPLES, formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run a worker (the default command)", epilog=RUN_EXAMPLES, formatter_class=fmt,
                         description="Run a worker until SIGTERM or Ctrl-C.")
    run.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG_PATH, help=f"TOML config (default {DEFAULT_CONFIG_PATH})")
    run.add_argument("--stream", help="overrides [consumer] stream")
    run.add_argument("--processor", metavar="MODULE:ATTR", help="overrides [consumer] processor (and clears handler)")
    run.add_argument("--handler", metavar="MODULE:FUNC", help="overrides [consumer] handler (and clears processor)")
    run.add_argument("--worker-id", help="overrides [consumer] worker_id")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides [consumer] log_level")

    check = sub.add_parser("check-config", help="validate a config file", epilog=CHECK_EXAMPLES, formatter_class=fmt,
                           description="Load a config file and report every error, with its key.")
    check.add_argument("file", metavar="FILE")

    leases = sub.add_parser("leases", help="print the lease table", epilog=LEASES_EXAMPLES, formatter_class=fmt,
                            description="Print every lease of the application: shard, owner, counter, checkpoint, parents.")
    leases.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG_PATH)
    leases.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from consumer.service import run_consumer

    overrides = {k: v for k, v in (("stream", args.stream), ("processor", args.processor), ("handler", args.handler),
                                   ("worker_id", args.worker_id)) if v is not None}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        return typed_config.print_errors(args.config, str(exc).splitlines(), f"edge-consumer: invalid config {args.config}:")
    logging.basicConfig(level=args.log_level or config.consumer.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_consumer(config)


def cmd_check_config(args: argparse.Namespace) -> int:
    errors = check_config(args.file)
    if errors:
        return typed_config.print_errors(args.file, errors)
    config = load_config(args.file)
    print(f"{args.file}: OK (stream {config.consumer.stream}, application {config.consumer.application}, "
          f"{config.leases.store} leases, {config.consumer.reader} reader)")
    return 0


def cmd_leases(args: argparse.Namespace) -> int:
    from consumer.service import lease_store

    try:
        config = load_config(args.config)
        store = lease_store(config)
        leases = store.list_leases()
    except ConsumerError as exc:
        print(f"edge-consumer leases: {exc}", file=sys.stderr)
        return 1
    rows = [{"shard": lease.key, "owner": lease.owner, "counter": lease.counter, "checkpoint": lease.checkpoint,
             "checkpoint_sub": lease.checkpoint_sub, "parents": list(lease.parents), "checkpoint_owner": lease.checkpoint_owner}
            for lease in leases]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'shard':<24} {'owner':<32} {'counter':>8}  checkpoint")
    for r in rows:
        print(f"{r['shard']:<24} {r['owner'] or '-':<32} {r['counter']:>8}  {r['checkpoint']}"
              + (f"/{r['checkpoint_sub']}" if r["checkpoint_sub"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    args = _parser().parse_args(argv)
    return {"run": cmd_run, "check-config": cmd_check_config, "leases": cmd_leases}[args.command](args)
