"""What the soak parts share: a row of the final table and an RSS sampler."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from chaos_support import rss_kb


@dataclass
class Row:
    """One line of the final table."""

    part: str
    kills: int = 0
    faults: int = 0
    requests: int = 0
    checked: int = 0
    lost: int = 0
    duplicated: int = 0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add_memory(self, name: str, samples: list[int], extra: str = "") -> None:
        """The peak of ``samples`` (KiB) becomes the row's peak RSS; the curve goes into the notes."""
        self.peak_rss_mib = mib(max(samples or [0]))
        self.notes.append(f"{extra}{name} RSS MiB {curve(samples)}")

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and not any(n.startswith("FAIL") for n in self.notes)


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def curve(samples: list[int]) -> str:
    """first third → middle → last third averages, in MiB: a flat curve says no leak."""
    if len(samples) < 3:
        return "n/a"
    third = len(samples) // 3
    parts = [samples[:third], samples[third:2 * third], samples[2 * third:]]
    return " → ".join(f"{mib(sum(p) // len(p))}" for p in parts)


class RssSampler:
    """Samples the RSS of whatever pids ``pids()`` returns, once a second, on a thread."""

    def __init__(self, pids: Callable[[], dict[str, int | None]]) -> None:
        self.pids = pids
        self.samples: dict[str, list[int]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for name, pid in self.pids().items():
                if pid is None:
                    continue
                try:
                    self.samples[name].append(rss_kb(pid))
                except (OSError, ValueError):
                    pass


def pid_of(proc: subprocess.Popen | None) -> int | None:
    return proc.pid if proc is not None and proc.poll() is None else None




def kill_loop(kills: int, rng: random.Random, kill: Callable[[], None], start: Callable[[], None],
              up: tuple[float, float] = (0.5, 2.5), down: tuple[float, float] = (0.05, 0.5)) -> int:
    """SIGKILL and restart ``kills`` times: up for a random ``up`` seconds, down for a random ``down``."""
    for _ in range(kills):
        time.sleep(rng.uniform(*up))
        kill()
        time.sleep(rng.uniform(*down))
        start()
    return kills
