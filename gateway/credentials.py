"""Where the gateway's access keys come from: the ``[auth]`` config section, a credentials file or
the environment -- the latter two so a systemd unit can pass secrets without putting them in the
world-readable config (``LoadCredential=gateway-credentials:/etc/edge-gateway/credentials.toml`` plus
``Environment=EDGE_GATEWAY_CREDENTIALS_FILE=%d/gateway-credentials``).

A credentials file is TOML shaped like the ``[auth]`` table::

    credentials = { AKIAEDGEEXAMPLE = "secret-key" }
    allowed_streams = { AKIAEDGEEXAMPLE = ["telemetry", "camera-1"] }
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import typed_config
from gateway.config import AuthConfig, ConfigError, config_from_dict

#: Environment variables the gateway reads credentials from.
ENV_CREDENTIALS_FILE = "EDGE_GATEWAY_CREDENTIALS_FILE"
ENV_ACCESS_KEY_ID = "EDGE_GATEWAY_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "EDGE_GATEWAY_SECRET_ACCESS_KEY"


def load_credentials_file(path: str | Path) -> AuthConfig:
    """Read a TOML file shaped like the ``[auth]`` section (``credentials``, ``allowed_streams``, ...)."""
    try:
        values = typed_config.read_toml(path)
    except typed_config.TomlError as exc:
        raise ConfigError(f"credentials file {exc}") from exc
    try:
        return config_from_dict({"auth": values}).auth
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def check_auth(auth: AuthConfig) -> AuthConfig:
    """``auth`` if its ``check()`` finds nothing wrong, else ``ConfigError`` listing it all."""
    problems = [f"auth.{p}" for p in auth.check()]
    if problems:
        raise ConfigError("\n".join(problems))
    return auth


def auth_from_environment(auth: AuthConfig, environ: Mapping[str, str] = os.environ) -> AuthConfig:
    """Merge credentials given through the environment (for the systemd unit) into ``auth``.

    ``EDGE_GATEWAY_CREDENTIALS_FILE`` names a TOML file shaped like ``[auth]``;
    ``EDGE_GATEWAY_ACCESS_KEY_ID`` + ``EDGE_GATEWAY_SECRET_ACCESS_KEY`` add one key.
    """
    credentials = dict(auth.credentials)
    allowed = dict(auth.allowed_streams)
    if environ.get(ENV_CREDENTIALS_FILE):
        from_file = load_credentials_file(environ[ENV_CREDENTIALS_FILE])
        credentials.update(from_file.credentials)
        allowed.update(from_file.allowed_streams)
    key_id, secret = environ.get(ENV_ACCESS_KEY_ID, ""), environ.get(ENV_SECRET_ACCESS_KEY, "")
    if bool(key_id) != bool(secret):
        raise ConfigError(f"{ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY} go together")
    if key_id:
        credentials[key_id] = secret
    return check_auth(AuthConfig(credentials=credentials, allowed_streams=allowed, max_clock_skew_seconds=auth.max_clock_skew_seconds))
