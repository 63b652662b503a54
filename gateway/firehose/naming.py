"""S3 object keys as Firehose forms them: ``<evaluated prefix><stream>-<version>-<time>-<uuid><ext>``.

Prefix expressions (``Prefix``, ``ErrorOutputPrefix``)::

    !{timestamp:<Java DateTimeFormatter pattern>}   arrival time of the object's oldest record
    !{firehose:random-string}                       11 random characters
    !{firehose:error-output-type}                   processing-failed, format-conversion-failed, ...
    !{partitionKeyFromQuery:<key>}                  a dynamic partitioning key (MetadataExtraction)
    !{partitionKeyFromLambda:<key>}                 a key the transform returned

A prefix without any ``timestamp`` expression gets the default ``yyyy/MM/dd/HH/`` appended (none
at all: the default prefix alone), unless dynamic partitioning is on. Times are UTC unless the
destination's ``CustomTimeZone`` names another zone. "Random" parts are drawn from a generator
seeded by the batch (stream, version, first record), so a batch written again after a crash
lands on the same keys instead of beside them.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import AwsError

EXPRESSION = re.compile(r"!\{([A-Za-z]+):([^}]*)\}")
NAMESPACES = ("timestamp", "firehose", "partitionKeyFromQuery", "partitionKeyFromLambda")
ERROR_TYPES = ("processing-failed", "format-conversion-failed", "http-endpoint-failed", "iceberg-failed")
DEFAULT_TIME_PREFIX = "!{timestamp:yyyy/MM/dd/HH}/"

#: Java DateTimeFormatter letters we translate (the ones prefixes use) -> strftime
_JAVA_FIELDS = {
    "yyyy": "%Y", "uuuu": "%Y", "yy": "%y", "uu": "%y", "MMMM": "%B", "MMM": "%b", "MM": "%m",
    "dd": "%d", "HH": "%H", "hh": "%I", "mm": "%M", "ss": "%S", "a": "%p", "DDD": "%j",
    "EEEE": "%A", "EEE": "%a", "ww": "%V", "Z": "%z",
}
_JAVA_TOKEN = re.compile(r"'([^']*)'|([A-Za-z])\2*|([^A-Za-z']+)")


def invalid(message: str) -> AwsError:
    return AwsError("InvalidArgumentException", message)


def java_pattern(pattern: str) -> str:
    """Translate a Java DateTimeFormatter pattern to strftime; unknown letters are an error."""
    out: list[str] = []
    pos = 0
    while pos < len(pattern):
        match = _JAVA_TOKEN.match(pattern, pos)
        if match is None:
            raise invalid(f"Invalid timestamp format in expression: {pattern!r}")
        quoted, letters, literal = match.group(1), match.group(0) if match.group(2) else None, match.group(3)
        if quoted is not None:
            out.append((quoted or "'").replace("%", "%%"))
        elif letters is not None:
            if letters not in _JAVA_FIELDS:
                raise invalid(f"Invalid timestamp format in expression: unsupported field {letters!r} in {pattern!r}")
            out.append(_JAVA_FIELDS[letters])
        else:
            out.append((literal or "").replace("%", "%%"))
        pos = match.end()
    return "".join(out)


def time_zone(name: str | None) -> tzinfo:
    if not name or name == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise invalid(f"CustomTimeZone {name!r} is not a valid time zone.") from exc


def check_prefix(prefix: str, *, partitioned: bool, error_prefix: bool) -> None:
    """Reject what AWS rejects at CreateDeliveryStream/UpdateDestination time."""
    for namespace, value in EXPRESSION.findall(prefix):
        if namespace not in NAMESPACES:
            raise invalid(f"The expression namespace {namespace!r} in {prefix!r} is not valid. Valid namespaces: {', '.join(NAMESPACES)}.")
        if namespace == "timestamp":
            java_pattern(value)
        elif namespace == "firehose" and value not in ("random-string", "error-output-type"):
            raise invalid(f"The expression !{{firehose:{value}}} is not valid; use random-string or error-output-type.")
        elif namespace == "firehose" and value == "error-output-type" and not error_prefix:
            raise invalid("The !{firehose:error-output-type} expression is only allowed in ErrorOutputPrefix.")
        elif namespace.startswith("partitionKey"):
            if error_prefix:
                raise invalid("ErrorOutputPrefix cannot contain partitionKeyFromQuery or partitionKeyFromLambda expressions.")
            if not partitioned:
                raise invalid(f"The expression !{{{namespace}:{value}}} requires dynamic partitioning to be enabled.")
    if "!{" in EXPRESSION.sub("", prefix):
        raise invalid(f"Prefix {prefix!r} has an unterminated or malformed expression.")


def has_timestamp(prefix: str) -> bool:
    return any(ns == "timestamp" for ns, _ in EXPRESSION.findall(prefix))


class Namer:
    """Keys for the objects of one batch (deterministic in ``seed``)."""

    def __init__(self, stream: str, version: int, seed: str, zone: tzinfo) -> None:
        self.stream = stream
        self.version = version
        self.zone = zone
        self._random = random.Random(seed)

    def _random_string(self) -> str:
        return "".join(self._random.choice(string.ascii_letters + string.digits) for _ in range(11))

    def prefix(self, template: str, oldest: float, *, partitioned: bool = False, keys: Mapping[str, str] | None = None, error_type: str = "") -> str:
        if not template:
            template = DEFAULT_TIME_PREFIX
        elif not partitioned and not has_timestamp(template):
            template += DEFAULT_TIME_PREFIX
        when = datetime.fromtimestamp(oldest, self.zone)

        def evaluate(match: re.Match[str]) -> str:
            namespace, value = match.group(1), match.group(2)
            if namespace == "timestamp":
                return when.strftime(java_pattern(value))
            if namespace == "firehose":
                return error_type if value == "error-output-type" else self._random_string()
            return (keys or {}).get(value, "")

        return EXPRESSION.sub(evaluate, template)

    def object_name(self, oldest: float, extension: str) -> str:
        when = datetime.fromtimestamp(oldest, self.zone).strftime("%Y-%m-%d-%H-%M-%S")
        unique = uuid.UUID(int=self._random.getrandbits(128), version=4)
        return f"{self.stream}-{self.version}-{when}-{unique}{extension}"
