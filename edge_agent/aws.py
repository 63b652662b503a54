"""botocore plumbing: credentials, the SigV4 signer, and full botocore clients for the control plane.

The forwarders send lean requests of their own (``edge_agent.transport``), signed by ``sign``:
a full botocore client costs a Pi ~11 MB of RSS and several ms of CPU per call. ``make_client``
(retries off) is for control-plane calls (the demo creates its streams with it). The same
settings reach our gateway or real AWS: only the endpoint and the credentials differ.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.auth import UNSIGNED_PAYLOAD, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError

from edge_agent.config import GatewaySection
from edge_agent.errors import ConfigError

log = logging.getLogger("edge_agent.aws")

#: Signs requests when no credentials are configured anywhere; a gateway without [auth] accepts it.
PLACEHOLDER_ACCESS_KEY = "EDGEAGENTNOCREDS"
PLACEHOLDER_SECRET_KEY = "edge-agent-placeholder-secret"


def make_session(gw: GatewaySection) -> botocore.session.Session:
    """A botocore session with the configured credentials (ConfigError if a named profile is missing)."""
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


def frozen_credentials(session: botocore.session.Session) -> ReadOnlyCredentials:
    creds: Credentials | None = session.get_credentials()
    if creds is None:  # pragma: no cover - make_session always sets some
        creds = Credentials(PLACEHOLDER_ACCESS_KEY, PLACEHOLDER_SECRET_KEY)
    return creds.get_frozen_credentials()


def sign(method: str, url: str, headers: Mapping[str, str], session: botocore.session.Session, region: str, service: str,
         body: bytes | None) -> dict[str, str]:
    """``headers`` plus SigV4's; ``body=None`` for a streamed body (signed as UNSIGNED-PAYLOAD)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    if body is None:
        request.headers["X-Amz-Content-SHA256"] = UNSIGNED_PAYLOAD
    SigV4Auth(frozen_credentials(session), service, region).add_auth(request)
    return dict(request.headers.items())


def sign_streaming_request(
    method: str, url: str, headers: Mapping[str, str], session: botocore.session.Session, region: str, service: str = "kinesisvideo"
) -> dict[str, str]:
    """SigV4 headers for a request whose body is streamed (PutMedia)."""
    return sign(method, url, headers, session, region, service, None)
