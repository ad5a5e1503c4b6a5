"""The bus under chaos: the harness of ``tests/e2e/test_chaos.py`` and ``make chaos``.

Real processes on a real ``redis-server`` (AOF, ``appendfsync always``): one
``gateway start --no-worker`` and three worker processes. Clients POST messages over
many chats (every POST carries an ``Idempotency-Key`` and is retried with it until
a 202; some are POSTed again after their 202, some twice at once), while workers
are SIGKILLed at random and replaced, Redis is killed (SIGKILL) and restarted once,
and the gateway is killed (SIGKILL) and restarted once.

The model is the fake OpenAI-compatible server replying ``echo: <text> #<n>`` with
``n`` the number of user messages in the history it was sent: a chat's replies must
then read ``echo: m0 #1``, ``echo: m1 #2``… exactly, so a lost, doubled, reordered
or twice-committed turn shows. The report counts lost, out of order, doubled and
dead-lettered messages, what is left pending, and the time from first POST to reply.

``python -m tests.e2e.chaos --messages 10000`` runs it at scale (``make chaos``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import cast

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus import keys
from gateway.core.events import RunCompleted
from gateway.core.messages import default_session_key
from tests.e2e import conftest as e2e_conftest
from tests.e2e.chaos_parts import GatewayProcess, OutboundRecorder, counting_echo, write_config
from tests.e2e.chaos_report import Accepted, ChaosConfig, ChaosReport, first_difference
from tests.e2e.conftest import WorkerLauncher, WorkerProcess
from tests.fakes.openai_server import FakeModelServer
from tests.fakes.redis_server import RedisServer, free_port

CHANNEL = "http"


class Chaos:
    """One chaos run; ``run()`` returns the report."""

    def __init__(
        self, server: RedisServer, config: ChaosConfig, workdir: Path, *, verbose: bool = False
    ) -> None:
        self.server = server
        self.verbose = verbose
        self.cfg = config
        self.workdir = workdir
        self.rng = random.Random(config.seed)
        self.report = ChaosReport()
        self.accepted: dict[str, list[Accepted]] = defaultdict(list)
        self.launcher = WorkerLauncher()
        self.workers: list[WorkerProcess] = []
        self._worker_count = 0
        self.sent = 0
        self.recorder: OutboundRecorder
        self._redis: Redis
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        config = self.workdir / "gateway.yaml"
        port = free_port()
        async with (
            FakeModelServer(default_reply=counting_echo(self.cfg.model_chunk_delay_s)) as model,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        ):
            write_config(
                config,
                redis_url=self.server.url,
                port=port,
                model_url=model.base_url,
                workspace=self.workdir / "ws",
            )
            gateway = GatewayProcess(config, port)
            redis = Redis.from_url(self.server.url, decode_responses=True)
            try:
                await gateway.start(client)
                for _ in range(self.cfg.workers):
                    await self._start_worker(config)
                await self._load_and_settle(redis, client, gateway, config)
            finally:
                await gateway.stop()
                await self.launcher.close()
                await redis.aclose()
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    async def _start_worker(self, config: Path) -> str:
        self._worker_count += 1
        name = f"chaos-w{self._worker_count}"
        try:
            worker = await self.launcher.start(name, redis_url=self.server.url, config=config)
        except AssertionError as exc:
            for unready in [w for w in self.launcher.started if w.name == name]:
                await unready.kill()
            raise AssertionError(f"{name}: {exc}") from exc
        self.workers.append(worker)
        return name

    async def _replace_worker(self, config: Path, attempts: int = 3) -> None:
        """Start a replacement; one that is not ready in time (it may have started while
        Redis was loading its data) is killed, counted and started again."""
        for attempt in range(1, attempts + 1):
            try:
                await self._start_worker(config)
                return
            except AssertionError as exc:
                self.report.worker_start_failures.append(str(exc).splitlines()[0])
                if attempt == attempts:
                    raise

    async def _load_and_settle(
        self, redis: Redis, client: aiohttp.ClientSession, gateway: GatewayProcess, config: Path
    ) -> None:
        chats = [f"chat{n}" for n in range(self.cfg.chats)]
        session_keys = [default_session_key(CHANNEL, chat) for chat in chats]
        recorder = OutboundRecorder(redis, session_keys)
        self._redis = redis
        self.recorder = recorder
        watching = asyncio.create_task(recorder.run())
        progress = asyncio.create_task(self._progress()) if self.verbose else None
        try:
            chaos = asyncio.create_task(self._chaos(gateway, client, config))
            try:
                await asyncio.gather(*(self._send_chat(client, gateway, c) for c in chats))
            finally:
                chaos.cancel()
                await asyncio.wait([chaos])
            if not chaos.cancelled() and chaos.exception() is not None:
                raise cast(BaseException, chaos.exception())
            await self._until_answered(recorder)
            await self._until_idle(redis)
        finally:
            for task in (watching, progress):
                if task is not None:
                    task.cancel()
                    await asyncio.wait([task])
        await self._check(redis, recorder)
        if self.verbose:
            self._print_slowest(recorder)

    def _print_slowest(self, recorder: OutboundRecorder, n: int = 10) -> None:
        """The slowest replies with what the workers logged of their chats (diagnosis)."""
        rows = [
            (recorder.answered_at[a.answer_key] - a.sent_at, chat, a)
            for chat, accepted in self.accepted.items()
            for a in accepted
            if a.answer_key in recorder.answered_at
        ]
        rows.sort(key=lambda row: row[0], reverse=True)
        wall = time.time() - time.monotonic()
        for took, chat, a in rows[:n]:
            answered = recorder.answered_at[a.answer_key]
            print(
                f"SLOW {took:.1f}s {chat} {a.text} id {a.message_id} "
                f"sent {a.sent_at - self.t0:.1f} answered {answered - self.t0:.1f}"
            )
            lo = time.strftime("%H:%M:%S", time.gmtime(wall + a.sent_at - 3))
            hi = time.strftime("%H:%M:%S", time.gmtime(wall + answered + 1))
            lines = sorted(
                (line[11:23], w.name, line[24:])
                for w in self.launcher.started
                for line in w.output
                if (a.session_key + " " in line + " " or f"'{a.session_key}'" in line)
                and lo <= line[11:19] <= hi
            )
            for stamp, name, rest in lines:
                print(f"    {stamp} {name}: {rest[:200]}")
        for t, what in self.events:
            print(f"EVENT {t - self.t0:.1f} {what}")

    # -- clients -------------------------------------------------------------------

    async def _send_chat(
        self, client: aiohttp.ClientSession, gateway: GatewayProcess, chat: str
    ) -> None:
        per_chat = self.cfg.messages // self.cfg.chats + (
            1 if int(chat.removeprefix("chat")) < self.cfg.messages % self.cfg.chats else 0
        )
        gap = self.cfg.send_seconds / max(1, per_chat)
        await asyncio.sleep(self.rng.uniform(0, gap))
        session_key = default_session_key(CHANNEL, chat)
        for k in range(per_chat):
            await self._window(session_key, k)
            text = f"{chat}-m{k}"
            payload = {"channel": CHANNEL, "chat_id": chat, "sender_id": "chaos", "text": text}
            key = f"chaos-{chat}-{k}"
            sent_at = time.monotonic()
            if self.rng.random() < self.cfg.duplicate_share:
                bodies = await asyncio.gather(
                    self._post(client, gateway, payload, key),
                    self._post(client, gateway, payload, key),
                )
                self._same_body(key, *bodies)
                body = bodies[0]
            else:
                body = await self._post(client, gateway, payload, key)
            self.accepted[chat].append(
                Accepted(body["session_key"], body["message_id"], text, sent_at)
            )
            self.sent += 1
            if self.rng.random() < self.cfg.repost_share:
                self._same_body(key, body, await self._post(client, gateway, payload, key))
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * gap)

    async def _window(self, session_key: str, k: int) -> None:
        """Wait until the chat has at most ``window`` unanswered messages (a message that
        is never answered only delays the sender: the final check reports it)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.settle_timeout_s):
                while self.recorder.answered_in[session_key] < k - self.cfg.window:
                    self.recorder.changed.clear()
                    await self.recorder.changed.wait()

    async def _progress(self) -> None:
        """A line every ten seconds (``make chaos``), so a slow run shows where it is."""
        while True:
            await asyncio.sleep(10)
            answered = sum(self.recorder.answered_in.values())
            with contextlib.suppress(RedisError, OSError):  # Redis may be restarting
                print(f"  pending {await self._pending(self._redis)}", flush=True)
            print(
                f"  sent {self.sent}, answered {answered}, worker kills "
                f"{self.report.worker_kills}, Redis restarts {self.report.redis_restarts}, "
                f"gateway restarts {self.report.gateway_restarts}",
                flush=True,
            )

    def _same_body(self, key: str, first: dict[str, str], second: dict[str, str]) -> None:
        if first != second:
            self.report.mismatched_bodies.append(f"{key}: {first} != {second}")

    async def _post(
        self,
        client: aiohttp.ClientSession,
        gateway: GatewayProcess,
        payload: dict[str, str],
        key: str,
    ) -> dict[str, str]:
        """POST until a 202, always with the same key (what a careful client does)."""
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        backoff = 0.05
        while True:
            try:
                async with client.post(
                    f"{gateway.url}/v1/messages", json=payload, headers={"Idempotency-Key": key}
                ) as resp:
                    if resp.status == 202:
                        return cast(dict[str, str], await resp.json())
                    detail = await resp.text()
                    if resp.status < 500:
                        raise AssertionError(f"POST {key} refused: {resp.status} {detail}")
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.report.post_retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"POST {key} never accepted")
            await asyncio.sleep(backoff * self.rng.uniform(0.5, 1.5))
            backoff = min(1.0, backoff * 2)

    # -- chaos ---------------------------------------------------------------------

    async def _chaos(
        self, gateway: GatewayProcess, client: aiohttp.ClientSession, config: Path
    ) -> None:
        replacements: list[asyncio.Task[None]] = []
        try:
            await self._chaos_loop(gateway, client, config, replacements)
        finally:
            if replacements:
                await asyncio.wait(replacements)  # launcher.close() then stops them all
            for task in replacements:
                if not task.cancelled() and task.exception() is not None:
                    raise cast(BaseException, task.exception())

    async def _chaos_loop(
        self,
        gateway: GatewayProcess,
        client: aiohttp.ClientSession,
        config: Path,
        replacements: list[asyncio.Task[None]],
    ) -> None:
        redis_at, gateway_at = 0.4 * self.cfg.messages, 0.7 * self.cfg.messages
        while True:
            await asyncio.sleep(self.rng.uniform(*self.cfg.kill_every_s))
            if not self.report.redis_restarts and self.sent >= redis_at:
                self.events.append((time.monotonic(), "redis kill"))
                self.server.kill()
                await asyncio.to_thread(self.server.start)
                self.events.append((time.monotonic(), "redis up"))
                self.report.redis_restarts += 1
            elif not self.report.gateway_restarts and self.sent >= gateway_at:
                self.events.append((time.monotonic(), "gateway kill"))
                await gateway.kill()
                await gateway.start(client)
                self.events.append((time.monotonic(), "gateway up"))
                self.report.gateway_restarts += 1
            alive = [w for w in self.workers if w.running]
            if len(alive) < 2:
                continue  # keep one worker working while replacements start
            victim = self.rng.choice(alive)
            await victim.kill()
            self.events.append((time.monotonic(), f"killed {victim.name}"))
            self.workers.remove(victim)
            self.report.worker_kills += 1
            # Started in the background: the next kill does not wait for it.
            replacements.append(asyncio.create_task(self._replace_worker(config)))

    # -- checks --------------------------------------------------------------------

    async def _until_answered(self, recorder: OutboundRecorder) -> None:
        ids = [a.answer_key for chat in self.accepted.values() for a in chat]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.settle_timeout_s):
                while any(i not in recorder.answered_at for i in ids):
                    recorder.changed.clear()
                    await recorder.changed.wait()

    async def _until_idle(self, redis: Redis) -> None:
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        while any((pending := await self._pending(redis)).values()):
            self.report.pending = pending
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)
        self.report.pending = pending

    async def _pending(self, redis: Redis) -> dict[str, int]:
        """Uncommitted inbound entries, unread and unacked work signals."""
        inbound = 0
        for chat in self.accepted.values():
            inbound += await redis.xlen(keys.inbound(chat[0].session_key))
        signals = unacked = 0
        for p in range(4):
            signals += await redis.xlen(keys.ready(p))
            unacked += (await redis.xpending(keys.ready(p), keys.WORKER_GROUP))["pending"]
        return {"inbound": inbound, "signals": signals, "unacked": unacked}

    async def _check(self, redis: Redis, recorder: OutboundRecorder) -> None:
        report = self.report
        report.dead_lettered = await redis.xlen(keys.DEAD_LETTER)
        for chat, accepted in self.accepted.items():
            report.accepted += len(accepted)
            key = accepted[0].session_key
            for a in accepted:
                if a.answer_key not in recorder.answered_at:
                    report.lost.append(a.answer_key)
                else:
                    report.reply_seconds.append(recorder.answered_at[a.answer_key] - a.sent_at)
                if recorder.answers[a.answer_key] > 1:
                    report.doubled.append(f"message {a.answer_key}")
            replies = [
                (e.message_ids, e.content if isinstance(e, RunCompleted) else e.error)
                for e in recorder.terminals[key]
            ]
            expected = [([a.message_id], f"echo: {a.text} #{n}") for n, a in enumerate(accepted, 1)]
            if replies != expected:
                report.out_of_order.append(f"{chat}: {first_difference(replies, expected)}")
        report.doubled += [f"run {run}" for run, n in recorder.runs_ended.items() if n > 1]


async def _main(config: ChaosConfig) -> int:
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(appendonly=True, appendfsync="always", data_dir=workdir / "redis")
        (workdir / "redis").mkdir()
        with server:
            report = await Chaos(server, config, workdir, verbose=True).run()
    print(report.summary())
    problems = report.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description="the bus under chaos (make chaos)")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--send-seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    send_seconds = args.send_seconds or max(20.0, args.messages / 40)
    config = ChaosConfig(
        chats=args.chats,
        messages=args.messages,
        send_seconds=send_seconds,
        settle_timeout_s=max(90.0, send_seconds),
        seed=args.seed,
    )
    print(f"chaos: {config}", flush=True)
    e2e_conftest.OUTPUT_LINES_KEPT = 1_000_000  # whole worker logs, for the slowest replies
    # The fake model logs a traceback for every stream a killed worker leaves behind.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    raise SystemExit(asyncio.run(_main(config)))


if __name__ == "__main__":
    main()
