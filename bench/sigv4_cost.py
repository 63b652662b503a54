"""What SigV4 verification costs the gateway: signed PutRecords throughput with verification on vs off.

Two real gateway processes (``--no-limits``), one with credentials, one without, receive the
*same* pre-signed PutRecords requests (botocore-signed ahead of time, so the client only sends
bytes) from a concurrent aiohttp client. Rounds alternate between the two gateways to even out
noise from other work on the machine. Target: verification costs < 15 % of throughput.

Throughput on a shared machine swings with everyone else's load, so the gateway's own CPU time
per request (utime + stime from /proc) is measured too: it is what verification actually adds,
and it hardly moves with load.

A micro-benchmark of the verification steps (parse, clock, body hash, botocore canonical request,
cached-key HMAC) is printed too, per request.

    .venv/bin/python bench/sigv4_cost.py                 # 3 rounds x 4 s per gateway
    .venv/bin/python bench/sigv4_cost.py --seconds 8 --rounds 4 --records 500 --size 200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import GatewayProcess, aws_client  # noqa: E402

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
STREAM = "bench-sigv4"


def put_records_body(records: int, size: int, batch: int) -> bytes:
    data = base64.b64encode(os.urandom(size)).decode()
    return json.dumps({"StreamName": STREAM, "Records": [{"Data": data, "PartitionKey": f"k{batch}-{i}"} for i in range(records)]}).encode()


def presign(url: str, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.PutRecords"}
    request = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(KEY, SECRET), "kinesis", "us-east-1").add_auth(request)
    return dict(request.headers.items())


async def blast(url: str, requests: list[tuple[dict[str, str], bytes]], seconds: float, concurrency: int) -> tuple[int, int]:
    """Send the prepared requests round-robin for ``seconds``; returns (ok requests, failed requests)."""
    ok = failed = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal ok, failed
            i = offset
            while time.monotonic() < deadline:
                headers, body = requests[i % len(requests)]
                i += concurrency
                async with session.post(url + "/", data=body, headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status == 200 and json.loads(payload).get("FailedRecordCount") == 0:
                        ok += 1
                    else:
                        failed += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return ok, failed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def micro(body: bytes, iterations: int = 2000) -> dict[str, float]:
    """Microseconds per request for each verification step, in this process."""
    from aiohttp.test_utils import make_mocked_request

    from gateway import auth, sigv4

    url = "http://127.0.0.1:4567"
    headers = presign(url, body)
    headers["Host"] = "127.0.0.1:4567"
    request = make_mocked_request("POST", "/", headers=headers)
    steps: dict[str, float] = {}

    def timed(name: str, fn) -> object:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for _ in range(iterations):
            result = fn()
        steps[name] = (time.perf_counter() - start) / iterations * 1e6
        return result

    parsed = timed("parse Authorization", lambda: auth.parse_authorization(headers["Authorization"], "kinesis"))
    amz_date, _ = timed("parse date", lambda: auth.request_time(request, "kinesis"))  # type: ignore[misc]
    digest = timed("sha256 body", lambda: sigv4._sha256_holding_gil(body))
    scope = sigv4.Scope(KEY, SECRET, amz_date, "us-east-1", "kinesis")  # type: ignore[arg-type]
    signed = parsed.signed_headers  # type: ignore[attr-defined]
    fast = timed("fast canonical request", lambda: sigv4.fast_canonical_request("POST", "/", request.headers, signed, digest))  # type: ignore[arg-type]
    reference = sigv4.botocore_canonical_request("POST", "/", request.headers, signed, digest, scope)  # type: ignore[arg-type]
    timed("(botocore canonical request)", lambda: sigv4.botocore_canonical_request("POST", "/", request.headers, signed, digest, scope))  # type: ignore[arg-type]
    assert fast == reference, "fast and botocore canonical requests differ"
    signature = timed("string to sign + HMAC", lambda: sigv4._sign(scope, fast))  # type: ignore[arg-type]
    assert signature == parsed.signature, "micro-benchmark request did not verify"  # type: ignore[attr-defined]
    steps["sum of the steps"] = sum(v for k, v in steps.items() if not k.startswith("("))

    # the whole of SigV4Verifier.verify, as the middleware runs it (body already read and cached)
    from gateway.config import AuthConfig

    verifier = auth.SigV4Verifier(AuthConfig(credentials={KEY: SECRET}))
    request._read_bytes = body  # what the limits middleware leaves behind  # type: ignore[attr-defined]

    async def verify_many() -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            await verifier.verify(request)
        return (time.perf_counter() - start) / iterations * 1e6

    steps["SigV4Verifier.verify"] = asyncio.run(verify_many())
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one round (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per gateway (default 3)")
    parser.add_argument("--records", type=int, default=100, help="records per PutRecords (default 100)")
    parser.add_argument("--size", type=int, default=100, help="bytes per record (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sigv4-bench-") as tmp:
        config = Path(tmp) / "auth.toml"
        config.write_text(f'[auth]\ncredentials = {{ {KEY} = "{SECRET}" }}\n')
        gateways = {
            "verify on": GatewayProcess(Path(tmp) / "on" / "data", "--no-limits", "--config", str(config)).start(),
            "verify off": GatewayProcess(Path(tmp) / "off" / "data", "--no-limits").start(),
        }
        try:
            bodies = [put_records_body(args.records, args.size, n) for n in range(64)]
            prepared = {}
            for name, gw in gateways.items():
                kinesis = aws_client("kinesis", gw.url)
                kinesis.create_stream(StreamName=STREAM, ShardCount=4)
                kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
                prepared[name] = [(presign(gw.url, body), body) for body in bodies]
            totals = {name: [0, 0, 0.0, 0.0] for name in gateways}
            for round_no in range(args.rounds):
                for name, gw in gateways.items():
                    start, cpu_start = time.monotonic(), cpu_seconds(gw.proc.pid)  # type: ignore[union-attr]
                    ok, failed = asyncio.run(blast(gw.url, prepared[name], args.seconds, args.concurrency))
                    elapsed, cpu = time.monotonic() - start, cpu_seconds(gw.proc.pid) - cpu_start  # type: ignore[union-attr]
                    totals[name][0] += ok
                    totals[name][1] += failed
                    totals[name][2] += elapsed
                    totals[name][3] += cpu
                    print(f"round {round_no + 1} {name:10s}: {ok / elapsed:8.1f} PutRecords/s  ({ok * args.records / elapsed:9.0f} records/s, "
                          f"{cpu / max(ok, 1) * 1e6:7.0f} us gateway CPU per request, {failed} failed)")
        finally:
            for gw in gateways.values():
                gw.kill()

    rate = {name: ok / elapsed for name, (ok, _failed, elapsed, _cpu) in totals.items()}
    cpu_per = {name: cpu / max(ok, 1) for name, (ok, _failed, _elapsed, cpu) in totals.items()}
    cost = 1 - rate["verify on"] / rate["verify off"]
    cpu_cost = cpu_per["verify on"] / cpu_per["verify off"] - 1
    load = os.getloadavg()
    print()
    print(f"PutRecords of {args.records} x {args.size} B, {args.concurrency} in flight, {args.rounds} x {args.seconds:g} s per gateway")
    for name in gateways:
        print(f"  {name:10s}: {rate[name]:8.1f} PutRecords/s  {rate[name] * args.records:9.0f} records/s  "
              f"{cpu_per[name] * 1e6:6.0f} us CPU/request  failed={totals[name][1]}")
    print(f"  verification cost: {cost * 100:.1f} % of throughput, {cpu_cost * 100:.1f} % more gateway CPU per request (target < 15 %)")
    print(f"  load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    steps = micro(bodies[0])
    print(f"per-request verification steps (in-process, body {len(bodies[0])} B):")
    for step, micros in steps.items():
        print(f"  {step:26s} {micros:8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
