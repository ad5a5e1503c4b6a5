"""Real Redis Sentinel processes (``redis-server --sentinel``) watching a real master.

``SentinelGroup(master_port, count)`` starts ``count`` sentinels on free loopback
ports, each monitoring ``127.0.0.1:master_port`` as ``SERVICE`` (and told of the
``replicas`` at once, instead of finding them by INFO within 10 s); ``start()``
returns once every sentinel answers ``SENTINEL get-master-addr-by-name`` with that
master. ``wait_for_master(port)`` waits until they name another one (a failover).
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
    def __init__(
        self,
        master_port: int,
        data_dir: Path,
        *,
        password: str,
        count: int = 2,
        replicas: tuple[int, ...] = (),
        down_after_ms: int = 60_000,
    ) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server was not found on PATH (needed for Sentinel)")
        self.executable = executable
        self.master_port = master_port
        self.data_dir = data_dir
        self.password = password
        self.replicas = replicas
        self.down_after_ms = down_after_ms
        self.ports = [free_port() for _ in range(count)]
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self) -> SentinelGroup:
        for port in self.ports:
            config = self.data_dir / f"sentinel-{port}.conf"
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {self.data_dir}",
                f"requirepass {self.password}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1",
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                f"sentinel failover-timeout {SERVICE} 10000",
                *(f"sentinel known-replica {SERVICE} 127.0.0.1 {r}" for r in self.replicas),
            ]
            config.write_text("\n".join(lines) + "\n", encoding="utf-8")
            self._processes.append(
                subprocess.Popen(
                    [self.executable, str(config), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait_for(port, self.master_port)
        return self

    def wait_for_master(self, master_port: int) -> None:
        """Until every sentinel names ``127.0.0.1:master_port`` (blocking: run in a thread)."""
        for port in self.ports:
            self._wait_for(port, master_port)

    def _wait_for(self, port: int, master_port: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        with SyncRedis(
            port=port, password=self.password, socket_timeout=2, decode_responses=True
        ) as client:
            while True:
                try:
                    found = client.sentinel_get_master_addr_by_name(SERVICE)
                except RedisError:
                    found = None
                if found == ("127.0.0.1", master_port) and self._serves(client, master_port):
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sentinel on {port} never named port {master_port}")
                time.sleep(0.05)  # the process is starting; nothing to wait on but time

    @staticmethod
    def _serves(client: SyncRedis, master_port: int) -> bool:
        """``SENTINEL MASTERS`` (what redis-py's clients ask) names that master, up:
        during a failover it still names the old one after get-master-addr moved on."""
        try:
            state = client.sentinel_master(SERVICE)
        except RedisError:
            return False
        up = state["is_master"] and not state["is_sdown"] and not state["is_odown"]
        return bool(up) and int(state["port"]) == master_port

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
