"""Input validation driven by botocore's own model, so shapes, limits and wording match AWS.

Two kinds of error, as AWS's JSON services (Coral) answer them:

* ``SerializationException``: a value of the wrong JSON/CBOR type cannot even be deserialized.
  The first one ends the request, worded as AWS words it ("class java.lang.String can not be
  converted to an Integer", "Start of list found where not expected", ...).
* ``ValidationException``: values of the right type that break a constraint. Every violation is
  listed, members in the model's order, each constraint in the order pattern, length, enum, range::

      2 validation errors detected: Value null at 'streamName' failed to satisfy constraint:
      Member must not be null; Value '0' at 'shardCount' failed to satisfy constraint: Member
      must have value greater than or equal to 1

  Values are shown as Java prints them (blobs as ``java.nio.HeapByteBuffer[...]``, lists as
  ``[a, b]``, maps as ``{k=v}``). Constraints on the members of a list of scalars or on the keys
  and values of a map are gathered into one "Member must satisfy constraint: [...]" entry.

Blobs and timestamps come back converted in place to ``bytes`` and epoch seconds. One
exception, for speed: the entries of PutRecords' ``Records`` list are left to ``records``,
which checks plain entries inline and sends the others through ``validate_member``. The
checker works for any JSON-protocol model (``service_model(name)``).
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import math
import re
from typing import Any

from botocore.loaders import Loader
from botocore.model import ServiceModel, Shape

from gateway.errors import AwsError, serialization, validation
from gateway.kds.protocol import Codec

_NUMBER_CLASS = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber"
_BASE64_ALPHABET = re.compile(r"[^A-Za-z0-9+/=]|=[^=]")


@functools.cache
def service_model(name: str = "kinesis") -> ServiceModel:
    return ServiceModel(Loader().load_service_model(name, "service-2"), name)


#: Java regex classes some models use (Firehose and Glue tags) -> Python ``re`` (\w is a superset of \p{L})
_JAVA_CLASSES = {
    "\\p{L}": "\\w", "\\p{N}": "\\d", "\\p{Z}": "\\s", "\\p{M}": "\\w", "\\p{P}": "\\W",
    # Java spells the astral planes as a surrogate-pair range (Glue's text patterns)
    "\\uD800\\uDC00-\\uDBFF\\uDFFF": "\\U00010000-\\U0010FFFF",
}


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct we do not translate: accept rather than fail every call
        return re.compile(".*", re.DOTALL)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def java_repr(value: Any) -> str:
    """``value`` as Coral shows it inside the quotes of "Value '...' at ..."."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        n = len(value)
        return f"java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(java_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{java_repr(k)}={java_repr(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return str(value)


def _wrong_type(value: Any, target: str) -> AwsError:
    """AWS's deserializer message for ``value`` where a ``target`` (Java type) was expected."""
    if isinstance(value, list):
        return serialization("Start of list found where not expected")
    if isinstance(value, dict):
        return serialization("Start of structure or map found where not expected.")
    article = "a" if target in ("Blob",) else "an"
    if isinstance(value, bool):
        return serialization(f"class java.lang.Boolean can not be converted to {article} {target}")
    if isinstance(value, (int, float)):
        return serialization(f"{_NUMBER_CLASS} can not be converted to {article} {target}")
    if isinstance(value, str):
        return serialization(f"class java.lang.String can not be converted to {article} {target}")
    return serialization(f"class {type(value).__name__} can not be converted to {article} {target}")


class _Checker:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.errors: list[str] = []

    def fail(self, path: str, value: Any, constraint: str) -> None:
        shown = "null" if value is None else f"'{java_repr(value)}'"
        self.errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    def check(self, shape: Shape, value: Any, path: str) -> Any:
        """Convert ``value`` (raising SerializationException) and record constraint violations."""
        before = len(self.errors)
        value = self.convert(shape, value, path)
        mine = _Checker(self.codec)
        for constraint in self.constraints(shape, value, path):
            mine.fail(path, value, constraint)
        self.errors[before:before] = mine.errors  # a container's own errors before its members'
        return value

    def convert(self, shape: Shape, value: Any, path: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            if not isinstance(value, dict):
                if isinstance(value, list):
                    raise serialization("Start of list found where not expected")
                raise serialization("Expected null")
            out: dict[str, Any] = {}
            required = shape.required_members
            for name, member in shape.members.items():  # model order, as AWS lists them
                member_value = value.get(name)
                if member_value is None:  # null is absent, as on AWS
                    if name in required:
                        self.fail(_join(path, name), None, "Member must not be null")
                    continue
                out[name] = self.check(member, member_value, _join(path, name))
            return out
        if kind == "list":
            if isinstance(value, dict):
                raise serialization("Start of structure or map found where not expected.")
            if not isinstance(value, list):
                raise serialization("Expected list or null")
            member = shape.member
            if member.name == "PutRecordsRequestEntry":
                return value  # the hot path: checked by records._entries
            if member.type_name in ("structure", "list", "map"):
                return [self.check(member, item, f"{path}.{i + 1}.member") for i, item in enumerate(value)]
            return [self.convert(member, item, f"{path}.{i + 1}.member") for i, item in enumerate(value)]
        if kind == "map":
            if isinstance(value, list):
                raise serialization("Start of list found where not expected")
            if not isinstance(value, dict):
                raise serialization("Expected map or null")
            return {self.convert(shape.key, k, f"{path}.key"): self.convert(shape.value, v, f"{path}.value") for k, v in value.items()}
        if kind == "string":
            if isinstance(value, str):
                return value
            if self.codec.is_cbor and isinstance(value, (bytes, bytearray)):
                raise serialization("class [B can not be converted to an String")
            raise _wrong_type(value, "String")
        if kind in ("integer", "long"):
            if isinstance(value, float) and math.isfinite(value):
                return int(math.floor(value))  # Coral truncates
            if isinstance(value, bool) or not isinstance(value, int):
                raise _wrong_type(value, "Integer" if kind == "integer" else "Long")
            return value
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                if value.lower() in ("true", "false"):
                    return value.lower() == "true"
                raise serialization(f"'{value.upper()}' can not be converted to an Boolean")
            raise _wrong_type(value, "Boolean")
        if kind == "blob":
            return self.blob(value)
        if kind == "timestamp":
            return self.timestamp(value)
        return value

    def blob(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)) and self.codec.is_cbor:
            return bytes(value)
        if not isinstance(value, str):
            raise _wrong_type(value, "Blob")
        if len(value) % 4:
            raise serialization(f"'{value}' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: {len(value) % 4}")
        bad = _BASE64_ALPHABET.search(value)
        if bad:
            raise serialization(f"'{value}' can not be converted to a Blob: Invalid Base64 character: '{bad.group(0)[0]}'")
        try:
            data = binascii.a2b_base64(value, strict_mode=True)
        except ValueError as exc:
            raise serialization(f"'{value}' can not be converted to a Blob: Invalid last non-pad Base64 character dectected") from exc
        if binascii.b2a_base64(data, newline=False).decode() != value:
            raise serialization(f"'{value}' can not be converted to a Blob: Invalid last non-pad Base64 character dectected")
        return data

    def timestamp(self, value: Any) -> float:
        if isinstance(value, dt.datetime):  # CBOR tag 1, decoded by the codec
            return value.timestamp()
        if isinstance(value, bool):
            raise serialization("class java.lang.Boolean can not be converted to milliseconds since epoch")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value) / (1000.0 if self.codec.is_cbor else 1.0)
        if isinstance(value, str):
            raise serialization("class java.lang.String can not be converted to milliseconds since epoch")
        if isinstance(value, list):
            raise serialization("Start of list found where not expected")
        if isinstance(value, dict):
            raise serialization("Start of structure or map found where not expected.")
        raise serialization(f"class {type(value).__name__} can not be converted to milliseconds since epoch")

    def constraints(self, shape: Shape, value: Any, path: str) -> list[str]:
        """The constraints ``value`` (already converted) breaks, worded as AWS words them."""
        meta = shape.metadata
        kind = shape.type_name
        out: list[str] = []
        if kind == "string":
            if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
                out.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
            out += _length(meta, len(value), "Member must have length")
            if shape.enum and value not in shape.enum:
                out.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        elif kind in ("integer", "long"):
            if "min" in meta and value < meta["min"]:
                out.append(f"Member must have value greater than or equal to {meta['min']}")
            if "max" in meta and value > meta["max"]:
                out.append(f"Member must have value less than or equal to {meta['max']}")
        elif kind == "blob":
            out += _length(meta, len(value), "Member must have length")
        elif kind == "list":
            out += _length(meta, len(value), "Member must have length")
            member = shape.member
            if member.type_name not in ("structure", "list", "map"):
                inner = _unique(c for item in value for c in self.constraints(member, item, path))
                if inner:
                    out.append(f"Member must satisfy constraint: [{', '.join(inner)}]")
        elif kind == "map":
            out += _length(meta, len(value), "Map must have length")
            keys = _unique(c for k in value for c in self.constraints(shape.key, k, path))
            if keys:
                out.append(f"Map keys must satisfy constraint: [{', '.join(keys)}]")
            values = _unique(c for v in value.values() for c in self.constraints(shape.value, v, path))
            if values:
                out.append(f"Map value must satisfy constraint: [{', '.join(values)}]")
        return out


def _length(meta: dict[str, Any], n: int, what: str) -> list[str]:
    out = []
    if "min" in meta and n < meta["min"]:
        out.append(f"{what} greater than or equal to {meta['min']}")
    if "max" in meta and n > meta["max"]:
        out.append(f"{what} less than or equal to {meta['max']}")
    return out


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _join(path: str, name: str) -> str:
    name = _lower_first(name)
    return f"{path}.{name}" if path else name


def validation_error(errors: list[str]) -> AwsError:
    """AWS's ValidationException for a list of "Value ... at ..." entries."""
    n = len(errors)
    return validation(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors))


def violation(path: str, value: Any, constraint: str) -> AwsError:
    """A ValidationException for one violation found outside the model (a business limit)."""
    checker = _Checker(_NO_CODEC)
    checker.fail(path, value, constraint)
    return validation_error(checker.errors)


def validate(operation: str, body: dict[str, Any], codec: Codec, service: str = "kinesis") -> dict[str, Any]:
    """Check ``body`` against ``operation``'s input shape; blobs/timestamps come back decoded."""
    shape = service_model(service).operation_model(operation).input_shape
    if shape is None:
        return {}
    checker = _Checker(codec)
    checked = checker.check(shape, body, "")
    if checker.errors:
        raise validation_error(checker.errors)
    return checked  # type: ignore[no-any-return]


def validate_member(shape_name: str, value: Any, path: str, codec: Codec, service: str = "kinesis") -> Any:
    """Check one value against a named shape of the model (same errors as ``validate``)."""
    checker = _Checker(codec)
    checked = checker.check(service_model(service).shape_for(shape_name), value, path)
    if checker.errors:
        raise validation_error(checker.errors)
    return checked


_NO_CODEC = Codec()
