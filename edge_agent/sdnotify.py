"""systemd's notify protocol: one datagram per state change to $NOTIFY_SOCKET.

Written by hand (it is a few lines) so the agent needs no libsystemd binding: ``READY=1``
once the spool is open and the threads run, ``WATCHDOG=1`` every half WatchdogSec while the
forwarders make progress, ``STOPPING=1`` on shutdown, ``STATUS=...`` for ``systemctl status``.
Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ...) as one datagram; False if there is no socket or it failed."""
        if not self.address:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                # Never block: if the receiver's queue is full the message is dropped, the agent goes on.
                sock.send(message, socket.MSG_DONTWAIT)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, status: str = "") -> bool:
        return self.notify("WATCHDOG=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WatchdogSec (``$WATCHDOG_USEC``), or None if off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.05)
    except ValueError:
        return None
