"""A TCP proxy on loopback that breaks connections on purpose, for chaos tests.

Each new client connection is assigned a fault at random (seeded, so a failing run can be
replayed): pass it through untouched, reset it (RST) after some bytes, stall it, slow it to a
trickle, or forward the request and then drop the response — the lost acknowledgement that
turns at-least-once producers into duplicate producers. ``counts`` says what was injected.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass

FAULTS = ("pass", "reset", "stall", "slow", "drop_response")


@dataclass
class FaultMix:
    """Relative weights of each fault; ``pass`` keeps the run making progress."""

    pass_: float = 0.6
    reset: float = 0.1
    stall: float = 0.1
    slow: float = 0.1
    drop_response: float = 0.1
    stall_seconds: float = 3.0
    slow_bytes_per_sec: int = 20_000
    #: Chance that any chunk of a passing connection breaks it (keep-alive connections live long:
    #: this puts faults between the requests of one connection too). Half reset the request,
    #: half lose the response.
    mid_fault_rate: float = 0.0

    def weights(self) -> list[float]:
        return [self.pass_, self.reset, self.stall, self.slow, self.drop_response]


class FaultProxy:
    def __init__(self, target_port: int, mix: FaultMix | None = None, seed: int = 1, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mix = mix or FaultMix()
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.enabled = True
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        return self.start_on(0)

    def start_on(self, port: int) -> FaultProxy:
        """Listen on ``port`` (0: any free one)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _choose(self) -> str:
        if not self.enabled:
            return "pass"
        return self.random.choices(FAULTS, weights=self.mix.weights())[0]

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        fault = self._choose()
        self.counts[fault] += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            self.counts["target_down"] += 1
            _reset(client_w)
            self._tasks.discard(task)
            return
        try:
            if fault == "reset":
                await self._pipe(client_r, server_w, limit=self.random.randint(0, 4096))
                _reset(client_w)
                _reset(server_w)
                return
            if fault == "stall":
                await asyncio.sleep(self.mix.stall_seconds)
            rate = self.mix.slow_bytes_per_sec if fault == "slow" else 0
            drop = fault == "drop_response"
            mid = self.mix.mid_fault_rate if fault == "pass" else 0.0
            upstream = self._pipe(client_r, server_w, rate=rate, mid_fault=mid, mid_name="reset_mid", peer=client_w)
            downstream = self._pipe(server_r, client_w, rate=rate, swallow=drop, mid_fault=mid, mid_name="drop_response_mid", peer=server_w)
            await asyncio.gather(upstream, downstream)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for w in (client_w, server_w):
                if not w.is_closing():
                    w.close()
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int = -1, rate: int = 0, swallow: bool = False,
        mid_fault: float = 0.0, mid_name: str = "", peer: asyncio.StreamWriter | None = None,
    ) -> None:
        """Copy reader → writer; stop after ``limit`` bytes; pace at ``rate`` B/s; with ``swallow``, read but
        never deliver, then reset (the peer's response is lost after the peer processed the request);
        with ``mid_fault``, each chunk may instead reset both ends (counted as ``mid_name``)."""
        sent = 0
        while True:
            chunk = await reader.read(4096 if not rate else max(1, rate // 10))
            if not chunk:
                break
            if mid_fault and self.enabled and self.random.random() < mid_fault:
                self.counts[mid_name] += 1
                swallow = True
            if swallow:
                _reset(writer)
                if peer is not None:
                    _reset(peer)
                return
            if limit >= 0 and sent + len(chunk) > limit:
                writer.write(chunk[: limit - sent])
                await writer.drain()
                return
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if rate:
                await asyncio.sleep(len(chunk) / rate)
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:  # the other side is already gone (reset by a fault or the peer)
                pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN, as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.close()
