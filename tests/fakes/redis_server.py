"""A real ``redis-server`` on a free loopback port, and the pytest fixtures built on it.

Every pytest(-xdist worker) process starts its own server: the port comes from
binding port 0. Readiness is detected from the server's own log line (read by a
thread that keeps draining the pipe), then confirmed with PING.

Use in a test module::

    from tests.fakes.redis_server import redis_server, redis_url, redis  # noqa: F401
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest
import pytest_asyncio
from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis

INSTALL_HINT = (
    "redis-server was not found on PATH; the bus tests need a real Redis 6.2+ server. "
    "Install it with `sudo apt-get install redis-server` (Debian/Ubuntu) "
    "or `brew install redis` (macOS)."
)
_READY_MARKER = "Ready to accept connections"
_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``restart()`` keeps port and data directory."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        data_dir: Path | None = None,
    ) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(INSTALL_HINT)
        self.executable = executable
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self._owns_dir = data_dir is None
        self.data_dir = (
            data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="redis-"))
        )
        self.port = free_port()
        self._process: subprocess.Popen[str] | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=40)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def start(self) -> RedisServer:
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self.port}")
        ready = threading.Event()
        self._log_tail.clear()
        process = subprocess.Popen(
            self._command(),
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._process = process
        threading.Thread(
            target=self._drain_log,
            args=(process, ready),
            name=f"redis-log-{self.port}",
            daemon=True,
        ).start()
        if not ready.wait(_START_TIMEOUT_S) or process.poll() is not None:
            self.kill()
            raise RuntimeError(
                f"redis-server did not start on port {self.port}:\n{self.log_tail()}"
            )
        with SyncRedis.from_url(self.url, socket_timeout=_START_TIMEOUT_S) as client:
            client.ping()
        return self

    def _drain_log(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        # Keep reading until EOF so the server never blocks on a full pipe.
        assert process.stdout is not None
        for line in process.stdout:
            self._log_tail.append(line.rstrip())
            if _READY_MARKER in line:
                ready.set()
        ready.set()  # EOF: the server exited; start() sees it through poll().

    def log_tail(self) -> str:
        return "\n".join(self._log_tail)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM): the AOF is flushed when enabled."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: only what was fsynced survives."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the data directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _started(make: Callable[[], RedisServer], attempts: int = 3) -> RedisServer:
    """A started server; retries with a new port if another process took the free one."""
    for attempt in range(1, attempts + 1):
        try:
            server = make()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            return server.start()
        except RuntimeError as exc:
            server.close()
            if "Address already in use" not in str(exc) or attempt == attempts:
                pytest.fail(str(exc), pytrace=False)
    raise AssertionError("unreachable: the loop either returns or fails")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This test process's server (appendonly no), shared by all its tests."""
    data_dir = tmp_path_factory.mktemp("redis")
    server = _started(lambda: RedisServer(data_dir=data_dir))
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The server's url, emptied (FLUSHALL) before the test."""
    if not redis_server.running:
        redis_server.start()  # a test may have stopped it
    with SyncRedis.from_url(redis_server.url) as client:
        client.flushall()
    yield redis_server.url


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[AsyncRedis]:
    """An async client (``decode_responses=True``) on a flushed server, closed after."""
    client = AsyncRedis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def aof_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server with ``appendonly yes`` and ``appendfsync always`` (restart tests)."""
    server = _started(lambda: RedisServer(appendonly=True, appendfsync="always", data_dir=tmp_path))
    yield server
    server.close()
