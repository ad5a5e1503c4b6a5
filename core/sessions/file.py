"""File session store: one JSONL file per session under ``<workspace>/sessions``.

The file format (a header line, one message per line, ``state`` commit records) is
described in ``core.sessions.jsonl``.

Why appends: on ext4, replacing an existing file by rename costs about 200 µs (the
``auto_da_alloc`` heuristic starts writeback of the new data), an O_APPEND write
about 5 µs. So a save whose history only grew appends the new messages plus a
``state`` record in one write; anything else (compaction, a new summary or metadata,
the first save of a key in this process, every ``REWRITE_AFTER_APPENDS`` appends)
rewrites the file through a temp file and ``os.replace``. The ``message_count`` of
the last header/state record commits the messages before it, so a torn append is
dropped on load: readers see the old session or the new one, never half.

Saves are not fsynced (that is ``flush``). The store assumes one process writes a
workspace's sessions; its write-through cache holds what each file contains, both
as the encoded lines and as the decoded messages, so a turn's cost does not grow
with the history: ``load`` hands out the cached message dicts (no re-parse) and
``save`` encodes only the messages appended since (no re-serialise). The dicts are
therefore shared: treat history entries as read-only, and edit one by replacing it
(``session.messages[i] = {...}``), which ``save`` detects and rewrites.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pydantic_core import from_json, to_json

from gateway.core.errors import SessionError
from gateway.core.messages import Message
from gateway.core.sessions.base import Session, SessionInfo
from gateway.core.sessions.jsonl import (
    append_payload,
    decode_stem,
    encode_key,
    header_or_none,
    info_from_records,
    last_state,
    parse,
    rewrite_payload,
)

__all__ = ["REWRITE_AFTER_APPENDS", "SUFFIX", "FileSessionStore", "decode_stem", "encode_key"]

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
REWRITE_AFTER_APPENDS = 64
"""Appended batches after which the next save rewrites the file (drops state records)."""
_TAIL_BYTES = 4096


@dataclass(slots=True)
class _Persisted:
    """What one session file holds, as this process last wrote or read it."""

    created_at: float
    updated_at: float
    summary: str
    metadata_json: bytes
    lines: list[bytes]
    messages: list[Message]
    """``lines`` decoded; shared with the sessions ``load`` hands out, never mutated."""
    appended_batches: int = 0
    needs_rewrite: bool = False


class FileSessionStore:
    """``SessionStore`` over JSONL files, with sync twins for the SDK."""

    def __init__(self, root: Path, *, max_cached: int = 4096) -> None:
        self._root = root
        self._max_cached = max_cached
        self._cache: OrderedDict[str, _Persisted] = OrderedDict()
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()  # guards the cache and dirty set only, never I/O
        self._tmp_ids = itertools.count()
        root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, key: str) -> Path:
        return self._root / (encode_key(key) + SUFFIX)

    # -- async protocol: files are small, so no thread hop ------------------------

    async def load(self, key: str) -> Session | None:
        return self.load_sync(key)

    async def save(self, session: Session) -> None:
        self.save_sync(session)

    async def delete(self, key: str) -> bool:
        return self.delete_sync(key)

    async def list(self) -> list[SessionInfo]:
        return self.list_sync()

    async def flush(self) -> None:
        self.flush_sync()

    async def aclose(self) -> None:
        self.flush_sync()

    # -- sync API -----------------------------------------------------------------

    def load_sync(self, key: str) -> Session | None:
        """A fresh ``Session`` (its own list and metadata; the message dicts are shared
        with the cache, see the module docstring); recovers what it can of a corrupt file."""
        entry = self._cached(key)
        if entry is None:
            entry = self._read(key)
            if entry is None:
                return None
            self._remember(key, entry)
        return Session.model_construct(
            key=key,
            messages=list(entry.messages),
            metadata=from_json(entry.metadata_json),
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            summary=entry.summary,
        )

    def save_sync(self, session: Session) -> None:
        """Persist ``session`` and set its ``updated_at`` to now."""
        session.updated_at = time.time()
        messages = list(session.messages)
        path = self.path_for(session.key)
        old = self._cached(session.key)
        grown = old is not None and _extends(old.messages, messages)
        added = messages[len(old.messages) :] if old is not None and grown else messages
        added_lines = [to_json(message) for message in added]
        entry = _Persisted(
            session.created_at,
            session.updated_at,
            session.summary,
            to_json(session.metadata),
            old.lines + added_lines if old is not None and grown else added_lines,
            messages,
        )
        try:
            if old is not None and grown and _can_append(old, entry):
                entry.appended_batches = old.appended_batches + 1
                try:
                    _append(path, added_lines, entry.updated_at, len(messages))
                except FileNotFoundError:
                    log.warning("session file %s vanished; rewriting it", path)
                    entry.appended_batches = 0
                    self._rewrite(path, session.key, entry)
            else:
                self._rewrite(path, session.key, entry)
        except OSError as exc:
            self._forget(session.key)  # the file state is unknown now: next save rewrites
            raise SessionError(f"cannot save session {session.key!r} to {path}: {exc}") from exc
        self._remember(session.key, entry, dirty=path)

    def delete_sync(self, key: str) -> bool:
        path = self.path_for(key)
        was_cached = self._forget(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return was_cached
        except OSError as exc:
            raise SessionError(f"cannot delete session file {path}: {exc}") from exc
        return True

    def list_sync(self) -> builtins.list[SessionInfo]:
        """One row per session file, from its header and last line."""
        infos: builtins.list[SessionInfo] = []
        with os.scandir(self._root) as entries:
            names = [e.name for e in entries if e.name.endswith(SUFFIX) and e.name[0] != "."]
        for name in names:
            info = self._info(self._root / name)
            if info is not None:
                infos.append(info)
        return infos

    def flush_sync(self) -> None:
        """fsync every file saved since the last flush, then the directory."""
        with self._lock:
            paths, self._dirty = self._dirty, set()
        try:
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # deleted since it was saved: nothing left to make durable
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            dir_fd = os.open(self._root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise SessionError(f"cannot flush sessions under {self._root}: {exc}") from exc

    # -- cache --------------------------------------------------------------------

    def _cached(self, key: str) -> _Persisted | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
            return entry

    def _remember(self, key: str, entry: _Persisted, dirty: Path | None = None) -> None:
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
            if dirty is not None:
                self._dirty.add(dirty)

    def _forget(self, key: str) -> bool:
        with self._lock:
            return self._cache.pop(key, None) is not None

    # -- files --------------------------------------------------------------------

    def _rewrite(self, path: Path, key: str, entry: _Persisted) -> None:
        payload = rewrite_payload(
            key, entry.created_at, entry.updated_at, entry.summary, entry.metadata_json, entry.lines
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(self._tmp_ids)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_all(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _read(self, key: str) -> _Persisted | None:
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SessionError(f"cannot read session file {path}: {exc}") from exc
        parsed = parse(data)
        header = parsed.header or {}
        fallback = Session(key=key)
        entry = _Persisted(
            created_at=float(header.get("created_at", fallback.created_at)),
            updated_at=float(parsed.updated_at or header.get("updated_at", fallback.updated_at)),
            summary=header.get("summary", ""),
            metadata_json=to_json(header.get("metadata", {})),
            lines=parsed.lines,
            messages=parsed.messages,
        )
        if parsed.problems:
            self._recover(path, key, entry, parsed.problems)
        elif parsed.uncommitted:
            log.warning(
                "session file %s: dropped a torn append (%d messages)", path, parsed.uncommitted
            )
            entry.needs_rewrite = True
        return entry

    def _recover(
        self, path: Path, key: str, entry: _Persisted, problems: builtins.list[str]
    ) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning(
            "session file %s is corrupt (%s); kept %d messages, original moved to %s",
            path,
            "; ".join(problems),
            len(entry.lines),
            aside.name,
        )
        try:
            os.replace(path, aside)
            self._rewrite(path, key, entry)
        except OSError as exc:
            raise SessionError(f"cannot recover corrupt session file {path}: {exc}") from exc

    def _info(self, path: Path) -> SessionInfo | None:
        try:
            with path.open("rb") as file:
                header = header_or_none(file.readline())
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - _TAIL_BYTES))
                tail = file.read()
        except FileNotFoundError:
            return None  # deleted while listing
        except OSError as exc:
            raise SessionError(f"cannot read session file {path}: {exc}") from exc
        info = info_from_records(header, last_state(tail))
        if info is not None:
            return info
        key = decode_stem(path.name.removesuffix(SUFFIX))
        if key is None:
            log.warning("session file %s has no usable header and a hashed name; skipped", path)
            return None
        session = self.load_sync(key)  # a full read, which also recovers the file
        if session is None:
            return None
        return SessionInfo(
            key=key,
            message_count=len(session.messages),
            created_at=session.created_at,
            updated_at=session.updated_at,
        )


def _extends(old: list[Message], new: list[Message]) -> bool:
    """Whether ``new`` is ``old`` plus appended messages.

    Loaded sessions share the cached dicts, so the comparison mostly meets identical
    objects, which list equality accepts without looking inside them.
    """
    return len(new) >= len(old) and new[: len(old)] == old


def _can_append(old: _Persisted, new: _Persisted) -> bool:
    """Whether a grown history can be appended (else the file is rewritten)."""
    return (
        not old.needs_rewrite
        and old.appended_batches < REWRITE_AFTER_APPENDS
        and old.created_at == new.created_at
        and old.summary == new.summary
        and old.metadata_json == new.metadata_json
    )


def _append(path: Path, lines: list[bytes], updated_at: float, count: int) -> None:
    payload = append_payload(lines, updated_at, count)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        _write_all(fd, payload)
    finally:
        os.close(fd)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]
