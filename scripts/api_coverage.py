"""Which operations of botocore's Kinesis models the gateway serves, as a Markdown table.

Reads the ``kinesis``, ``kinesisvideo``, ``kinesis-video-archived-media`` and
``kinesis-video-media`` models and compares them with what the gateway registers: the Kinesis
action table (``gateway.kds.api.HANDLERS``) and the app's routes for the rest-json services
(each operation's ``requestUri``). Operations not served get the reason noted in ``NOTES``.

    .venv/bin/python scripts/api_coverage.py              # the table, Markdown
    .venv/bin/python scripts/api_coverage.py --missing    # only what is not served
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from botocore.loaders import Loader  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.kds.api import HANDLERS  # noqa: E402

SERVICES = ["kinesis", "kinesisvideo", "kinesis-video-archived-media", "kinesis-video-media"]
#: Who owns an operation when it is another engineer's work (by name prefix/suffix match).
OWNERS = {
    "kinesis": [(("RegisterStreamConsumer", "DeregisterStreamConsumer", "DescribeStreamConsumer", "ListStreamConsumers", "SubscribeToShard"), "efo (issue 13)"),
                (("Queue", "DeadLetterQueue"), "efo (issue 13, queues)"),
                (("Channel",), "firehose (issue 10, channels)")],
}
NOTES = {
    "CreateSignalingChannel": "signaling channels / WebRTC: out of scope (issue 15)",
    "DeleteSignalingChannel": "signaling channels / WebRTC: out of scope (issue 15)",
    "DescribeSignalingChannel": "signaling channels / WebRTC: out of scope (issue 15)",
    "GetSignalingChannelEndpoint": "signaling channels / WebRTC: out of scope (issue 15)",
    "ListSignalingChannels": "signaling channels / WebRTC: out of scope (issue 15)",
    "UpdateSignalingChannel": "signaling channels / WebRTC: out of scope (issue 15)",
    "DescribeMediaStorageConfiguration": "media storage of a signaling channel (WebRTC ingestion): out of scope",
    "UpdateMediaStorageConfiguration": "media storage of a signaling channel (WebRTC ingestion): out of scope",
    "DescribeMappedResourceConfiguration": "maps a stream to a signaling channel (WebRTC): out of scope",
}


def owner(service: str, operation: str) -> str | None:
    for names, who in OWNERS.get(service, []):
        if any(operation == n or n in operation for n in names):
            return who
    return None


def served_paths() -> set[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(GatewayConfig(data_dir=tmp))
        return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}


def rows() -> list[tuple[str, str, str]]:
    loader = Loader()
    paths = served_paths()
    out = []
    for service in SERVICES:
        model = loader.load_service_model(service, "service-2")
        for name in sorted(model["operations"]):
            op = model["operations"][name]
            if model["metadata"]["protocol"] == "json":
                done = name in HANDLERS
            else:
                uri = op["http"]["requestUri"].split("?")[0]
                done = (op["http"]["method"], uri) in paths or (op["http"]["method"], uri.rstrip("/")) in paths
            who = owner(service, name)
            if done:
                state = "done" + (f" ({who})" if who else "")
            elif who:
                state = f"theirs: {who}"
            else:
                state = "not done: " + NOTES.get(name, "no handler (see the closing note)")
            out.append((service, name, state))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missing", action="store_true", help="list only the operations that are not done")
    args = parser.parse_args(argv)
    table = rows()
    print("| service | operation | state |")
    print("|---|---|---|")
    for service, name, state in table:
        if not args.missing or not state.startswith("done"):
            print(f"| {service} | {name} | {state} |")
    done = sum(s.startswith("done") for _, _, s in table)
    print(f"\n{done} of {len(table)} operations served.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
