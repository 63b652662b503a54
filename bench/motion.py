"""Motion detection speed at 640x480: frames analysed per second and per CPU-second (one core).

Encodes a synthetic 640x480 H.264 camera (a square moving over a noisy background), then runs
``gateway.analytics.motion.MotionDetector`` over it the way the gateway does:
  1. analysis alone: every decoded frame through the detector (resize, blur, MOG2, zone scores);
  2. decode + analysis: every frame of each fragment decoded (H.264 needs them all), one analysed
     per 1 / --sample-fps seconds of video.
CPU time is the process's (all threads, so a decoder's worker threads count too).

    .venv/bin/python bench/motion.py
    .venv/bin/python bench/motion.py --seconds 20 --fps 25 --sample-fps 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.analytics.motion import MotionDetector  # noqa: E402
from gateway.analytics.spec import MotionSpec  # noqa: E402
from kvs import FragmentWriter  # noqa: E402
from kvs.images import iter_frames  # noqa: E402

WIDTH, HEIGHT = 640, 480


def camera(seconds: int, fps: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    writer = FragmentWriter(WIDTH, HEIGHT, fps, fragment_seconds=1.0)
    out = []
    for i in range(seconds * fps):
        frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8) + rng.integers(0, 6, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        x = 40 + (i * 8) % (WIDTH - 120) if (i // fps) % 4 < 2 else 40
        cv2.rectangle(frame, (x, 200), (x + 60, 260), (250, 250, 250), -1)
        out += writer.add_frame(frame, i * 1000 // fps)
    return [f.data for f in out + writer.flush()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of the synthetic video")
    parser.add_argument("--fps", type=int, default=15, help="camera frame rate")
    parser.add_argument("--sample-fps", type=float, default=5.0, help="frames analysed per second of video")
    opts = parser.parse_args(argv)
    print(f"cores {os.cpu_count()}, load avg {os.getloadavg()}", flush=True)
    fragments = camera(opts.seconds, opts.fps)
    frames = [frame.to_ndarray(format="bgr24") for data in fragments for _, frame in iter_frames(data)]

    detector = MotionDetector(MotionSpec(video_stream="bench", output_stream="x", sample_fps=1000.0))
    wall, cpu = time.perf_counter(), time.process_time()
    events = 0
    for i, bgr in enumerate(frames):
        events += len(detector.feed(i * 1000 // opts.fps, bgr))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"analysis alone, {WIDTH}x{HEIGHT}: {len(frames) / wall:,.0f} frames/s, {len(frames) / cpu:,.0f} per CPU-second ({events} events)", flush=True)

    detector = MotionDetector(MotionSpec(video_stream="bench", output_stream="x", sample_fps=opts.sample_fps))
    wall, cpu = time.perf_counter(), time.process_time()
    decoded = 0
    for data in fragments:
        for ts, frame in iter_frames(data):
            decoded += 1
            if detector.wants(ts):
                detector.feed(ts, frame.to_ndarray(format="bgr24"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    video_s = decoded / opts.fps
    print(f"decode + analysis at {opts.sample_fps:g} samples/s of {opts.fps} fps video: {detector.samples / cpu:,.0f} analysed frames and "
          f"{decoded / cpu:,.0f} decoded frames per CPU-second = {video_s / cpu:.1f} cameras per core in real time  load avg {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
