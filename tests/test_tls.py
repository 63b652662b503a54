"""HTTPS from ``[tls] certfile/keyfile``: boto3 verifies a self-signed certificate made in the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError

from helpers import REGION, GatewayProcess, make_cert


def https_client(service: str, url: str, verify: str | bool, key: str = "AKIDEXAMPLE", secret: str = "secret") -> object:
    return boto3.client(
        service, endpoint_url=url, region_name=REGION, verify=verify, aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def test_https_with_sigv4(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[tls]\ncertfile = "{cert}"\nkeyfile = "{key}"\n[auth]\ncredentials = {{ AKIDEXAMPLE = "secret" }}\n')
    gw = GatewayProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        url = f"https://127.0.0.1:{gw.port}"
        kinesis = https_client("kinesis", url, str(cert))
        kinesis.create_stream(StreamName="tls", ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName="tls", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
        kinesis.put_record(StreamName="tls", Data=b"over tls", PartitionKey="k")
        assert "tls" in kinesis.list_streams()["StreamNames"]
        https_client("kinesisvideo", url, str(cert)).list_streams()
        # signatures are still checked over TLS
        with pytest.raises(ClientError, match="InvalidSignatureException"):
            https_client("kinesis", url, str(cert), secret="wrong").list_streams()
        # a client that does not trust the certificate refuses to talk
        with pytest.raises(SSLError):
            https_client("kinesis", url, True).list_streams()
        # plain HTTP to the TLS port gets no API answer
        with pytest.raises(urllib3.exceptions.HTTPError):
            urllib3.PoolManager(retries=False, timeout=5).request("POST", f"http://127.0.0.1:{gw.port}/", body=b"{}")
        assert f" APIs on https://127.0.0.1:{gw.port} (data in " in gw.log()  # the start line gives the https URL
        # the unmodified AWS CLI: SigV4 from its usual environment variables, our CA via --ca-bundle
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": REGION,
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", url, "--ca-bundle", str(cert), "--output", "json"]
        out = subprocess.run([*aws, "kinesis", "list-streams"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "tls" in json.loads(out.stdout)["StreamNames"]
        out = subprocess.run([*aws, "kinesis", "list-streams"], env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"}, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "InvalidSignatureException" in out.stderr
    finally:
        gw.kill()


def test_unreadable_certificate_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main  # in-process: the error comes before anything is served

    config = tmp_path / "gateway.toml"
    config.write_text(f'[tls]\ncertfile = "{tmp_path / "nope.pem"}"\nkeyfile = "{tmp_path / "nope.key"}"\n')
    assert main(["--config", str(config)]) == 2
    assert "tls: cannot load certfile" in capsys.readouterr().err
