"""Agent config: the example loads and documents every option; errors name their keys; the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import SECTIONS, AgentConfig, check_config, config_from_dict, load_config
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "agent.example.toml"


def test_example_loads_and_documents_every_option() -> None:
    config = load_config(EXAMPLE)
    assert isinstance(config, AgentConfig)
    assert check_config(EXAMPLE) == []
    text = EXAMPLE.read_text()
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f"{section}.{f.name} is not documented in the example"
    # every source type the agent knows is shown, with every one of its options
    from edge_agent.sources import SOURCE_TYPES

    assert {type(s) for s in config.sources} == set(SOURCE_TYPES.values())
    for kind, cls in SOURCE_TYPES.items():
        block = text.split(f"[[sources.{kind}]]", 1)[1].split("[[sources.", 1)[0]
        for f in dataclasses.fields(cls):
            assert f"{f.name} = " in block, f"sources.{kind}.{f.name} is not documented in the example"


def test_example_defaults_match_the_code() -> None:
    """Values shown in the example's agent sections are the defaults (except the sources)."""
    values = config_from_dict({})
    example = load_config(EXAMPLE)
    for section in SECTIONS:
        assert getattr(example, section) == getattr(values, section), section


def test_every_error_is_reported_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[agent]\nidd = 1\nlog_level = "LOUD"\n'
        '[spool]\nmax_bytes = "big"\ndrop_order = ["video"]\n'
        '[gateway]\nendpoint_url = "ftp://x"\naccess_key_id = "AKIA"\n'
        '[forwarder]\nbatch_max_records = 501\n'
        '[metrics]\nlisten = "nowhere"\n'
        '[[sources.mqtt]]\nqos = 7\n'
        '[[sources.nosuch]]\n'
        '[extra]\n'
    )
    errors = check_config(bad)
    joined = "\n".join(errors)
    for key in ["agent.idd", "agent.log_level", "spool.max_bytes", "spool.drop_order", "gateway.endpoint_url",
                "gateway.secret_access_key", "forwarder.batch_max_records", "metrics.listen",
                "sources.mqtt[0].qos", "sources.mqtt[0].stream", "sources.nosuch", "extra"]:
        assert any(e.startswith(key) for e in errors), f"{key} missing from:\n{joined}"
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).count("\n") == len(errors) - 1


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    assert "cannot read" in check_config(tmp_path / "missing.toml")[0]
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\nid = ")
    assert "not valid TOML" in check_config(broken)[0]


def test_invalid_stream_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sources.mqtt\[1\].stream: 'bad stream!' is not a valid stream name"):
        config_from_dict({"sources": {"mqtt": [{"stream": "ok", "topics": ["a"]}, {"stream": "bad stream!", "topics": ["b"]}]}})


def test_duplicate_source_names() -> None:
    source = {"stream": "t", "topics": ["a/#"], "name": "same"}
    with pytest.raises(ConfigError, match="'same' is used by more than one source"):
        config_from_dict({"sources": {"mqtt": [source, source]}})


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[spool]\nsync = "sometimes"\n[forwarder]\nlinger_ms = -1\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spool.sync" in err and "forwarder" in err and "2 error(s)" in err


def test_every_command_has_help_with_examples() -> None:
    for command in ([], ["run"], ["check-config"], ["status"], ["demo"]):
        out = subprocess.run([sys.executable, "-m", "edge_agent", *command, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "examples:" in out.stdout, command


def test_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nnope = 1\n")
    out = subprocess.run([sys.executable, "-m", "edge_agent", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "agent.nope" in out.stderr
