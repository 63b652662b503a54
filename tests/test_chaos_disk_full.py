"""The gateway's data dir on a full disk: clear errors to producers, nothing acknowledged lost,
no corruption, and recovery by itself once space returns.

The data dir is a real 12 MiB tmpfs mount (the tests run as root in CI); a filler file eats the
space so the next writes hit ENOSPC for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import list_fragments, synthetic_fragments  # noqa: E402
from helpers import GatewayProcess  # noqa: E402


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the disk with a filler file, leaving about ``leave_bytes`` free."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
        f.flush()
        os.fsync(f.fileno())
    return filler


def put_until_refused(kinesis, stream: str, limit: int = 400) -> tuple[list[bytes], dict]:
    """PutRecords of 500 × 1 KiB until the gateway refuses; returns what it acknowledged and its error."""
    acked: list[bytes] = []
    for batch in range(limit):
        data = [f"{batch}-{i}-".encode().ljust(1024, b"x") for i in range(500)]
        try:
            out = kinesis.put_records(StreamName=stream, Records=[{"Data": d, "PartitionKey": str(i)} for i, d in enumerate(data)])
        except kinesis.exceptions.ClientError as exc:  # type: ignore[attr-defined]
            return acked, {"code": exc.response["Error"]["Code"], "message": exc.response["Error"]["Message"],
                           "status": exc.response["ResponseMetadata"]["HTTPStatusCode"]}
        for d, r in zip(data, out["Records"]):
            if "SequenceNumber" in r:
                acked.append(d)
        if out["FailedRecordCount"]:
            failed = [r for r in out["Records"] if "ErrorCode" in r]
            return acked, {"code": failed[0]["ErrorCode"], "message": failed[0]["ErrorMessage"], "status": 200}
    raise AssertionError("the disk never filled up")


def read_all(kinesis, stream: str) -> list[bytes]:
    out: list[bytes] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10000)
            out.extend(r["Data"] for r in resp["Records"])
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    return out


def test_records_on_a_full_disk(small_disk: Path) -> None:
    gw = GatewayProcess(small_disk / "data", "--no-limits").start()
    try:
        kinesis = gw.client("kinesis")
        kinesis.create_stream(StreamName="full", ShardCount=1)
        filler = fill(small_disk, leave_bytes=2 * 1024 * 1024)
        acked, error = put_until_refused(kinesis, "full")
        assert acked, "some records fit before the disk filled"
        assert error["status"] in (200, 500, 503) and error["code"], error
        assert "disk" in error["message"].lower() or "space" in error["message"].lower(), error
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway must not die on ENOSPC"
        # Space returns: the same gateway takes writes again, and everything it acknowledged is there.
        filler.unlink()
        time.sleep(0.2)
        more = [b"after-%d" % i for i in range(100)]
        out = kinesis.put_records(StreamName="full", Records=[{"Data": d, "PartitionKey": "k"} for d in more])
        assert out["FailedRecordCount"] == 0
        stored = read_all(kinesis, "full")
        assert stored == acked + more
        # and after a restart (no corruption on disk)
        gw.restart()
        assert read_all(gw.client("kinesis"), "full") == acked + more
    finally:
        gw.kill()


def put_media(url: str, stream: str, body: bytes) -> list[dict]:
    req = urllib.request.Request(f"{url}/putMedia", data=body, method="POST", headers={
        "x-amzn-stream-name": stream, "x-amzn-fragment-timecode-type": "ABSOLUTE",
        "x-amzn-producer-start-timestamp": f"{time.time():.3f}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]


def test_video_on_a_full_disk(small_disk: Path) -> None:
    gw = GatewayProcess(small_disk / "data").start()
    try:
        gw.client("kinesisvideo").create_stream(StreamName="cam", DataRetentionInHours=1)
        fragments = synthetic_fragments(6, width=320, height=240)
        acks = put_media(gw.url, "cam", b"".join(f.data for f in fragments[:2]))
        assert [a["EventType"] for a in acks].count("PERSISTED") == 2
        filler = fill(small_disk, leave_bytes=16 * 1024)
        acks = put_media(gw.url, "cam", b"".join(f.data for f in fragments[2:4]))
        errors = [a for a in acks if a["EventType"] == "ERROR"]
        assert errors and all(a["ErrorId"] in (5000, 5001) for a in errors), acks
        assert gw.proc is not None and gw.proc.poll() is None
        listed = list_fragments(gw.url, "cam")
        assert len(listed) == 2 + sum(a["EventType"] == "PERSISTED" for a in acks)  # nothing partial listed
        filler.unlink()
        acks = put_media(gw.url, "cam", b"".join(f.data for f in fragments[4:]))
        assert [a["EventType"] for a in acks].count("PERSISTED") == 2
        gw.restart()
        listed = list_fragments(gw.url, "cam")
        media = gw.client("kinesis-video-archived-media")
        body = media.get_media_for_fragment_list(StreamName="cam", Fragments=[f["FragmentNumber"] for f in listed])["Payload"].read()
        assert len(body) >= sum(f["FragmentSizeInBytes"] for f in listed)
    finally:
        gw.kill()
