"""The ``redis-server`` child a ``gateway start`` runs when no Redis is configured.

It listens on 127.0.0.1 (the port it had last time when free, so workers that kept
the URL reconnect), keeps its data in ``$GATEWAY_HOME/redis`` with AOF (``appendfsync
everysec``) and no RDB snapshots, and is recorded in the state file for the other
commands of the same home.

It is supervised: when it dies under the running gateway (``kill -9``, the OOM
killer), it is started again on the same port from the same AOF, so the gateway and
the workers, which keep retrying that URL, carry on. What the AOF had not synced
(about the last second) is what a Redis crash loses in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.redis_state import RedisState, clear_state, last_port, read_state, write_state

log = logging.getLogger(__name__)

READY_MARKER = b"Ready to accept connections"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_LOG_TAIL_LINES = 30
_IN_USE = "Address already in use"


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound now, else any free port.

    The probe binds as redis-server does (``SO_REUSEADDR``): the connections a killed
    server leaves in TIME_WAIT / FIN_WAIT must not make its own port look taken, or a
    restarted gateway would move Redis and strand the workers that kept the old URL.
    """
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ConfigError("redis: no free port on 127.0.0.1")


class SpawnedServer:
    """One supervised ``redis-server`` child on a fixed port (see the module doc)."""

    def __init__(self, executable: str, data_dir: Path, port: int) -> None:
        self.executable, self.data_dir, self.port = executable, data_dir, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> None:
        """Start the server and watch it; ConfigError (one line) when it cannot start."""
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name=f"redis-server {self.port}")

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait([self._watch])
        if self._process is not None:
            clear_state(self.data_dir, self._process.pid)
            await _terminate(self._process)
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.wait([self._drain])

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: the terminal's Ctrl-C reaches us, and we stop it in order.
            start_new_session=True,
        )  # fmt: skip
        tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await _until_ready(process, tail)
        except (TimeoutError, ConfigError):
            await _terminate(process)
            raise ConfigError(
                f"redis-server did not start on 127.0.0.1:{self.port} (data {self.data_dir}): "
                + " | ".join(tail)
            ) from None
        except BaseException:  # cancelled (the gateway stops) while it was starting
            await asyncio.shield(_terminate(process))
            raise
        self._process = process
        self._drain = asyncio.create_task(_drain(process), name=f"redis-server log {self.port}")
        write_state(self.data_dir, RedisState(self.url, process.pid, os.getpid(), "redis-server"))
        log.info(
            "started redis-server pid %d on %s, data in %s", process.pid, self.url, self.data_dir
        )

    async def _supervise(self) -> None:
        """Start the server again whenever it exits while the gateway runs."""
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping or not self._still_recorded():
                return
            log.warning(
                "redis-server pid %d exited (code %s) under the running gateway; "
                "starting it again on %s",
                self._process.pid,
                code,
                self.url,
            )
            await self._respawn()

    def _still_recorded(self) -> bool:
        """False when the state file no longer names this server: a gateway that adopted
        it (believing its owner gone) cleared the file and shut it down on purpose."""
        state = read_state(self.data_dir)
        if state is not None and self._process is not None and state.pid == self._process.pid:
            return True
        log.info("redis-server pid %d was shut down by another gateway", self.pid)
        return False

    async def _respawn(self) -> None:
        """Same port (the workers keep that URL), backing off while it cannot start."""
        attempt = 0
        while True:
            try:
                await self._spawn()
                return
            except ConfigError as exc:
                delay = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                attempt += 1
                log.error("%s; trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)


async def spawn_redis_server(executable: str, data_dir: Path, attempts: int = 3) -> SpawnedServer:
    """A supervised server on the home's last port when free, else on any free port
    (``data_dir`` exists)."""
    preferred = last_port(data_dir)
    for attempt in range(1, attempts + 1):
        server = SpawnedServer(executable, data_dir, free_port(preferred))
        try:
            await server.start()
            return server
        except ConfigError as exc:
            # Another process may take the free port between our probe and the bind.
            if _IN_USE not in str(exc) or attempt == attempts:
                raise
            preferred = None
    raise AssertionError("unreachable: the loop returns or raises")


async def _until_ready(process: asyncio.subprocess.Process, tail: deque[str]) -> None:
    """Read the server's log until it says it is ready; ConfigError if it exits first."""
    assert process.stdout is not None
    async for line in process.stdout:
        tail.append(line.decode("utf-8", "replace").rstrip())
        if READY_MARKER in line:
            return
    raise ConfigError("redis-server exited")


async def _drain(process: asyncio.subprocess.Process) -> None:
    """Keep reading the log so the server never blocks on a full pipe."""
    assert process.stdout is not None
    async for line in process.stdout:
        log.debug("redis-server: %s", line.decode("utf-8", "replace").rstrip())


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (Redis flushes the AOF and exits), SIGKILL if it hangs."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.error("redis-server pid %d ignored SIGTERM; killing it", process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
