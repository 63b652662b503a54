"""h2c by HTTP/1.1 Upgrade (RFC 7540, section 3.2), as curl ``--http2`` and Java's HttpClient ask
for it on ``http://``: the first request carries ``Upgrade: h2c`` and ``HTTP2-Settings``; the
gateway answers ``101 Switching Protocols`` and that request becomes HTTP/2 stream 1.

Only a request whose body is declared by Content-Length and at most ``MAX_UPGRADE_BODY_BYTES`` is
upgraded (its body arrives in HTTP/1.1 framing before the switch and is held whole); others are
served over HTTP/1.1, which the RFC allows (a server may ignore Upgrade).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

#: The most body bytes an upgrading request may carry (held in memory before the switch).
MAX_UPGRADE_BODY_BYTES = 1024 * 1024
#: Bytes of a first request head looked at for an upgrade; a longer head is served over HTTP/1.1.
MAX_HEAD_BYTES = 64 * 1024
SWITCHING_PROTOCOLS = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
#: Request headers that describe the HTTP/1.1 connection, not the request (RFC 9113, 8.2.2).
_CONNECTION_HEADERS = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"http2-settings", b"host",
})


@dataclass(frozen=True)
class H2cUpgrade:
    settings: bytes  #: the HTTP2-Settings header, for ``h2``'s ``initiate_upgrade_connection``
    headers: list[tuple[bytes, bytes]]  #: the request as an HTTP/2 header list (pseudo-headers first)
    body: bytes
    consumed: int  #: bytes of the buffer the request took; what follows is HTTP/2


def h2c_upgrade(buffer: bytes) -> H2cUpgrade | None | bool:
    """What the first bytes of a plain-TCP connection ask for: an ``H2cUpgrade``, None (serve it
    over HTTP/1.1), or False (the request is not complete yet: wait for more bytes)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False if len(buffer) < MAX_HEAD_BYTES else None
    lines = buffer[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not parts[1].startswith(b"/"):
        return None
    fields: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            return None  # malformed: aiohttp's parser answers it
        fields.append((name.lower(), value.strip()))
    found = dict(fields)
    upgrade = [token.strip().lower() for token in found.get(b"upgrade", b"").split(b",")]
    if b"h2c" not in upgrade or b"http2-settings" not in found or b"transfer-encoding" in found:
        return None
    settings = found[b"http2-settings"] + b"=" * (-len(found[b"http2-settings"]) % 4)  # sent unpadded
    try:
        payload = base64.b64decode(settings, altchars=b"-_", validate=True)
        length = int(found.get(b"content-length", b"0"))
    except (binascii.Error, ValueError):
        return None
    if len(payload) % 6 or not 0 <= length <= MAX_UPGRADE_BODY_BYTES:  # settings are 6 bytes each
        return None
    if len(buffer) < end + 4 + length:
        return False  # the body is still coming
    headers = [(b":method", parts[0]), (b":path", parts[1]), (b":scheme", b"http"), (b":authority", found.get(b"host", b""))]
    headers += [(name, value) for name, value in fields if name not in _CONNECTION_HEADERS]
    body = buffer[end + 4:end + 4 + length]
    return H2cUpgrade(settings, headers, body, end + 4 + length)
