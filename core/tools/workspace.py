"""File tools confined to the workspace: ``read_file``, ``write_file``, ``edit_file``, ``list_dir``.

Every path goes through ``resolve_in_workspace``, which refuses absolute paths outside the
workspace, ``..`` escapes and symlinks that lead out. It checks the path at call time; it
is a guard against a model wandering off, not a sandbox against a hostile local process
racing it with symlink swaps.

File I/O here is small and done inline on the event loop; reads stop at a size limit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from gateway.core.errors import ToolError, WorkspaceEscapeError
from gateway.core.tools.base import ToolContext, tool

READ_MAX_CHARS = 100_000
"""A single read returns at most this many characters; the note says where to continue."""
READ_MAX_LINE_CHARS = 4_000
"""Longer lines (minified files, data blobs) are cut so one line cannot fill the read."""
LIST_MAX_ENTRIES = 1_000


def resolve_in_workspace(workspace: Path, path: str) -> Path:
    """``path`` (relative to ``workspace``, or absolute inside it) resolved; escapes are refused.

    Symlinks are followed before the check, so a link pointing outside is an escape too.
    """
    return _resolve(workspace.resolve(), path)


def _resolve(root: Path, path: str) -> Path:
    try:
        resolved = (root / path).resolve(strict=False)  # an absolute ``path`` replaces root
    except (ValueError, OSError) as exc:  # embedded NUL, symlink loop
        raise ToolError(f"invalid path {path!r}: {exc}") from exc
    if not resolved.is_relative_to(root):
        raise WorkspaceEscapeError(
            f"path {path!r} is outside the workspace; use a path relative to the workspace"
        )
    return resolved


def _locate(ctx: ToolContext, path: str) -> tuple[Path, str]:
    """The resolved path, and how to name it to the model: relative, never the host's layout."""
    root = ctx.workspace.resolve()
    resolved = _resolve(root, path)
    relative = resolved.relative_to(root).as_posix()
    return resolved, relative if relative != "." else "(workspace root)"


@contextmanager
def _file_errors(shown: str) -> Iterator[None]:
    """Turn the OS errors a model can cause into clear tool errors; others stay as they are."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ToolError(f"{shown}: no such file or directory") from exc
    except IsADirectoryError as exc:
        raise ToolError(f"{shown}: is a directory (use list_dir)") from exc
    except NotADirectoryError as exc:
        raise ToolError(f"{shown}: a parent of this path is a file, not a directory") from exc
    except PermissionError as exc:
        raise ToolError(f"{shown}: permission denied") from exc
    except UnicodeDecodeError as exc:
        raise ToolError(f"{shown}: not a UTF-8 text file") from exc


def _bounded_lines(handle: TextIO) -> Iterator[str]:
    """The file's lines, each cut at ``READ_MAX_LINE_CHARS`` without ever holding a longer one."""
    while line := handle.readline(READ_MAX_LINE_CHARS):
        if len(line) == READ_MAX_LINE_CHARS and not line.endswith("\n"):
            rest = handle.readline(READ_MAX_LINE_CHARS)
            if rest:
                line += f" [... line cut at {READ_MAX_LINE_CHARS} chars]\n"
            while rest and not rest.endswith("\n"):  # drop the rest of the line, chunk by chunk
                rest = handle.readline(READ_MAX_LINE_CHARS)
        yield line


@tool
def read_file(ctx: ToolContext, path: str, offset: int = 0, limit: int = 2000) -> str:
    """Read a text file from the workspace.

    Long files are returned in parts: the text ends with a note giving the offset to
    continue from.

    Args:
        path: File path, relative to the workspace.
        offset: Number of lines to skip from the start of the file.
        limit: Maximum number of lines to return.
    """
    if offset < 0 or limit < 1:
        raise ToolError("offset must be >= 0 and limit >= 1")
    resolved, shown = _locate(ctx, path)
    parts: list[str] = []
    size = 0
    stopped_at: int | None = None
    with _file_errors(shown), resolved.open(encoding="utf-8", errors="replace") as handle:
        lines = itertools.islice(_bounded_lines(handle), offset, None)
        for number, line in enumerate(lines, start=offset):
            if number - offset >= limit or (parts and size + len(line) > READ_MAX_CHARS):
                stopped_at = number
                break
            parts.append(line)
            size += len(line)
    if not parts:
        return f"[{shown}: no lines after offset {offset}]" if offset else f"[{shown}: empty file]"
    text = "".join(parts)
    if stopped_at is not None:
        text += (
            f"\n[showing lines {offset + 1}-{stopped_at}; "
            f"call read_file with offset={stopped_at} for more]"
        )
    return text


@tool
def write_file(ctx: ToolContext, path: str, content: str) -> str:
    """Write a file in the workspace, replacing it if it exists; missing directories are created.

    Args:
        path: File path, relative to the workspace.
        content: The complete new content of the file.
    """
    resolved, shown = _locate(ctx, path)
    with _file_errors(shown):
        resolved.parent.mkdir(parents=True, exist_ok=True)
        with resolved.open("w", encoding="utf-8", newline="") as handle:
            handle.write(content)
    return f"wrote {len(content)} characters to {shown}"


@tool
def edit_file(ctx: ToolContext, path: str, old_text: str, new_text: str) -> str:
    """Replace one exact, unique piece of text in a workspace file.

    Args:
        path: File path, relative to the workspace.
        old_text: The exact text to replace; it must occur exactly once in the file.
        new_text: The text to put in its place.
    """
    if not old_text:
        raise ToolError("old_text must not be empty (use write_file to create a file)")
    resolved, shown = _locate(ctx, path)
    with _file_errors(shown), resolved.open(encoding="utf-8", newline="") as handle:
        content = handle.read()  # newline="": keep CRLF as it is, so writing back preserves it
    if old_text not in content and "\r\n" in content:
        # The model usually sees and writes "\n"; match a CRLF file in its own line endings.
        old_text, new_text = old_text.replace("\n", "\r\n"), new_text.replace("\n", "\r\n")
    count = content.count(old_text)
    if count == 0:
        raise ToolError(f"{shown}: old_text not found; read the file and copy the text exactly")
    if count > 1:
        raise ToolError(
            f"{shown}: old_text occurs {count} times; "
            "include more surrounding text to make it unique"
        )
    with _file_errors(shown):
        resolved.write_text(content.replace(old_text, new_text, 1), encoding="utf-8", newline="")
    return f"edited {shown}"


@tool
def list_dir(ctx: ToolContext, path: str = ".") -> str:
    """List a workspace directory: one entry per line, directories end with '/'.

    Args:
        path: Directory path, relative to the workspace.
    """
    resolved, shown = _locate(ctx, path)
    if resolved.exists() and not resolved.is_dir():
        raise ToolError(f"{shown}: not a directory (use read_file)")
    with _file_errors(shown):
        entries = sorted(resolved.iterdir(), key=lambda entry: entry.name)
    if not entries:
        return f"{shown}: empty directory"
    lines = [
        f"{entry.name}/" if entry.is_dir() else entry.name for entry in entries[:LIST_MAX_ENTRIES]
    ]
    if len(entries) > LIST_MAX_ENTRIES:
        lines.append(f"[... {len(entries) - LIST_MAX_ENTRIES} more entries not shown]")
    return "\n".join(lines)


WORKSPACE_TOOLS = (read_file, write_file, edit_file, list_dir)
