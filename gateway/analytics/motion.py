"""Motion events from video: background subtraction (OpenCV MOG2) on sampled frames.

A ``MotionWatcher`` thread per ``[[analytics.motion]]`` table follows one video stream's stored
fragments in order, decodes them (``kvs.images.iter_frames``), and analyses one frame per
``1 / sample_fps`` seconds of producer time: grey, downscaled to ``ANALYSIS_WIDTH``, blurred,
then MOG2 with a fast learning rate (a thing that stops moving becomes background within a
couple of samples, so "motion ended" is not held back by where it stopped). A sample moves
when, in any zone, the share of changed pixels is at least ``(1 - sensitivity) / 40``.

Events — ``{"event": "motion_start" | "motion_end", "videoStream", "timestampMillis", "time",
"zones", "score"}`` — are records of ``output_stream`` (partition key: the video stream), written
through the same checkpoint + outbox as SQL applications (position = last fragment analysed), so
SQL, consumers and Firehose can use them. A start is stamped with the first moving sample, an
end with the first still sample once ``end_after_seconds`` stayed still. The player draws the
periods on its timeline (``GET /analytics/motion/{stream}``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

import cv2
import numpy as np

from gateway.analytics.checkpoint import Checkpoint, CheckpointError, checkpoint_path
from gateway.analytics.output import Outputs, Runner, deliver
from gateway.analytics.spec import MotionSpec
from gateway.errors import AwsError
from gateway.kvs.model import fragment_number, parse_fragment_number
from gateway.kvs.store import VideoStore
from kvs.images import iter_frames

log = logging.getLogger("gateway.analytics.motion")

#: Frames are analysed at this width (aspect kept): plenty for "did something move", 4x cheaper than 640.
ANALYSIS_WIDTH = 320
#: Fragments read per poll.
FRAGMENTS_PER_POLL = 20
#: Motion periods kept in memory for the player.
KEPT_PERIODS = 2000
POLL_SECONDS = 0.5


class MotionDetector:
    """Frames in, motion start/end events out (pure: no I/O)."""

    def __init__(self, spec: MotionSpec) -> None:
        self.spec = spec
        self.interval_ms = max(1, round(1000 / spec.sample_fps))
        self.threshold = (1 - spec.sensitivity) / 40
        self.subtractor = cv2.createBackgroundSubtractorMOG2(history=50, varThreshold=25, detectShadows=False)
        self.next_sample_ms: int | None = None
        self.moving_since: int | None = None
        self.still_since: int | None = None
        self.masks: list[tuple[slice, slice]] = []
        self.samples = 0

    def saved(self) -> dict[str, int]:
        """What must survive a restart: an open motion period (the background model is re-learnt)."""
        return {"moving_since": -1 if self.moving_since is None else self.moving_since,
                "still_since": -1 if self.still_since is None else self.still_since,
                "next_sample_ms": -1 if self.next_sample_ms is None else self.next_sample_ms}

    def restore(self, saved: dict[str, int]) -> None:
        for name in ("moving_since", "still_since", "next_sample_ms"):
            value = saved.get(name, -1)
            setattr(self, name, None if value < 0 else value)

    def wants(self, ts_ms: int) -> bool:
        return self.next_sample_ms is None or ts_ms >= self.next_sample_ms

    def feed(self, ts_ms: int, bgr: np.ndarray) -> list[dict[str, Any]]:
        """Analyse one frame (call only when ``wants(ts_ms)``); the events it ends or starts."""
        self.next_sample_ms = (ts_ms // self.interval_ms + 1) * self.interval_ms
        height, width = bgr.shape[:2]
        small = cv2.resize(bgr, (ANALYSIS_WIDTH, max(1, height * ANALYSIS_WIDTH // width)), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        foreground = self.subtractor.apply(grey, learningRate=0.5)
        self.samples += 1
        if self.samples == 1:
            return []  # the first frame only seeds the background
        if not self.masks:
            h, w = foreground.shape
            zones = self.spec.zones or ((0.0, 0.0, 1.0, 1.0),)
            self.masks = [(slice(int(y * h), max(int(y * h) + 1, int((y + zh) * h))), slice(int(x * w), max(int(x * w) + 1, int((x + zw) * w))))
                          for x, y, zw, zh in zones]
        scores = [float(np.count_nonzero(foreground[rows, cols])) / foreground[rows, cols].size for rows, cols in self.masks]
        moving = [i for i, score in enumerate(scores) if score >= self.threshold]
        events: list[dict[str, Any]] = []
        if moving:
            self.still_since = None
            if self.moving_since is None:
                self.moving_since = ts_ms
                events.append(self._event("motion_start", ts_ms, moving, max(scores)))
        elif self.moving_since is not None:
            if self.still_since is None:
                self.still_since = ts_ms
            if ts_ms - self.still_since >= self.spec.end_after_seconds * 1000:
                events.append(self._event("motion_end", self.still_since, [], max(scores)))
                self.moving_since = self.still_since = None
        return events

    def _event(self, kind: str, ts_ms: int, zones: list[int], score: float) -> dict[str, Any]:
        return {"event": kind, "videoStream": self.spec.video_stream, "timestampMillis": ts_ms,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z",
                "zones": zones, "score": round(score, 4)}


class MotionWatcher(Runner):
    def __init__(self, spec: MotionSpec, video: VideoStore, outputs: Outputs, data_dir: Any, durability: str = "normal") -> None:
        super().__init__(f"motion-{spec.video_stream}")
        self.spec = spec
        self.video = video
        self.outputs = outputs
        self.store = outputs.store
        self.path = checkpoint_path(data_dir, f"motion-{spec.video_stream}")
        self.durability = durability
        self.detector = MotionDetector(spec)
        #: [start_ms, end_ms or None] of recent motion, oldest first.
        self.periods: deque[list[int | None]] = deque(maxlen=KEPT_PERIODS)
        self.frames_decoded = 0
        self.busy_seconds = 0.0

    def _run(self) -> None:
        try:
            checkpoint = Checkpoint(self.path, self.durability)
        except CheckpointError as exc:
            self.status, self.message = "FAILED", str(exc)
            log.error("motion %s: %s", self.spec.video_stream, exc)
            return
        try:
            state = checkpoint.load()
            self.detector.restore(state.counters)
            self._load_periods(checkpoint)
            self.status = "RUNNING"
            while not self._stop.is_set():
                try:
                    if not deliver(checkpoint, self.outputs, self._stop, self._report):
                        self._stop.wait(1.0)
                        continue
                    if not self._step(checkpoint, state):
                        self._stop.wait(POLL_SECONDS)
                except CheckpointError as exc:
                    self.status, self.message = "FAILED", str(exc)
                    log.error("motion %s: %s", self.spec.video_stream, exc)
                    return
                except Exception:
                    log.exception("motion %s: step failed; retrying", self.spec.video_stream)
                    self._stop.wait(1.0)
        finally:
            checkpoint.close()

    def _report(self, message: str) -> None:
        self.message = message

    def _step(self, checkpoint: Checkpoint, state: Any) -> bool:
        try:
            stream_id = self.video.describe(self.spec.video_stream).id
        except AwsError:
            self.message = f"video stream {self.spec.video_stream} does not exist"
            return False
        key = ("video", stream_id)
        last = state.positions.get(key)
        after = None if last is None else fragment_number(stream_id, last)
        fragments = self.video.list_fragments_by_id(stream_id, after=after, limit=FRAGMENTS_PER_POLL)
        if not fragments:
            return False
        self.message = ""
        outbox: list[tuple[str, str, bytes]] = []
        started = time.process_time()
        for info in fragments:
            try:
                data = self.video.read_fragment_by_id(stream_id, info.fragment_number)
            except Exception:  # deleted by retention meanwhile, or unreadable: skip it
                log.warning("motion %s: fragment %s unreadable, skipped", self.spec.video_stream, info.fragment_number)
                data = b""
            try:
                for ts, frame in iter_frames(data) if data else ():
                    self.frames_decoded += 1
                    ts += info.producer_ts_ms if ts < info.producer_ts_ms // 2 else 0  # relative timecodes
                    if not self.detector.wants(ts):
                        continue
                    for event in self.detector.feed(ts, frame.to_ndarray(format="bgr24")):
                        self._remember(event)
                        outbox.append((self.spec.output_stream, self.spec.video_stream, json.dumps(event).encode()))
            except Exception as exc:  # a damaged fragment must not stop the watcher
                log.warning("motion %s: cannot decode fragment %s: %s", self.spec.video_stream, info.fragment_number, exc)
            state.positions[key] = parse_fragment_number(info.fragment_number)[1]
        self.busy_seconds += time.process_time() - started
        state.counters.update(self.detector.saved())
        checkpoint.save(state, [], outbox)
        deliver(checkpoint, self.outputs, self._stop, self._report)
        return len(fragments) == FRAGMENTS_PER_POLL

    def _remember(self, event: dict[str, Any]) -> None:
        ts = event["timestampMillis"]
        if event["event"] == "motion_start":
            self.periods.append([ts, None])
        elif self.periods and self.periods[-1][1] is None:
            self.periods[-1][1] = ts

    def _load_periods(self, checkpoint: Checkpoint) -> None:
        """Earlier periods come back from the output stream itself (the record of truth)."""
        stream = self.store.streams.get(self.spec.output_stream)
        if stream is None:
            return
        events = []
        for shard in stream.shards:
            result = self.store.read(shard.key, shard.start_seq, 100_000)
            for _, _, _, data in result.rows:
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("videoStream") == self.spec.video_stream:
                    events.append(event)
        for event in sorted(events, key=lambda e: e.get("timestampMillis", 0)):
            self._remember(event)

    def summary(self) -> dict[str, Any]:
        return {
            "VideoStream": self.spec.video_stream,
            "OutputStream": self.spec.output_stream,
            "Status": self.status,
            "Message": self.message,
            "SamplesAnalysed": self.detector.samples,
            "FramesDecoded": self.frames_decoded,
            "CpuSeconds": round(self.busy_seconds, 3),
            "Periods": [{"StartMillis": a, "EndMillis": b} for a, b in list(self.periods)],
        }
