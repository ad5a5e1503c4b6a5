"""The HTTP channel: backends push messages onto the bus and read replies as SSE.

Endpoints (JSON errors are ``{"error": {"code", "message"}}``):

- ``POST /v1/messages`` with ``{channel, chat_id, sender_id, text, attachments?,
  agent?, thread_id?, sender_name?}`` and an optional ``Idempotency-Key`` header
  -> ``202 {"id", "session_key", "events_url"}``. The same key gives the same body
  and enqueues one message (for 24 h).
- ``GET /v1/sessions/{session_key}/events?after=<id>&run_after=<id>&follow=1``:
  the session's outbound events as SSE (see ``channels.http.sse``).

Auth: with ``http.api_keys`` set, ``/v1/`` needs ``Authorization: Bearer <key>`` or
``X-API-Key: <key>`` (401 ``unauthorized``). Errors a client can cause are 4xx with
the error shape, also for input that is not valid JSON, HTTP or Unicode (400
``invalid_request``), a body over ``http.max_body_bytes`` (413 ``payload_too_large``)
or slower than ``http.body_timeout_s`` (408 ``request_timeout``); a connection that
has not sent a request's headers within ``http.header_timeout_s`` is closed. While
Redis is unreachable: 503 ``unavailable`` with ``Retry-After``.

There is no platform to post to, so this channel has no ``Deliverer``: the SSE
stream *is* the delivery. A message may name another channel (``telegram``…): its
reply then also goes to that chat through that channel's deliverer.

Pushing directly to Redis (same effect as ``POST /v1/messages``, no idempotency)::

    s = InboundMessage(...).session_key             # "{channel}:{chat_id}[:{thread_id}]"
    XADD gw:in:{<s>} MAXLEN ~ <worker.stream_maxlen> * d <InboundMessage JSON>
    XADD gw:ready:<p> * s <s> c <channel>           # p = crc32(s) % worker.ready_partitions

``gw:in:{<s>}`` is the session's inbound stream with the session key inside the
braces (a Redis Cluster hash tag), e.g. ``gw:in:{http:order-7}``. The field ``d``
holds the JSON of ``core.messages.InboundMessage``: required ``channel``,
``chat_id``, ``sender_id``, ``text`` (at most 32 000 characters); optional ``id``
(a ULID; generated when absent), ``thread_id``, ``sender_name``, ``attachments``
(``[{type, url|path, name, mime_type}]``), ``reply_to``, ``platform_event_id``
(deduplicates redeliveries when used with ``SET gw:seen:{<s>}:<id> NX EX``),
``received_at`` (unix seconds), ``session_key`` (default as above) and ``agent``.
The second ``XADD`` is the ready signal that wakes a worker: ``crc32`` is zlib's
(``core.bus.keys.partition``). ``core.bus.inbound.publish_inbound`` does all this.
"""

from __future__ import annotations

from gateway.channels.http.auth import api_key_middleware
from gateway.channels.http.errors import ApiError, error_middleware, error_response
from gateway.channels.http.ingress import IngressConfig, MessageIngress, PostMessage
from gateway.channels.http.outage import BUS_OUTAGE, BusOutage
from gateway.channels.http.sse import EventStream

__all__ = [
    "BUS_OUTAGE",
    "ApiError",
    "BusOutage",
    "EventStream",
    "IngressConfig",
    "MessageIngress",
    "PostMessage",
    "api_key_middleware",
    "error_middleware",
    "error_response",
]
