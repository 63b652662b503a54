"""Retry delays (full jitter) and the AIMD rate controller the forwarders pace themselves with."""

from __future__ import annotations

import random
import signal
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


class FakeClock:
    """Monotonic seconds the test moves by hand (the controller's only notion of time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_cut_to_what_the_gateway_accepted_and_grows_back() -> None:
    clock = FakeClock()
    rate = RateController(clock=clock)
    assert rate.rate is None and rate.wait_time(500) == 0  # unlimited until the first push-back
    rate.accepted(120)
    rate.on_throttle()
    assert rate.rate == 120  # what went through in the last second
    assert rate.wait_time(60) == 0.5  # the bucket starts empty after a cut...
    clock.now += 0.5
    assert rate.wait_time(60) == 0  # ...and refills at the new rate
    rate.on_throttle()
    assert rate.rate == 120 and rate.throttled_events == 1  # one burst is one event: one cut per second
    clock.now += 1.0
    rate.on_success()
    assert 120 < rate.rate <= 120 * 1.15  # near the limit: gentle growth
    clock.now += 1.0
    rate.accepted(130)
    before = rate.rate
    rate.on_throttle()  # pushed back again (the gateway took 130/s): the lower of 70 % and what got through
    assert rate.rate == min(before * 0.7, 130)
    assert rate.throttled_events == 2


def test_rate_recovers_fully_once_the_gateway_stops_pushing_back() -> None:
    clock = FakeClock()
    rate = RateController(clock=clock)
    rate.accepted(50)
    rate.on_throttle()
    assert rate.rate == 50
    seconds = 0
    while rate.rate is not None and seconds < 60:
        clock.now += 1.0
        seconds += 1
        rate.on_success()
    assert rate.rate is None  # unlimited again
    assert seconds < 30  # calm for 5 s, then doubling each second: about half a minute at most


def test_rate_never_falls_below_the_floor_and_respects_the_ceiling() -> None:
    clock = FakeClock()
    rate = RateController(clock=clock)
    rate.accepted(1)
    rate.on_throttle()
    assert rate.rate == MIN_RATE
    capped = RateController(ceiling=50, clock=clock)
    assert capped.rate == 50
    capped.rate = 49.9
    clock.now += 10
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
