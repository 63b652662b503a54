"""One MQTT connection to a broker: TCP (or TLS), the CONNECT/CONNACK handshake, reading packets,
sending bytes, and the keepalive (PINGREQ when we have sent nothing for ``keepalive`` seconds; a
broker that does not answer within another ``keepalive`` is taken for dead).

Only the MQTT source's network thread uses a connection: every read and every write happens on it,
so a TLS socket never sees two threads at once (OpenSSL connections are not safe for that).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass

from edge_agent.sources import mqtt_wire as wire

#: Seconds to establish TCP/TLS and get a CONNACK; also the longest a send may block.
CONNECT_TIMEOUT = 10.0
#: Bytes asked of the socket per read: one read takes every packet waiting (a TLS socket gives
#: one record, at most 16 KiB, per call; what it decrypted beyond that is taken at once too).
READ_SIZE = 64 * 1024


class ConnectionLost(Exception):
    """The connection is gone or unusable (closed, reset, timed out, malformed traffic)."""


class Refused(Exception):
    """The broker answered CONNECT with a refusal."""

    def __init__(self, code: int) -> None:
        super().__init__(wire.reason_text(code, wire.CONNACK_REASONS))
        self.code = code

    @property
    def unsupported_version(self) -> bool:
        return self.code in wire.UNSUPPORTED_VERSION


@dataclass(frozen=True)
class Login:
    """What CONNECT says about us."""

    client_id: str
    keepalive: int
    version: int
    username: str | None = None
    password: str | None = None
    session_expiry: int = 0
    receive_maximum: int = 0


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name (against ``ca_file``, or the system's CAs)."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class MqttConnection:
    def __init__(self, sock: socket.socket, login: Login, skip_above: int) -> None:
        self.sock = sock
        self.login = login
        self.version = login.version
        self.session_present = False
        #: The keepalive in force (a v5 broker may impose its own).
        self.keepalive = login.keepalive
        self.reader = wire.PacketReader(login.version, skip_above)
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._early: list[wire.Publish | wire.Packet] = []  # read (with the CONNACK, or given back), not handed out yet
        self._last_sent = time.monotonic()
        self._ping_sent: float | None = None
        self._probe = select.poll()  # "anything to read?" without blocking
        self._probe.register(sock.fileno(), select.POLLIN)

    @classmethod
    def open(cls, host: str, port: int, login: Login, tls: ssl.SSLContext | None, skip_above: int) -> MqttConnection:
        """Connect and log in; raises ``Refused`` or ``ConnectionLost`` (also for TLS errors)."""
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
            conn = cls(sock, login, skip_above)
            conn._login()
            return conn
        except wire.MalformedPacket as exc:
            sock.close()
            raise ConnectionLost(f"malformed packet from the broker: {exc}") from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        except BaseException:
            sock.close()
            raise

    def _login(self) -> None:
        login = self.login
        self.sock.sendall(wire.encode_connect(login.client_id, login.keepalive, login.version, login.username, login.password,
                                              login.session_expiry, login.receive_maximum))
        packets: list[wire.Publish | wire.Packet] = []
        while not packets:
            data = self.sock.recv(READ_SIZE)
            if not data:
                raise ConnectionLost("closed by the broker before CONNACK")
            packets = self.reader.feed(data)
        connack, self._early = packets[0], packets[1:]
        if not isinstance(connack, wire.Packet) or connack.kind != wire.CONNACK or len(connack.body) < 2:
            raise wire.MalformedPacket("the first packet from the broker is not a CONNACK")
        if connack.body[1]:
            raise Refused(connack.body[1])
        self.session_present = bool(connack.body[0] & 1)
        if login.version == wire.V5 and len(connack.body) > 2:
            props, _ = wire.parse_properties(connack.body, 2, len(connack.body))
            self.keepalive = props.get(wire.PROP_SERVER_KEEP_ALIVE) or login.keepalive

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"send failed: {exc}") from exc
        self._last_sent = time.monotonic()

    def read(self, wait: bool = True) -> list[wire.Publish | wire.Packet]:
        """What one read brought: call when the socket is readable, or ``has_buffered``; with
        ``wait`` False, an empty list when nothing is there (instead of blocking)."""
        if self._early:
            early, self._early = self._early, []
            return early
        if not wait and not self._probe.poll(0) and not (self._tls and self.sock.pending()):  # type: ignore[attr-defined]
            return []
        try:
            data = self.sock.recv(READ_SIZE)
            if self._tls:
                while data and self.sock.pending():  # type: ignore[attr-defined]
                    data += self.sock.recv(READ_SIZE)
        except ssl.SSLWantReadError:
            return []
        except OSError as exc:
            raise ConnectionLost(f"read failed: {exc}") from exc
        if not data:
            raise ConnectionLost("closed by the broker")
        self._ping_sent = None  # anything from the broker shows it is alive
        return self.reader.feed(data)

    def has_buffered(self) -> bool:
        """Packets already read but not handed out yet (they would not wake a poll)."""
        return bool(self._early)

    def unread(self, packets: list[wire.Publish | wire.Packet]) -> None:
        """Give packets back: the next ``read`` returns them first (without reading the socket)."""
        self._early = packets + self._early

    def tick(self, reading: bool) -> float:
        """Keepalive: send PINGREQ when due, raise ``ConnectionLost`` when a ping went unanswered
        (only checked while ``reading``: a paused reader cannot see the answer); return the seconds
        until the next thing to do."""
        now = time.monotonic()
        keepalive = self.keepalive
        if reading and self._ping_sent is not None and now - self._ping_sent > keepalive:
            raise ConnectionLost(f"no answer to PINGREQ within {keepalive} s")
        due = self._last_sent + keepalive
        if now >= due:
            self.send(wire.PINGREQ_PACKET)
            if self._ping_sent is None:
                self._ping_sent = now
            due = now + keepalive
        if self._ping_sent is not None:
            due = min(due, self._ping_sent + keepalive)
        return max(0.0, due - now)

    def close(self, polite: bool) -> None:
        """Close; ``polite`` sends DISCONNECT first (the session stays: clean start was 0)."""
        if polite:
            try:
                self.sock.settimeout(1.0)
                self.sock.sendall(wire.DISCONNECT_PACKET)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
