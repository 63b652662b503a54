"""The agent against a gateway that requires SigV4 over HTTPS: the same settings as for AWS
(access key + secret, a CA file for the certificate) — records and video go through; a wrong
secret is refused, counted, and nothing leaves the spool. The forwarders sign with the agent's own
SigV4 (``aws.agent_credentials``: configured keys, no botocore); it must equal botocore's."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import all_data, list_fragments, metric, synthetic_fragments, video_records, wait_until  # noqa: E402
from helpers import REGION, GatewayProcess, make_cert  # noqa: E402

from edge_agent import aws  # noqa: E402
from edge_agent.config import ForwarderSection, GatewaySection  # noqa: E402
from edge_agent.forwarder import RecordForwarder  # noqa: E402
from edge_agent.kinesis_client import KinesisClient  # noqa: E402
from edge_agent.media_forwarder import MediaForwarder  # noqa: E402
from edge_agent.spool import NewRecord, Spool  # noqa: E402

KEY_ID, SECRET = "AKIDEDGEAGENT", "agent-secret"


def test_signed_https_records_and_video_and_a_wrong_secret(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[tls]\ncertfile = "{cert}"\nkeyfile = "{key}"\n[auth]\ncredentials = {{ {KEY_ID} = "{SECRET}" }}\n')
    gw = GatewayProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        url = f"https://127.0.0.1:{gw.port}"
        good = GatewaySection(endpoint_url=url, region=REGION, access_key_id=KEY_ID, secret_access_key=SECRET, ca_file=str(cert),
                              connect_timeout_seconds=2, read_timeout_seconds=10)
        session = aws.make_session(good)
        kinesis = aws.make_client(session, "kinesis", url, good)
        kinesis.create_stream(StreamName="secure", ShardCount=1)
        aws.make_client(session, "kinesisvideo", url, good).create_stream(StreamName="secure-cam", DataRetentionInHours=1)
        options = ForwarderSection(retry_base_seconds=0.05, retry_max_seconds=0.5, linger_ms=5)

        # A wrong secret: refused, counted, nothing acknowledged.
        bad = GatewaySection(**{**good.__dict__, "secret_access_key": "wrong"})
        before = sum(metric("edge_agent_send_errors_total", lane="records", reason=r) for r in ("UnrecognizedClientException", "InvalidSignatureException"))
        with Spool(tmp_path / "bad.db") as spool:
            spool.append([NewRecord("telemetry", "secure", "k", b"never", "src")])
            fw = RecordForwarder(spool, KinesisClient(aws.agent_credentials(bad), bad), options, "agent-bad")
            fw.step()
            after = sum(metric("edge_agent_send_errors_total", lane="records", reason=r) for r in ("UnrecognizedClientException", "InvalidSignatureException"))
            assert after == before + 1
            assert spool.stats().records["records"] == 1

        with Spool(tmp_path / "good.db") as spool:
            spool.append([NewRecord("telemetry", "secure", f"k{i % 3}", f"r{i}".encode(), "src") for i in range(30)])
            spool.append(video_records("secure-cam", synthetic_fragments(2)))
            stop = threading.Event()
            creds = aws.agent_credentials(good)
            assert isinstance(creds, aws.StaticCredentials)
            records = RecordForwarder(spool, KinesisClient(creds, good), options, "agent-good")
            media = MediaForwarder(spool, creds, good, options, "agent-good")
            threads = [threading.Thread(target=f.run, args=(stop,), daemon=True) for f in (records, media)]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: spool.stats().records == {"records": 0, "media": 0}, 30, what="records and video over signed HTTPS")
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
        assert sorted(all_data(kinesis, "secure")) == sorted(f"r{i}".encode() for i in range(30))
        signed = lambda service, endpoint: aws.make_client(session, service, endpoint, good)  # noqa: E731
        assert len(list_fragments(url, "secure-cam", signed)) == 2
    finally:
        gw.kill()


def test_sign_equals_botocore_sigv4() -> None:
    """The agent's SigV4 headers are byte for byte botocore's: JSON bodies, a streamed body with
    a session token, default and explicit ports, repeated spaces in a header value."""
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = 1764530000.0
    cases = [
        ("http://127.0.0.1:4567/", b'{"a":1}', None, {"Content-Type": "application/x-amz-json-1.1", "X-Edge-Record-Seqs": "1,2"}),
        ("https://example.com:8443/putMedia", None, "TOKEN", {"x-amzn-stream-name": "cam  1", "X-Amzn-Fragment-Timecode-Type": "ABSOLUTE"}),
        ("https://kinesis.eu-west-1.amazonaws.com", b"", None, {"Content-Type": "x"}),
    ]
    for url, body, token, headers in cases:
        mine = aws.sign("POST", url, headers, aws.StaticCredentials("AKID", "SECRET", token), "eu-west-1", "kinesis", body, now=now)
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        if body is None:
            request.headers["X-Amz-Content-SHA256"] = aws.UNSIGNED_PAYLOAD
        with mock.patch("botocore.auth.get_current_datetime", return_value=datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)):
            SigV4Auth(Credentials("AKID", "SECRET", token).get_frozen_credentials(), "kinesis", "eu-west-1").add_auth(request)
        assert mine == dict(request.headers.items()), url


def test_configured_keys_do_not_import_botocore() -> None:
    """botocore costs a Pi ~8 MiB of RSS: the agent with keys in its config never imports it (nor
    urllib3, ~2 MiB: the agent has its own HTTP client)."""
    code = (
        "import sys; from edge_agent import aws, service; from edge_agent.config import GatewaySection;"
        "c = aws.agent_credentials(GatewaySection(access_key_id='A', secret_access_key='S'));"
        "aws.sign('POST', 'http://h/', {}, c, 'us-east-1', 'kinesis', b'');"
        "print(sorted(m for m in sys.modules if m.startswith(('botocore', 'urllib3'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"
