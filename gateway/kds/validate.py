"""Input validation driven by botocore's own Kinesis model, so shapes and limits match AWS.

Wrong JSON types are ``SerializationException`` (AWS cannot even deserialize them); values of
the right type that break a constraint (min/max, pattern, enum, required) are
``ValidationException`` with AWS's "N validation error(s) detected" message. Blobs and
timestamps are converted in place to ``bytes`` and epoch seconds. One exception, for speed:
the entries of PutRecords' ``Records`` list are left to ``records``, which checks plain
entries inline and sends the others through ``validate_member``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from botocore.loaders import Loader
from botocore.model import ServiceModel, Shape

from gateway.errors import serialization, validation
from gateway.kds.protocol import Codec


@functools.cache
def service_model() -> ServiceModel:
    return ServiceModel(Loader().load_service_model("kinesis", "service-2"), "kinesis")


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


class _Checker:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.errors: list[str] = []

    def fail(self, path: str, value: Any, constraint: str) -> None:
        shown = "null" if value is None else f"'{value}'" if isinstance(value, str) else str(value)
        if len(shown) > 200:
            shown = shown[:200] + "...'"
        self.errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    def check(self, shape: Shape, value: Any, path: str) -> Any:
        kind = shape.type_name
        meta = shape.metadata
        if kind == "structure":
            if not isinstance(value, dict):
                raise serialization(f"{path or 'body'}: expected an object, got {type(value).__name__}")
            for name in shape.required_members:
                if value.get(name) is None:
                    self.fail(_join(path, name), None, "Member must not be null")
            members = shape.members
            for name, member_value in list(value.items()):
                member = members.get(name)
                if member_value is None:
                    del value[name]  # null is absent, as on AWS
                elif member is not None:
                    value[name] = self.check(member, member_value, _join(path, name))
            return value
        if kind == "list":
            if not isinstance(value, list):
                raise serialization(f"{path}: expected a list, got {type(value).__name__}")
            self._length(meta, value, path, "Member must have length")
            member = shape.member
            if member.name == "PutRecordsRequestEntry":
                return self._put_entries(member, value, path)
            return [self.check(member, item, f"{path}.{i + 1}.member") for i, item in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise serialization(f"{path}: expected a map, got {type(value).__name__}")
            self._length(meta, value, path, "Map must have length")
            return {self.check(shape.key, k, f"{path}.key"): self.check(shape.value, v, f"{path}.value") for k, v in value.items()}
        if kind == "string":
            if not isinstance(value, str):
                raise serialization(f"{path}: expected a string, got {type(value).__name__}")
            self._length(meta, value, path, "Member must have length")
            if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
                self.fail(path, value, f"Member must satisfy regular expression pattern: {meta['pattern']}")
            if shape.enum and value not in shape.enum:
                self.fail(path, value, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
            return value
        if kind in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise serialization(f"{path}: expected an integer, got {type(value).__name__}")
            if "min" in meta and value < meta["min"]:
                self.fail(path, value, f"Member must have value greater than or equal to {meta['min']}")
            if "max" in meta and value > meta["max"]:
                self.fail(path, value, f"Member must have value less than or equal to {meta['max']}")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise serialization(f"{path}: expected a boolean, got {type(value).__name__}")
            return value
        if kind == "blob":
            return self.codec.parse_blob(value, path)
        if kind == "timestamp":
            return self.codec.parse_ts(value, path)
        return value

    def _put_entries(self, member: Shape, entries: list[Any], path: str) -> list[Any]:
        """The hot path (500 records per call) is left to ``records.put_entries``, which
        checks plain entries inline and hands anything unusual to ``validate_member``."""
        return entries

    def _length(self, meta: dict[str, Any], value: Any, path: str, what: str) -> None:
        n = len(value)
        if "min" in meta and n < meta["min"]:
            self.fail(path, value if isinstance(value, str) else None, f"{what} greater than or equal to {meta['min']}")
        if "max" in meta and n > meta["max"]:
            self.fail(path, value if isinstance(value, str) else None, f"{what} less than or equal to {meta['max']}")


def _join(path: str, name: str) -> str:
    name = _lower_first(name)
    return f"{path}.{name}" if path else name


def validate(operation: str, body: dict[str, Any], codec: Codec) -> dict[str, Any]:
    """Check ``body`` against ``operation``'s input shape; blobs/timestamps come back decoded."""
    shape = service_model().operation_model(operation).input_shape
    if shape is None:
        return {}
    checker = _Checker(codec)
    checked = checker.check(shape, body, "")
    if checker.errors:
        n = len(checker.errors)
        raise validation(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(checker.errors))
    return checked


def validate_member(shape_name: str, value: Any, path: str, codec: Codec) -> Any:
    """Check one value against a named shape of the model (same errors as ``validate``)."""
    checker = _Checker(codec)
    checked = checker.check(service_model().shape_for(shape_name), value, path)
    if checker.errors:
        n = len(checker.errors)
        raise validation(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(checker.errors))
    return checked
