"""Real Redis Sentinel processes (``redis-server --sentinel``) watching a real master.

``SentinelGroup(master_port, count)`` starts ``count`` sentinels on free loopback
ports, each monitoring ``127.0.0.1:master_port`` as ``SERVICE``; ``start()`` returns
once every sentinel answers ``SENTINEL get-master-addr-by-name`` with that master.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from tests.fakes.redis_server import free_port

SERVICE = "gwmaster"
_START_TIMEOUT_S = 20.0


class SentinelGroup:
    def __init__(self, master_port: int, data_dir: Path, *, count: int = 2, password: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server was not found on PATH (needed for Sentinel)")
        self.executable = executable
        self.master_port = master_port
        self.data_dir = data_dir
        self.password = password
        self.ports = [free_port() for _ in range(count)]
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self) -> SentinelGroup:
        for port in self.ports:
            config = self.data_dir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.data_dir}\n"
                f"requirepass {self.password}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} 60000\n",
                encoding="utf-8",
            )
            self._processes.append(
                subprocess.Popen(
                    [self.executable, str(config), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait_ready(port)
        return self

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        with SyncRedis(
            port=port, password=self.password, socket_timeout=2, decode_responses=True
        ) as client:
            while True:
                try:
                    found = client.sentinel_get_master_addr_by_name(SERVICE)
                except RedisError:
                    found = None
                if found == ("127.0.0.1", self.master_port):
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sentinel on {port} did not come up")
                time.sleep(0.05)  # the process is starting; nothing to wait on but time

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._processes = []
