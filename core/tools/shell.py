"""The opt-in ``exec`` tool: a shell command in the workspace, with a timeout and capped output.

The command runs in a process group of its own (a new session), so one signal kills
everything it started — background jobs included — when it times out, when the run
awaiting it is cancelled, and when it finishes. Environment variables whose names look
like secrets are not passed to it: the model can read anything the command prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from pathlib import Path

from gateway.core.errors import ToolError
from gateway.core.settings import ExecToolSettings
from gateway.core.tools.base import Tool, ToolContext, tool

_READ_CHUNK = 64 * 1024
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|^GATEWAY_", re.IGNORECASE)


def make_exec_tool(settings: ExecToolSettings) -> Tool:
    """The ``exec`` tool, with the timeout and output limit of ``settings``."""
    description = (
        "Run a shell command (/bin/sh) in the workspace; returns its output (stdout and "
        f"stderr together) and exit code. It is killed after {settings.timeout_s:g} seconds; "
        "processes it starts in the background do not outlive it."
    )

    @tool(name="exec", description=description)
    async def exec_command(ctx: ToolContext, command: str) -> str:
        """Run a shell command.

        Args:
            command: The command line, as you would type it in a shell.
        """
        return await run_shell(command, ctx.workspace, settings)

    return exec_command


async def run_shell(command: str, cwd: Path, settings: ExecToolSettings) -> str:
    """Run ``command`` in ``cwd``; its capped output and exit code. Timeout is a ``ToolError``."""
    try:
        process = await _spawn(command, cwd)
    except (FileNotFoundError, NotADirectoryError) as exc:  # the cwd, in practice
        raise ToolError("the workspace directory does not exist; nothing can run in it") from exc
    output = _CappedOutput(settings.max_output_chars)
    try:
        async with asyncio.timeout(settings.timeout_s):
            assert process.stdout is not None  # PIPE was requested
            await output.drain(process.stdout)
            exit_code = await process.wait()
    except TimeoutError:
        raise ToolError(
            f"command timed out after {settings.timeout_s:g}s and was killed; "
            f"output so far:\n{output.text()}"
        ) from None
    finally:
        # Also on cancellation: the run was aborted, so its command must stop now.
        _kill_group(process.pid)
        if process.returncode is None:
            await process.wait()
    return f"{output.text() or '(no output)'}\n[exit code {exit_code}]"


async def _spawn(command: str, cwd: Path) -> asyncio.subprocess.Process:
    """Start the shell in its own process group.

    The shell runs before asyncio has connected its pipes; a cancellation in that
    window would make asyncio kill the shell alone and orphan its children. So the
    creation is shielded, and a cancelled caller still kills the whole group.
    """
    creating = asyncio.ensure_future(
        asyncio.create_subprocess_shell(
            command,
            cwd=cwd,
            stdin=DEVNULL,
            stdout=PIPE,
            stderr=STDOUT,
            start_new_session=True,
            env=_child_environment(),
        )
    )
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        process = await creating
        _kill_group(process.pid)
        await process.wait()
        raise


def _child_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not _SECRET_NAME.search(name)}


def _kill_group(group_id: int) -> None:
    try:
        os.killpg(group_id, signal.SIGKILL)
    except ProcessLookupError:
        return  # every process of the group has already exited: nothing left to stop


class _CappedOutput:
    """Keeps the first two thirds and the last third of a byte stream, counting what it drops.

    Bytes stand in for characters: the text is never longer than the limit in characters.
    """

    __slots__ = ("_head", "_head_limit", "_tail", "_tail_limit", "_total")

    def __init__(self, limit: int) -> None:
        self._head_limit = limit * 2 // 3
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self.add(chunk)

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            excess = len(self._tail) - self._tail_limit
            if excess > 0:
                del self._tail[:excess]

    def text(self) -> str:
        omitted = self._total - len(self._head) - len(self._tail)
        if omitted == 0:  # decode as one piece so a character split between the halves survives
            return (self._head + self._tail).decode(errors="replace")
        head = self._head.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        return f"{head}\n[... {omitted} bytes of output omitted ...]\n{tail}"
