"""One way to check a TOML config: frozen dataclasses whose type hints are the schema.

Used by the agent (``edge_agent.config``, every ``[[sources.*]]`` type) and the gateway
(``gateway.config``), so each reports errors the same way: *every* problem, one message each,
starting with its full key (``forwarder.batch_max_records: expected 1..500, got 501``).

Adding a section is one declarative block: a frozen dataclass whose fields have defaults and
``#:`` comments (the user documentation, copied into ``configs/*.example.toml``), a field for it
on the parent config, and, for rules the types cannot say, a ``check(self) -> list[str]`` method
returning ``"<key>: <what is wrong>"`` messages (keys relative to the section)::

    @dataclass(frozen=True)
    class FirehoseConfig:
        #: Seconds a delivery stream buffers before it writes.
        buffer_seconds: float = 300.0
        format: Literal["json", "parquet"] = "json"

        def check(self) -> list[str]:
            return positive(self, "buffer_seconds")

    @dataclass(frozen=True)
    class GatewayConfig:
        ...
        firehose: FirehoseConfig = field(default_factory=FirehoseConfig)

Supported field types: ``bool``, ``int`` (a bool is not an int), ``float`` (an int is taken),
``str``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]`` (a lone value becomes a 1-tuple),
``list[X]``, ``dict[str, X]`` and a nested config dataclass (a TOML table).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["build", "describe", "file_errors", "host_port", "key", "positive", "print_errors", "read_toml", "unmet", "url", "valid"]

T = TypeVar("T")


class TomlError(ValueError):
    """The file cannot be read or is not TOML; the message names the file."""


def key(prefix: str, name: str) -> str:
    """The full key of ``name`` inside the table at ``prefix`` (``""`` is the top level)."""
    return f"{prefix}.{name}" if prefix else name


def read_toml(path: str | Path, error: type[Exception] = TomlError) -> dict[str, Any]:
    """The parsed file; ``error`` (the caller's ConfigError) naming the file when it cannot be
    read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


def print_errors(path: str | Path, errors: list[str], heading: str = "") -> int:
    """What a CLI prints for a bad config file (to stderr): ``heading`` (by default
    ``<path>: N error(s)``), then each error indented; returns exit status 2."""
    print(heading or f"{path}: {len(errors)} error(s)", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)
    return 2


def valid(parsed: tuple[T | None, list[str]], error: type[Exception]) -> T:
    """The config of a ``(config, errors)`` parse, or ``error`` (the caller's ConfigError) listing
    every problem, one per line."""
    config, errors = parsed
    if config is None or errors:
        raise error("\n".join(errors))
    return config


def file_errors(path: str | Path, parse: Callable[[dict[str, Any]], tuple[Any, list[str]]], error: type[Exception]) -> list[str]:
    """Every error in the config file at ``path`` (empty when it is valid): that it cannot be read
    or parsed, or every problem ``parse`` finds in it."""
    try:
        values = read_toml(path, error)
    except error as exc:
        return [str(exc)]
    return parse(values)[1]


def build(cls: type[T], values: Any, prefix: str, errors: list[str], defaults: Mapping[str, Any] | None = None) -> T | None:
    """Dataclass ``cls`` from the TOML table ``values``, or None when anything is wrong.

    Every problem is appended to ``errors`` with its full key: unknown keys, missing required
    ones, wrong types, and the class's own ``check()`` (run on the good values, with defaults in
    place of the bad ones, so one typo does not hide another rule's complaint).
    ``defaults`` supplies values for absent fields that have no static default (a source's name).
    """
    if not isinstance(values, Mapping):
        errors.append(f"{prefix or 'config'}: expected a table, got {type(values).__name__}")
        return None
    before = len(errors)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for name in values:
        if name not in fields:
            errors.append(f"{key(prefix, name)}: unknown key (expected one of {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    missing = False
    for name, f in fields.items():
        if name not in values:
            if defaults is not None and name in defaults:
                kwargs[name] = defaults[name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(f"{key(prefix, name)}: required")
                missing = True
            continue
        value = _convert(values[name], hints[name], key(prefix, name), errors)
        if value is not _BAD:
            kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            missing = True
    if missing:
        return None
    config = cls(**kwargs)
    check = getattr(config, "check", None)
    if check is not None:
        errors.extend(key(prefix, message) for message in check())
    return config if len(errors) == before else None


def positive(config: Any, *names: str) -> list[str]:
    """``"<name>: must be > 0"`` for each named numeric field that is not positive."""
    return [f"{n}: must be > 0" for n in names if getattr(config, n) <= 0]


def unmet(config: Any, rules: list[tuple[str, bool, str]]) -> list[str]:
    """``"<name>: <why>, got <value>"`` for each ``(name, holds, why)`` rule that does not hold."""
    return [f"{name}: {why}, got {getattr(config, name)!r}" for name, holds, why in rules if not holds]


def url(value: str, name: str, allow_empty: bool = False) -> list[str]:
    """A problem if ``value`` is not an http(s) URL (or empty, when allowed)."""
    if allow_empty and not value:
        return []
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [f"{name}: expected an http:// or https:// URL, got {value!r}"]
    return []


def host_port(value: str, name: str) -> list[str]:
    """A problem if ``value`` is not ``host:port`` (empty is allowed: "off")."""
    if value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            return [f"{name}: expected host:port, got {value!r}"]
    return []


class _Bad:
    """Marks a value that failed its check (None is a valid value)."""


_BAD: Any = _Bad()
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_PLURALS = {str: "strings", int: "integers", float: "numbers"}


def describe(tp: Any) -> str:
    """What a value of annotation ``tp`` must be, as an error message says it."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = [repr(c) if isinstance(c, str) else str(c) for c in typing.get_args(tp)]
        return "expected " + (", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0])
    if origin in (Union, types.UnionType):
        return "expected " + " or ".join(describe(a).removeprefix("expected ") for a in typing.get_args(tp) if a is not type(None))
    if origin in (tuple, list):
        item = typing.get_args(tp)[0]
        return f"expected a list of {_PLURALS.get(item) or describe(item).removeprefix('expected ')}"
    if origin is dict:
        return f"expected a table of {describe(typing.get_args(tp)[1]).removeprefix('expected ')}"
    if dataclasses.is_dataclass(tp):
        return "expected a table"
    return f"expected {_NAMES.get(tp, getattr(tp, '__name__', str(tp)))}"


def _convert(value: Any, tp: Any, where: str, errors: list[str]) -> Any:
    """``value`` checked against annotation ``tp``; on failure one message and ``_BAD``."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        built = build(tp, value, where, errors)
        return _BAD if built is None else built
    ok, converted = _coerce(value, tp)
    if not ok:
        errors.append(f"{where}: {describe(tp)}, got {value!r}")
        return _BAD
    return converted


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return (True, value) if any(value == c and type(value) is type(c) for c in typing.get_args(tp)) else (False, None)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is not type(None):
                ok, converted = _coerce(value, arg)
                if ok:
                    return True, converted
        return False, None
    if origin in (tuple, list):
        item_type = typing.get_args(tp)[0]
        items = [value] if isinstance(value, str) and origin is tuple else value
        if not isinstance(items, (list, tuple)):
            return False, None
        out = []
        for item in items:
            ok, converted = _coerce(item, item_type)
            if not ok:
                return False, None
            out.append(converted)
        return True, (tuple(out) if origin is tuple else out)
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, Mapping):
            return False, None
        table = {}
        for k, v in value.items():
            ok, converted = _coerce(v, value_type)
            if not ok or not isinstance(k, key_type):
                return False, None
            table[k] = converted
        return True, table
    if tp is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if tp is int:
        return (True, value) if isinstance(value, int) and not isinstance(value, bool) else (False, None)
    if tp is float:
        return (True, float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else (False, None)
    if tp is str:
        return (True, value) if isinstance(value, str) else (False, None)
    return False, None
