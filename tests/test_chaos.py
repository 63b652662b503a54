"""Chaos: the agent and the gateway SIGKILLed at random moments, many times, and a proxy that breaks
connections, all during mixed MQTT, serial, log and camera ingest. Afterwards the gateway must hold
every record exactly once, in order per source, and every stored video fragment once and whole.

Seeds are fixed so a failing run replays; figures are printed (pytest -s shows them).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from chaos_support import ChaosRig  # noqa: E402
from faultproxy import FaultMix, FaultProxy  # noqa: E402
from helpers import GatewayProcess, free_port  # noqa: E402

AGENT_KILLS = 8
GATEWAY_KILLS = 6


def test_agent_sigkilled_many_times(gateway, mosquitto, tmp_path: Path) -> None:
    rig = ChaosRig(tmp_path, gateway, mosquitto.port)
    rng = random.Random(7)
    try:
        rig.start_agent()
        rig.start_producing()
        for _ in range(AGENT_KILLS):
            time.sleep(rng.uniform(0.3, 2.0))
            rig.kill_agent()
            time.sleep(rng.uniform(0.0, 0.5))
            rig.start_agent()
        time.sleep(1.0)
        rig.stop_producing()
        figures = rig.check_exactly_once()
        print(f"agent kills survived: {rig.agent_kills}; records checked: {figures}")
    finally:
        rig.close()


def test_gateway_sigkilled_many_times(tmp_path: Path, mosquitto) -> None:
    gw = GatewayProcess(tmp_path / "gateway-data").start()
    rig = ChaosRig(tmp_path, gw, mosquitto.port)
    rng = random.Random(11)
    try:
        rig.start_agent()
        rig.start_producing()
        for _ in range(GATEWAY_KILLS):
            time.sleep(rng.uniform(0.5, 2.0))
            gw.kill()
            time.sleep(rng.uniform(0.1, 1.0))
            gw.start()
        time.sleep(1.0)
        rig.stop_producing()
        figures = rig.check_exactly_once()
        assert rig.agent is not None and rig.agent.poll() is None, "the agent recovers by itself"
        # no partial fragment is ever served: every listed fragment comes back whole
        media = gw.client("kinesis-video-archived-media")
        listed = media.list_fragments(StreamName="cam-e2e", MaxResults=1000)["Fragments"]
        for fragment in listed:
            body = media.get_media_for_fragment_list(StreamName="cam-e2e", Fragments=[fragment["FragmentNumber"]])["Payload"].read()
            assert len(body) >= fragment["FragmentSizeInBytes"]
        print(f"gateway kills survived: {GATEWAY_KILLS}; records checked: {figures}")
    finally:
        rig.close()
        gw.kill()


def test_faulty_network_between_agent_and_gateway(tmp_path: Path, mosquitto) -> None:
    config = tmp_path / "gateway.toml"
    gw_dir = tmp_path / "gateway-data"
    # The gateway must hand out the proxy's URL (GetDataEndpoint) so video also crosses the proxy.
    proxy_port = free_port()
    gw = GatewayProcess(gw_dir)
    config.write_text(f'public_url = "http://127.0.0.1:{proxy_port}"\n')
    gw.extra_args = ["--config", str(config)]
    gw.start()
    proxy = FaultProxy(gw.port, FaultMix(pass_=0.4, stall_seconds=2.0, mid_fault_rate=0.1), seed=3)
    proxy.start_on(proxy_port)
    rig = ChaosRig(tmp_path, gw, mosquitto.port, agent_url=proxy.url)
    try:
        rig.start_agent()
        rig.start_producing()
        # Run for 20 s, and on until at least 12 faults hit the agent (a stalled or slowed
        # connection holds a forwarder for seconds, so how many land in 20 s varies).
        start = time.monotonic()
        while time.monotonic() - start < 20 or (sum(proxy.counts.values()) - proxy.counts["pass"] < 12 and time.monotonic() - start < 60):
            time.sleep(0.5)
            rig.sample_rss()
        rig.stop_producing()
        proxy.enabled = False  # let the tail drain
        figures = rig.check_exactly_once()
        faults = {k: v for k, v in proxy.counts.items() if k != "pass"}
        assert sum(faults.values()) >= 12, proxy.counts
        warm = rig.rss_samples[len(rig.rss_samples) // 3]
        assert max(rig.rss_samples) < warm + 40_000, f"agent memory grew: {rig.rss_samples}"
        print(f"proxy faults injected: {dict(proxy.counts)}; agent RSS kB {min(rig.rss_samples)}..{max(rig.rss_samples)}; records checked: {figures}")
    finally:
        rig.close()
        proxy.stop()
        gw.kill()
