"""Analytics applications on a real gateway process, fed by boto3 producers.

Window results are checked against a Python computation over the same records; the crash test
SIGKILLs the gateway while windows are open and checks that every window came out exactly once.
"""

from __future__ import annotations

import calendar
import json
import math
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, config_from_dict
from firehose_support import objects, s3_config
from helpers import ROOT, GatewayProcess, wait_until

T0 = 1_700_000_000  # event times (a multiple of 10 s)

CONFIG = """
[[analytics.applications]]
name = "plant"
error_stream = "errors"
poll_seconds = 0.05
  [[analytics.applications.inputs]]
  stream = "telemetry"
  table = "readings"
  columns = ["device VARCHAR", "temp DOUBLE", "ts TIMESTAMP"]
  event_time = "ts"
  allowed_lateness_seconds = 2
  [[analytics.applications.references]]
  table = "devices"
  path = "{devices}"
  [[analytics.applications.queries]]
  name = "averages"
  output_stream = "avg-out"
  partition_key = "device"
  sql = '''SELECT window_start, window_end, device, avg(temp) AS avg_temp, count(*) AS n
           FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
           GROUP BY window_start, window_end, device'''
  [[analytics.applications.queries]]
  name = "hops"
  output_stream = "hop-out"
  sql = '''SELECT window_start, window_end, device, count(*) AS n
           FROM TABLE(HOP(TABLE readings, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))
           GROUP BY ALL'''
  [[analytics.applications.queries]]
  name = "sessions"
  output_stream = "session-out"
  sql = '''SELECT window_start, window_end, device, count(*) AS n
           FROM TABLE(SESSION(TABLE readings PARTITION BY device, DESCRIPTOR(ts), INTERVAL '3' SECONDS))
           GROUP BY ALL'''
  [[analytics.applications.queries]]
  name = "hot"
  output_stream = "hot-out"
  delivery_stream = "hot-archive"
  sql = "SELECT r.device, d.site, r.temp FROM readings r JOIN devices d USING (device) WHERE r.temp > 30"

[[analytics.applications]]
name = "lines"
error_stream = "errors"
poll_seconds = 0.05
  [[analytics.applications.inputs]]
  stream = "csv-in"
  format = "csv"
  columns = ["device VARCHAR", "value BIGINT"]
  allowed_lateness_seconds = 0.5
  [[analytics.applications.references]]
  table = "names"
  path = "{names}"
  [[analytics.applications.queries]]
  name = "labelled"
  output_stream = "csv-labels"
  sql = "SELECT c.device, n.label, c.value FROM csv_in c JOIN names n USING (device)"
  [[analytics.applications.queries]]
  name = "per_second"
  output_stream = "csv-out"
  sql = '''SELECT window_start, sum(value) AS total, count(*) AS n
           FROM TABLE(TUMBLE(TABLE csv_in, DESCRIPTOR(arrival_time), INTERVAL '1' SECOND)) GROUP BY ALL'''

[[analytics.applications]]
name = "crash"
poll_seconds = 0.05
max_batch_records = 50
  [[analytics.applications.inputs]]
  stream = "crash-in"
  columns = ["k VARCHAR", "v BIGINT", "ts TIMESTAMP"]
  event_time = "ts"
  allowed_lateness_seconds = 5
  [[analytics.applications.queries]]
  name = "totals"
  output_stream = "crash-out"
  sql = '''SELECT window_start, window_end, k, count(*) AS n, sum(v) AS total
           FROM TABLE(TUMBLE(TABLE crash_in, DESCRIPTOR(ts), INTERVAL '2' SECONDS)) GROUP BY ALL'''
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
STREAMS = ("telemetry", "errors", "avg-out", "hop-out", "session-out", "hot-out", "csv-in", "csv-out", "csv-labels", "crash-in", "crash-out")
SITES = {"d0": "north", "d1": "south", "d2": "east"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("analytics")
    (base / "devices.csv").write_text("device,site\n" + "".join(f"{d},{s}\n" for d, s in SITES.items()))
    (base / "names.json").write_text(json.dumps([{"device": "a", "label": "first"}, {"device": "b,x", "label": "second"}]))
    (base / "gateway.toml").write_text(CONFIG.format(devices=base / "devices.csv", names=base / "names.json"))
    gateway = GatewayProcess(base / "data", "--config", str(base / "gateway.toml"), "--no-limits").start()
    kinesis = gateway.client()
    for stream in STREAMS:
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    gateway.client("firehose").create_delivery_stream(
        DeliveryStreamName="hot-archive", ExtendedS3DestinationConfiguration=s3_config("archive", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 0}))
    yield gateway
    gateway.kill()


def app_summary(gw: GatewayProcess, name: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{gw.url}/analytics/applications/{name}", timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


def read_stream(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every record of a one-shard stream, oldest first."""
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out: list[dict[str, Any]] = []
    while True:
        result = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        out += result["Records"]
        if not result["Records"]:
            return out
        iterator = result["NextShardIterator"]


def rows(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    return [json.loads(r["Data"]) for r in read_stream(kinesis, stream)]


def stamp(seconds: float) -> str:
    """A UTC time as DuckDB's JSON writes a TIMESTAMP."""
    whole = math.floor(seconds)
    fraction = f"{seconds - whole:.6f}"[1:].rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + fraction


def epoch(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def put(kinesis: Any, stream: str, datas: list[bytes]) -> None:
    result = kinesis.put_records(StreamName=stream, Records=[{"Data": d, "PartitionKey": "p"} for d in datas])
    assert result["FailedRecordCount"] == 0


def test_windows_joins_late_and_malformed_records(gw: GatewayProcess) -> None:
    kinesis = gw.client()
    rng = random.Random(7)
    readings = []
    for i in range(120):
        ts = T0 + i * 0.5
        if T0 + 20 <= ts < T0 + 26:
            continue  # a 6 s silence: sessions (gap 3 s) split here
        readings.append({"device": f"d{i % 3}", "temp": round(rng.uniform(10, 40), 2), "ts": ts})
    sent = readings[:]
    for i in range(0, len(sent) - 1, 2):  # out of order by 0.5 s, within the 2 s allowed lateness
        sent[i], sent[i + 1] = sent[i + 1], sent[i]
    for i in range(0, len(sent), 40):
        put(kinesis, "telemetry", [json.dumps(r).encode() for r in sent[i : i + 40]])
    wait_until(lambda: app_summary(gw, "plant")["RecordsIn"] >= len(sent), timeout=15, what="the plant application to read every reading")
    late = [{"device": "d0", "temp": 99.0, "ts": T0 + 1}, {"device": "d1", "temp": 99.0, "ts": stamp(T0 + 2)}]
    malformed = [b"not json", json.dumps({"device": "d0", "temp": "hot", "ts": T0 + 60}).encode(), b"[1, 2]", b"\xff\xfe"]
    put(kinesis, "telemetry", [json.dumps(r).encode() for r in late] + malformed)
    put(kinesis, "telemetry", [json.dumps({"device": "flush", "temp": 0, "ts": T0 + 100}).encode()])  # moves the watermark on

    tumbling: dict[tuple[float, str], list[float]] = defaultdict(list)
    hopping: dict[tuple[float, str], int] = defaultdict(int)
    for r in readings:
        tumbling[(math.floor(r["ts"] / 10) * 10, r["device"])].append(r["temp"])
        for start in (math.floor(r["ts"] / 5) * 5 - 5, math.floor(r["ts"] / 5) * 5):
            hopping[(start, r["device"])] += 1
    sessions: dict[tuple[float, str], tuple[float, int]] = {}
    for device in SITES:
        times = sorted(r["ts"] for r in readings if r["device"] == device)
        start, count = times[0], 1
        for previous, ts in zip(times, times[1:]):
            if ts - previous >= 3:
                sessions[(start, device)] = (previous + 3, count)
                start, count = ts, 0
            count += 1
        sessions[(start, device)] = (times[-1] + 3, count)

    wait_until(lambda: app_summary(gw, "plant")["Queries"][0]["Outputs"] >= len(tumbling), timeout=15, what="every tumbling window")
    wait_until(lambda: len(rows(kinesis, "session-out")) >= len(sessions), timeout=10, what="every session window")
    averages = rows(kinesis, "avg-out")
    assert len(averages) == len(tumbling)  # each window once; the flush record's window is still open
    for row in averages:
        temps = tumbling[(epoch(row["window_start"]), row["device"])]
        assert row["n"] == len(temps)
        assert row["avg_temp"] == pytest.approx(sum(temps) / len(temps), rel=1e-12)
        assert row["window_end"] == stamp(epoch(row["window_start"]) + 10)
    assert {(r["window_start"], r["device"]) for r in averages} == {(stamp(s), d) for s, d in tumbling}

    hops = {(r["window_start"], r["window_end"], r["device"]): r["n"] for r in rows(kinesis, "hop-out")}
    assert hops == {(stamp(s), stamp(s + 10), d): n for (s, d), n in hopping.items()}
    got_sessions = {(r["window_start"], r["device"]): (r["window_end"], r["n"]) for r in rows(kinesis, "session-out")}
    assert got_sessions == {(stamp(s), d): (stamp(end), n) for (s, d), (end, n) in sessions.items()}
    assert sum(1 for (_, d) in sessions if d == "d0") == 2  # the silence split each device's session

    hot = sorted((r["device"], r["site"], r["temp"]) for r in rows(kinesis, "hot-out"))
    assert hot == sorted((r["device"], SITES[r["device"]], r["temp"]) for r in readings if r["temp"] > 30)

    def archived() -> list[tuple[str, str, float]]:  # the same rows through Firehose, one JSON object per line
        lines = b"".join(objects(gw, "archive").values()).splitlines()
        return sorted((r["device"], r["site"], r["temp"]) for r in map(json.loads, lines))

    wait_until(lambda: len(archived()) >= len(hot), timeout=10, what="the Firehose objects")
    assert archived() == hot

    summary = app_summary(gw, "plant")
    assert (summary["Malformed"], summary["Late"]) == (len(malformed), len(late))
    errors = [e for e in rows(kinesis, "errors") if e["application"] == "plant"]
    reasons = sorted(e["reason"].split(":")[0] for e in errors)
    assert reasons == sorted(["not valid JSON", "column temp", "not a JSON object", "not UTF-8 text", "late", "late"])
    assert next(e for e in errors if e["reason"].startswith("not UTF-8"))["dataBase64"] == "//4="


@pytest.fixture(scope="module")
def csv_windows(gw: GatewayProcess) -> GatewayProcess:
    """The "lines" application fed its CSV records once, its first windows closed (the dashboard
    test needs them too, whichever test runs first)."""
    kinesis = gw.client()
    put(kinesis, "csv-in", [b"a,1", b'"b,x",2', b"c,3\n", b"d,not-a-number", b"e,5,extra"])
    put(kinesis, "csv-in", [b"f,4"])

    def totals() -> tuple[int, int]:
        out = rows(kinesis, "csv-out")
        return sum(r["total"] for r in out), sum(r["n"] for r in out)

    # arrival-time windows close by themselves once the application has read to the end
    wait_until(lambda: totals() == (10, 4), timeout=10, what="the CSV windows")
    return gw


def test_csv_records_on_arrival_time(csv_windows: GatewayProcess) -> None:
    gw = csv_windows
    kinesis = gw.client()
    assert app_summary(gw, "lines")["Malformed"] == 2
    assert sorted((r["device"], r["label"], r["value"]) for r in rows(kinesis, "csv-labels")) == [("a", "first", 1), ("b,x", "second", 2)]
    errors = [e for e in rows(kinesis, "errors") if e["application"] == "lines"]
    assert sorted(e["reason"] for e in errors) == ["column value: not a BIGINT: not-a-number", "expected 2 CSV fields, got 3"]


def test_list_and_describe_over_http_and_cli(gw: GatewayProcess) -> None:
    with urllib.request.urlopen(f"{gw.url}/analytics/applications", timeout=5) as response:
        listed = json.load(response)["ApplicationSummaries"]
    assert [a["ApplicationName"] for a in listed] == ["plant", "lines", "crash"]
    assert all(a["ApplicationStatus"] == "RUNNING" for a in listed)
    out = subprocess.run([sys.executable, "-m", "gateway", "analytics", "--url", gw.url, "describe", "plant"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    detail = json.loads(out.stdout)
    assert detail["Inputs"][0]["Columns"] == ["device VARCHAR", "temp DOUBLE", "ts TIMESTAMP"]
    assert [q["Window"] for q in detail["Queries"]] == ["TUMBLE", "HOP", "SESSION", None]
    assert detail["References"][0]["Table"] == "devices"
    missing = subprocess.run([sys.executable, "-m", "gateway", "analytics", "--url", gw.url, "describe", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_dashboard_draws_new_points_in_chromium(csv_windows: GatewayProcess) -> None:
    gw = csv_windows
    from playwright.sync_api import sync_playwright

    with urllib.request.urlopen(f"{gw.url}/analytics", timeout=5) as response:
        html = response.read().decode()
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    kinesis = gw.client()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def wait_js(condition: str) -> None:
                try:
                    page.wait_for_function(condition, timeout=20_000)
                except Exception:
                    state = page.evaluate("JSON.stringify({selected: window.dashboard.selected, drawn: window.dashboard.drawn, events: window.dashboard.events,"
                                          " series: Object.keys(window.dashboard.series), log: document.getElementById('log').textContent})")
                    raise AssertionError(f"{condition} still false; dashboard {state}") from None

            page.goto(f"{gw.url}/analytics")
            wait_js("window.dashboard && window.dashboard.apps.length === 3")
            page.click("#apps button:has-text('lines')")
            wait_js("window.dashboard.selected === 'lines' && (window.dashboard.drawn.per_second || 0) >= 1")  # the earlier CSV windows
            before = page.evaluate("window.dashboard.drawn.per_second")
            pixels = page.evaluate("document.querySelector('#q-lines-per_second canvas').toDataURL()")
            put(kinesis, "csv-in", [b"g,7", b"h,8"])
            wait_js(f"window.dashboard.drawn.per_second > {before}")
            assert page.evaluate("document.querySelector('#q-lines-per_second canvas').toDataURL()") != pixels
            assert page.evaluate("window.dashboard.rows['lines/per_second'][0].total") == 15
            wait_js("window.dashboard.drawn.stats >= 2")  # records/s and lag
            assert page.inner_text("#stats").count("malformed") == 1
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"queries": [{"name": "q", "sql": "SELECT * FROM TABLE(TUMBLE(TABLE other, DESCRIPTOR(ts), INTERVAL '1' SECOND))"}]}, "not an input table"),
        ({"queries": [{"name": "q", "sql": "SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' FORTNIGHT))"}]}, "unknown interval unit"),
        ({"queries": [{"name": "q", "sql": "SELECT * FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '10' SECOND))"}]}, "whole multiple"),
        ({"inputs": [{"stream": "t", "columns": ["ts TIMESTAMP", "x MONEY"], "event_time": "ts"}]}, "inputs[0].columns[1]"),
        ({"inputs": [{"stream": "t", "columns": ["ts TIMESTAMP"], "event_time": "ts", "format": "xml"}]}, "inputs[0].format"),
        ({"colour": "red"}, "applications[0].colour: unknown key"),
        ({"inputs": [{"stream": "t", "columns": ["ts TIMESTAMP"], "event_time": "ts", "idle_timeout_seconds": -1}]}, "inputs[0].idle_timeout_seconds: must not be negative"),
        ({"inputs": [{"stream": "t", "columns": ["ts TIMESTAMP"], "idle_timeout_seconds": 5}]}, "inputs[0].idle_timeout_seconds: needs event_time"),
        ({"inputs": [{"stream": "t", "columns": ["ts TIMESTAMP"], "event_time": "ts", "idle_timeout_seconds": "soon"}]}, "inputs[0].idle_timeout_seconds"),
    ],
)
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    app = {"name": "a", "inputs": [{"stream": "t", "columns": ["ts TIMESTAMP"], "event_time": "ts"}], "queries": [{"name": "q", "sql": "SELECT * FROM t"}]}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"analytics": {"applications": [{**app, **change}]}})


def test_sigkill_mid_window_emits_every_window_exactly_once(gw: GatewayProcess) -> None:
    kinesis = gw.client()
    stop = threading.Event()
    base = T0 + 1000

    def produce() -> None:
        client = gw.client()
        for batch in range(40):  # 800 records, 0.05 s of event time apart: 40 s, 20 windows
            datas = [json.dumps({"k": f"k{i % 2}", "v": i, "ts": base + i * 0.05}).encode() for i in range(batch * 20, batch * 20 + 20)]
            while not stop.is_set():
                try:
                    put(client, "crash-in", datas)
                    break
                except Exception:  # the gateway is down: retry (a lost answer may store a batch twice)
                    time.sleep(0.1)
            time.sleep(0.03)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        wait_until(lambda: app_summary(gw, "crash")["Queries"][0]["Outputs"] >= 4, timeout=15, what="some windows before the kill")
        gw.restart()  # SIGKILL while the producer is sending and windows are open
        producer.join(timeout=30)
        assert not producer.is_alive()
    finally:
        stop.set()
    put(kinesis, "crash-in", [json.dumps({"k": "flush", "v": 0, "ts": base + 100}).encode()])
    sent = [json.loads(r["Data"]) for r in read_stream(kinesis, "crash-in")]
    expected: dict[tuple[str, str], tuple[int, int]] = {}
    for r in sent:
        if r["k"] == "flush":
            continue
        start = stamp(math.floor(r["ts"] / 2) * 2)
        n, total = expected.get((start, r["k"]), (0, 0))
        expected[(start, r["k"])] = (n + 1, total + r["v"])
    wait_until(lambda: len(read_stream(kinesis, "crash-out")) >= len(expected), timeout=20, what="every crash window")
    time.sleep(0.3)  # a duplicate would come right behind
    out = rows(kinesis, "crash-out")
    # a batch whose answer the kill lost is sent again: stored twice, both copies count (none is
    # late: the lateness covers the ~1 s of event time a batch spans)
    assert app_summary(gw, "crash")["Late"] == 0
    keys = [(r["window_start"], r["k"]) for r in out]
    assert len(keys) == len(set(keys)), "a window was emitted twice"
    assert {(r["window_start"], r["k"]): (r["n"], r["total"]) for r in out} == expected


def test_the_example_config_sections_load() -> None:
    """The commented [[analytics.*]] examples in configs/gateway.example.toml are valid as written."""
    text = (ROOT / "configs" / "gateway.example.toml").read_text()
    blocks = []
    for table in ("# [[analytics.applications]]", "# [[analytics.motion]]"):
        lines = text[text.index(table):].split("\n\n")[0].splitlines()
        blocks += [line.removeprefix("# ") for line in lines]
    block = "\n".join(blocks)
    import tomllib

    config = config_from_dict(tomllib.loads(block))
    [app] = config.analytics.applications
    assert app.queries[0].window is not None and app.queries[0].window.function == "TUMBLE"
    assert [c.name for c in app.inputs[0].schema] == ["device", "temp", "ts"]
    [motion] = config.analytics.motion
    assert motion.zones == ((0.0, 0.5, 1.0, 0.5),)


def test_checkpoint_round_trip_and_lock(tmp_path: Path) -> None:
    import pyarrow as pa

    from gateway.analytics.checkpoint import Checkpoint, CheckpointError, State, WindowState

    path = tmp_path / "analytics" / "app.sqlite3"
    first = Checkpoint(path)
    with pytest.raises(CheckpointError, match="in use"):
        Checkpoint(path)  # the lock file keeps a second runner out
    pending = pa.table({"device": ["d0", "d1"], "temp": [1.5, 2.5]})
    state = State({("readings", 3): 42}, {"readings": 1_700_000_000_000_000}, {"q": WindowState("SELECT 1", 99, pending)}, {"records_in": 7})
    first.save(state, ["q"], [("out", "k", b"one"), ("out", "k", b"two")])
    records = first.outbox()
    first.delivered(records[0][0])
    producer = first.producer
    first.close()

    again = Checkpoint(path)
    loaded = again.load()
    assert loaded.positions == {("readings", 3): 42} and loaded.counters == {"records_in": 7}
    assert loaded.windows["q"].emitted_until_us == 99 and loaded.windows["q"].pending == pending
    assert [r[3] for r in again.outbox()] == [b"two"]  # delivered records are gone, the rest kept
    assert again.producer == producer  # output numbering continues under the same producer id
    again.close()


def test_signed_gateways_serve_no_stream_data_unsigned(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[auth.credentials]\nAKIDEXAMPLE = "secret"\n' + CONFIG.split("[[analytics.applications]]\nname = \"lines\"")[0].format(devices=tmp_path / "d.csv"))
    (tmp_path / "d.csv").write_text("device,site\n")
    gateway = GatewayProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        for path in ("/analytics/applications", "/analytics/applications/plant", "/analytics/events", "/analytics/motion"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(gateway.url + path, timeout=5)
            assert info.value.code == 403 and json.load(info.value)["__type"] == "AccessDeniedException"
        with urllib.request.urlopen(gateway.url + "/analytics", timeout=5) as response:  # the page itself is public, like the player
            assert response.status == 200
    finally:
        gateway.kill()
