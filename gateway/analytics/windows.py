"""Flink SQL window table functions, rewritten to DuckDB SQL over a table of buffered rows.

A query names its window as Flink SQL does::

    FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
    FROM TABLE(HOP(TABLE readings, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))
    FROM TABLE(SESSION(TABLE readings PARTITION BY (device), DESCRIPTOR(ts), INTERVAL '30' SECONDS))

(TUMBLE and HOP take an optional last ``offset`` interval; HOP's arguments are slide, then size.)
The engine replaces the whole ``TABLE(...)`` call by the name of a table holding the rows of the
windows that just closed, with ``window_start``, ``window_end`` and ``window_time`` (= end minus
1 µs, Flink's rowtime of the window) added — so the rest of the query, GROUP BY window_start,
window_end included, is plain SQL that DuckDB runs vectorised over the whole batch. Times are
handled as epoch microseconds (``epoch_us``/``make_timestamp``), TIMESTAMP without time zone, UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CALL = re.compile(r"\bTABLE\s*\(\s*(TUMBLE|HOP|SESSION)\s*\(", re.IGNORECASE)
_TABLE_ARG = re.compile(r"TABLE\s+([A-Za-z_]\w*)(?:\s+PARTITION\s+BY\s*(?:\(([^)]*)\)|([A-Za-z_]\w*)))?\s*\Z", re.IGNORECASE | re.DOTALL)
_DESCRIPTOR = re.compile(r"DESCRIPTOR\s*\(\s*([A-Za-z_]\w*)\s*\)\s*\Z", re.IGNORECASE)
_INTERVAL = re.compile(r"INTERVAL\s+'?\s*(\d+(?:\.\d+)?)\s*'?\s+([A-Za-z]+)\s*\Z", re.IGNORECASE)
_UNITS = {"MILLISECOND": 1_000, "SECOND": 1_000_000, "MINUTE": 60_000_000, "HOUR": 3_600_000_000, "DAY": 86_400_000_000}
#: Columns a window adds to its rows.
WINDOW_COLUMNS = ("window_start", "window_end", "window_time")


@dataclass(frozen=True)
class Window:
    function: str  # TUMBLE, HOP or SESSION
    table: str
    time_column: str
    #: Window length (TUMBLE, HOP) or gap (SESSION), microseconds.
    size_us: int
    #: Distance between window starts (HOP; = size for TUMBLE; unused for SESSION), microseconds.
    slide_us: int
    offset_us: int
    partition_by: tuple[str, ...]
    #: Character span of the ``TABLE(...)`` call in the query text.
    span: tuple[int, int]

    def rewrite(self, sql: str, name: str) -> str:
        """``sql`` with the window call replaced by the table ``name``."""
        return sql[: self.span[0]] + name + sql[self.span[1] :]

    @property
    def retain_us(self) -> int:
        """How far before the last fired window end a row may still belong to an open window."""
        return self.size_us

    def fired_rows(self, pending: str, after_us: int | None, upto_us: int) -> str:
        """SELECT of the rows of every TUMBLE/HOP window whose end is in (after_us, upto_us]."""
        slide, size, off, col = self.slide_us, self.size_us, self.offset_us, _quote(self.time_column)
        end = f"(__k * {slide} + {off + size})"
        lower = "" if after_us is None else f"{end} > {after_us} AND "
        return (
            f"SELECT * EXCLUDE (__us, __k), make_timestamp(__k * {slide} + {off}) AS window_start, "
            f"make_timestamp({end}) AS window_end, make_timestamp({end} - 1) AS window_time FROM ("
            f"SELECT *, unnest(range((__us - {off + size}) // {slide} + 1, (__us - {off}) // {slide} + 1)) AS __k "
            f"FROM (SELECT *, epoch_us({col}) AS __us FROM {pending})) WHERE {lower}{end} <= {upto_us}"
        )

    def sessions(self, pending: str) -> str:
        """SELECT of every buffered row with the session it belongs to (SESSION)."""
        col, gap = _quote(self.time_column), self.size_us
        keys = ", ".join(_quote(k) for k in self.partition_by)
        part = f"PARTITION BY {keys} " if keys else ""
        whole = f"PARTITION BY {keys + ', ' if keys else ''}__sid"
        return (
            f"SELECT * EXCLUDE (__us, __brk, __sid), make_timestamp(min(__us) OVER ({whole})) AS window_start, "
            f"make_timestamp(max(__us) OVER ({whole}) + {gap}) AS window_end, "
            f"make_timestamp(max(__us) OVER ({whole}) + {gap} - 1) AS window_time FROM ("
            f"SELECT *, sum(__brk) OVER ({part}ORDER BY __us ROWS UNBOUNDED PRECEDING) AS __sid FROM ("
            f"SELECT *, epoch_us({col}) AS __us, CASE WHEN epoch_us({col}) - lag(epoch_us({col})) OVER ({part}ORDER BY {col}) < {gap} "
            f"THEN 0 ELSE 1 END AS __brk FROM {pending}))"
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _closing(sql: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start`` (skipping quoted text)."""
    depth = 0
    i = start
    while i < len(sql):
        ch = sql[i]
        if ch in "'\"":
            end = sql.find(ch, i + 1)
            if end < 0:
                break
            i = end
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced parentheses in the window call")


def _split(args: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    for ch in args:
        if ch == "'":
            quoted = not quoted
        if not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def interval_us(text: str) -> int:
    match = _INTERVAL.match(text.strip())
    if not match:
        raise ValueError(f"expected INTERVAL 'n' SECOND|MINUTE|HOUR|DAY|MILLISECOND, got {text.strip()!r}")
    unit = match.group(2).upper().rstrip("S")
    if unit not in _UNITS:
        raise ValueError(f"unknown interval unit {match.group(2)!r}")
    value = round(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"interval {text.strip()!r} must be positive")
    return value


def find_window(sql: str) -> Window | None:
    """The window call of ``sql`` (at most one), or None for a plain stream-to-stream query."""
    matches = list(_CALL.finditer(sql))
    if not matches:
        return None
    if len(matches) > 1:
        raise ValueError("a query may use one window table function")
    match = matches[0]
    outer_open = sql.index("(", match.start())
    outer_close = _closing(sql, outer_open)
    inner_open = match.end() - 1
    inner_close = _closing(sql, inner_open)
    if sql[inner_close + 1 : outer_close].strip():
        raise ValueError("unexpected text after the window call")
    function = match.group(1).upper()
    args = _split(sql[inner_open + 1 : inner_close])
    expected = {"TUMBLE": (3, 4), "HOP": (4, 5), "SESSION": (3, 3)}[function]
    if not expected[0] <= len(args) <= expected[1]:
        raise ValueError(f"{function} takes {expected[0]}{'' if expected[0] == expected[1] else ' or ' + str(expected[1])} arguments, got {len(args)}")
    table = _TABLE_ARG.match(args[0])
    if not table:
        raise ValueError(f"{function}: first argument must be TABLE <input>{' [PARTITION BY (...)]' if function == 'SESSION' else ''}, got {args[0]!r}")
    keys_text = table.group(2) or table.group(3) or ""
    keys = tuple(k.strip() for k in keys_text.split(",") if k.strip())
    if keys and function != "SESSION":
        raise ValueError(f"{function} does not take PARTITION BY")
    descriptor = _DESCRIPTOR.match(args[1])
    if not descriptor:
        raise ValueError(f"{function}: second argument must be DESCRIPTOR(<time column>), got {args[1]!r}")
    intervals = [interval_us(a) for a in args[2:]]
    if function == "TUMBLE":
        size, slide, offset = intervals[0], intervals[0], (intervals[1] if len(intervals) > 1 else 0)
    elif function == "HOP":
        slide, size, offset = intervals[0], intervals[1], (intervals[2] if len(intervals) > 2 else 0)
        if size % slide:
            raise ValueError("HOP: the size must be a whole multiple of the slide (as in Flink)")
    else:
        size, slide, offset = intervals[0], intervals[0], 0
    return Window(function, table.group(1), descriptor.group(1), size, slide, offset % slide if function != "SESSION" else 0, keys, (match.start(), outer_close + 1))
