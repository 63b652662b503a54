"""The SigV4 signature of a request, recomputed the way the client computed it.

botocore's ``SigV4Auth`` -- the signer boto3, the AWS CLI and our agent use -- is the reference:
it is fed the request as the client built it (exactly the headers named in SignedHeaders, the
client's payload hash and time). Its canonicalisation is general (any path, query string, header
set) and costs more than everything else a PutRecords request does on the gateway's side, so the
common case -- a plain path, no query string -- is canonicalised here by a few lines that
``tests/test_auth_canonical.py`` holds equal to botocore's; a signature that does not match the
fast form is checked against botocore's before it is refused, so the shortcut can only save time,
never change a verdict on a correctly signed request.

Derived signing keys are cached per key/date/region/service: one HMAC per request, not five.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from botocore.auth import EMPTY_SHA256_HASH, SigV4Auth
from botocore.credentials import Credentials
from multidict import MultiMapping

Headers = MultiMapping[str]

ALGORITHM = "AWS4-HMAC-SHA256"
#: Bodies larger than this are hashed in a worker thread (hashlib releases the GIL).
HASH_IN_THREAD_BYTES = 256 * 1024
#: hashlib releases the GIL for updates larger than this; the event loop then waits to get it back
#: from whatever thread took it (up to the 5 ms switch interval), so small bodies are fed below it.
_GIL_RELEASE_BYTES = 2047
#: Paths the fast canonical form handles: segments of unreserved characters, no dots, no query.
_PLAIN_PATH = re.compile(r"/|(?:/[A-Za-z0-9_~-]+)+")


@dataclass(frozen=True)
class Scope:
    """Who signed, when and for what: the inputs of the signing key and of the string to sign."""

    access_key: str
    secret: str
    amz_date: str
    region: str
    service: str


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """``kSigning`` of the SigV4 key derivation; cached because it is four HMACs per request."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(scope: Scope, canonical_request: str) -> str:
    string_to_sign = "\n".join((
        ALGORITHM,
        scope.amz_date,
        f"{scope.amz_date[:8]}/{scope.region}/{scope.service}/aws4_request",
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ))
    key = signing_key(scope.secret, scope.amz_date[:8], scope.region, scope.service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def fast_canonical_request(method: str, raw_path: str, headers: Headers, signed: tuple[str, ...], payload_hash: str) -> str | None:
    """The canonical request for a plain path without query string; None when botocore must do it."""
    if not _PLAIN_PATH.fullmatch(raw_path):
        return None
    names = sorted(set(signed))
    lines = []
    for name in names:
        values = headers.getall(name, [])
        if not values:
            return None
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    return "\n".join((method.upper(), raw_path, "", "\n".join(lines) + "\n", ";".join(names), payload_hash))


# -- the botocore reference ---------------------------------------------------------------------------


class _SignedHeaders:
    """The headers a client signed, shaped the way botocore's signer reads them (keys, ``get_all``,
    ``in``, ``[]``) -- a plain dict instead of botocore's email-based ``HTTPHeaders``, which costs more
    than the rest of the verification together."""

    def __init__(self, headers: Headers, names: tuple[str, ...]) -> None:
        self._values = {name: values for name in names if (values := headers.getall(name, []))}

    def __iter__(self) -> Any:
        return iter(self._values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()][0]

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name.lower(), [])


@dataclass
class _Request:
    """The parts of an ``AWSRequest`` that ``SigV4Auth.canonical_request`` / ``string_to_sign`` read."""

    method: str
    url: str
    headers: _SignedHeaders
    context: dict[str, Any]
    payload_hash: str
    params: dict[str, str] = field(default_factory=dict)


class _Signer(SigV4Auth):
    """botocore's SigV4 signer, held to the client's choices: signed headers, payload hash, time."""

    def headers_to_sign(self, request: Any) -> Any:
        return request.headers  # exactly the headers named in SignedHeaders, nothing dropped

    def payload(self, request: Any) -> str:
        return str(request.payload_hash)


@lru_cache(maxsize=256)
def _signer(access_key: str, secret: str, service: str, region: str) -> _Signer:
    return _Signer(Credentials(access_key, secret), service, region)


def botocore_canonical_request(method: str, raw_path: str, headers: Headers, signed: tuple[str, ...], payload_hash: str,
                               scope: Scope) -> str:
    # only the path and query of this URL are signed; the host comes from the (signed) Host header
    request = _Request(method, f"http://gateway{raw_path}", _SignedHeaders(headers, signed), {"timestamp": scope.amz_date}, payload_hash)
    return str(_signer(scope.access_key, scope.secret, scope.service, scope.region).canonical_request(request))


def signature_matches(method: str, raw_path: str, headers: Headers, signed: tuple[str, ...], payload_hash: str, scope: Scope,
                      claimed: str) -> bool:
    """Whether ``claimed`` is the signature of this request under ``scope`` (constant-time compare)."""
    fast = fast_canonical_request(method, raw_path, headers, signed, payload_hash)
    if fast is not None and hmac.compare_digest(_sign(scope, fast), claimed):
        return True
    reference = botocore_canonical_request(method, raw_path, headers, signed, payload_hash, scope)
    return hmac.compare_digest(_sign(scope, reference), claimed)


# -- the payload hash ---------------------------------------------------------------------------------


def _sha256_holding_gil(body: bytes) -> str:
    digest = hashlib.sha256()
    view = memoryview(body)
    for start in range(0, len(view), _GIL_RELEASE_BYTES):
        digest.update(view[start:start + _GIL_RELEASE_BYTES])
    return digest.hexdigest()


async def sha256_hex(body: bytes) -> str:
    """The payload hash of a body read whole (large ones hashed off the event loop)."""
    if not body:
        return EMPTY_SHA256_HASH
    if len(body) > HASH_IN_THREAD_BYTES:
        return await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
    return _sha256_holding_gil(body)
