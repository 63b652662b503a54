"""edge-consumer's config and CLI: the example loads, every error is reported with its key, help has examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from consumer.cli import main
from consumer.config import load_config

EXAMPLE = ROOT / "configs" / "consumer.example.toml"


def test_example_config_loads_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    config = load_config(EXAMPLE)
    assert (config.consumer.stream, config.consumer.failover_seconds, config.leases.store) == ("telemetry", 10.0, "sqlite")
    assert config.polling.interval_seconds == 0.2 and config.handler.max_attempts == 3
    assert "OK" in capsys.readouterr().out


def test_every_error_named_by_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[consumer]\nstream = "no spaces allowed"\ninitial_position = "OLDEST"\nfailover_seconds = "ten"\n'
                   'processor = "x:Y"\nhandler = "a:b"\n[leases]\nstore = "redis"\n[polling]\nmax_records = 0\n[bogus]\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("consumer.stream", "consumer.initial_position", "consumer.failover_seconds", "consumer.processor",
                "leases.store", "polling.max_records", "bogus: unknown key"):
        assert key in err, err


def test_run_flags_override_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[consumer]\nstream = "s"\nhandler = "mod:fn"\n')
    config = load_config(cfg, {"processor": "mod:Proc", "worker_id": "w9"})
    assert (config.consumer.processor, config.consumer.handler, config.consumer.worker_id) == ("mod:Proc", "", "w9")
    # A processor that cannot be imported is a config error (exit 2), not a traceback.
    assert main(["run", "--config", str(cfg), "--processor", "no_such_module_xyz:P"]) == 2
    assert "cannot load 'no_such_module_xyz:P'" in caplog.text


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"], ["check-config", "--help"], ["leases", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_public_exports_are_sorted_and_importable() -> None:
    import consumer

    assert consumer.__all__ == sorted(consumer.__all__)
    assert all(hasattr(consumer, name) for name in consumer.__all__)
