"""``edge-gateway analytics``: list and inspect a running gateway's analytics applications.

A thin shell over the JSON endpoints of ``gateway.analytics.api``; each command prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gateway.config import DEFAULT_PORT

EXAMPLES = f"""\
examples:
  edge-gateway analytics list                                 # every application, status and counters
  edge-gateway analytics describe plant                       # inputs, schema, SQL, recent output rows
  edge-gateway analytics rows plant averages --after 120      # output rows of one query after row id 120
  edge-gateway analytics --url http://10.0.0.5:{DEFAULT_PORT} list
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway analytics", description="List and inspect the analytics applications of a running gateway.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="the gateway (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="applications with status, records/s, errors, lag")
    describe = commands.add_parser("describe", help="one application in full")
    describe.add_argument("name")
    rows = commands.add_parser("rows", help="recent output rows of one query")
    rows.add_argument("name")
    rows.add_argument("query")
    rows.add_argument("--after", type=int, default=0, help="only rows with a larger id")
    return parser


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = args.url.rstrip("/") + "/analytics/applications"
    if args.command == "list":
        url = base
    elif args.command == "describe":
        url = f"{base}/{urllib.parse.quote(args.name)}"
    else:
        url = f"{base}/{urllib.parse.quote(args.name)}/rows?" + urllib.parse.urlencode({"query": args.query, "after": args.after})
    try:
        result = _get(url)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("message", exc.reason)
        except ValueError:
            message = exc.reason
        print(f"edge-gateway analytics: {message}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"edge-gateway analytics: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0
