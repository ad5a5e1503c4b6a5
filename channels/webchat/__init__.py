"""The web chat: a page served at ``/`` by the gateway, talking to the public HTTP API.

Channel ``web`` (and ``cli`` for ``gateway chat``): messages go through
``POST /v1/messages``, replies are read from the session's SSE events, a stop
request goes through the bus to the worker running the turn. See ``routes``.
"""

from __future__ import annotations

from gateway.channels.webchat.routes import WebChat

__all__ = ["WebChat"]
