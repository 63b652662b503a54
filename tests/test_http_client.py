"""The agent's HTTP/1.1 client against a scripted real TCP server: keep-alive, stale connections,
answer framings, streamed bodies, and failures as OSError (SendError through the transport)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import pytest

from edge_agent.aws import StaticCredentials
from edge_agent.config import GatewaySection
from edge_agent.errors import CONNECTION, SendError
from edge_agent.http_client import Client, ProtocolError, RemoteDisconnected
from edge_agent.transport import Transport
from helpers import ScriptedServer, free_port

Handler = Callable[[int, socket.socket, BinaryIO], None]


def read_request(reader: BinaryIO) -> tuple[list[bytes], bytes] | None:
    """(head lines, body) of the next request on a connection, or None at its end."""
    line = reader.readline()
    if not line:
        return None
    head = [line.rstrip()]
    while (line := reader.readline()) not in (b"\r\n", b""):
        head.append(line.rstrip())
    fields = {k.lower(): v.strip() for k, _, v in (h.partition(b":") for h in head[1:])}
    if b"content-length" in fields:
        return head, reader.read(int(fields[b"content-length"]))
    body = b""
    while size := int(reader.readline(), 16):
        body += reader.read(size)
        reader.readline()
    reader.readline()
    return head, body


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Server(ScriptedServer):
    """A real TCP server on loopback; each accepted connection runs ``handler(index, sock, reader)``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[list[bytes], bytes]] = []
        super().__init__(self._serve)
        self.url = f"http://127.0.0.1:{self.port}/"

    def _serve(self, sock: socket.socket, index: int) -> None:
        with sock.makefile("rb") as reader:
            try:
                self.handler(index, sock, reader)
            except OSError:
                pass  # the client under test closed or reset the connection

    def next_request(self, reader: BinaryIO) -> tuple[list[bytes], bytes] | None:
        request = read_request(reader)
        if request is not None:
            self.requests.append(request)
        return request



@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Server]]:
    servers: list[Server] = []

    def start(handler: Handler) -> Server:
        servers.append(Server(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client() -> Client:
    return Client(connect_timeout=2, read_timeout=2)


def test_keep_alive_one_connection_head_and_body_as_sent(serve: Any) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        while (request := server.next_request(reader)) is not None:
            sock.sendall(answer(b"echo:" + request[1]))

    server = serve(handler)
    http = client()
    for i in range(3):
        response = http.request("POST", server.url + "?a=1", {"X-Edge-Record-Seqs": f"{i},9"}, b"body%d" % i)
        assert (response.status, response.read()) == (200, b"echo:body%d" % i)
    assert server.connections == 1
    head = server.requests[0][0]
    assert head[0] == b"POST /?a=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.url.split(':')[2].rstrip('/')}".encode() in head
    assert b"X-Edge-Record-Seqs: 0,9" in head and b"Content-Length: 5" in head
    http.close()


def test_chunked_answer_after_an_interim_one_streams_piece_by_piece(serve: Any) -> None:
    release = threading.Event()

    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        while server.next_request(reader) is not None:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nfirst\r\n")
            release.wait(5)  # the client has the first chunk before the second exists
            sock.sendall(b"6\r\nsecond\r\n0\r\nTrailer: t\r\n\r\n")

    server = serve(handler)
    http = client()
    response = http.request("POST", server.url, {}, b"")
    pieces = response.stream(3)
    assert [next(pieces), next(pieces)] == [b"fir", b"st"]
    release.set()
    assert list(pieces) == [b"sec", b"ond"]
    again = http.request("POST", server.url, {}, b"")
    assert again.read() == b"firstsecond"
    assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(serve: Any) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        server.next_request(reader)
        sock.sendall(answer(b"ok%d" % index))  # and close: a keep-alive timeout

    server = serve(handler)
    http = client()
    assert http.request("POST", server.url, {}, b"a").read() == b"ok0"
    assert http.request("POST", server.url, {}, b"b").read() == b"ok1"
    assert [body for _, body in server.requests] == [b"a", b"b"]


def test_a_request_the_server_drops_on_a_reused_connection_is_sent_again_once(serve: Any) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        if index == 0:
            server.next_request(reader)
            sock.sendall(answer(b"first"))
            server.next_request(reader)  # read, then closed unanswered: the idle-timeout race
            return
        while server.next_request(reader) is not None:
            sock.sendall(answer(b"fresh"))

    server = serve(handler)
    http = client()
    assert http.request("POST", server.url, {}, b"1").read() == b"first"
    assert http.request("POST", server.url, {}, b"2").read() == b"fresh"
    assert [body for _, body in server.requests] == [b"1", b"2", b"2"]


def test_no_answer_on_a_fresh_connection_is_an_error_not_a_retry(serve: Any) -> None:
    server = serve(lambda index, sock, reader: server.next_request(reader))
    with pytest.raises(RemoteDisconnected):
        client().request("POST", server.url, {}, b"x")
    assert len(server.requests) == 1


def test_a_body_until_close_is_read_whole_and_its_connection_not_reused(serve: Any) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        server.next_request(reader)
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")

    server = serve(handler)
    http = client()
    assert http.request("POST", server.url, {}, b"").read() == b"all of it"
    assert http.request("POST", server.url, {}, b"").read() == b"all of it"
    assert server.connections == 2


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_what_is_not_http_is_a_protocol_error(serve: Any, reply: bytes) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        server.next_request(reader)
        sock.sendall(reply)

    server = serve(handler)
    with pytest.raises(ProtocolError):
        client().request("POST", server.url, {}, b"").read()


def test_streamed_body_is_chunked_and_an_early_answer_is_still_read(serve: Any) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        if index == 0:
            head, body = server.next_request(reader) or ([], b"")
            sock.sendall(answer(b"%d bytes" % len(body)))
            return
        reader.readline()  # the request line only: refuse at once and close, as for an unknown stream
        sock.sendall(answer(b'{"message":"no such stream"}', "404 Not Found"))

    server = serve(handler)
    http = client()
    response = http.request("POST", server.url, {}, iter([b"abc", b"", b"defgh"]))
    assert response.read() == b"8 bytes"
    assert server.requests[0][1] == b"abcdefgh" and b"Transfer-Encoding: chunked" in server.requests[0][0]
    fresh = Client(2, 2)  # no idle connection: the second script runs
    server.connections = 1
    early = fresh.request("POST", server.url, {}, (b"x" * 65536 for _ in range(200)))
    assert early.status == 404 and b"no such stream" in early.read()


def test_transport_failures_are_send_errors(serve: Any) -> None:
    def handler(index: int, sock: socket.socket, reader: BinaryIO) -> None:
        server.next_request(reader)
        sock.sendall(answer(b"<html>busy</html>", "400 Bad Request", "x-amzn-ErrorType: ThrottlingException:http://x\r\n"))

    server = serve(handler)
    transport = Transport(StaticCredentials("AKID", "secret"), GatewaySection(read_timeout_seconds=2))
    with pytest.raises(SendError) as refused:
        transport.post(server.url, "kinesis", b"{}", {})
    assert (refused.value.code, refused.value.status) == ("ThrottlingException", 400)
    with pytest.raises(SendError) as down:
        transport.post(f"http://127.0.0.1:{free_port()}/", "kinesis", b"{}", {})
    assert down.value.code == CONNECTION and down.value.status == 0
