"""The agent's exceptions, in one tree so callers catch ours and never a library's by accident.

    AgentError                  anything the agent raises on purpose
    ├── ConfigError             a config value is missing, unknown or wrong; the message names the key
    ├── SourceError             a source cannot start (device missing, broker refused credentials...)
    └── SendError               the gateway could not be reached or refused a request
        ├── RetryableSendError  worth trying again (connection error, 5xx, throttling)
        └── FatalSendError      will fail again as sent (missing stream, bad credentials)

Third-party errors (botocore, sqlite3, paho, serial) are translated at the boundary with
``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError", "FatalSendError", "RetryableSendError", "SendError", "SourceError"]


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key,
    e.g. ``sources.mqtt[0].qos: expected 0, 1 or 2``."""


class SourceError(AgentError):
    """A source cannot start or lost its device; the service restarts it after a pause."""


class SendError(AgentError):
    """Sending to the gateway failed."""


class RetryableSendError(SendError):
    """A failure that may pass: connection refused or reset, 5xx, throttling."""


class FatalSendError(SendError):
    """A failure that repeats as long as nothing changes: unknown stream, bad credentials."""
