"""The agent against a gateway that requires SigV4 over HTTPS: the same settings as for AWS
(access key + secret, a CA file for the certificate) — records and video go through; a wrong
secret is refused, counted, and nothing leaves the spool."""

from __future__ import annotations

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
            fw = RecordForwarder(spool, KinesisClient(aws.make_session(bad), bad), options, "agent-bad")
            fw.step()
            after = sum(metric("edge_agent_send_errors_total", lane="records", reason=r) for r in ("UnrecognizedClientException", "InvalidSignatureException"))
            assert after == before + 1
            assert spool.stats().records["records"] == 1

        with Spool(tmp_path / "good.db") as spool:
            spool.append([NewRecord("telemetry", "secure", f"k{i % 3}", f"r{i}".encode(), "src") for i in range(30)])
            spool.append(video_records("secure-cam", synthetic_fragments(2)))
            stop = threading.Event()
            records = RecordForwarder(spool, KinesisClient(session, good), options, "agent-good")
            media = MediaForwarder(spool, session, good, options, "agent-good")
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
