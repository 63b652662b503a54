"""Helpers for the tests/test_fuzz_*.py files: shape-driven hypothesis strategies and a raw HTTP client.

Inputs come from botocore's own service models, so every action gets bodies that are nearly
right (right member names, often the right types) as well as plain junk: nearly-right input is
what reaches deep into handlers, junk is what a broken client sends.
"""

from __future__ import annotations

import base64
import http.client
import os
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from hypothesis import strategies as st

#: ``EDGE_FUZZ_SCALE=20 pytest tests/test_fuzz_*.py`` runs 20x the examples (a longer hunt than CI's).
SCALE = max(1, int(os.environ.get("EDGE_FUZZ_SCALE", "1")))

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
JUNK = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
NAME_LIKE = st.one_of(st.from_regex(r"[a-zA-Z0-9_.-]{1,20}", fullmatch=True), st.text(max_size=300), st.just("../../etc/passwd"), st.just("a" * 300))


def weighted(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], ratio: int) -> st.SearchStrategy[Any]:
    """``usual`` ``ratio`` times as often as ``rare`` (``one_of`` would weigh them evenly)."""
    return st.integers(0, ratio).flatmap(lambda i: rare if i == 0 else usual)


def service_model(name: str) -> Any:
    return botocore.session.get_session().get_service_model(name)


def from_shape(shape: Any, names: st.SearchStrategy[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a botocore shape: usually well-typed (required members present), sometimes junk,
    with stream names drawn from ``names`` so requests reach existing streams."""
    if depth > 4:
        return JUNK
    kind = shape.type_name
    if kind == "structure":
        required = set(shape.required_members)
        members = {m: from_shape(s, names, depth + 1) for m, s in shape.members.items()}
        typed = st.fixed_dictionaries(
            {m: v for m, v in members.items() if m in required},
            optional={m: v for m, v in members.items() if m not in required},
        )
    elif kind == "list":
        typed = st.lists(from_shape(shape.member, names, depth + 1), max_size=4)
    elif kind == "map":
        typed = st.dictionaries(st.text(max_size=20), from_shape(shape.value, names, depth + 1), max_size=4)
    elif kind == "string":
        options = [st.text(max_size=40)]
        typed = st.one_of(*options)
        if shape.enum:
            typed = weighted(st.sampled_from(shape.enum), typed, 4)
        if "Name" in shape.name or "ARN" in shape.name or "Arn" in shape.name:
            typed = weighted(names, typed, 4)
    elif kind in ("integer", "long"):
        typed = weighted(st.integers(0, 10), st.integers(-(2**70), 2**70), 3)
    elif kind in ("float", "double"):
        typed = st.floats(allow_nan=True, allow_infinity=True)
    elif kind == "boolean":
        typed = st.booleans()
    elif kind == "blob":
        typed = st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=20))
    elif kind == "timestamp":
        typed = st.one_of(st.integers(1_600_000_000, 1_900_000_000), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
    else:
        typed = JUNK
    return weighted(typed, JUNK, 9)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RawClient:
    """Keep-alive HTTP/1.1 to one port; reconnects whenever the server closed the connection."""

    port: int
    timeout: float = 15.0
    conn: http.client.HTTPConnection | None = field(default=None, repr=False)
    sent: int = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, path: str, body: bytes, headers: dict[str, str], read_limit: int | None = None,
             timeout: float | None = None) -> Response:
        """POST and read the answer; ``read_limit`` stops reading a (streaming) success body early.

        Any failure (including a timeout) drops the connection, so the next call starts clean.
        """
        self.sent += 1
        for attempt in range(2):
            conn = self._connection()
            conn.timeout = timeout or self.timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.putrequest("POST", path, skip_accept_encoding=True)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    conn.putheader(name, value.encode("latin-1", "replace") if isinstance(value, str) else value)
                conn.endheaders(body)
                resp = conn.getresponse()
                headers_out = {k.lower(): v for k, v in resp.getheaders()}
                if read_limit is not None and resp.status < 400:
                    data = resp.read(read_limit)
                    self.close()  # a live stream would never end; drop it
                else:
                    data = resp.read()
                    if resp.will_close:
                        self.close()
                return Response(resp.status, headers_out, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_aws_error(resp: Response, context: object) -> None:
    """A 4xx answer must say, in the AWS way, what was wrong."""
    assert resp.status < 500, (resp.status, resp.body[:300], context)
    if resp.status >= 400:
        assert "x-amzn-errortype" in resp.headers or b"__type" in resp.body, (resp.status, resp.body[:300], context)
