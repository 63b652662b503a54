"""The source registry the runtime loads from: exports, config shapes, the example config."""

from __future__ import annotations

import dataclasses
import threading
import tomllib
from pathlib import Path

import pytest

import edge_agent.sources as sources
from edge_agent.errors import ConfigError
from edge_agent.sources import SOURCE_TYPES, Source
from edge_agent.sources.base import Rejects
from edge_agent.metrics import REGISTRY
from edge_agent.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {
    "mqtt": {"stream": "t", "topics": ["a/#"]},
    "serial": {"stream": "t", "port": "/dev/ttyUSB0"},
    "logs": {"stream": "l", "paths": ["/var/log/*.log"]},
    "camera": {"stream": "v"},
}


def test_exports_are_sorted_and_importable() -> None:
    assert sources.__all__ == sorted(sources.__all__)
    for name in sources.__all__:
        assert getattr(sources, name) is not None
    assert set(SOURCE_TYPES) == set(MINIMAL)


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_every_source_type_has_the_contract_shape(kind: str, tmp_path: Path) -> None:
    cls = SOURCE_TYPES[kind]
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert cls.KIND == kind and cls.__doc__
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert {"name", "stream"} <= fields
    config = cls.from_dict(MINIMAL[kind], f"sources.{kind}[7]")
    assert config.name == f"{kind}-7"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]
    with pytest.raises(ConfigError, match=rf"sources\.{kind}\[0\]\.stream: required"):
        cls.from_dict({k: v for k, v in MINIMAL[kind].items() if k != "stream"}, f"sources.{kind}[0]")
    with pytest.raises(ConfigError, match=rf"sources\.{kind}\[0\]\.bogus: unknown key"):
        cls.from_dict({**MINIMAL[kind], "bogus": 1}, f"sources.{kind}[0]")
    with pytest.raises(ConfigError, match=rf"sources\.{kind}\[0\]: expected a table"):
        cls.from_dict(["not", "a", "table"], f"sources.{kind}[0]")  # type: ignore[arg-type]
    with Spool(tmp_path / "spool.db") as spool:
        source = config.build(spool, "agent-1")
        assert isinstance(source, Source) and source.name == f"{kind}-7"


def test_stopping_before_anything_arrives_returns_promptly(tmp_path: Path) -> None:
    """A source whose device, broker or files are missing still stops when asked."""
    configs = [
        SOURCE_TYPES["mqtt"].from_dict({"stream": "t", "topics": ["a"], "host": "127.0.0.1", "port": 9}, "sources.mqtt[0]"),
        SOURCE_TYPES["serial"].from_dict({"stream": "t", "port": str(tmp_path / "no-such-tty")}, "sources.serial[0]"),
        SOURCE_TYPES["logs"].from_dict({"stream": "t", "paths": [str(tmp_path / "none" / "*.log")]}, "sources.logs[0]"),
        SOURCE_TYPES["camera"].from_dict({"stream": "t", "device": str(tmp_path / "none.mp4"), "codec": "passthrough"},
                                         "sources.camera[0]"),
    ]
    with Spool(tmp_path / "spool.db") as spool:
        stop = threading.Event()
        threads = [threading.Thread(target=c.build(spool, "a").run, args=(stop,), daemon=True) for c in configs]
        for t in threads:
            t.start()
        stop.wait(1.0)
        assert all(t.is_alive() for t in threads)  # retrying, not crashed
        stop.set()
        for t in threads:
            t.join(5)
            assert not t.is_alive()


def test_example_config_sources_load() -> None:
    """The documented example uses only keys the sources accept."""
    example = ROOT / "configs" / "agent.example.toml"
    if not example.exists():
        pytest.skip("no example config yet")
    tables = tomllib.loads(example.read_text()).get("sources", {})
    assert tables
    for kind, entries in tables.items():
        for i, entry in enumerate(entries):
            SOURCE_TYPES[kind].from_dict(entry, f"sources.{kind}[{i}]")


def test_rejects_are_all_counted_but_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    rejects = Rejects("registry-test-source", interval=60)
    with caplog.at_level("WARNING"):
        for _ in range(50):
            rejects("too_long", "a line too long")
        rejects("not_text", "garbage")
    assert REGISTRY.get_sample_value("edge_agent_records_rejected_total", {"source": "registry-test-source", "reason": "too_long"}) == 50
    messages = [r.getMessage() for r in caplog.records if "registry-test-source" in r.getMessage()]
    assert len(messages) == 2 and "too_long" in messages[0] and "not_text" in messages[1]
