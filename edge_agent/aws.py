"""Credentials, the SigV4 signer, and full botocore clients for the control plane.

The forwarders send lean requests of their own (``edge_agent.transport``), signed by ``sign``:
a full botocore client costs a Pi ~11 MB of RSS and several ms of CPU per call. ``make_client``
(retries off) is for control-plane calls (the demo creates its streams with it). The same
settings reach our gateway or real AWS: only the endpoint and the credentials differ.

``sign`` is SigV4 written out here (the same canonical request botocore's ``SigV4Auth`` builds),
and ``agent_credentials`` answers configured or ``AWS_ACCESS_KEY_ID`` keys itself: botocore (~8 MiB
of RSS on import) is only imported when its credential chain (profile, SSO, instance role) is
needed, or for ``make_client``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from edge_agent.config import GatewaySection
from edge_agent.errors import ConfigError
from edge_agent.http_client import host_header

if TYPE_CHECKING:
    import botocore.session
    from botocore.config import Config

log = logging.getLogger("edge_agent.aws")

#: Signs requests when no credentials are configured anywhere; a gateway without [auth] accepts it.
PLACEHOLDER_ACCESS_KEY = "EDGEAGENTNOCREDS"
PLACEHOLDER_SECRET_KEY = "edge-agent-placeholder-secret"
#: The payload hash of a streamed body (PutMedia), as AWS spells it.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: Headers a proxy may change: never signed (botocore leaves the same ones out).
UNSIGNED_HEADERS = frozenset({"authorization", "baggage", "connection", "expect", "keep-alive", "proxy-authenticate",
                              "proxy-authorization", "te", "traceparent", "trailer", "transfer-encoding", "upgrade",
                              "user-agent", "x-amzn-trace-id"})


@dataclass(frozen=True)
class StaticCredentials:
    """Keys known up front (the config file or the environment): no botocore session needed."""

    access_key: str
    secret_key: str
    token: str | None = None

    def get_frozen_credentials(self) -> StaticCredentials:
        return self


def agent_credentials(gw: GatewaySection) -> Any:
    """What the forwarders sign with: configured keys, else ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (when no profile is named; botocore's chain looks there first too), else a botocore session's
    chain (``make_session``), which may refresh them."""
    if gw.access_key_id:
        return StaticCredentials(gw.access_key_id, gw.secret_access_key, gw.session_token or None)
    env_key, env_secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if env_key and env_secret and not gw.profile and not os.environ.get("AWS_PROFILE"):
        return StaticCredentials(env_key, env_secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    return make_session(gw)


def make_session(gw: GatewaySection) -> botocore.session.Session:
    """A botocore session with the configured credentials (ConfigError if a named profile is missing)."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    session = botocore.session.Session(profile=gw.profile or None)
    if gw.access_key_id:
        session.set_credentials(gw.access_key_id, gw.secret_access_key, gw.session_token or None)
        return session
    try:
        found = session.get_credentials()
    except BotoCoreError as exc:  # ProfileNotFound, a broken ~/.aws/config...
        raise ConfigError(f"gateway.profile: {exc}") from exc
    if found is None:
        log.info("no AWS credentials configured or found: signing with a placeholder key")
        session.set_credentials(PLACEHOLDER_ACCESS_KEY, PLACEHOLDER_SECRET_KEY)
    return session


def client_config(gw: GatewaySection, pool: int = 4) -> Config:
    from botocore.config import Config

    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=gw.connect_timeout_seconds,
        read_timeout=gw.read_timeout_seconds,
        max_pool_connections=pool,
        tcp_keepalive=True,
        # We build every request ourselves; botocore's per-field validation costs ~15 % of a 500-record send.
        parameter_validation=False,
    )


def make_client(session: botocore.session.Session, service: str, endpoint_url: str, gw: GatewaySection) -> Any:
    return session.create_client(
        service,
        endpoint_url=endpoint_url,
        region_name=gw.region,
        verify=gw.ca_file or True,
        config=client_config(gw),
    )


def frozen_credentials(source: Any) -> Any:
    """The current keys (``access_key``, ``secret_key``, ``token``) of ``StaticCredentials`` or a botocore session."""
    if isinstance(source, StaticCredentials):
        return source
    creds = source.get_credentials()
    if creds is None:  # pragma: no cover - make_session always sets some
        return StaticCredentials(PLACEHOLDER_ACCESS_KEY, PLACEHOLDER_SECRET_KEY)
    return creds.get_frozen_credentials()


@functools.lru_cache(maxsize=16)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """SigV4's derived key (four chained HMACs), the same all UTC day for a key, region and service."""
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


@functools.lru_cache(maxsize=64)
def _canonical_url(url: str) -> tuple[str, str, str]:
    """(canonical path, canonical query, host) of ``url``: the agent signs for a handful of URLs."""
    parts = urlsplit(url)
    query = "&".join(sorted(f"{k}={v}" for k, _, v in (p.partition("=") for p in parts.query.split("&")))) if parts.query else ""
    return quote(parts.path or "/", safe="/~"), query, host_header(parts)


def sign(method: str, url: str, headers: Mapping[str, str], session: Any, region: str, service: str,
         body: bytes | None, now: float | None = None) -> dict[str, str]:
    """``headers`` plus SigV4's (X-Amz-Date, X-Amz-Security-Token, Authorization); ``session`` is
    ``StaticCredentials`` or a botocore session; ``body=None`` for a streamed body (UNSIGNED-PAYLOAD)."""
    creds = frozen_credentials(session)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    out = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "x-amz-date", "date", "x-amz-security-token")}
    out["X-Amz-Date"] = stamp
    if creds.token:
        out["X-Amz-Security-Token"] = creds.token
    if body is None:
        out["X-Amz-Content-SHA256"] = UNSIGNED_PAYLOAD
    path, query, host = _canonical_url(url)
    signed: dict[str, list[str]] = {}
    for name, value in out.items():
        lower = name.lower()
        if lower not in UNSIGNED_HEADERS:
            signed.setdefault(lower, []).append(" ".join(str(value).split()))
    if "host" not in signed:
        signed["host"] = [host]
    names = sorted(signed)
    payload_hash = out.get("X-Amz-Content-SHA256") or hashlib.sha256(body or b"").hexdigest()
    canonical = "\n".join([
        method.upper(), path, query, "".join(f"{n}:{','.join(signed[n])}\n" for n in names), ";".join(names), payload_hash,
    ])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.digest(signing_key(creds.secret_key, stamp[:8], region, service), to_sign.encode(), "sha256").hex()
    out["Authorization"] = f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    return out


def sign_streaming_request(
    method: str, url: str, headers: Mapping[str, str], session: Any, region: str, service: str = "kinesisvideo"
) -> dict[str, str]:
    """SigV4 headers for a request whose body is streamed (PutMedia)."""
    return sign(method, url, headers, session, region, service, None)
