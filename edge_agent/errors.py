"""The agent's exceptions, in one tree so callers catch ours and never a library's by accident.

    AgentError          anything the agent raises on purpose
    ├── ConfigError     a config value is missing, unknown or wrong; the message names the key
    └── SendError       a request to the gateway failed: ``code`` is the AWS error code (or
                        ``"connection"`` when no answer came), ``status`` the HTTP status (0 if none)

Third-party errors are translated at the boundary with ``raise ... from exc``: socket, TLS and HTTP
errors (``edge_agent.http_client``) and AWS error bodies in ``edge_agent.transport``, sqlite3 in ``edge_agent.spool``, botocore's profile
errors in ``edge_agent.aws``.
"""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError", "SendError"]

#: ``SendError.code`` when the gateway could not be reached or the connection broke.
CONNECTION = "connection"


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key,
    e.g. ``sources.mqtt[0].qos: expected 0, 1 or 2``."""


class SendError(AgentError):
    """A request to the gateway failed; the forwarders decide from ``code`` and ``status`` whether
    to retry soon, wait long, or drop the record."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}" if status == 0 else f"HTTP {status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
