"""The one logging setup of every gateway process (standard library ``logging``).

- ``auto`` (default): Rich on a terminal, ``plain`` otherwise.
- ``plain``: one line per record (``time level logger: message [session=… run=…]``),
  never wrapped, whatever the width: for log files and collectors.
- ``json``: one JSON object per line: ``time``, ``level``, ``logger``, ``message``,
  and ``session_key`` / ``run_id`` when the record was logged inside a turn
  (``core.logcontext``), ``exc`` with the traceback when there is one.
- ``rich``: Rich's handler even off a terminal.

``levels`` sets per-logger levels (``{"aiohttp.access": "DEBUG"}``) on top of quiet
defaults for chatty libraries. Requests to ``/healthz``, ``/readyz`` and
``/metrics`` are logged at DEBUG, so probes and scrapes do not flood the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Literal, TextIO

from gateway.core.logcontext import run_id_var, session_key_var

LogFormat = Literal["auto", "plain", "json", "rich"]
LOG_FORMATS: tuple[str, ...] = ("auto", "plain", "json", "rich")

QUIET_LOGGERS: dict[str, str] = {
    # arq logs "shutdown on SIGUSR1" when we close it (we own signals): misleading.
    "arq": "WARNING",
    # One access line per request cost a third of the gateway's CPU under load: they
    # are shown at DEBUG (--verbose), or with logging.levels {aiohttp.access: INFO}.
    "aiohttp.access": "WARNING",
}
_ACCESS = "aiohttp.access"
_PROBE_REQUEST = re.compile(r'"[A-Z]+ /(healthz|readyz|metrics)[ ?/]')
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"


class _ContextFilter(logging.Filter):
    """Puts the bound session key and run id on every record (``core.logcontext``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        session_key, run_id = session_key_var.get(), run_id_var.get()
        parts = [f"session={session_key}"] if session_key else []
        if run_id:
            parts.append(f"run={run_id}")
        context = f" [{' '.join(parts)}]" if parts else ""
        record.__dict__.update(session_key=session_key, run_id=run_id, context=context)
        return True


class _ProbesAtDebug(logging.Filter):
    """Health and metrics requests in the access log are DEBUG records, not INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not _PROBE_REQUEST.search(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class PlainFormatter(logging.Formatter):
    """One line per record: a traceback is folded onto it with `` | ``."""

    def __init__(self) -> None:
        super().__init__(_PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session_key", "run_id"):
            if value := getattr(record, key, None):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def _handler(fmt: LogFormat, stream: TextIO) -> logging.Handler:
    if fmt == "auto":
        fmt = "rich" if stream.isatty() else "plain"
    if fmt == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        return RichHandler(console=Console(file=stream), show_path=False)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    return handler


def setup_logging(
    level: str = "INFO",
    fmt: LogFormat = "auto",
    levels: Mapping[str, str] | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Replace the root logger's handlers with one for ``fmt``; set the levels."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = _handler(fmt, stream if stream is not None else sys.stderr)
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = {**QUIET_LOGGERS, _ACCESS: "DEBUG"} if level.upper() == "DEBUG" else QUIET_LOGGERS
    for name, name_level in {**quiet, **(levels or {})}.items():
        logging.getLogger(name).setLevel(name_level.upper())
    access = logging.getLogger(_ACCESS)
    if not any(isinstance(f, _ProbesAtDebug) for f in access.filters):
        access.addFilter(_ProbesAtDebug())
