"""The one exception tree of the gateway.

::

    GatewayError
     ├── ConfigError                 bad config file or value (key, value, expectation)
     ├── ProviderError               the model provider failed
     │    ├── RetryableProviderError   rate limit, 5xx, connection: failover may try the next model
     │    └── PermanentProviderError   fails the same way every time: credentials, model, request
     │         └── UnknownModelError     a model string or preset that resolves to nothing
     ├── ToolError                   a tool refused or failed (the model reads it as a result)
     │    └── WorkspaceEscapeError     a path that leaves the workspace (by .. or a symlink)
     ├── SessionError                session storage failed
     │    ├── CorruptSessionError      a session file or record that cannot be parsed
     │    └── SessionLockReentryError  code running inside a turn took its own session's lock
     └── BusError                    the Redis bus refused an operation
          ├── LeaseLostError           this holder's lease expired or was taken (fencing)
          └── PayloadError             a malformed or oversize bus payload
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Configuration is invalid; the message is one line naming key, value and expectation."""


class ProviderError(GatewayError):
    """The model provider failed."""


class RetryableProviderError(ProviderError):
    """A transient provider failure (429, 5xx, connection): the next failover model may run."""


class PermanentProviderError(ProviderError):
    """A provider failure that a retry would repeat (missing or refused credentials, an
    unknown model, a refused request: 400/401/403/404/422): never retried."""


class UnknownModelError(PermanentProviderError):
    """A model string or preset that resolves to no configured provider."""


class ToolError(GatewayError):
    """A tool refused its input or failed; reported to the model, never crashes the run."""


class WorkspaceEscapeError(ToolError):
    """A path resolves outside the workspace."""


class SessionError(GatewayError):
    """Session storage failed."""


class CorruptSessionError(SessionError):
    """A stored session cannot be parsed."""


class SessionLockReentryError(SessionError):
    """Code running under a session's lock (a hook, a tool) asked for the same lock.

    Raised instead of waiting, which would never end.
    """


class BusError(GatewayError):
    """The Redis bus refused an operation."""


class LeaseLostError(BusError):
    """The session lease is no longer ours: a stale holder may not commit."""


class PayloadError(BusError):
    """A bus payload is malformed or too large."""
