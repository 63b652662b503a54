"""Retry delays (full jitter) and the AIMD rate controller the forwarders pace themselves with."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from edge_agent.backoff import MIN_RATE, Backoff, RateController
from edge_agent.cli import main


def test_full_jitter_stays_within_the_growing_ceiling() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(7))
    for attempt in range(12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # really spread over the whole range (full jitter)
    assert backoff.next() <= 0.1 and backoff.next() <= 0.2 and backoff.attempt == 2
    backoff.reset()
    assert backoff.attempt == 0


def test_rate_is_cut_to_what_the_gateway_accepted_and_grows_back() -> None:
    rate = RateController()
    assert rate.rate is None and rate.wait_time(500) == 0  # unlimited until the first push-back
    rate.accepted(120)
    rate.on_throttle()
    assert rate.rate == 120  # what went through in the last second
    rate.on_throttle()
    assert rate.rate == 120  # one burst is one event: at most one cut per second
    assert rate.throttled_events == 1
    assert rate.wait_time(60) > 0.3  # the bucket starts empty after a cut
    before = rate.rate
    time.sleep(0.2)
    rate.on_success()
    assert before < rate.rate < before * 1.2  # additive-ish growth, gentle


def test_rate_never_falls_below_the_floor_and_returns_to_unlimited() -> None:
    rate = RateController(ceiling=0)
    rate.accepted(1)
    rate.on_throttle()
    assert rate.rate == MIN_RATE
    rate.rate = 1e9
    rate.on_success()
    assert rate.rate is None  # past any plausible capacity: no limit again
    capped = RateController(ceiling=50)
    assert capped.rate == 50
    capped.rate = 49.9
    time.sleep(0.05)
    capped.on_success()
    assert capped.rate == 50  # never above the configured ceiling


def test_missing_aws_profile_is_a_clean_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    config = tmp_path / "agent.toml"
    config.write_text(f'[spool]\npath = "{tmp_path / "spool.db"}"\n[gateway]\nprofile = "does-not-exist"\n[metrics]\nlisten = ""\n')
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["run", "--config", str(config)]) == 2
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert not (tmp_path / "spool.db").exists()  # nothing was started
