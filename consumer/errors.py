"""The consumer library's exceptions, in one tree so callers catch ours and never a library's.

    ConsumerError               anything the consumer library raises on purpose
    ├── ConfigError             a config value is missing, unknown or wrong; the message names the key
    ├── LeaseStoreError         the lease table could not be read or written (SQLite, DynamoDB)
    ├── LeaseLost               this worker no longer holds the lease it acted on (checkpoint refused)
    └── StreamError             the Kinesis API refused a call that retrying will not fix

Third-party errors (sqlite3, botocore) are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ConsumerError", "LeaseLost", "LeaseStoreError", "StreamError"]


class ConsumerError(Exception):
    """Base of every error the consumer library raises on purpose."""


class ConfigError(ConsumerError, ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


class LeaseStoreError(ConsumerError):
    """The lease table could not be read or written."""


class LeaseLost(ConsumerError):
    """The lease was taken by another worker (or expired): this worker must stop processing the shard."""


class StreamError(ConsumerError):
    """The stream or shard is gone, or credentials are refused: retrying the same call will not help."""
