"""Property tests: how input is cut into pieces by reads never changes the records that come out."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.sources.base import Rejects
from edge_agent.sources.logs import LogsConfig, _Head, _Tail
from edge_agent.sources.serial import Framer, SerialConfig
from edge_agent.spool import Spool

LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"."))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@given(lines=st.lists(LINE, max_size=30), points=st.lists(st.integers(min_value=0), max_size=10),
       terminator=st.sampled_from(["\n", "\r\n", "||"]))
def test_serial_line_framing_ignores_read_boundaries(lines: list[bytes], points: list[int], terminator: str) -> None:
    config = SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "terminator": terminator, "max_line_bytes": 30},
                                    "sources.serial[0]")
    term = terminator.encode()
    lines = [line.replace(term, b".").replace(b"\r", b".").replace(b"|", b".") for line in lines]
    data = b"".join(line + term for line in lines)
    whole = Framer(config, Rejects("prop-serial")).feed(data)
    framer = Framer(config, Rejects("prop-serial"))
    pieces = [record for piece in cut(data, points) for record in framer.feed(piece)]
    assert pieces == whole == [line for line in lines if len(line) <= 30]


@given(data=st.binary(max_size=300), points=st.lists(st.integers(min_value=0), max_size=10), size=st.integers(1, 9))
def test_serial_fixed_framing_ignores_read_boundaries(data: bytes, points: list[int], size: int) -> None:
    config = SerialConfig.from_dict({"stream": "s", "port": "/dev/x", "framing": "fixed", "record_length": size,
                                     "encoding": "binary"}, "sources.serial[0]")
    framer = Framer(config, Rejects("prop-serial"))
    records = [record for piece in cut(data, points) for record in framer.feed(piece)]
    assert b"".join(records) == data[: len(data) // size * size]
    assert all(len(r) == size for r in records)


def test_log_lines_ignore_read_boundaries(tmp_path: Path) -> None:
    config = LogsConfig.from_dict({"stream": "l", "paths": ["/x"], "max_line_bytes": 8}, "sources.logs[0]")
    with Spool(tmp_path / "spool.db") as spool:
        source = config.build(spool, "a")

        @settings(max_examples=100, deadline=None)
        @given(lines=st.lists(LINE, max_size=30), points=st.lists(st.integers(min_value=0), max_size=10), crlf=st.booleans())
        def check(lines: list[bytes], points: list[int], crlf: bool) -> None:
            lines = [line.replace(b"\r", b".") for line in lines]
            data = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines) + b"unfinished"
            tail = _Tail(0, 0, "/x", "/x", -1, 0, _Head(0, ""))
            records = [r for piece in cut(data, points) for r in source._lines(tail, piece)]
            kept = [line for line in lines if line]
            assert [r.data for r in records] == [line[:8] for line in kept]
            for record, line in zip(records, kept):
                assert (record.attrs or {}).get("original_bytes", len(line)) == len(line)
            assert tail.read_pos == len(data) and tail.read_pos - tail.pending_total == len(data) - len(b"unfinished")

        check()
