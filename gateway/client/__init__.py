"""A typed Python client for the gateway's HTTP API (needs only ``httpx`` and ``pydantic``).

```python
from gateway.client import GatewayClient

client = GatewayClient(base_url="http://127.0.0.1:8080", api_key="...")  # or env vars
reply = client.agents.invoke(name="assistant", input="Hello!")
print(reply.output, reply.usage.total_tokens)
```

``GATEWAY_BASE_URL`` and ``GATEWAY_API_KEY`` are read when the arguments are not
given. 429/502/503/504 and connection errors are retried ``max_retries`` times with
exponential backoff (from ``retry_delay``, with jitter), never sooner than the
server's ``Retry-After``. Responses are in ``gateway.client.types``, exceptions in
``gateway.client.errors``. Nothing here imports the server side.
"""

from ._async import AsyncGatewayClient
from ._sync import GatewayClient
from .errors import (
    APIConnectionError,
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

__all__ = [
    "APIConnectionError",
    "AsyncGatewayClient",
    "AuthenticationError",
    "GatewayClient",
    "GatewayError",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
]
