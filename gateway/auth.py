"""SigV4 verification: with credentials configured, every API call must be signed by a known key.

Which requests are API calls: ``POST /`` with ``X-Amz-Target`` (service ``kinesis``, ``firehose`` or
``glue`` by the target's prefix, see ``TARGET_SERVICES``) and every other ``POST`` (service
``kinesisvideo``: control plane, PutMedia, GetMedia, archived media).
``GET`` routes (the player page, HLS/DASH session URLs) are not AWS API calls and are left to
their own handlers, as on AWS where session URLs carry their own token.

The signature itself is computed in ``gateway.sigv4`` (botocore's ``SigV4Auth`` is the reference).

Errors, as AWS answers them (JSON 1.1 services answer auth errors with 400, rest-json with 403):

    no Authorization header      MissingAuthenticationTokenException
    malformed header / no date   IncompleteSignatureException
    unknown access key           UnrecognizedClientException
    wrong signature, stale date  InvalidSignatureException
    stream not allowed for key   AccessDeniedException (kinesis 400, kinesisvideo 401),
                                 NotAuthorizedException (video media APIs, 401)

PutMedia bodies are streamed and cannot be hashed before the handler runs: there the payload
hash is whatever ``x-amz-content-sha256`` says (``UNSIGNED-PAYLOAD`` is accepted), or, without
that header, the hash of an empty body -- what the KVS producer SDK signs for streaming calls.

``[auth] allowed_streams`` restricts a key to the streams a request names (``StreamName``,
``StreamARN``, ``ConsumerARN``, ``ResourceARN``, PutMedia's ``x-amzn-stream-name``/``-arn``). Calls
that name no stream -- ListStreams, DescribeLimits, GetRecords with an iterator (which only an allowed
GetShardIterator hands out) -- stay open to every known key.

Where the keys come from (config, credentials file, environment): ``gateway.credentials``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import cbor2
from aiohttp import web
from botocore.auth import EMPTY_SHA256_HASH

from gateway.config import DEFAULT_ACCOUNT_ID, AuthConfig
from gateway.errors import AwsError
from gateway.limits import STREAMING_PATHS
from gateway.sigv4 import ALGORITHM, Scope, sha256_hex, signature_matches
from gateway.wire import stream_name_from_arn

log = logging.getLogger("gateway.auth")

AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: Kinesis Video paths served by the media / archived-media endpoints (NotAuthorizedException there).
VIDEO_MEDIA_PATHS = frozenset(
    {"/putMedia", "/getMedia", "/getClip", "/getDASHStreamingSessionURL", "/getHLSStreamingSessionURL",
     "/getImages", "/getMediaForFragmentList", "/listFragments"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: X-Amz-Target prefix -> the service name its SigV4 scope carries (JSON 1.1, errors with HTTP 400).
TARGET_SERVICES = {"Kinesis_20131202": "kinesis", "Firehose_20150804": "firehose", "AWSGlue": "glue"}
JSON_SERVICES = frozenset(TARGET_SERVICES.values())


# ----------------------------------------------------------------------------- errors


def _auth_error(code: str, message: str, service: str) -> AwsError:
    return AwsError(code, message, 400 if service in JSON_SERVICES else 403)


def _access_denied(service: str, path: str, message: str) -> AwsError:
    if service in JSON_SERVICES:
        return AwsError("AccessDeniedException", message, 400)
    code = "NotAuthorizedException" if path in VIDEO_MEDIA_PATHS else "AccessDeniedException"
    return AwsError(code, message, 401)


SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Authorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 Credential=..., ...`` header."""

    access_key: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str, service: str) -> Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _auth_error("IncompleteSignatureException", f"Unsupported AWS 'algorithm': '{algorithm[:40]}'", service)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key] = val.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise _auth_error(
            "IncompleteSignatureException",
            " ".join(f"Authorization header requires '{k}' parameter." for k in missing),
            service,
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise _auth_error(
            "IncompleteSignatureException",
            f"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{fields['Credential'][:200]}'",
            service,
        )
    signed = tuple(fields["SignedHeaders"].lower().split(";"))
    if "host" not in signed and ":authority" not in signed:  # HTTP/2 clients sign :authority instead
        raise _auth_error("IncompleteSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization.", service)
    return Authorization(scope[0], scope[1], scope[2], scope[3], scope[4], signed, fields["Signature"])


def _parse_amz_date(value: str) -> datetime:
    """``YYYYMMDDTHHMMSSZ`` -> aware datetime; 10x faster than ``strptime``, which matters per request."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        raise ValueError(f"'{value[:40]}' is not YYYYMMDD'T'HHMMSS'Z'")
    v = value
    return datetime(int(v[0:4]), int(v[4:6]), int(v[6:8]), int(v[9:11]), int(v[11:13]), int(v[13:15]), tzinfo=timezone.utc)


def request_time(request: web.Request, service: str) -> tuple[str, float]:
    """The signing time as (``YYYYMMDDTHHMMSSZ``, epoch seconds), from X-Amz-Date or Date."""
    amz_date = request.headers.get("X-Amz-Date")
    try:
        if amz_date:
            when = _parse_amz_date(amz_date)
        elif "Date" in request.headers:
            when = parsedate_to_datetime(request.headers["Date"]).astimezone(timezone.utc)
            amz_date = when.strftime(AMZ_DATE_FORMAT)
        else:
            raise _auth_error(
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
                service,
            )
    except (ValueError, TypeError) as exc:
        raise _auth_error("IncompleteSignatureException", f"Unparsable request date: {exc}", service) from exc
    return amz_date, when.timestamp()


# ----------------------------------------------------------------------------- policy


def service_of(request: web.Request) -> str | None:
    """The SigV4 service name of an API request, or None if the request is not an API call."""
    if request.method != "POST":
        return None
    if request.path != "/":
        return "kinesisvideo"
    return TARGET_SERVICES.get(request.headers.get("X-Amz-Target", "").partition(".")[0], "kinesis")


def action_of(request: web.Request, service: str) -> str:
    if service in JSON_SERVICES:
        return request.headers.get("X-Amz-Target", "").rpartition(".")[2] or "Unknown"
    name = request.path.lstrip("/")
    return name[:1].upper() + name[1:]


def requested_streams(request: web.Request, body: bytes) -> set[str]:
    """Stream names a request touches (headers for PutMedia, body fields otherwise)."""
    names: set[str] = set()
    if "x-amzn-stream-name" in request.headers:
        names.add(request.headers["x-amzn-stream-name"])
    if "x-amzn-stream-arn" in request.headers:
        names.add(stream_name_from_arn(request.headers["x-amzn-stream-arn"]))
    if not body:
        return names
    try:
        doc = cbor2.loads(body) if "cbor" in request.content_type else json.loads(body)
    except Exception:  # the handler reports the malformed body; nothing named here
        return names
    if isinstance(doc, dict):
        for field in ("StreamName", "DeliveryStreamName"):
            if field in doc:
                name = doc[field]
                names.add(name if isinstance(name, str) else "")
        for field in ("StreamARN", "ConsumerARN", "ResourceARN"):
            if field in doc:
                names.add(stream_name_from_arn(doc[field]))
    return names


# ----------------------------------------------------------------------------- middleware


class RefusalLog:
    """Logs refused requests for the operator -- once per (client, error) a minute, with a count,
    so a misconfigured device or a scanner cannot flood the log."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def refused(self, request: web.Request, error: AwsError, access_key: str = "") -> None:
        key = (request.remote or "?", error.code)
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = (now, 0)
        more = f" (+{suppressed} more in the last minute)" if suppressed else ""
        who = f" key {access_key}" if access_key else ""
        log.warning("refused %s %s from %s%s: %s: %s%s", request.method, request.path, key[0], who, error.code, error.message[:200], more)


@dataclass(frozen=True)
class _Claim:
    """What a request's headers claim (who signed, when), checked before its body is read."""

    service: str
    auth: Authorization
    secret: str
    amz_date: str


#: Where ``headers_middleware`` leaves its ``_Claim`` for ``signature_middleware`` (aiohttp < 3.12: a str key).
CLAIM_KEY: Any = web.RequestKey("sigv4_claim", _Claim) if hasattr(web, "RequestKey") else "sigv4_claim"


def signer_of(request: web.Request) -> str | None:
    """The access key that signed ``request`` (None when the gateway takes unsigned requests)."""
    claim = request.get(CLAIM_KEY)
    return None if claim is None else str(claim.auth.access_key)


class SigV4Verifier:
    """Verifies requests against ``AuthConfig`` in two steps, so a request from an unknown key, with
    no signature or with a stale date is refused before the gateway reads (and buffers) its body:

    ``headers_middleware`` (outside the body limits): Authorization, key, scope and clock;
    ``signature_middleware`` (inside them, body read): payload hash, signature, allowed streams.
    """

    def __init__(self, config: AuthConfig, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self.account_id = account_id
        self.credentials = dict(config.credentials)
        self.allowed_streams = {key: frozenset(names) for key, names in config.allowed_streams.items()}
        self.max_skew = config.max_clock_skew_seconds
        self.audit = RefusalLog()
        #: ``(request, access key, service, action, stream name) -> True`` when a resource policy
        #: grants what ``allowed_streams`` does not (set by the data-stream subsystem).
        self.policy_grants: Callable[[web.Request, str, str, str, str], bool] | None = None

    async def verify(self, request: web.Request) -> str | None:
        """Both steps at once: raise ``AwsError`` unless ``request`` is correctly signed; return its key."""
        claim = self.check_headers(request)
        return None if claim is None else await self.check_signature(request, claim)

    def check_headers(self, request: web.Request) -> _Claim | None:
        """The checks that need no body; None when the request is not an API call."""
        service = service_of(request)
        if service is None:
            return None
        header = request.headers.get("Authorization")
        if not header:
            if "X-Amz-Signature" in request.query:
                raise _auth_error("IncompleteSignatureException", "Query-string (presigned) authentication is not supported by this gateway.", service)
            raise _auth_error("MissingAuthenticationTokenException", "Missing Authentication Token", service)
        auth = parse_authorization(header, service)
        amz_date, signed_at = request_time(request, service)
        secret = self.credentials.get(auth.access_key)
        if secret is None:
            raise _auth_error("UnrecognizedClientException", "The security token included in the request is invalid.", service)
        self._check_scope(auth, amz_date, service)
        self._check_clock(amz_date, signed_at, service)
        return _Claim(service, auth, secret, amz_date)

    async def check_signature(self, request: web.Request, claim: _Claim) -> str:
        """The checks that need the body: payload hash, signature, then the key's allowed streams."""
        auth, service = claim.auth, claim.service
        payload_hash = await self._payload_hash(request, auth, service)
        scope = Scope(auth.access_key, claim.secret, claim.amz_date, auth.region, auth.service)
        try:
            valid = signature_matches(request.method, request.raw_path, request.headers, auth.signed_headers, payload_hash, scope, auth.signature)
        except (ValueError, UnicodeError) as exc:  # a request line or header botocore cannot canonicalise
            raise _auth_error("InvalidSignatureException", f"Cannot canonicalise the request: {exc}", service) from exc
        if not valid:
            raise _auth_error("InvalidSignatureException", SIGNATURE_MISMATCH, service)
        await self._check_streams(request, auth.access_key, service)
        return auth.access_key

    def _check_scope(self, auth: Authorization, amz_date: str, service: str) -> None:
        if auth.service != service:
            raise _auth_error("InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'. ", service)
        if auth.terminator != "aws4_request":
            raise _auth_error("InvalidSignatureException", f"Credential should be scoped with a valid terminator: 'aws4_request', not '{auth.terminator[:40]}'.", service)
        if auth.date != amz_date[:8]:
            raise _auth_error(
                "InvalidSignatureException",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{auth.date[:40]}' != '{amz_date[:8]}', from '{amz_date}'.",
                service,
            )

    def _check_clock(self, amz_date: str, signed_at: float, service: str) -> None:
        now = time.time()
        minutes = f"{self.max_skew // 60} min." if self.max_skew % 60 == 0 else f"{self.max_skew} s."

        def stamp(t: float) -> str:
            return datetime.fromtimestamp(t, timezone.utc).strftime(AMZ_DATE_FORMAT)

        if signed_at < now - self.max_skew:
            raise _auth_error(
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier than {stamp(now - self.max_skew)} ({stamp(now)} - {minutes})",
                service,
            )
        if signed_at > now + self.max_skew:
            raise _auth_error(
                "InvalidSignatureException",
                f"Signature not yet current: {amz_date} is still later than {stamp(now + self.max_skew)} ({stamp(now)} + {minutes})",
                service,
            )

    async def _payload_hash(self, request: web.Request, auth: Authorization, service: str) -> str:
        claimed = request.headers.get("x-amz-content-sha256") if "x-amz-content-sha256" in auth.signed_headers else None
        if request.path in STREAMING_PATHS:
            return claimed or EMPTY_SHA256_HASH
        actual = await sha256_hex(await request.read())
        if claimed is not None and claimed != actual:
            raise _auth_error("InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match what was computed.", service)
        return actual

    async def _check_streams(self, request: web.Request, access_key: str, service: str) -> None:
        if self.allowed_streams.get(access_key) is None:
            return
        body = b"" if request.path in STREAMING_PATHS else await request.read()
        for name in sorted(requested_streams(request, body)):
            self.check_stream(request, access_key, service, name)

    def check_stream(self, request: web.Request, access_key: str, service: str, name: str) -> None:
        """Raise AccessDenied unless ``access_key`` may use stream ``name`` (``allowed_streams``, or a
        resource policy). Handlers call it too, for streams a request names only indirectly (a queue's)."""
        allowed = self.allowed_streams.get(access_key)
        if allowed is None or name in allowed:
            return
        action = action_of(request, service)
        if self.policy_grants is not None and self.policy_grants(request, access_key, service, action, name):
            return
        resource = f"arn:aws:{service}:us-east-1:{self.account_id}:stream/{name}"
        raise _access_denied(
            service,
            request.path,
            f"User: arn:aws:iam::{self.account_id}:user/{access_key} is not authorized to perform: {service}:{action} on resource: {resource}",
        )

    @web.middleware
    async def headers_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            claim = self.check_headers(request)
        except AwsError as exc:
            self.audit.refused(request, exc)
            raise
        if claim is not None:
            request[CLAIM_KEY] = claim
        return await handler(request)

    @web.middleware
    async def signature_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        claim = request.get(CLAIM_KEY)
        if claim is None:  # headers_middleware found no API call here
            return await handler(request)
        try:
            await self.check_signature(request, claim)
        except AwsError as exc:
            self.audit.refused(request, exc, claim.auth.access_key)
            raise
        return await handler(request)


VERIFIER = web.AppKey("sigv4_verifier", SigV4Verifier)
