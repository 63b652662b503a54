"""Speed of the video library and of playback through a real gateway. Prints figures, asserts nothing.

Library (in this process): encode (FragmentWriter, libx264 ultrafast) frames/s, MKV stream parsing
MB/s, fMP4 segments remuxed per second, MP4 clip assembly. Gateway (a real process, real HTTP):
fragments go in by PutMedia, then GetClip, GetImages and HLS media segments are timed.

    .venv/bin/python bench/kvs_playback.py            # about 30 s on a quiet 2-core machine
    .venv/bin/python bench/kvs_playback.py --width 1280 --height 720 --fragments 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import GatewayProcess  # noqa: E402
from video_support import PutMediaClient, create_stream  # noqa: E402

from kvs import Fragment, FragmentWriter, MkvStreamParser, remux  # noqa: E402
from kvs.reader import read_fragment  # noqa: E402


def synthetic_frames(n: int, width: int, height: int) -> list[np.ndarray]:
    """A moving gradient with noise: cheap to make, not trivially compressible."""
    rng = np.random.default_rng(1)
    x = np.arange(width, dtype=np.uint16)[None, :, None]
    y = np.arange(height, dtype=np.uint16)[:, None, None]
    base = [((x + y + i * 4 + np.array([0, 60, 120], dtype=np.uint16)) % 256).astype(np.uint8) for i in range(8)]
    noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)
    return [base[i % 8] + noise for i in range(n)]


def bench_encode(args: argparse.Namespace) -> list[Fragment]:
    frames = synthetic_frames(args.fps * 2, args.width, args.height)
    writer = FragmentWriter(args.width, args.height, args.fps, fragment_seconds=args.fragment_seconds)
    start_ms = int(time.time() * 1000) - 3_600_000
    frame_ms = 1000 // args.fps
    total = int(args.fragments * args.fragment_seconds * args.fps)
    out: list[Fragment] = []
    t = time.perf_counter()
    for i in range(total):
        out += writer.add_frame(frames[i % len(frames)], start_ms + i * frame_ms)
    out += writer.flush()
    elapsed = time.perf_counter() - t
    size = sum(len(f.data) for f in out)
    print(f"encode   {writer.encoder_name} {args.width}x{args.height}: {total / elapsed:7.1f} frames/s "
          f"({total / elapsed / args.fps:.1f}x real time at {args.fps} fps), {len(out)} fragments, "
          f"{size * 8 / (total / args.fps) / 1e6:.2f} Mbit/s")
    return out


def bench_library(fragments: list[Fragment]) -> None:
    body = b"".join(f.data for f in fragments)
    rounds = max(1, (20 * 1024 * 1024) // len(body))
    t = time.perf_counter()
    for _ in range(rounds):
        parser = MkvStreamParser()
        for i in range(0, len(body), 65536):
            parser.feed(body[i : i + 65536])
    elapsed = time.perf_counter() - t
    print(f"parse    MkvStreamParser 64 KiB chunks: {rounds * len(body) / elapsed / 1e6:7.1f} MB/s")
    t = time.perf_counter()
    contents = [read_fragment(f.data) for f in fragments]
    segments = [remux.media_segment(c, i, 0) for i, c in enumerate(contents)]
    elapsed = time.perf_counter() - t
    print(f"remux    read + fMP4 media segment: {len(segments) / elapsed:7.1f} fragments/s "
          f"({elapsed / len(segments) * 1000:.2f} ms each)")
    t = time.perf_counter()
    clip = remux.mp4_clip(contents)
    elapsed = time.perf_counter() - t
    print(f"clip     MP4 of {len(contents)} fragments ({len(clip) / 1e6:.1f} MB): {elapsed * 1000:7.1f} ms")


def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{name:<44} p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})")


def bench_gateway(fragments: list[Fragment], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gw = GatewayProcess(Path(tmp) / "data").start()
        try:
            create_stream(gw, "bench")
            client = PutMediaClient(gw.url, "bench")
            t = time.perf_counter()
            client.send_all(f.data for f in fragments)
            acks = client.finish(timeout=120)
            elapsed = time.perf_counter() - t
            persisted = sum(1 for a in acks if a["EventType"] == "PERSISTED")
            print(f"putmedia {persisted} fragments as fast as possible: {elapsed * 1000:7.1f} ms")
            archived = gw.client("kinesis-video-archived-media")
            start = fragments[0].start_ms / 1000
            end = (fragments[-1].start_ms + fragments[-1].duration_ms) / 1000
            clip_range = {"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                          "TimestampRange": {"StartTimestamp": start, "EndTimestamp": end}}
            summary(f"GetClip {len(fragments)} fragments ({end - start:.0f} s)",
                    timed(lambda: archived.get_clip(StreamName="bench", ClipFragmentSelector=clip_range)["Payload"].read(), 5))
            summary("GetImages 10 JPEG, 320 px wide", timed(lambda: archived.get_images(
                StreamName="bench", ImageSelectorType="PRODUCER_TIMESTAMP", StartTimestamp=start,
                EndTimestamp=start + 10 * args.fragment_seconds, SamplingInterval=int(args.fragment_seconds * 1000),
                Format="JPEG", WidthPixels=320, MaxResults=10), 3))
            url = archived.get_hls_streaming_session_url(StreamName="bench", PlaybackMode="ON_DEMAND", HLSFragmentSelector={
                "FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": start, "EndTimestamp": end}})["HLSStreamingSessionURL"]
            media_url = url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist")
            playlist = urllib.request.urlopen(media_url, timeout=30).read().decode()
            base = media_url.rsplit("/", 1)[0] + "/"
            uris = [line for line in playlist.splitlines() if line and not line.startswith("#")]
            summary("HLS media playlist", timed(lambda: urllib.request.urlopen(media_url, timeout=30).read(), 10))
            seg_ms = [timed(lambda u=u: urllib.request.urlopen(base + u, timeout=30).read(), 1)[0] for u in uris]
            summary("HLS fMP4 media segment (one fragment)", seg_ms)
            bench_viewers(base, uris, args.viewers, args.fragment_seconds)
        finally:
            gw.kill()


def bench_viewers(base: str, uris: list[str], viewers: int, fragment_seconds: float) -> None:
    """``viewers`` clients each fetching every segment as fast as they can: the gateway's segment rate."""
    latencies: list[float] = []
    lock = threading.Lock()

    def viewer() -> None:
        mine = [timed(lambda u=u: urllib.request.urlopen(base + u, timeout=60).read(), 1)[0] for u in uris]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=viewer) for _ in range(viewers)]
    t = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t
    rate = len(latencies) / elapsed
    summary(f"HLS segments, {viewers} concurrent viewers", latencies)
    print(f"         {rate:.0f} segments/s served = {rate * fragment_seconds:.0f} live viewers' worth "
          f"({fragment_seconds:g} s fragments)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--fragment-seconds", type=float, default=2.0)
    parser.add_argument("--fragments", type=int, default=30)
    parser.add_argument("--viewers", type=int, default=8, help="concurrent HLS clients for the segment-rate test")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    fragments = bench_encode(args)
    bench_library(fragments)
    bench_gateway(fragments, args)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
