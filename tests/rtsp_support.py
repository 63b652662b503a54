"""A minimal RTSP server for the camera tests: what an IP camera does, on loopback.

FFmpeg's RTSP support can only *receive* a stream (``-rtsp_flags listen`` is a demuxer flag), not
serve one to a player, so this plays the camera's part: OPTIONS, DESCRIBE (SDP with the H.264
parameter sets), SETUP (RTP over the RTSP TCP connection, interleaved channels 0-1), PLAY, then
the clip's H.264 access units as RTP packets (RFC 6184: single NAL units and FU-A fragments, 90 kHz
timestamps, marker on the last packet of each frame), paced in real time. It serves one client
per connection and the clip once per connection, then closes it, as a camera restarting would.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from pathlib import Path

import av

MAX_RTP_PAYLOAD = 1400
PAYLOAD_TYPE = 96
#: RTP timestamps start at a random-looking offset, as cameras do (FFmpeg reads 0 as "no timestamp").
TIMESTAMP_BASE = 0x2A5F_0000


def _parameter_sets(avcc: bytes) -> tuple[list[bytes], list[bytes]]:
    """SPS and PPS NAL units from an avcC box (ISO/IEC 14496-15)."""
    pos = 6
    sps, pps = [], []
    for _ in range(avcc[5] & 0x1F):
        (n,) = struct.unpack_from(">H", avcc, pos)
        sps.append(avcc[pos + 2 : pos + 2 + n])
        pos += 2 + n
    count = avcc[pos]
    pos += 1
    for _ in range(count):
        (n,) = struct.unpack_from(">H", avcc, pos)
        pps.append(avcc[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return sps, pps


def _nal_units(packet: bytes) -> list[bytes]:
    """NAL units of an AVCC access unit (4-byte big-endian lengths)."""
    out, pos = [], 0
    while pos + 4 <= len(packet):
        (n,) = struct.unpack_from(">I", packet, pos)
        out.append(packet[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


class RtspCamera:
    """``RtspCamera(mp4_path).start()``; ``url``; ``stop()``. ``sessions`` counts played clients."""

    def __init__(self, clip: Path) -> None:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            self.sps, self.pps = _parameter_sets(bytes(stream.codec_context.extradata))
            tb = stream.time_base
            self.units = [(int(p.pts * tb * 90000), bool(p.is_keyframe), _nal_units(bytes(p)))
                          for p in container.demux(stream) if p.size]
        self.frames = len(self.units)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.sessions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> RtspCamera:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(10)

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                try:
                    self._session(conn)
                except OSError:
                    pass

    def _sdp(self) -> bytes:
        sprop = ",".join(base64.b64encode(x).decode() for x in (*self.sps, *self.pps))
        profile = self.sps[0][1:4].hex()
        return (
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=camera\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\na=rtpmap:{PAYLOAD_TYPE} H264/90000\r\n"
            f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={sprop}\r\n"
            "a=control:track0\r\n"
        ).encode()

    def _session(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while not self._stop.is_set():
            request = []
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                request.append(line.decode().strip())
            if not request:
                return
            method = request[0].split()[0]
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in request[1:])}
            cseq = headers.get("cseq", "0")
            body = b""
            extra = ""
            if method == "OPTIONS":
                extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
            elif method == "DESCRIBE":
                body = self._sdp()
                extra = f"Content-Base: {self.url}/\r\nContent-Type: application/sdp\r\n"
            elif method == "SETUP":
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n"
            elif method == "PLAY":
                extra = "Session: 12345678\r\nRange: npt=0.000-\r\n"
            elif method == "TEARDOWN":
                conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n".encode())
                return
            conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            if method == "PLAY":
                self.sessions += 1
                self._play(conn)
                return  # the clip ended: hang up, like a camera restarting

    def _play(self, conn: socket.socket) -> None:
        seq = 0
        started = time.monotonic()
        for ts, key, nals in self.units:
            if self._stop.is_set():
                return
            delay = started + ts / 90000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if key:
                nals = [*self.sps, *self.pps, *[n for n in nals if n[0] & 0x1F not in (7, 8)]]
            packets = []
            for nal in nals:
                if len(nal) <= MAX_RTP_PAYLOAD:
                    packets.append(nal)
                    continue
                indicator, kind = (nal[0] & 0xE0) | 28, nal[0] & 0x1F
                chunks = [nal[i : i + MAX_RTP_PAYLOAD] for i in range(1, len(nal), MAX_RTP_PAYLOAD)]
                for i, chunk in enumerate(chunks):
                    header = kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
                    packets.append(bytes([indicator, header]) + chunk)
            for i, payload in enumerate(packets):
                marker = 0x80 if i == len(packets) - 1 else 0
                stamp = (TIMESTAMP_BASE + ts) & 0xFFFFFFFF
                rtp = struct.pack(">BBHII", 0x80, marker | PAYLOAD_TYPE, seq & 0xFFFF, stamp, 0x1234) + payload
                conn.sendall(struct.pack(">BBH", 0x24, 0, len(rtp)) + rtp)
                seq += 1
