import subprocess
import sys

import pytest

from gateway.config import ConfigError, config_from_dict, load_config


def test_help_has_examples() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples:" in out and "--data-dir" in out


def test_config_error_names_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"limits\.shard_write_records_per_sec: expected an integer"):
        config_from_dict({"limits": {"shard_write_records_per_sec": "many"}})
    with pytest.raises(ConfigError, match=r"^prot: unknown key"):
        config_from_dict({"prot": 1})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 70000\n")
    with pytest.raises(ConfigError, match="port"):
        load_config(bad)


def test_section_rules_report_every_broken_value() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"server": {"max_connections": 0, "max_headers": 3}, "firehose": {"gzip_level": 11}})
    assert str(info.value).splitlines() == [
        "server.max_connections: must be at least 1, got 0",
        "server.max_headers: must be at least 16, got 3",
        "firehose.gzip_level: must be 1..9, got 11",
    ]


def test_bad_config_exits_2_with_message(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[video]\nmax_fragment_bytes = 'big'\n")
    proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "video.max_fragment_bytes" in proc.stderr


def test_gateway_starts_and_logs_what_it_serves_and_where(gateway) -> None:
    line = next((line for line in gateway.log().splitlines() if " serving " in line), "")
    assert f" on {gateway.url} (data in " in line, gateway.log()
    for service in ("Kinesis Data Streams", "Kinesis Video Streams", "Data Firehose", "Glue Data Catalog", "analytics"):
        assert service in line, line
