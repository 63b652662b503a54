"""Shared test helpers: real processes on free ports (the gateway, Mosquitto) and boto3 clients."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from edge_agent.localhost import free_port, wait_for_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


_ports = random.Random(os.getpid() ^ int(time.time() * 1000))


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1/localhost (its own CA, for verify=cert)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed(spool: Any, lane: str) -> int:
    """Committed records of ``lane`` in a spool, as a reader sees them."""
    return len(spool.read(lane, limit=1_000_000, max_bytes=1 << 40))


class GatewayProcess:
    """A real ``edge-gateway`` process on a free port; restartable on the same data dir."""

    def __init__(self, data_dir: Path, *extra_args: str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = self.data_dir.parent / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def configured(cls, root: Path, toml: str, *extra_args: str) -> "GatewayProcess":
        """A gateway (not started) with data in ``root/data`` and ``toml`` as its ``--config``."""
        root.mkdir(parents=True, exist_ok=True)
        config = root / "gateway.toml"
        config.write_text(toml)
        return cls(root / "data", *extra_args, "--config", str(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GatewayProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        wait_for_port(self.port, timeout=40, proc=self.proc)  # a loaded 2-core box imports slowly
        time.sleep(0.05)  # a failed bind exits at once: make sure what answered is this process
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self) -> "GatewayProcess":
        self.kill()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, service: str = "kinesis", **config: Any) -> Any:
        return aws_client(service, self.url, **config)


def aws_client(service: str, endpoint_url: str, **config: Any) -> Any:
    """A boto3 client for ``service`` pointed at ``endpoint_url``, with botocore's retries few: its
    ``max_attempts`` counts retries, so this is one retry; ``retries={"total_max_attempts": 1}`` turns them off."""
    cfg = Config(**{"retries": {"max_attempts": 1, "mode": "standard"}, **config})
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=cfg,
    )


class MosquittoProcess:
    """A real Mosquitto broker on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MosquittoProcess":
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        # As root, mosquitto drops to the mosquitto user, which cannot write pytest's private temp
        # dir: persistent sessions would silently not be saved. Stay root for the test broker.
        as_root = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.workdir}/\nmax_queued_messages 100000\n{as_root}"
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def module_gateway(name: str, *args: str) -> Any:
    """A module-scoped fixture called ``name``: one gateway process (started with ``args``) shared by
    the tests of a module that never stop it, each using its own streams. In a test module:
    ``gw = module_gateway("gw")``."""
    import pytest

    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Any:
        gateway = GatewayProcess(tmp_path_factory.mktemp(name) / "gateway-data", *args).start()
        yield gateway
        gateway.kill()

    return fixture


class ScriptedServer:
    """A real TCP server on loopback: ``script(conn, n)`` plays its n-th accepted connection (0, 1,
    ...) on a thread of its own. What a script raises is kept in ``errors`` for the test to check
    (a test fails on it, not the server's thread)."""

    def __init__(self, script: Callable[[socket.socket, int], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.errors: list[BaseException] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            n, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._play, args=(conn, n), daemon=True).start()

    def _play(self, conn: socket.socket, n: int) -> None:
        conn.settimeout(10)
        try:
            self.script(conn, n)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()
