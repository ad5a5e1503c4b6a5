"""The session key and run id a log record belongs to, carried by contextvars.

A worker binds them around a turn (``log_context``); every record logged inside,
by any module and any task started from there, carries them (``gateway.logsetup``
puts them into each plain or JSON record). Lives in ``core`` so that workers and
channels can bind without importing the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

session_key_var: ContextVar[str | None] = ContextVar("gateway_session_key", default=None)
run_id_var: ContextVar[str | None] = ContextVar("gateway_run_id", default=None)


@contextmanager
def log_context(*, session_key: str | None = None, run_id: str | None = None) -> Iterator[None]:
    """Records logged inside carry ``session_key`` and ``run_id`` (None leaves one as is)."""
    tokens = []
    if session_key is not None:
        tokens.append((session_key_var, session_key_var.set(session_key)))
    if run_id is not None:
        tokens.append((run_id_var, run_id_var.set(run_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
