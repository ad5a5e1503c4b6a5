"""Long-term memory files of a workspace: ``memory/MEMORY.md`` and ``memory/history.jsonl``.

``MEMORY.md`` is free text the agent (or the user) curates. ``history.jsonl`` is an
append-only log, one ``{"cursor", "ts", "session_key", "text"}`` object per line
(compaction summaries land here). Cursors are 1-based and strictly increasing,
also when several processes append: each append takes an exclusive ``flock`` on the
file and numbers its entry after the last one on disk.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from pydantic_core import from_json, to_json

log = logging.getLogger(__name__)

_TAIL_CHUNK = 8192


class MemoryStore:
    def __init__(self, workspace: Path) -> None:
        self._dir = workspace / "memory"
        self.memory_path = self._dir / "MEMORY.md"
        self.history_path = self._dir / "history.jsonl"
        self._lock = threading.Lock()  # flock is per open file; this orders our own threads
        self._cached: tuple[tuple[int, int, int], str] | None = None
        """The text last read, under the (inode, size, mtime) it was read at."""

    def read(self) -> str:
        """The text of ``MEMORY.md``; "" when it does not exist.

        Read on every turn, so it is kept and only read again when the file's inode,
        size or mtime changed (``write`` replaces the file: a new inode); one ``stat``
        per turn instead of an open, a read and a close."""
        try:
            st = os.stat(self.memory_path)
        except FileNotFoundError:
            return ""
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cached is not None and self._cached[0] == stamp:
            return self._cached[1]
        try:
            text = self.memory_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        self._cached = (stamp, text)
        return text

    def write(self, text: str) -> None:
        """Replace ``MEMORY.md`` atomically (temp file in the same directory, then rename)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self.memory_path.with_name(f".MEMORY.md.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.memory_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def append_history(self, text: str, session_key: str | None = None) -> int:
        """Append one history entry and return its cursor."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._lock, self.history_path.open("a+b") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file closes
            size = file.seek(0, os.SEEK_END)
            cursor = _last_cursor(file, size) + 1
            entry = {"cursor": cursor, "ts": time.time(), "session_key": session_key, "text": text}
            # A crash can leave a last line without its newline: never glue onto it.
            lead = b"\n" if size and not _ends_with_newline(file, size) else b""
            file.write(lead + to_json(entry) + b"\n")
            file.flush()
        return cursor

    def read_history(self, session_key: str | None = None) -> list[dict[str, Any]]:
        """Every entry in order (only ``session_key``'s when given); corrupt lines are logged."""
        try:
            data = self.history_path.read_bytes()
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            entry = _entry_or_none(line)
            if entry is None:
                log.warning("%s line %d is not a history entry; skipped", self.history_path, number)
            elif session_key is None or entry.get("session_key") == session_key:
                entries.append(entry)
        return entries


def _entry_or_none(line: bytes) -> dict[str, Any] | None:
    try:
        value = from_json(line)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    cursor = value.get("cursor")
    if not isinstance(cursor, int) or isinstance(cursor, bool):
        return None
    return value


def _ends_with_newline(file: BinaryIO, size: int) -> bool:
    file.seek(size - 1)
    return file.read(1) == b"\n"


def _last_cursor(file: BinaryIO, size: int) -> int:
    """The cursor of the last valid entry, reading the file backwards in chunks."""
    end = size
    carry = b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        file.seek(start)
        block = file.read(end - start) + carry
        lines = block.split(b"\n")
        carry = lines.pop(0) if start > 0 else b""  # may be cut: finish it with the next chunk
        for line in reversed(lines):
            entry = _entry_or_none(line) if line.strip() else None
            if entry is not None:
                return int(entry["cursor"])
        end = start
    return 0
