"""``edge-agent``: a thin shell over the library; each command calls one function.

    edge-agent --config FILE        run the agent (same as ``edge-agent run --config FILE``)
    edge-agent check-config FILE    report every error in a config file (exit 2 if any)
    edge-agent status               spool depth, drops, last successful send
    edge-agent demo                 the whole stack on embedded defaults
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import typed_config
from edge_agent.config import DEFAULT_CONFIG_PATH, check_config, load_config
from edge_agent.errors import ConfigError

COMMANDS = ("run", "check-config", "status", "demo")

MAIN_EXAMPLES = """\
examples:
  edge-agent --config /etc/edge-agent/agent.toml     # run the agent (what systemd does)
  edge-agent check-config configs/agent.example.toml  # validate; every error with its key
  edge-agent status                                   # spool depth, drops, last send
  edge-agent demo                                     # gateway + broker + agent, all local

Each command has its own --help with examples, e.g. edge-agent status --help.
"""

RUN_EXAMPLES = """\
examples:
  edge-agent run --config /etc/edge-agent/agent.toml
  edge-agent run --config configs/agent.example.toml --log-level DEBUG
"""

CHECK_EXAMPLES = """\
examples:
  edge-agent check-config /etc/edge-agent/agent.toml && systemctl restart edge-agent

exit status: 0 valid, 2 invalid (each error printed on its own line, naming its key:
  sources.mqtt[0].qos: expected 0, 1 or 2)
"""

STATUS_EXAMPLES = """\
examples:
  edge-agent status                                   # uses /etc/edge-agent/agent.toml
  edge-agent status --config ./agent.toml --json
  edge-agent status --spool /var/lib/edge-agent/spool.db   # agent not running: read the spool
  edge-agent status --metrics-url http://127.0.0.1:9108/metrics
"""

DEMO_EXAMPLES = """\
examples:
  edge-agent demo                        # gateway on 127.0.0.1:4567, data in ./demo-data; Ctrl-C stops
  edge-agent demo --port 8080 --data-dir /tmp/demo
  edge-agent demo --duration 60          # stop by itself after a minute
  edge-agent demo --serial --no-camera   # telemetry from a simulated serial port, no video
"""


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Edge ingestion agent: camera, MQTT, serial and log sources into a durable spool, "
        "forwarded to a Kinesis-compatible endpoint (our gateway or AWS).",
        epilog=MAIN_EXAMPLES,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent (the default command)", epilog=RUN_EXAMPLES, formatter_class=fmt,
                         description="Run the agent until SIGTERM or Ctrl-C.")
    run.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG_PATH, help=f"TOML config (default {DEFAULT_CONFIG_PATH})")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides [agent] log_level")

    check = sub.add_parser("check-config", help="validate a config file", epilog=CHECK_EXAMPLES, formatter_class=fmt,
                           description="Load a config file and report every error, with its key.")
    check.add_argument("file", metavar="FILE")

    status = sub.add_parser("status", help="spool depth, drops, last successful send", epilog=STATUS_EXAMPLES, formatter_class=fmt,
                            description="Ask the running agent's metrics endpoint; if it does not answer, read the spool file.")
    status.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG_PATH, help="find the metrics address and spool path here")
    status.add_argument("--metrics-url", metavar="URL", help="e.g. http://127.0.0.1:9108/metrics")
    status.add_argument("--spool", metavar="PATH", help="spool file to read when no agent answers")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="run gateway, broker, sample publishers and the agent locally", epilog=DEMO_EXAMPLES,
                          formatter_class=fmt, description="Start the whole stack on embedded defaults; Ctrl-C stops everything.")
    demo.add_argument("--port", type=int, default=4567, help="gateway port (default 4567)")
    demo.add_argument("--data-dir", default="./demo-data", help="gateway data, spool and demo files (default ./demo-data)")
    demo.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--no-camera", action="store_true", help="skip the synthetic camera (saves CPU)")
    demo.add_argument("--serial", action="store_true", help="simulate a serial sensor on a pty instead of MQTT (the default without Mosquitto)")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return typed_config.print_errors(args.config, str(exc).splitlines(), f"edge-agent: invalid config {args.config}:")
    _setup_logging(args.log_level or config.agent.log_level)
    from edge_agent.service import run_agent

    return run_agent(config)


def cmd_check_config(args: argparse.Namespace) -> int:
    errors = check_config(args.file)
    if errors:
        return typed_config.print_errors(args.file, errors)
    config = load_config(args.file)
    print(f"{args.file}: OK ({len(config.sources)} source(s), gateway {config.gateway.endpoint_url}, spool {config.spool.path})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edge_agent.status import get_status

    metrics_url, spool_path = args.metrics_url, args.spool
    if not (metrics_url or spool_path):
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"edge-agent status: {exc}\n(give --metrics-url or --spool)", file=sys.stderr)
            return 2
        metrics_url = f"http://{config.metrics.listen}/metrics" if config.metrics.listen else None
        spool_path = config.spool.path
    try:
        status = get_status(metrics_url, spool_path)
    except (OSError, ValueError) as exc:
        print(f"edge-agent status: no running agent and no readable spool: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status.as_dict(), indent=2, sort_keys=True) if args.json else status.render())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging("INFO")
    from edge_agent.demo import run_demo

    return run_demo(port=args.port, data_dir=args.data_dir, duration=args.duration, camera=not args.no_camera, serial=args.serial)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")  # `edge-agent --config FILE` runs the agent
    args = _parser().parse_args(argv)
    handlers = {"run": cmd_run, "check-config": cmd_check_config, "status": cmd_status, "demo": cmd_demo}
    return handlers[args.command](args)
