from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import GatewayProcess, MosquittoProcess  # noqa: E402


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A running gateway with default limits, its own data dir and port."""
    gw = GatewayProcess(tmp_path / "gateway-data").start()
    yield gw
    gw.kill()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator:
    """Start gateways with extra flags: ``gateway_factory("--no-limits")``."""
    started: list[GatewayProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> GatewayProcess:
        gw = GatewayProcess(data_dir or tmp_path / f"gateway-data-{len(started)}", *args).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.kill()


@pytest.fixture(scope="module")
def raw(gw: GatewayProcess) -> Iterator[Any]:
    """A raw HTTP/1.1 client (``fuzz_support.RawClient``) on the module's ``gw`` gateway."""
    from fuzz_support import RawClient

    client = RawClient(gw.port)
    yield client
    client.close()


@pytest.fixture
def run_source() -> Iterator[Callable[[Any, Any], threading.Event]]:
    """``run_source(config, spool)``: a source (built from its config) runs on a thread until the
    returned event is set or the test ends; then it is stopped, joined and its spool closed."""
    started: list[tuple[threading.Thread, threading.Event, Any]] = []

    def start(config: Any, spool: Any) -> threading.Event:
        stop = threading.Event()
        thread = threading.Thread(target=config.build(spool, "agent-test").run, args=(stop,), daemon=True)
        thread.start()
        started.append((thread, stop, spool))
        return stop

    yield start
    for thread, stop, spool in started:
        stop.set()
        thread.join(20)
        assert not thread.is_alive()
        spool.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright, one per module."""
    from playwright.sync_api import sync_playwright
    from test_player_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        pytest.skip("mosquitto is not installed")
    broker = MosquittoProcess(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: whatever it needs must be installed."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} skipped test(s) count as failures", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
